"""The cached shortlist at work: policy decisions read from and written to a PolicyStore.

``begin`` opens a conversation's state (its first turn), ``advance`` folds in each
stored turn; both return the next turn's decision. ``resume`` decides a turn a client
sent (the worker that launches it calls it): the first turn of a new conversation, a
live conversation's next question, or a resent turn. The ``full`` policy and
single-member runs keep no state at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.committee import Committee
from pipeline.errors import InputError
from pipeline.plan import RunConfig
from pipeline.policy import (
    PolicyState,
    PolicyStore,
    TurnRoles,
    add_scores,
    after_turn,
    p3_ranks,
    start_conversation,
    turn_scores,
    who_works,
)
from pipeline.store_keys import conversation_key, counter_key, cycle_key


def _q(run: RunConfig, n_turns: int) -> int | None:
    """The conversation's number of turns as the policies see it: None for a live one (unknown)."""
    return None if run.live else n_turns


def _for_method(committee: Committee, run: RunConfig, decision: TurnRoles) -> TurnRoles:
    return run.variant.who_works(committee, decision)


def _fixed(committee: Committee, run: RunConfig, n_turns: int) -> TurnRoles | None:
    """The decision of a run that keeps no state (its method fixes it, or full ranking); else None."""
    fixed = run.variant.fixed(run.method)
    if fixed is not None:
        return fixed
    if run.policy == "full":
        return _for_method(committee, run, who_works("full", committee, PolicyState(), 0, n_turns))
    return None


def _required(store: PolicyStore | None, run: RunConfig) -> PolicyStore:
    if store is None:
        raise InputError(f"policy {run.policy!r} keeps state, but this client has no policy store")
    return store


def begin(
    store: PolicyStore | None,
    committee: Committee,
    run: RunConfig,
    *,
    conversation_id: str,
    n_turns: int,
    routed: Sequence[str] = (),
) -> TurnRoles:
    """Open a conversation's policy state; the decision for its first turn. ``routed``: for
    learned-route, the members that answer alone (``pipeline.learned.route``)."""
    fixed = _fixed(committee, run, n_turns)
    if fixed is not None:
        return fixed
    store = _required(store, run)
    ordinal, cycle_scores = 0, None
    if run.policy == "p3":
        counted = store.update(
            counter_key(committee.name, run.policy), lambda v: {"count": (v or {}).get("count", 0) + 1}
        )
        ordinal = counted["count"] - 1
        cycle_scores = (store.get(cycle_key(committee.name, run.policy, ordinal)) or {}).get("scores")
    state = start_conversation(
        run.policy, committee, ordinal=ordinal, cycle_scores=cycle_scores, top_k=run.top_k, routed=routed
    )
    store.update(conversation_key(committee.name, run.policy, conversation_id), lambda _: state.to_json())
    return _for_method(
        committee, run, who_works(run.policy, committee, state, 0, _q(run, n_turns), top_k=run.top_k)
    )


def advance(
    store: PolicyStore | None,
    committee: Committee,
    run: RunConfig,
    decision: TurnRoles,
    *,
    conversation_id: str,
    turn_index: int,
    n_turns: int,
    ranking: Sequence[str],
    scores: Mapping[str, float],
    ballots: int,
) -> TurnRoles | None:
    """Fold a finished turn into the state; the next turn's decision (None after the last).

    A redelivered turn (already folded in) changes nothing.
    """
    last = run.live or turn_index + 1 >= n_turns  # a live conversation's next turn is sent when asked
    fixed = _fixed(committee, run, n_turns)
    if fixed is not None:
        return None if last else fixed
    store = _required(store, run)
    contribution = turn_scores(scores, ballots, decision.generators, signed=run.variant.signed_scores)

    def fold(value: dict[str, Any] | None) -> dict[str, Any]:
        # Pure in its input: the store may call it again after a lost race.
        state = PolicyState.from_json(value or {})
        if state.applied_turns != turn_index:
            return state.to_json()  # folded before (a redelivered turn)
        return after_turn(
            run.policy,
            committee,
            state,
            decision,
            turn_index=turn_index,
            n_turns=_q(run, n_turns),
            ranking=ranking,
            contribution=contribution,
            top_k=run.top_k,
        ).to_json()

    state = PolicyState.from_json(
        store.update(conversation_key(committee.name, run.policy, conversation_id), fold)
    )
    if run.policy == "p3" and decision.ranked and p3_ranks(state.ordinal):
        # Folded by its own record of which turns it holds: idempotent under retries and
        # redeliveries, even one that crashed between the two updates.
        store.update(
            cycle_key(committee.name, run.policy, state.ordinal),
            lambda v: fold_cycle(v, f"{conversation_id}/{turn_index}", contribution),
        )
    if last:
        return None
    following = who_works(run.policy, committee, state, turn_index + 1, _q(run, n_turns), top_k=run.top_k)
    return _for_method(committee, run, following)


def fold_cycle(value: dict[str, Any] | None, turn: str, contribution: Mapping[str, float]) -> dict[str, Any]:
    """Add one ranked turn's scores to a p3 cycle once: ``turn`` ("conversation/turn") is remembered."""
    value = value or {}
    folded = list(value.get("folded", []))
    if turn in folded:
        return value
    return {"scores": add_scores(value.get("scores", {}), contribution), "folded": [*folded, turn]}


@dataclass(frozen=True)
class StoredOutcome:
    """What a stored turn contributes to its conversation's policy state."""

    turn_index: int
    decision: Mapping[str, Any]  # the stored decision record (TurnRoles fields, ballots used)
    ranking: Sequence[str]
    scores: Mapping[str, float]


def resume(
    store: PolicyStore | None,
    committee: Committee,
    run: RunConfig,
    *,
    conversation_id: str,
    turn_index: int,
    n_turns: int,
    stored: Sequence[StoredOutcome] = (),
    routed: Sequence[str] = (),
) -> TurnRoles:
    """The decision for a turn sent by a client: a new conversation's first turn, a live
    conversation's next question, or a turn that was never run (a replay interrupted
    before it, a lost message).

    ``stored``: the conversation's stored turns. Any of them not yet folded into the
    policy state (a worker died between storing a turn and folding it in) is folded
    first, so the turn runs under exactly the state it would have had: the database's
    stored turns are the truth the state is rebuilt from. A first turn whose
    conversation has no state yet opens it (``begin``, with ``routed``).
    """
    fixed = _fixed(committee, run, n_turns)
    if fixed is not None:
        return fixed
    for done in sorted(stored, key=lambda d: d.turn_index):
        advance(
            store,
            committee,
            run,
            TurnRoles.from_json(done.decision),
            conversation_id=conversation_id,
            turn_index=done.turn_index,
            n_turns=n_turns,
            ranking=done.ranking,
            scores=done.scores,
            ballots=int(done.decision.get("ballots", 0)),
        )
    value = _required(store, run).get(conversation_key(committee.name, run.policy, conversation_id))
    if value is None and turn_index == 0:
        return begin(store, committee, run, conversation_id=conversation_id, n_turns=n_turns, routed=routed)
    state = PolicyState.from_json(value or {})
    return _for_method(
        committee,
        run,
        who_works(run.policy, committee, state, turn_index, _q(run, n_turns), top_k=run.top_k),
    )
