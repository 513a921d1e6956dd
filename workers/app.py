"""The Celery app, ``workers.app``: ``celery -A workers.app worker -Q <queue>``.

Configured from ``PEERBLEND_*`` settings. With no broker configured it is the
embedded app (memory broker, in-process result cache) that ``workers.connect``
runs with an in-process worker.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init

from db.engine import reset_engines
from pipeline.committee import Committee, Member
from pipeline.service.canvas import task_member
from pipeline.service.settings import Settings
from workers.runtime import Runtime, attach_runtime, committee_from_settings, runtime_if_any

log = logging.getLogger(__name__)


def create_app(settings: Settings, committee: Committee) -> Celery:
    app = Celery("peerblend", set_as_current=False)
    attach_runtime(app, Runtime(settings=settings, committee=committee))
    bound = task_bound_s(settings, committee)
    visibility = settings.visibility_timeout_s or int(bound + 300)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_queue=settings.default_queue,
        task_routes=(_router(committee, settings.default_queue),),
        # Long GPU tasks: ack after the work, redeliver if the worker dies, take one at a time.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": visibility},
        result_backend_transport_options={"visibility_timeout": visibility},
        # Prefork pools: a child stuck past every bound is replaced (threads pools rely on
        # the per-call deadlines of workers.deadline instead).
        task_time_limit=bound,
        result_expires=settings.result_expires_s,
        result_extended=False,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if settings.embedded:
        app.conf.update(
            broker_url="memory://",
            result_backend="cache+memory://",
            # The memory transport polls: each hop of a turn (start, answers, reviews, aggregate)
            # waits half an interval on average. 5 ms costs about 1 % of a core while idle.
            broker_transport_options={"polling_interval": 0.005},
            result_chord_retry_interval=0.02,
        )
    else:
        app.conf.update(
            broker_url=settings.broker_url, result_backend=_result_backend(settings.result_backend)
        )
    import workers.tasks  # noqa: F401  (registers the shared tasks on this app)

    app.finalize()
    return app


def _result_backend(url: str | None) -> str | None:
    """A Redis URL names peerblend's subclass of Celery's Redis backend (``workers.results``),
    in Celery's ``class+url`` form; any other backend is Celery's own."""
    if url and url.split("://", 1)[0] in ("redis", "rediss"):
        return f"workers.results:SendingRedisBackend+{url}"
    return url


def task_bound_s(settings: Settings, committee: Committee) -> int:
    """The longest one task may run: a member's call at its time limit, or an aggregate that
    fuses (one call) and then retries an unreachable database for its whole budget."""
    slowest = max(m.timeout_s or settings.generation_time_limit_s for m in committee.members)
    return int(slowest + settings.store_retry_s + 120)


def _router(committee: Committee, default_queue: str) -> Any:
    """Route each task to the queue of the member it names (config, not code paths)."""

    def route(
        name: str, args: Any, kwargs: dict[str, Any], options: Any, task: Any = None, **kw: Any
    ) -> dict[str, str]:
        member = task_member(kwargs or {}, committee)
        return {"queue": default_queue if member is None else committee.member(member).queue}

    return route


@worker_init.connect
def _preload_models(sender: Any = None, **_: Any) -> None:
    """Load the models of the queues this worker consumes before it takes a task.

    A model that cannot load (bad path, out of memory) stops the worker here with
    a clear message instead of failing its first tasks. Runs in the worker's main
    process: with the threads or solo pool (one model per GPU) the tasks run there;
    a prefork pool forks after this, so its children share the loaded CPU weights.
    A prefork worker with a member on CUDA is refused first (``refuse_prefork_on_cuda``).
    """
    app = getattr(sender, "app", None)
    runtime = runtime_if_any(app)
    if app is None or runtime is None:
        return
    consumed = app.amqp.queues.consume_from  # type: ignore[union-attr]
    queues = set(consumed) if consumed else None
    refuse_prefork_on_cuda(getattr(sender, "pool_cls", None), runtime.committee, queues)
    if not runtime.settings.preload_models:
        return
    try:
        loaded = runtime.preload(queues)
    except Exception as error:
        message = f"peerblend: cannot load the models for queues {sorted(queues or [])}: {error}"
        log.critical(message)
        raise SystemExit(message) from error
    log.info("peerblend: models ready for %s", ", ".join(loaded) or "no member (control worker)")


def refuse_prefork_on_cuda(pool: Any, committee: Committee, queues: set[str] | None) -> None:
    """Stop a prefork worker whose queues (all when None) hold a member on CUDA, before any model loads.

    A CUDA context does not survive a fork: with models loaded in the main process, every
    child's first CUDA call fails. ``pool``: the worker's pool, a name or class (``-P``).
    """
    on_cuda = [m.name for m in committee.members if (queues is None or m.queue in queues) and _on_cuda(m)]
    if on_cuda and _is_prefork(pool):
        message = (
            f"peerblend: members {', '.join(on_cuda)} run on CUDA, which a prefork pool cannot fork: "
            "start this worker with -P threads"
        )
        log.critical(message)
        raise SystemExit(message)


def _on_cuda(member: Member) -> bool:
    return member.device.startswith("cuda") or member.options.get("device_map") is not None


def _is_prefork(pool: Any) -> bool:
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    implementation = get_implementation(pool or "prefork")  # Celery's default pool
    return isinstance(implementation, type) and issubclass(implementation, TaskPool)


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """A forked pool child must not share the parent's database connections."""
    reset_engines()


_settings = Settings()
app = create_app(_settings, committee_from_settings(_settings))
