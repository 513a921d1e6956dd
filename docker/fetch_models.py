"""Download the committee's Hugging Face models into the shared HF cache, once.

The workers run with HF_HUB_OFFLINE=1, so every hub id in the committee file must
already be in the cache volume. Run this first (it is the compose service
``models``, profile ``tools``)::

    docker compose --profile tools run --rm models

Offline aliases (``smollm2-135m``, ``gemma3-270m``) ship inside the images and
local folders are skipped. Gated models (e.g. meta-llama/*) need HF_TOKEN.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.committee import Committee, load_committee

OFFLINE_ALIASES = frozenset({"smollm2-135m", "gemma3-270m"})  # see workers/backends/hf.py

# Weights in other formats, and the original (non-transformers) checkpoints some repos carry.
IGNORE = ["*.gguf", "*.onnx", "onnx/*", "*.msgpack", "*.h5", "*.ot", "*.pth", "original/*"]


def hub_models(committee: Committee) -> list[str]:
    """The hub ids the committee loads through transformers, each once, in member order."""
    models = [
        m.model
        for m in committee.members
        if m.backend == "transformers" and m.model not in OFFLINE_ALIASES and not Path(m.model).exists()
    ]
    return list(dict.fromkeys(models))


def fetch(model: str) -> str:
    """Download ``model`` (safetensors only when the repo has them); returns its local folder."""
    from huggingface_hub import HfApi, snapshot_download

    files = HfApi().list_repo_files(model)
    ignore = IGNORE + (["*.bin"] if any(f.endswith(".safetensors") for f in files) else [])
    return snapshot_download(model, ignore_patterns=ignore)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("committee", type=Path, help="the committee file (.toml, .yaml, .json)")
    args = parser.parse_args(argv)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false"):
        print("HF_HUB_OFFLINE is set: run with HF_HUB_OFFLINE=0 to download", file=sys.stderr)
        return 2
    models = hub_models(load_committee(args.committee))
    if not models:
        print("the committee loads no hub models; nothing to download")
    for model in models:
        print(f"fetching {model} ...", flush=True)
        print(f"  -> {fetch(model)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
