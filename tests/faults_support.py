"""Fault injection for tests/test_faults.py.

Private Redis and PostgreSQL servers that a test may kill and restart (the shared
ones on 6379 and 5432 are never touched), real ``celery worker`` processes, the
``peerblend`` CLI as a subprocess, and the check that every turn is stored
exactly once with the policy decisions it would have had without the fault.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil
import redis.exceptions
from kombu.exceptions import KombuError
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine

from db.engine import get_engine
from db.migrate import upgrade
from pipeline.committee import Committee, Member
from pipeline.service.client import BlendClient
from pipeline.service.settings import Settings
from workers.app import create_app
from workers.runtime import runtime_of

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# What a client sees for a while after its Redis went away and came back (stale connections).
BROKER_ERRORS = (redis.exceptions.RedisError, KombuError, OSError)
T = TypeVar("T")


# -- waiting -----------------------------------------------------------------------------------


def wait_for(
    what: str,
    check: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> T:
    """``check()``'s first truthy value, polled every ``interval`` s; TimeoutError after ``timeout`` s.

    ``tolerate``: exceptions that count as "not yet" (a server that is down).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except tolerate:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def interruptible() -> None:
    """In a child before exec: SIGINT back to its default, so Ctrl-C (SIGINT) reaches it as in a
    terminal even when the test run itself ignores SIGINT (a shell starts background jobs so)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_process(process: subprocess.Popen[Any], *, grace: float = 10.0) -> None:
    """Stop a process this test started (SIGTERM, then SIGKILL) and the children it forked, by pid."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for child in children:  # pool children outlive a parent killed with SIGKILL
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


# -- private servers ---------------------------------------------------------------------------


class RedisServer:
    """A redis-server of this test's own, without persistence: a restart forgets everything."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self._log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - closed in stop
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
        ]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(f"redis-server on port {self.port}", self.ping, timeout=10)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: whatever it held (queues, chord counters, results) is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    stop = kill


class PostgresCluster:
    """A PostgreSQL 15 cluster of this test's own, in a temporary folder owned by ``postgres``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="peerblend-faults-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()

    def _as_postgres(self, *command: str, timeout: float = 60) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        admin = get_engine(self.url("postgres")).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        get_engine(self.url("postgres")).dispose()
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # the postmaster this cluster's pg_ctl started
        shutil.rmtree(self.root, ignore_errors=True)


# -- committees and datasets -------------------------------------------------------------------


def ranked_committee(
    name: str,
    queue_prefix: str,
    n: int = 3,
    *,
    options: dict[str, dict[str, Any]] | None = None,
    timeout_s: dict[str, float] | None = None,
) -> Committee:
    """``n`` scripted members m0..m(n-1), every one reviewing by likelihood, every reviewer
    preferring model0 > model1 > ...: the same rankings, and so the same p1 exclusions, in every run.

    (The scripted ranking reviewers shuffle labels with a seed derived from the conversation
    id, so their ballots differ from run to run: none here.)
    """
    options, timeout_s = options or {}, timeout_s or {}
    scores = {f"model{i}": round(-0.1 * (i + 1), 2) for i in range(n)}
    members = tuple(
        Member(
            name=f"m{i}",
            backend="scripted",
            model=f"model{i}",
            queue=f"{queue_prefix}peerblend.m{i}",
            review_method="likelihood",
            timeout_s=timeout_s.get(f"m{i}"),
            options={"scores": scores, **options.get(f"m{i}", {})},
        )
        for i in range(n)
    )
    return Committee(name=name, members=members)


Decision = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # generators, reviewers, excluded


