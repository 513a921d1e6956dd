"""What a worker process holds: settings, committee, and the resident backends."""

from __future__ import annotations

import json
import logging
import threading
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, cast

from db.engine import get_engine
from pipeline.backend import Backend, Capability, WarmsUp, backend_info
from pipeline.committee import (
    Committee,
    Member,
    default_committee,
    load_committee,
    require_enabled_backends,
)
from pipeline.policy import PolicyStore
from pipeline.service.settings import Settings
from workers.backends.base import BackendSpec, auto_dtype, create_backend
from workers.batching import BatchingBackend, SerializedBackend
from workers.policy_store import SqlPolicyStore

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

# Backends live once per process, shared by every task thread and app in it.
_backends: dict[str, Backend] = {}
_backends_lock = threading.Lock()


@dataclass
class Runtime:
    settings: Settings
    committee: Committee

    def __post_init__(self) -> None:
        # A committee built in code (not loaded by committee_from_settings) is checked here.
        require_enabled_backends(self.committee, test_backends=self.settings.test_backends)
        self._keys: dict[str, tuple[Member, str]] = {}  # member name -> (member, its backend's key)

    @cached_property
    def policy_store(self) -> PolicyStore:
        """The database: the source of truth for policy state and reviewer weights, in every mode.

        (Redis loses everything on a restart without persistence; a conversation resumed
        after one must continue under exactly the policy state it had.)
        """
        return SqlPolicyStore(get_engine(self.settings.database))

    def timeout_s(self, member: Member) -> float:
        """Most seconds one call of ``member`` may take."""
        return member.timeout_s or self.settings.generation_time_limit_s

    def backend(self, member: Member) -> Backend:
        """The member's backend, built on first use and then kept resident."""
        known = self._keys.get(member.name)
        if known is not None and known[0] == member:  # every task asks: skip building the key
            backend = _backends.get(known[1])
            if backend is not None:
                return backend
        batch_max, window_ms = self.settings.batch_max, self.settings.batch_window_ms
        batching = (batch_max, window_ms) if batch_max > 1 else None  # part of the key: tests vary it
        weights = _weights(member)
        sharing = [m for m in self.committee.members if _weights(m) == weights]
        _, _, device, dtype, options = weights
        spec = BackendSpec(
            model=member.model,
            device=device,
            dtype=dtype,
            options={**options, **_call_options(sharing)},
            cache_dir=self.settings.models_dir,
            timeout_s=max(self.timeout_s(m) for m in sharing),
        )
        key = json.dumps([*weights, spec.cache_dir, batching], sort_keys=True, default=str)
        self._keys[member.name] = (member, key)
        backend = _backends.get(key)
        if backend is not None:
            return backend
        with _backends_lock:  # one load per model, even when several threads ask at once
            backend = _backends.get(key)
            if backend is None:
                _set_torch_threads(self.settings.torch_threads)
                log.info(
                    "loading %s backend for %s (%s on %s)",
                    member.backend,
                    member.name,
                    member.model,
                    member.device,
                )
                backend = create_backend(member.backend, spec, test_backends=self.settings.test_backends)
                # One batcher per local model, shared by its members' tasks; remote servers
                # batch on their side, and fakes gain nothing from waiting for company.
                if Capability.BATCH in member.capabilities:
                    # A local model: batched, or at least called by one task thread at a time.
                    backend = (
                        BatchingBackend(
                            backend, max_batch=batch_max, window_s=window_ms / 1000, timeout_s=spec.timeout_s
                        )
                        if batching is not None
                        else SerializedBackend(backend)
                    )
                _backends[key] = backend
        return backend

    def preload(self, queues: set[str] | None = None) -> list[str]:
        """Load (and warm up) the backends of the members served on ``queues`` (all when None),
        so that a bad model fails at start and the first turn is not slowed by loading."""
        loaded = []
        for member in self.committee.members:
            if queues is None or member.queue in queues:
                backend = self.backend(member)
                if Capability.WARM_UP in member.capabilities:
                    cast(WarmsUp, backend).warm_up()  # a batcher passes it through
                loaded.append(member.name)
        return loaded


# Options that tune calls, not the weights: members differing only in them share one
# resident model, which takes the largest value any of them asks for.
_CALL_OPTIONS = ("batch_size", "prefix_cache", "prefix_cache_mb")


def _weights(member: Member) -> tuple[str, str, str, str, dict[str, object]]:
    """What decides the weights a member's backend holds: members with equal ``_weights``
    share one resident backend (one model in memory), however they spell it.

    "cuda" is "cuda:0" (the current device: peerblend never changes it; a GPU worker picks its
    GPU with CUDA_VISIBLE_DEVICES); dtype "auto" is what it means on that device, or on the GPUs
    a ``device_map`` spreads it over (``auto_dtype``); call options are left out.
    """
    device = "cuda:0" if member.device == "cuda" else member.device
    dtype = member.dtype
    if dtype == "auto":
        dtype = auto_dtype(device, member.options.get("device_map"))
    options = {k: v for k, v in member.options.items() if k not in _CALL_OPTIONS}
    return member.backend, member.model, device, dtype, options


def _call_options(members: list[Member]) -> dict[str, object]:
    """The call options of one resident backend: for each its members' backend takes, the largest
    any of them asks for (left out, a member asks for the backend's default)."""
    parsed = [backend_info(m.backend).parse_options(m.options) for m in members]
    return {
        name: max(getattr(p, name) for p in parsed)
        for name in _CALL_OPTIONS
        if all(hasattr(p, name) for p in parsed)
    }


def resident_backends() -> list[Backend]:
    """The backends built in this process, unwrapped from their batchers (tests read fakes' call logs)."""
    with _backends_lock:
        built = list(_backends.values())
    return [b.inner if isinstance(b, (BatchingBackend, SerializedBackend)) else b for b in built]


def _set_torch_threads(threads: int | None) -> None:
    """Apply PEERBLEND_TORCH_THREADS (process-wide) before a model first runs."""
    if threads is None:
        return
    import torch  # only where a model is loaded: clients never import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def committee_from_settings(settings: Settings) -> Committee:
    if settings.committee_file is None:
        return default_committee()
    return load_committee(settings.committee_file, test_backends=settings.test_backends)


# The runtime of each Celery app this process made, kept beside the app instead of set on it as an
# attribute Celery does not declare; a task finds its own through ``self.app``. Weak keys: an app
# that is gone (a test's, a benchmark's) takes its runtime with it.
_runtimes: weakref.WeakKeyDictionary[Celery, Runtime] = weakref.WeakKeyDictionary()


def attach_runtime(app: Celery, runtime: Runtime) -> None:
    _runtimes[app] = runtime


def runtime_if_any(app: Celery | None) -> Runtime | None:
    """The runtime made for ``app``, or None for an app ``create_app`` did not make."""
    return _runtimes.get(app) if app is not None else None


def runtime_of(app: Celery) -> Runtime:
    """The runtime ``workers.app.create_app`` made for ``app``."""
    try:
        return _runtimes[app]
    except KeyError:
        raise RuntimeError(
            f"Celery app {app.main!r} has no peerblend runtime: make it with workers.app.create_app"
        ) from None
