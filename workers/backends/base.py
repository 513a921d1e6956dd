"""Building model backends from the registry (``pipeline.backend.BACKENDS``).

A backend is built once per worker process for one committee member's model and
kept resident. It is given its device and its cache folder; it never discovers
them on its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.backend import Backend, enabled_backend


@dataclass(frozen=True)
class BackendSpec:
    """What a backend needs to build itself: which model, where, how."""

    model: str  # a model id, a local path, or an offline alias such as "smollm2-135m"
    device: str = "cpu"  # "cpu", "cuda", "cuda:1"
    dtype: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU), "float32", "bfloat16", "float16"
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