def p1_decisions(committee: Committee, n_turns: int) -> list[Decision]:
    """What p1 decides for each turn with ``ranked_committee``'s fixed preference (README: everyone
    for the first ceil(q/2) turns, then the bottom floor(N/2) sit out; at least two reviewers)."""
    everyone = tuple(committee.generators)
    keep = everyone[: len(everyone) - len(everyone) // 2]
    later = (keep, keep, everyone[len(keep) :])
    return [(everyone, everyone, ()) if t < math.ceil(n_turns / 2) else later for t in range(n_turns)]


def decision_of(stored: dict[str, Any]) -> Decision:
    return tuple(stored["generators"]), tuple(stored["reviewers"]), tuple(stored["excluded"])  # type: ignore[return-value]


def write_dataset(path: Path, tag: str, conversations: int, turns: int) -> Path:
    """A JSONL dataset (pipeline/evaluation/datasets.py); every question names its conversation and turn."""
    lines = [
        json.dumps(
            {
                "id": f"c{c}",
                "passage": f"Passage of conversation {c}.",
                "turns": [{"question": f"{tag} c{c} q{t}?", "answers": [f"a{t}"]} for t in range(turns)],
            }
        )
        for c in range(conversations)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- workers and the CLI -----------------------------------------------------------------------


@dataclass
class Worker:
    """One ``celery worker`` process (prefork) consuming every queue of a deployment."""

    nodename: str
    process: subprocess.Popen[bytes]
    log: Path

    def pool_children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()

    def kill_all(self) -> None:
        """SIGKILL the main process, then its pool children (a live parent would replace them)."""
        children = self.pool_children()
        self.process.kill()
        self.process.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(children, timeout=10)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


class Deployment:
    """A committee served by real worker processes on the given Redis and PostgreSQL."""

    def __init__(
        self,
        home: Path,
        committee: Committee,
        *,
        tag: str,
        broker: str,
        backend: str,
        database: str,
    ) -> None:
        self.home, self.committee, self.tag = home, committee, tag
        committee_file = home / "committee.json"
        committee_file.write_text(committee.model_dump_json())
        self.env = {
            **os.environ,
            "PEERBLEND_BROKER_URL": broker,
            "PEERBLEND_RESULT_BACKEND": backend,
            "PEERBLEND_DATABASE_URL": database,
            "PEERBLEND_COMMITTEE_FILE": str(committee_file),
            "PEERBLEND_DEFAULT_QUEUE": f"f{tag}.peerblend",
            "PEERBLEND_HOME": str(home),
            "COLUMNS": "200",  # the CLI's lines unwrapped
        }
        self.settings = Settings(
            **{
                k.removeprefix("PEERBLEND_").lower(): v
                for k, v in self.env.items()
                if k.startswith("PEERBLEND_")
            }
        )
        upgrade(self.settings.database)
        self.app = create_app(self.settings, committee)
        self.engine: Engine = get_engine(self.settings.database)
        self.client = BlendClient(
            self.app, self.engine, committee, policy_store=runtime_of(self.app).policy_store
        )
        self.workers: list[Worker] = []
        self._processes: list[subprocess.Popen[Any]] = []
        self._logs: list[IO[bytes]] = []

    def start_worker(self, concurrency: int = 3) -> Worker:
        nodename = f"w{len(self.workers)}-{self.tag}@faults"
        log_path = self.home / f"worker{len(self.workers)}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        queues = [self.settings.default_queue, *self.committee.queues]
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-Q",
            ",".join(queues),
            "-n",
            nodename,
            "-c",
            str(concurrency),
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ]
        process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self._processes.append(process)
        worker = Worker(nodename, process, log_path)
        self.workers.append(worker)

        def ready() -> bool:
            assert process.poll() is None, f"worker {nodename} exited:\n{worker.text()[-3000:]}"
            return self.answers(worker)

        wait_for(f"worker {nodename} ready", ready, timeout=60, interval=0, tolerate=BROKER_ERRORS)
        return worker

    def answers(self, worker: Worker) -> bool:
        """Whether the worker answers a ping now."""
        replies = self.app.control.ping(destination=[worker.nodename], timeout=0.5) or []
        return any(worker.nodename in reply for reply in replies)

    def active(self, worker: Worker) -> list[dict[str, Any]]:
        """The tasks the worker runs now, each with its ``worker_pid`` (the pool child running it)."""
        replies = self.app.control.inspect(destination=[worker.nodename], timeout=1.0).active() or {}
        return list(replies.get(worker.nodename, []))

    def peerblend(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_peerblend(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=interruptible,
        )
        self._processes.append(process)
        return process

    def conversations(self, run: str) -> dict[str, tuple[str, int]]:
        """id -> (external id, turns) of a replay run's conversations."""
        query = text("select id, external_id, n_turns from conversation where run = :run")
        with self.engine.connect() as connection:
            return {row.id: (row.external_id, row.n_turns) for row in connection.execute(query, {"run": run})}

    def close(self) -> None:
        # Submitting a canvas leaves the client subscribed to its header tasks' results; let go of
        # them while Redis is still up (collected at exit, they would retry a dead server for seconds).
        backend = self.app.backend
        for waiting in getattr(backend, "_pending_results", ()):
            for results in list(waiting.values()):
                for result in list(results.values()):
                    backend.remove_pending_result(result)
        gc.collect()
        for process in reversed(self._processes):
            stop_process(process)
        for log in self._logs:
            log.close()
        self.app.close()
        self.engine.dispose()


# -- the truth in the database -----------------------------------------------------------------


@dataclass
class Tally:
    """Rows per (conversation, turn) of a set of conversations, and what is wrong with them."""

    expected: int
    stored: int
    duplicated: int
    problems: list[str]
    decisions: dict[tuple[str, int], Decision]
    last_stored: float  # epoch seconds of the last turn_result row written (0: none)


def tally(engine: Engine, conversations: dict[str, int]) -> Tally:
    """Count ``turn_result`` and ``candidate`` rows per (conversation, turn) of ``conversations``
    (id -> number of turns): each turn must have one result and one candidate per member that
    its stored decision names as a generator, no more, no fewer."""
    ids = bindparam("ids", expanding=True)
    results_query = text(
        "select conversation_id, turn_index, decision, created_at from turn_result "
        "where conversation_id in :ids"
    ).bindparams(ids)
    candidates_query = text(
        "select conversation_id, turn_index, member from candidate where conversation_id in :ids"
    ).bindparams(ids)
    with engine.connect() as connection:
        results = list(connection.execute(results_query, {"ids": list(conversations)}))
        candidates = list(connection.execute(candidates_query, {"ids": list(conversations)}))
    expected = {(c, t) for c, n in conversations.items() for t in range(n)}
    result_rows = Counter((r.conversation_id, r.turn_index) for r in results)
    candidate_rows = Counter((c.conversation_id, c.turn_index, c.member) for c in candidates)
    decisions: dict[tuple[str, int], Decision] = {}
    for r in results:
        stored = r.decision if isinstance(r.decision, dict) else json.loads(r.decision)
        decisions[(r.conversation_id, r.turn_index)] = decision_of(stored)
    problems = [f"{k}: {n} results" for k, n in sorted(result_rows.items()) if n > 1]
    problems += [f"{k}: never stored" for k in sorted(expected - set(result_rows))]
    problems += [f"{k}: not a turn of these conversations" for k in sorted(set(result_rows) - expected)]
    twice = {(c, t) for (c, t, _), n in candidate_rows.items() if n > 1}
    problems += [f"{k}: a member's candidate stored twice" for k in sorted(twice)]
    for key, (generators, _, _) in sorted(decisions.items()):
        members = sorted(m for (c, t, m) in candidate_rows if (c, t) == key)
        if members != sorted(generators):
            problems.append(f"{key}: candidates of {members}, but the generators were {list(generators)}")
    created = [_epoch(r.created_at) for r in results]
    return Tally(
        expected=len(expected),
        stored=len(expected & set(result_rows)),
        duplicated=len({k for k, n in result_rows.items() if n > 1} | twice),
        problems=problems,
        decisions=decisions,
        last_stored=max(created, default=0.0),
    )


def _epoch(value: datetime) -> float:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)  # stored as UTC (UTCDateTime)
    return aware.timestamp()


def wait_all_stored(
    engine: Engine,
    conversations: dict[str, int],
    *,
    timeout: float,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Tally:
    """Poll until every turn of ``conversations`` has a result; the tally then."""

    def done() -> Tally | None:
        counts = tally(engine, conversations)
        return counts if counts.stored == counts.expected else None

    return wait_for("every turn stored", done, timeout=timeout, interval=0.1, tolerate=tolerate)


def run_stored_count(engine: Engine, run: str) -> int:
    query = text(
        "select count(*) from turn_result r join conversation c on c.id = r.conversation_id where c.run = :run"
    )
    with engine.connect() as connection:
        return int(connection.execute(query, {"run": run}).scalar_one())


# -- the figures -------------------------------------------------------------------------------


@dataclass
class Figures:
    scenario: str
    expected: int
    stored: int
    duplicated: int
    recovery_s: float | None  # from the fault's end to the last turn stored
    note: str = ""


FIGURES: list[Figures] = []


def record(scenario: str, counts: Tally, *, fault_end: float | None, note: str = "") -> Figures:
    """Keep (and print) a scenario's figures for the module's summary."""
    recovery = None if fault_end is None or not counts.last_stored else counts.last_stored - fault_end
    figures = Figures(scenario, counts.expected, counts.stored, counts.duplicated, recovery, note)
    FIGURES.append(figures)
    print(f"\n[faults] {_line(figures)}")
    return figures


def _line(f: Figures) -> str:
    recovery = "-" if f.recovery_s is None else f"{f.recovery_s:.1f} s"
    return (
        f"{f.scenario}: turns expected {f.expected} / stored {f.stored} / duplicated {f.duplicated}; "
        f"recovery {recovery}{'; ' + f.note if f.note else ''}"
    )


def summary() -> str:
    return "\n".join(["", "[faults] summary", *(f"  {_line(f)}" for f in FIGURES)])
