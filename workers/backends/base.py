"""Building model backends from the registry (``pipeline.backend.BACKENDS``).

A backend is built once per worker process for one committee member's model and
kept resident. It is given its device and its cache folder; it never discovers
them on its own.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.backend import Backend, enabled_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    """What a backend needs to build itself: which model, where, how."""

    model: str  # a model id, a local path, or an offline alias such as "smollm2-135m"
    device: str = "cpu"  # "cpu", "cuda", "cuda:1"
    dtype: str = "auto"  # "auto" (see auto_dtype), "float32", "bfloat16", "float16"
    options: Mapping[str, object] = field(default_factory=dict)  # the member's; the backend parses them
    cache_dir: Path | None = None  # the worker's model cache (PEERBLEND_MODEL_CACHE_DIR); None: the default
    # Longest one call may run (the members' time limit): a local model stops generating
    # then, so a late call frees the model instead of running on after its task gave up.
    timeout_s: float | None = None


def create_backend(name: str, spec: BackendSpec, *, test_backends: bool = False) -> Backend:
    """Build the backend called ``name``.

    Raises ConfigError for an unknown backend, for a test backend unless
    ``test_backends`` (``Settings.test_backends``), and for options it does not take.
    """
    info = enabled_backend(name, test_backends=test_backends)
    module_name, _, class_name = info.factory.partition(":")
    factory = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = factory(spec)
    return backend


def on_cuda(device: str, device_map: object = None) -> bool:
    """Whether a model's weights go to CUDA: a "cuda…" device, or a ``device_map`` where CUDA is
    available (accelerate spreads the model over the GPUs; without one it stays on the CPU)."""
    if device.startswith("cuda"):
        return True
    if device_map is None or device_map == "cpu":
        return False
    import torch  # only where a model is loaded: clients never import torch

    return bool(torch.cuda.is_available())


def auto_dtype(device: str, device_map: object = None) -> str:
    """What dtype "auto" means for weights on ``device`` (or spread by ``device_map``).

    bfloat16 on a GPU that computes in it natively (compute capability 8.0 and up), float16
    on an older GPU (bfloat16 would be emulated there, slowly), float32 on the CPU. A CUDA
    device in a process that cannot see one keeps bfloat16: the load fails anyway, and says why.
    The GPU asked is the current one (peerblend never changes it: a worker picks its GPU
    with CUDA_VISIBLE_DEVICES).
    """
    if not on_cuda(device, device_map):
        return "float32"
    import torch

    if not torch.cuda.is_available() or torch.cuda.is_bf16_supported(including_emulation=False):
        return "bfloat16"
    log.info("this GPU has no native bfloat16: dtype 'auto' is float16 here")
    return "float16"
