"""``peerblend evaluate export``: the blind human judgements (``/evaluate``) as CSV; and their
section of ``peerblend report``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.service.settings import Settings
from workers.cli_args import console

if TYPE_CHECKING:
    from pipeline.service.store import Store


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
    from pipeline.evaluation.human import render_csv
    from pipeline.service.store import Store

    judged = Store.at(Settings().database).judged(args.runs)
    text = render_csv(judged)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    console.print(f"{len(judged)} judgement(s) written to {args.out}")
    return 0


def human_section(store: Store, runs: Sequence[str]) -> str:
    """The report's Markdown on the blind judgements of pairs of ``runs`` ("" when there are none)."""
    from pipeline.evaluation.human import render_markdown, win_rates

    lines = render_markdown(win_rates(store.judged(runs)))
    return "\n".join(["", *lines]) if lines else ""
