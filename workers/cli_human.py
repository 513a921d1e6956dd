"""``peerblend evaluate export``: the blind human judgements (``/evaluate``) as CSV; and their
section of ``peerblend report``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.service.settings import Settings
from workers.cli_args import console


def add_evaluate_command(sub: Any) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="blind human judgements of two runs' answers (collected at /evaluate)"
    )
    actions = evaluate.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write every judgement as CSV (one line each)")
    export.add_argument("--out", type=Path, default=None, help="the CSV file (default: standard output)")
    export.add_argument(
        "--runs", nargs="+", default=None, metavar="RUN", help="only pairs of two of these runs"
    )
    export.set_defaults(command=_export)


def _export(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from db.engine import get_engine
    from pipeline.evaluation.human import render_csv
    from workers import judging

    with Session(get_engine(Settings().database)) as session:
        judged = judging.all_judged(session=session, runs=args.runs)
    text = render_csv(judged)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    console.print(f"{len(judged)} judgement(s) written to {args.out}")
    return 0


def human_section(session: Any, runs: Sequence[str]) -> str:
    """The report's Markdown on the blind judgements of pairs of ``runs`` ("" when there are none)."""
    from sqlalchemy import inspect

    from pipeline.evaluation.human import render_markdown, win_rates
    from workers import judging

    if not inspect(session.get_bind()).has_table("human_judgement"):  # a schema before 0008: none yet
        return ""
    lines = render_markdown(win_rates(judging.all_judged(session=session, runs=runs)))
    return "\n".join(["", *lines]) if lines else ""
