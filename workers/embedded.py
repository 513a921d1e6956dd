"""``connect()``: a BlendClient for the configured deployment.

With no broker configured (the embedded default) it starts, in this process, a
Celery worker on the memory broker that consumes every queue of the committee,
and a SQLite store; with ``PEERBLEND_BROKER_URL`` etc. set it only connects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from celery.contrib.testing.worker import start_worker

from db.engine import get_engine
from db.migrate import upgrade
from pipeline.committee import Committee
from pipeline.conversation import Limits
from pipeline.service.client import BlendClient
from pipeline.service.settings import Settings
from workers.app import create_app
from workers.broker_watch import broker_watch
from workers.consumers import QueueCheck
from workers.runtime import committee_from_settings, runtime_of
from workers.services import check_services


@contextmanager
def connect(settings: Settings | None = None, committee: Committee | None = None) -> Iterator[BlendClient]:
    settings = settings or Settings()
    committee = committee or committee_from_settings(settings)
    check_services(settings)  # fail fast, naming the service, before anything is sent
    app = create_app(settings, committee)
    upgrade(settings.database)
    with ExitStack() as stack:
        if settings.embedded:
            queues = sorted({settings.default_queue, *committee.queues})
            # Celery's in-process worker (celery.contrib.testing.worker): a WorkController on a
            # thread of this process, started and stopped as a context. ``app.Worker().start()``,
            # the command's own path, takes over the main thread and installs signal handlers,
            # which a library call (a notebook, a server's process) must not do; this helper is
            # the one public API Celery gives for running a worker beside other code.
            stack.enter_context(
                start_worker(
                    app,
                    pool="threads",
                    concurrency=settings.embedded_concurrency,
                    queues=queues,
                    perform_ping_check=False,
                    shutdown_timeout=30.0,
                    loglevel="WARNING",
                )
            )
        runtime = runtime_of(app)
        limits = Limits(settings.max_question_chars, settings.max_passage_chars, settings.max_turns)
        check = None if settings.embedded else QueueCheck(app, committee).check
        watch = broker_watch(settings.broker_url)
        yield BlendClient(
            app,
            get_engine(settings.database),
            committee,
            policy_store=runtime.policy_store,
            limits=limits,
            queue_check=check,
            broker_epoch=watch.epoch if watch is not None else None,
        )
