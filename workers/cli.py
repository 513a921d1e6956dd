"""The ``peerblend`` command: demo, submit, list, show, resume, serve, recover, replay, report, calibrate,
rerank, reviewers, data, db."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.conversation import Conversation, conversation_from_json
from pipeline.errors import BlendError, ConfigError, InputError, ServiceUnavailable
from pipeline.service.settings import Settings
from workers.cli_args import console, count, errors, preload_if_embedded, run_options, seconds
from workers.cli_data import add_data_commands
from workers.cli_evaluation import add_evaluation_commands

# Exit codes: what went wrong, for scripts (argparse's usage errors exit with 2).
EXIT_FAILED = 1  # the work ran but did not finish (a turn failed or timed out)
EXIT_USAGE = 2
EXIT_INPUT = 3  # a conversation, dataset, committee file or setting is malformed
EXIT_UNAVAILABLE = 4  # Redis or the database cannot be reached
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from local packages only
    args = _parser().parse_args(argv)
    if not args.verbose:
        _quiet()
    try:
        return int(args.command(args) or 0)
    except KeyboardInterrupt:
        errors.print("interrupted; stored turns are kept")
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - every error a user can meet becomes one or two lines
        message, code = _explain(error)
        errors.print(f"[bold red]error:[/] {message}", highlight=False)
        return code


def _quiet() -> None:
    """The blend and little else: no progress bars, no library warnings (``-v`` shows them)."""
    import logging
    import warnings

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for noisy in ("kombu.connection", "celery", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _explain(error: Exception) -> tuple[str, int]:
    """One line a user can act on, and the exit code; a bug (anything else) is re-raised."""
    from kombu.exceptions import OperationalError as BrokerError
    from pydantic import ValidationError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from sqlalchemy.exc import DBAPIError, OperationalError

    from workers.services import reason

    if isinstance(error, (InputError, ConfigError)):
        return str(error), EXIT_INPUT
    if isinstance(error, ServiceUnavailable):
        return str(error), EXIT_UNAVAILABLE
    if isinstance(error, BlendError):
        return str(error), EXIT_FAILED
    if isinstance(error, ValidationError):  # a PEERBLEND_* setting of the wrong type
        fields = "; ".join(
            f"PEERBLEND_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors()
        )
        return f"bad setting: {fields}", EXIT_INPUT
    if isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    ):
        return f"the database became unreachable: {reason(error)}", EXIT_UNAVAILABLE
    if isinstance(error, (RedisConnectionError, BrokerError, ConnectionError)):
        return f"the broker became unreachable: {reason(error)}", EXIT_UNAVAILABLE
    raise error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peerblend", description=__doc__)
    parser.add_argument("--version", action="version", version=f"peerblend {_version()}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show libraries' warnings and progress bars"
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="blend one real conversation with the offline committee")
    demo.add_argument("--dataset", type=Path, help="a dataset file (ConvQuestions, CoQA, QuAC, DoQA, JSONL)")
    demo.add_argument("--index", type=count(0), default=0, help="which conversation of the dataset")
    demo.add_argument("--turns", type=count(1), default=3, help="how many turns to blend (default 3)")
    run_options(demo)
    demo.set_defaults(command=_demo)

    submit = sub.add_parser("submit", help="blend a conversation from a JSON file")
    submit.add_argument("file", type=Path, help='JSON: {"turns": ["question", ...]} or a list of questions')
    submit.add_argument("--no-wait", action="store_true", help="print the conversation id and return")
    submit.add_argument("--json", action="store_true", help="print the stored conversation as JSON")
    run_options(submit)
    submit.set_defaults(command=_submit)

    _stored_conversation_commands(sub)
    add_evaluation_commands(sub)
    add_data_commands(sub)

    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"], help="create or migrate the schema (Alembic)")
    db.set_defaults(command=_db)
    return parser


def _stored_conversation_commands(sub: Any) -> None:
    """list, resume, show, serve, recover: commands about stored conversations."""
    listing = sub.add_parser("list", help="stored conversations, newest first")
    listing.add_argument("--run", default=None, help="only this replay run")
    listing.add_argument("--status", choices=["finished", "running"], default=None)
    listing.add_argument("--limit", type=count(1), default=25, help="at most this many (default 25)")
    listing.add_argument("--json", action="store_true", help="JSON lines, one conversation each")
    listing.set_defaults(command=_list)

    resume = sub.add_parser("resume", help="send a stored conversation's first unfinished turn again")
    resume.add_argument("id", help="conversation id")
    resume.add_argument("--timeout", type=seconds, default=1800.0, help="seconds to wait for the rest")
    resume.add_argument("--json", action="store_true", help="print the stored conversation as JSON")
    resume.set_defaults(command=_resume)

    show = sub.add_parser("show", help="print a stored conversation")
    show.add_argument("id", help="conversation id printed by submit")
    show.add_argument(
        "--json", action="store_true", help="everything stored, as JSON (as client.fetch returns it)"
    )
    show.set_defaults(command=_show)

    serve = sub.add_parser("serve", help="an OpenAI-compatible chat endpoint whose model is the blend")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=count(1), default=8000, help="port (default 8000)")
    serve.add_argument(
        "--no-access-log", action="store_true", help="no line per request (method, path, status, ms, turn)"
    )
    serve.set_defaults(command=_serve)

    recover = sub.add_parser(
        "recover", help="resend the stalled turn of every conversation with no progress for too long"
    )
    recover.add_argument(
        "--older-than",
        type=seconds,
        default=None,
        help="seconds without progress (default: the longest a task may take, see PEERBLEND_STORE_RETRY_S)",
    )
    recover.add_argument(
        "--timeout",
        type=seconds,
        default=1800.0,
        help="embedded mode: seconds to wait for the resent turns to finish (default 1800)",
    )
    recover.set_defaults(command=_recover)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("peerblend")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _demo(args: argparse.Namespace) -> int:
    conversation = _demo_conversation(args.dataset, args.index)
    questions = conversation.questions[: max(1, args.turns)]
    conversation = Conversation(
        questions, id=conversation.id, passage=conversation.passage, source=conversation.source
    )
    return _blend(conversation, args, preload=True)


def _demo_conversation(dataset: Path | None, index: int) -> Conversation:
    if dataset is None:
        text = resources.files("pipeline").joinpath("data/demo_conversation.json").read_text()
        return conversation_from_json(json.loads(text), where="demo conversation")
    from pipeline.evaluation.datasets import load_conversations

    conversations = load_conversations(dataset, limit=index + 1)
    if index >= len(conversations):
        raise InputError(f"{dataset} has {len(conversations)} conversations; --index {index} is out of range")
    return conversations[index]


def _submit(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.file.read_text())
    except OSError as error:
        raise InputError(f"cannot read {args.file}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{args.file} is not valid JSON: {error}") from None
    return _blend(conversation_from_json(data, where=str(args.file)), args, preload=False)


def _blend(conversation: Conversation, args: argparse.Namespace, *, preload: bool) -> int:
    from workers.embedded import connect

    settings = Settings()
    with connect(settings) as client:
        if preload:
            preload_if_embedded(client, settings)
        handle = client.submit(conversation, method=args.method, policy=args.policy, top_k=args.top_k)
        if getattr(args, "no_wait", False):
            print(handle.conversation_id)
            if settings.embedded:
                errors.print(
                    "note: embedded mode runs turns only while a peerblend process is up; "
                    f"`peerblend resume {handle.conversation_id}` finishes it later"
                )
            return 0
        return _follow(client, handle, args)


def _follow(client: Any, handle: Any, args: argparse.Namespace) -> int:
    """Print each turn as it is stored (or, with --json, the whole conversation at the end)."""
    from workers.report import print_turn

    as_json = getattr(args, "json", False)
    if not as_json:
        console.print(
            f"conversation [bold]{handle.conversation_id}[/] ({handle.n_turns} turns, committee "
            f"{client.committee.name})"
        )
    for outcome in handle.turns(timeout=args.timeout):
        if not as_json:
            print_turn(console, client.fetch(handle.conversation_id).turns[outcome.turn_index])
    if as_json:
        print(_json(_stored_json(client.fetch(handle.conversation_id))))
    return 0


def _stored_json(stored: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(stored), "finished": stored.finished}


def _show(args: argparse.Namespace) -> int:
    from workers.embedded import connect
    from workers.report import conversation_header, print_turn

    with connect(Settings()) as client:
        stored = client.fetch(args.id)
        if args.json:
            print(_json(_stored_json(stored)))
            return 0
        state = client.store.state(stored.id)  # whether it is live: said as the pages say it
        console.print(conversation_header(stored, live=state is not None and state.run.live))
        for turn in stored.turns:
            print_turn(console, turn)
    return 0


def _list(args: argparse.Namespace) -> int:
    from pipeline.service.store import Store
    from workers.services import check_services

    settings = Settings()
    check_services(settings)
    rows, total = Store.at(settings.database).list_conversations(
        run=args.run, status=args.status, limit=args.limit
    )
    for row, stored, first in rows:
        item = {
            "id": row.id,
            "created_at": row.created_at.isoformat(),
            "committee": row.committee,
            "method": row.method,
            "policy": row.policy,
            "run": row.run,
            "turns": row.n_turns,
            "stored": stored,
            "first_question": first,
        }
        if args.json:
            print(_json(item))
        else:
            console.print(
                f"{row.id}  {row.created_at:%Y-%m-%d %H:%M}  {stored}/{row.n_turns} turns  {row.method}/{row.policy}"
                f"  {row.run or '-'}  {(first or '')[:60]}",
                highlight=False,
            )
    if not args.json:
        console.print(f"{len(rows)} of {total} conversations", style="dim")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from workers.embedded import connect

    settings = Settings()
    with connect(settings) as client:
        preload_if_embedded(client, settings)
        handle = client.resume(args.id)
        return _follow(client, handle, args)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.service.settings import api_keys
    from workers.embedded import connect
    from workers.recovery import resume_unfinished
    from workers.serve import ServerOptions, create_api

    settings = Settings()
    keys = api_keys(settings)
    if settings.environment == "production" and not keys:
        raise ConfigError(
            "production needs PEERBLEND_API_KEYS (comma-separated bearer keys) for peerblend serve"
        )
    listening = _bound_socket(args.host, args.port)  # a busy port fails now, not after loading models
    with connect(settings) as client:
        preload_if_embedded(client, settings)
        if settings.embedded:  # its broker died with the last run of this process: finish its turns
            resumed = resume_unfinished(client)
            if resumed:
                console.print(f"resumed {len(resumed)} unfinished turn(s) of an earlier run")
        options = ServerOptions(
            api_keys=keys,
            turn_timeout_s=settings.turn_timeout_s,
            flower_url=settings.flower_url,
            report_dir=settings.report_dir,
            access_log=not args.no_access_log,
        )
        api = create_api(client, options)
        where = f"http://{args.host}:{args.port}"
        console.print(
            f"peerblend serving committee {client.committee.name}: pages at {where}/ , "
            f"OpenAI-compatible API at {where}/v1 (Ctrl-C stops)"
        )
        if not args.no_access_log:
            logging.basicConfig(level=logging.WARNING, format="%(message)s")
            logging.getLogger("peerblend.access").setLevel(logging.INFO)
        server = uvicorn.Server(uvicorn.Config(api, log_level="warning", access_log=False))
        server.run(sockets=[listening])
    return 0


def _bound_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) for uvicorn to serve on; ConfigError naming the port if busy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listening


def _recover(args: argparse.Namespace) -> int:
    from workers.app import task_bound_s
    from workers.embedded import connect
    from workers.recovery import finish, recover

    settings = Settings()
    with connect(settings) as client:
        older_than = (
            args.older_than if args.older_than is not None else task_bound_s(settings, client.committee)
        )
        resent = recover(client, older_than_s=older_than)
        for conversation_id, turn_index, attempt in resent:
            console.print(f"resent turn {turn_index} of {conversation_id} (attempt {attempt})")
        if settings.embedded and resent:  # its in-memory broker ends with this command: finish here
            console.print("embedded: running them to the end before exiting (Ctrl-C stops)")
            for outcome in finish(client, resent, timeout_s=args.timeout):
                console.print(f"turn {outcome.turn_index} of {outcome.conversation_id}: {outcome.status}")
    console.print(f"{len(resent)} stalled conversation(s) resent (no progress for {older_than:g} s)")
    return 0


def _db(args: argparse.Namespace) -> int:
    from db.migrate import upgrade
    from workers.services import redact_url

    settings = Settings()
    upgrade(settings.database)
    console.print(f"schema at head on {redact_url(settings.database)}")
    return 0


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
