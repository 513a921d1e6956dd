"""What a turn will do: its method, who answers, who reviews, how the answer is chosen.

Methods, each declared in its own module (``pipeline.method.Method``) and registered here:
- ``peer`` (pipeline/peer.py): the committee reviews itself; Borda count over the ballots.
- ``pairwise`` (pipeline/pairwise.py): the LLM-Blender baseline; a judge compares every
  ordered pair of candidates (N(N-1) judgements) and "max logits" ranks them.
- ``single:<member>`` (pipeline/single.py): one member answers alone (a baseline; no review).

``top_k`` = 1 takes the best candidate; ``top_k`` > 1 has the committee's
aggregator fuse the best ``top_k`` (fewer if fewer are usable): pipeline/fusion.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline import fusion
from pipeline.committee import Committee
from pipeline.errors import InputError
from pipeline.method import Method
from pipeline.pairwise import PAIRWISE
from pipeline.peer import PEER
from pipeline.policy import Policy, TurnRoles, check_policy
from pipeline.records import TurnContext
from pipeline.single import SINGLE
from pipeline.wire import json_of, record_of

# The registry of methods: the only place that lists them. Their order is also the order in which
# the router looks for a review task's member (``Method.queue_kwarg``).
VARIANTS: dict[str, Method] = {m.name: m for m in (PEER, PAIRWISE, SINGLE)}
METHODS = tuple(m.shown for m in VARIANTS.values())
DEFAULT_METHOD = PEER.name


def method_named(method: str) -> Method | None:
    """The variant a method name runs ("peer", "single:<member>", ...); None for an unknown name."""
    name, colon, _ = method.partition(":")
    found = VARIANTS.get(name)
    return found if found is not None and bool(colon) == found.takes_member else None


def is_ballot(review: Mapping[str, Any]) -> bool:
    """Whether a stored review row (``db.runs.run_records``) is a ballot over its turn's candidates.

    A method whose rows are other records (``Method.stores_ballots`` false: pairwise's judgement
    matrix) stores them under its own name; a ballot names its review method ("ranking", ...).
    """
    variant = VARIANTS.get(str(review["method"]))
    return variant is None or variant.stores_ballots


MAX_RUN_NAME = 100


class RunRequest(BaseModel):
    """A run's settings as a caller hands them in, before the committee is consulted: strict types
    (no coercion: ``top_k=True`` or ``"2"`` is refused, not read as 1 or 2)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    method: Annotated[str, Field(min_length=1, max_length=200)]
    policy: Annotated[str, Field(min_length=1, max_length=20)]
    top_k: Annotated[int, Field(ge=1, le=1000)] | None = None


def _problems(error: ValidationError) -> str:
    """Pydantic's errors as "field: what is wrong" (never echoing the input, which may be huge)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors())


def check_run_name(run: object) -> str | None:
    """A replay run's name: None, or a short printable string."""
    if run is None:
        return None
    if not isinstance(run, str):
        raise InputError(f"run must be a string (a run name), got {type(run).__name__}")
    if not 1 <= len(run) <= MAX_RUN_NAME or not run.isprintable() or run != run.strip():
        raise InputError(
            f"run name must be 1 to {MAX_RUN_NAME} printable characters without surrounding spaces, "
            f"got {len(run)} characters"
        )
    return run


@dataclass(frozen=True)
class RunConfig:
    """How every turn of a conversation is run, fixed at submit time."""

    method: str = DEFAULT_METHOD
    policy: Policy = "full"
    top_k: int = 1
    live: bool = False  # a live conversation: its length is unknown, each question is sent as asked

    def to_json(self) -> dict[str, Any]:
        return json_of(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunConfig:
        return record_of(cls, data)

    @property
    def variant(self) -> Method:
        """Its method, which the layers ask what to run, decide and store (``pipeline.method``)."""
        found = method_named(self.method)
        if found is None:
            raise InputError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        return found

    @property
    def fuses(self) -> bool:
        return self.top_k > 1 and self.variant.fusable

    @property
    def keeps_state(self) -> bool:
        """Whether its turns are decided from stored policy state (p1, p2, p3; not one member alone)."""
        return self.variant.keeps_state and self.policy != "full"


def check_run(committee: Committee, *, method: object, policy: object, top_k: object) -> RunConfig:
    """Refuse an unknown method, policy or member, or fusion without an aggregator, before anything runs.

    ``top_k`` is at most the committee's number of generators (None: the committee's).
    """
    if isinstance(top_k, int) and not isinstance(top_k, bool) and top_k < 1:
        shown = str(top_k) if top_k > -(10**9) else "a large negative number"
        raise InputError(f"top_k must be a positive integer, got {shown}")
    try:
        request = RunRequest(method=method, policy=policy, top_k=top_k)  # type: ignore[arg-type]
    except ValidationError as error:
        raise InputError(f"run settings: {_problems(error)}") from None
    method = request.method
    checked = check_policy(request.policy)
    k = committee.top_k if request.top_k is None else request.top_k
    if k > len(committee.generators):
        raise InputError(f"top_k={k} is more than the committee's {len(committee.generators)} generators")
    variant = method_named(method)
    if variant is None:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    run = RunConfig(method=method, policy=checked, top_k=k)
    fusion.check(committee, top_k=k, fuses=run.fuses)
    variant.check(committee, method, checked)
    return run


@dataclass(frozen=True)
class TurnPlan:
    """A turn to send. ``review_groups``: the turn's reviewers by judgement key
    (``pipeline.aggregate.review_groups``), one review task each; empty: one per reviewer."""

    context: TurnContext
    run: RunConfig
    roles: TurnRoles
    review_groups: tuple[tuple[str, ...], ...] = ()

    @property
    def generators(self) -> tuple[str, ...]:
        return self.roles.generators

    @property
    def reviewers(self) -> tuple[str, ...]:
        return self.roles.reviewers

    @property
    def reviews(self) -> tuple[tuple[str, ...], ...]:
        """One entry per review task: the reviewers it is cast for, the first of them reviewing."""
        return self.review_groups or tuple((r,) for r in self.reviewers)


def plan_turn(committee: Committee, context: TurnContext, run: RunConfig, roles: TurnRoles) -> TurnPlan:
    """The turn to send, its reviewers grouped as its method asks (``Method.review_groups``)."""
    return TurnPlan(context, run, roles, run.variant.review_groups(committee, roles.reviewers))
