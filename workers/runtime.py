"""What a worker process holds: settings, committee, and the resident backends."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from db.engine import get_engine
from pipeline.committee import Committee, Member, default_committee, load_committee
from pipeline.policy import PolicyStore
from pipeline.prompt import Backend
from pipeline.settings import Settings
from workers.backends.base import BackendSpec, create_backend
from workers.batching import BatchingBackend
from workers.policy_store import RedisPolicyStore, SqlPolicyStore

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

    @cached_property
    def policy_store(self) -> PolicyStore:
        """Redis (the result backend's server) in distributed mode; the database when embedded."""
        if self.settings.embedded or not str(self.settings.result_backend).startswith("redis"):
            return SqlPolicyStore(get_engine(self.settings.database))
        return RedisPolicyStore(str(self.settings.result_backend))

    def backend(self, member: Member) -> Backend:
        """The member's backend, built on first use and then kept resident."""
        options = {"cache_dir": str(self.settings.models_dir), **member.options}
        batch_max, window_ms = self.settings.batch_max, self.settings.batch_window_ms
        batching = (batch_max, window_ms) if batch_max > 1 else None  # part of the key: tests vary it
        spec = BackendSpec(model=member.model, device=member.device, dtype=member.dtype, options=options)
        key = json.dumps(
            [member.backend, spec.model, spec.device, spec.dtype, options, batching],
            sort_keys=True,
            default=str,
        )
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
                backend = create_backend(member.backend, spec)
                # One batcher per local model, shared by its members' tasks; remote servers
                # batch on their side, and fakes gain nothing from waiting for company.
                if batching is not None and getattr(backend, "batches_calls", False):
                    backend = BatchingBackend(backend, max_batch=batch_max, window_s=window_ms / 1000)
                _backends[key] = backend
        return backend

    def preload(self, queues: set[str] | None = None) -> list[str]:
        """Load (and warm up) the backends of the members served on ``queues`` (all when None),
        so that a bad model fails at start and the first turn is not slowed by loading."""
        loaded = []
        for member in self.committee.members:
            if queues is None or member.queue in queues:
                backend = self.backend(member)
                warm_up = getattr(backend, "warm_up", None)
                if warm_up is not None:
                    warm_up()
                loaded.append(member.name)
        return loaded


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
    return load_committee(settings.committee_file)


def runtime_of(app: Celery) -> Runtime:
    runtime: Runtime = app.peerblend  # type: ignore[attr-defined]
    return runtime
