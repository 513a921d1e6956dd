"""Finishing a turn: read state, decide (pure), fuse if asked, store once, advance the policy, send on."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from celery import Celery
from sqlmodel import Session

from db import crud
from db.engine import get_engine
from db.retry import with_retries
from pipeline.aggregate import judgement_keys
from pipeline.context import Exchange
from pipeline.fusion import fuse
from pipeline.learned import stored_learned
from pipeline.outcomes import OUTCOME_FIELDS
from pipeline.plan import RunConfig
from pipeline.prior import stored_prior
from pipeline.records import TurnContext, per_reviewer
from pipeline.service.live import fingerprint
from pipeline.shortlist import advance
from pipeline.usage import Metered, Usage, turn_usage
from pipeline.verdict import TurnInputs, Verdict, answer_finish, decide_turn, finish_timings, with_fusion
from pipeline.weights import learn_trust, stored_weights
from workers.deadline import call_with_deadline
from workers.dispatch import send_next_turn
from workers.rows import candidate_rows, result_row, review_rows
from workers.runtime import Runtime, runtime_of

log = logging.getLogger(__name__)


def finish_turn(app: Celery, inputs: TurnInputs) -> dict[str, Any]:
    runtime = runtime_of(app)
    committee = runtime.committee
    voters = judgement_keys(committee)  # reviewers of one judgement count as one voter
    context, run = inputs.context, inputs.run
    where = f"turn {context.conversation_id}/{context.turn_index}"
    # The verdict reads reviewer weights and the member prior from the database: a blink there
    # is waited out like one during the store below, not a failed turn.
    verdict = with_retries(
        where,
        lambda: _decide(runtime, inputs, voters),
        budget_s=runtime.settings.store_retry_s,
    )
    ranked_at = time.time()
    verdict, fusion = _fused(runtime, context, verdict)
    result = result_row(
        context, verdict, run, timings=finish_timings(verdict.timings, ranked_at=ranked_at, now=time.time())
    )
    finish = answer_finish(verdict, inputs.candidates)  # "length": the answer ran into max_tokens
    result.decision = {**result.decision, "usage": turn_usage(inputs.calls, fusion), "finish": finish}
    rows = review_rows(context, run.variant.stored_reviews(inputs.reviews, inputs.judgements))

    def store_and_send() -> Any:
        with Session(get_engine(runtime.settings.database), expire_on_commit=False) as session:
            stored, created = crud.save_turn(
                session=session,
                result=result,
                candidates=candidate_rows(context, inputs.candidates),
                reviews=rows,
                fingerprint=_fingerprint_after(committee.name, context, run, result.answer),
            )
            if created and committee.reviewer_weights == "online" and inputs.reviews:
                ballots = per_reviewer(inputs.reviews)  # each member of a group learns from its ballot
                learn_trust(runtime.policy_store, committee.name, ballots, verdict.ranked.ranking, voters)
            following = advance(
                runtime.policy_store,
                committee,
                run,
                inputs.roles,
                conversation_id=context.conversation_id,
                turn_index=context.turn_index,
                n_turns=context.n_turns,
                ranking=stored.ranking,
                scores=stored.scores,
                ballots=int(stored.decision.get("ballots", 0)),
            )
            if following is not None:
                send_next_turn(app, session, context, stored.answer, following, run=run)
            return stored

    # Stored once, sent once: safe to run again if the database went away halfway.
    stored = with_retries(where, store_and_send, budget_s=runtime.settings.store_retry_s)
    return stored.model_dump(include=set(OUTCOME_FIELDS))


def _fingerprint_after(committee: str, context: TurnContext, run: RunConfig, answer: str) -> str | None:
    """A live conversation's fingerprint once this turn is stored (None for other conversations):
    the next request, which repeats every exchange so far, finds the conversation by it."""
    if not run.live:
        return None
    exchanges = (*context.history, Exchange(context.question, answer))
    return fingerprint(committee, run, context.system, exchanges)


def _decide(runtime: Runtime, inputs: TurnInputs, voters: Mapping[str, str]) -> Verdict:
    """The pure verdict, with what the committee and the policy store say about weights;
    ``voters``: the committee's ``judgement_keys``."""
    committee, has_passage = runtime.committee, bool(inputs.context.passage)
    learned = committee.reviewer_weights == "learned"
    return decide_turn(
        inputs,
        committee_order=[m.name for m in committee.members],
        weights=stored_weights(
            runtime.policy_store, committee, per_reviewer(inputs.reviews), has_passage=has_passage
        ),
        exclude_self=committee.exclude_self_votes,
        voters=voters,
        prior=stored_prior(runtime.policy_store, committee, has_passage=has_passage),
        learned=stored_learned(runtime.policy_store, committee)[0] if learned else None,
        now=time.time(),
    )


def _fused(
    runtime: Runtime, context: TurnContext, verdict: Verdict
) -> tuple[Verdict, tuple[str, Usage] | None]:
    """Have the committee's aggregator fuse the verdict's texts, when it names any; the tokens it used."""
    if not verdict.to_fuse:
        return verdict, None
    aggregator = runtime.committee.member(runtime.committee.aggregator or "")
    metered: Metered | None = None
    try:
        metered = Metered(runtime.backend(aggregator))
        meter = metered
        # Bounded like every other model call: a late aggregator leaves the top candidate.
        text = call_with_deadline(
            f"fuse[{aggregator.name}]",
            runtime.timeout_s(aggregator),
            lambda: fuse(meter, aggregator, runtime.committee, context, verdict.to_fuse),
        )
    except Exception as error:  # noqa: BLE001 - fall back to the top candidate, recorded
        log.warning("fusion by %s failed: %s", aggregator.name, error)
        fallback = with_fusion(verdict, None, error=f"{type(error).__name__}: {error}")
        return fallback, (aggregator.name, metered.usage) if metered is not None else None
    return with_fusion(verdict, text), (aggregator.name, metered.usage)
