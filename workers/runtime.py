"""What a worker process holds: settings, committee, and the resident backends."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, cast

from db.engine import get_engine
from pipeline.backend import Backend, Capability, WarmsUp
from pipeline.committee import (
    Committee,
    Member,
    default_committee,
    load_committee,
    require_enabled_backends,
)
from pipeline.policy import PolicyStore
from pipeline.settings import Settings
from workers.backends.base import BackendSpec, create_backend
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
        spec = BackendSpec(
            model=member.model,
            device=member.device,
            dtype=member.dtype,
            options=member.options,
            cache_dir=self.settings.models_dir,
            timeout_s=max(self.timeout_s(m) for m in self.committee.members if _same_model(m, member)),
        )
        key = json.dumps(
            [member.backend, spec.model, spec.device, spec.dtype, member.options, spec.cache_dir, batching],
            sort_keys=True,
            default=str,
        )
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
                        BatchingBackend(backend, max_batch=batch_max, window_s=window_ms / 1000)
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


def _same_model(a: Member, b: Member) -> bool:
    """Whether two members share one resident backend (one model in memory)."""
    return (a.backend, a.model, a.device, a.dtype, a.options) == (
        b.backend,
        b.model,
        b.device,
        b.dtype,
        b.options,
    )


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


def runtime_of(app: Celery) -> Runtime:
    runtime: Runtime = app.peerblend  # type: ignore[attr-defined]
    return runtime
