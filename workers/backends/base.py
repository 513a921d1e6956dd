"""The registry of model backends (the interface, ``Backend``, is in pipeline.prompt).

A backend is built once per worker process for one committee member's model and
kept resident. It is given its device; it never discovers one on its own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from pipeline.errors import ConfigError
from pipeline.prompt import Backend


@dataclass(frozen=True)
class BackendSpec:
    """What a backend needs to build itself: which model, where, how."""

    model: str  # a model id, a local path, or an offline alias such as "smollm2-135m"
    device: str = "cpu"  # "cpu", "cuda", "cuda:1"
    dtype: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU), "float32", "bfloat16", "float16"
    options: dict[str, object] = field(default_factory=dict)


# name -> "module:factory"; imported lazily so a client never imports torch.
_REGISTRY: dict[str, str] = {
    "transformers": "workers.backends.hf:TransformersBackend",
    "scripted": "workers.backends.scripted:ScriptedBackend",
    "cross-encoder": "workers.backends.cross_encoder:CrossEncoderBackend",
    "openai": "workers.backends.openai:OpenAIBackend",
}


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def create_backend(name: str, spec: BackendSpec) -> Backend:
    """Build the backend called ``name``; raises ConfigError for an unknown one."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; known backends: {', '.join(backend_names())}") from None
    module_name, _, factory_name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    backend: Backend = factory(spec)
    return backend
