"""What the ``peerblend`` commands share: the console, argparse types, the run options."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from pipeline.plan import DEFAULT_METHOD, METHODS
from pipeline.service.settings import Settings
from workers.runtime import runtime_of

console = Console()
errors = Console(stderr=True)


def run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", default=DEFAULT_METHOD, help=f"{', '.join(METHODS)} (default: {DEFAULT_METHOD})"
    )
    parser.add_argument("--policy", default="full", help="full (default), p1, p2, p3 or learned-route")
    parser.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="1: take the best candidate; more: the aggregator fuses the best K (default: committee's)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=1800.0,
        help="seconds to wait: for the whole conversation (submit, demo), for each turn (replay)",
    )


def run_pair(text: str) -> tuple[str, str]:
    """An argparse type: ``RUN:BASELINE``."""
    run, sep, baseline = text.partition(":")
    if not (sep and run.strip() and baseline.strip()):
        raise argparse.ArgumentTypeError(f"expected RUN:BASELINE, got {text!r}")
    return run.strip(), baseline.strip()


def names(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated names, at least one."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def count(least: int) -> Any:
    """An argparse type: an integer of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def preload_if_embedded(client: Any, settings: Settings) -> None:
    """In embedded mode, load the models before the first turn so its timings are not loading time."""
    if settings.embedded:
        with console.status("loading the committee's models (the first run converts them: ~1 min)"):
            runtime_of(client.app).preload()
