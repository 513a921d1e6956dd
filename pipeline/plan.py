"""What a turn will do: which members generate, who reviews, select or fuse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.committee import Committee
from pipeline.errors import InputError
from pipeline.records import TurnContext

Mode = Literal["select", "fuse"]
MODES: tuple[Mode, ...] = ("select", "fuse")
POLICIES = ("full",)


@dataclass(frozen=True)
class TurnPlan:
    context: TurnContext
    generators: tuple[str, ...]
    reviewers: tuple[str, ...]  # empty: no review stage this turn
    mode: Mode = "select"
    policy: str = "full"


def check_mode(mode: str, committee: Committee) -> Mode:
    """Refuse an unknown mode, or fusion without an aggregator, before anything runs."""
    if mode not in MODES:
        raise InputError(f"unknown method {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "fuse" and committee.aggregator is None:
        raise InputError(f"method 'fuse' needs an aggregator; committee {committee.name!r} names none")
    return mode  # type: ignore[return-value]


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InputError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return policy


def plan_turn(committee: Committee, context: TurnContext, *, mode: Mode, policy: str = "full") -> TurnPlan:
    """The full-ranking plan: every generator answers, every reviewer ranks."""
    return TurnPlan(
        context=context,
        generators=tuple(committee.generators),
        reviewers=tuple(committee.reviewers),
        mode=mode,
        policy=check_policy(policy),
    )
