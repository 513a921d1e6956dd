"""The model stages every method shares, over any ``Backend``: answer and review.

The stages of one variant live with it: the pairwise judge in ``pipeline.pairwise``, the
aggregator's fusion in ``pipeline.fusion``.

Each stage returns a record and never raises: a failure becomes an error record
(a chord header task that raises would leave the turn pending forever).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from statistics import fmean
from typing import cast

from pipeline.aggregate import usable
from pipeline.backend import Backend, Capability, Prompt, ScoreRequest, WritesBallots, cut_at_stop, ran_out
from pipeline.ballot import (
    ParseStatus,
    label_map,
    parse_ranking,
    ranking_from_scores,
    review_seed,
    shuffled,
)
from pipeline.ballot_grammar import BallotPath
from pipeline.committee import Committee, Member
from pipeline.context import Exchange, fit_history, fit_passage
from pipeline.evaluation.metrics import token_f1
from pipeline.prompts import (
    VERIFY_NO,
    VERIFY_YES,
    generator_prompt,
    likelihood_prompts,
    ranking_prompt,
    verification_prompts,
)
from pipeline.records import CandidateRecord, ReviewRecord, TurnContext

log = logging.getLogger(__name__)


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


def fitted(committee: Committee, context: TurnContext) -> tuple[list[Exchange], str | None]:
    """The turn's history and passage as fitted to the committee's token budgets (every stage's view)."""
    history = fit_history(context.history, committee.context_budget_tokens)
    return history, fit_passage(context.passage, committee.passage_budget_tokens)


def _answer_prompt(member: Member, committee: Committee, context: TurnContext) -> Prompt:
    """The prompt ``member`` answers the turn's question from (its style, few-shot, length)."""
    history, passage = fitted(committee, context)
    settings = member.generation
    prompt = generator_prompt(
        context.question,
        history,
        style=settings.style,
        few_shot=settings.few_shot,
        passage=passage,
        max_new_tokens=settings.max_new_tokens,
        instructions=context.system,
    )
    return bounded(prompt, context)


def bounded(prompt: Prompt, context: TurnContext) -> Prompt:
    """``prompt`` under the request's bounds on the answer (fewer tokens, more stop strings)."""
    limit = context.max_new_tokens
    return replace(
        prompt,
        max_new_tokens=prompt.max_new_tokens if limit is None else min(prompt.max_new_tokens, limit),
        stop=prompt.stop + tuple(s for s in context.stop if s not in prompt.stop),
    )


def answer(backend: Backend, member: Member, committee: Committee, context: TurnContext) -> CandidateRecord:
    """``member``'s answer to the turn's question, or the error that prevented it."""
    prompt = _answer_prompt(member, committee, context)
    start = time.perf_counter()
    try:
        (text,) = backend.generate([prompt])
    except Exception as error:  # noqa: BLE001 - any failure excludes the member, recorded
        log.warning("member %s failed to answer: %s", member.name, describe_error(error))
        return CandidateRecord(
            member.name,
            error=describe_error(error),
            seconds=time.perf_counter() - start,
            finished_at=time.time(),
        )
    text = cut_at_stop(text, context.stop)
    return CandidateRecord(
        member.name,
        text=text,
        error=None if text else "empty answer",
        seconds=time.perf_counter() - start,
        finished_at=time.time(),
        ran_out=ran_out(text),
    )


def review(
    backend: Backend,
    reviewer: Member,
    committee: Committee,
    context: TurnContext,
    candidates: Sequence[CandidateRecord],
) -> ReviewRecord:
    """``reviewer``'s ballot over the usable candidates, shown shuffled and anonymous."""
    pool = usable(candidates)
    seed = review_seed(context.conversation_id, context.turn_index, reviewer.name)
    shown = tuple(shuffled([c.member for c in pool], seed))
    record = ReviewRecord(
        reviewer=reviewer.name,
        method=reviewer.review_method,
        status="skipped",
        shown_order=shown,
        seed=seed,
        candidates=tuple(candidates),
        finished_at=time.time(),
    )
    if len(pool) < 2:  # nothing to rank
        return record
    start = time.perf_counter()
    failure: str | None = None
    try:
        if reviewer.review_method == "ranking":
            status, ranking, raw = _rank_by_text(backend, reviewer, committee, context, pool, shown)
        elif reviewer.review_method == "verify":
            status, ranking, raw = _rank_by_verification(backend, committee, context, pool, shown)
        elif reviewer.review_method == "consistency":
            status, ranking, raw = _rank_by_consistency(
                backend, reviewer, committee, context, pool, shown, seed
            )
        else:
            total = reviewer.review_method == "likelihood-total"
            status, ranking, raw = _rank_by_likelihood(backend, committee, context, pool, shown, total=total)
    except Exception as error:  # noqa: BLE001 - a failed reviewer gives no ballot, recorded
        log.warning("reviewer %s failed: %s", reviewer.name, describe_error(error))
        status, ranking, raw, failure = "error", (), "", describe_error(error)
    return replace(
        record,
        status=status,
        ranking=ranking,
        raw=raw,
        error=failure,
        seconds=time.perf_counter() - start,
        finished_at=time.time(),
    )


_Ballot = tuple[str, tuple[str, ...], str]  # (status, ranking by member best first, raw text)


def _rank_by_text(
    backend: Backend,
    reviewer: Member,
    committee: Committee,
    context: TurnContext,
    pool: Sequence[CandidateRecord],
    shown: Sequence[str],
) -> _Ballot:
    """The reviewer writes its ranking after the prefilled "Ranking:"; ``parse_ranking`` reads it.

    A backend with ``Capability.BALLOT`` is asked for a complete ballot of the labels
    (``Prompt.ballot``: constrained decoding, or the server's structured outputs), and
    says afterwards whether it wrote one that way (``_ballot_status``, ``_noted``).
    """
    history, passage = fitted(committee, context)
    labels = label_map(shown)
    text_of = {c.member: c.text for c in pool}
    prompt = ranking_prompt(
        context.question,
        history,
        [(label, text_of[m]) for label, m in labels.items()],
        passage=passage,
        max_new_tokens=reviewer.generation.review_max_new_tokens,
    )
    writes_ballots = Capability.BALLOT in reviewer.capabilities
    if writes_ballots:
        prompt = replace(prompt, ballot=tuple(labels))
    (raw,) = backend.generate([prompt])
    path = BallotPath.PARSED
    if writes_ballots:  # asked after the call: see WritesBallots.ballot_path
        path = cast(WritesBallots, backend).ballot_path(tuple(labels))
    parsed = parse_ranking(raw, list(labels))
    ranking = tuple(labels[label] for label in parsed.labels)
    return _ballot_status(parsed.status, path), ranking, _noted(raw, path)


def _ballot_status(status: ParseStatus, path: BallotPath) -> str:
    """A strict ballot says which path wrote it ("constrained", "structured"); free text says how it
    parsed ("ok", "fallback"); "copied" and "unparsable" stay whatever the path."""
    if status is ParseStatus.OK and path is not BallotPath.PARSED:
        return ParseStatus(path.value).value
    return status.value


def _noted(raw: str, path: BallotPath) -> str:
    """The reviewer's text, prefixed with the path that forced its form ("constrained: B > A > C"),
    so a dropped ballot (copied) records it too; free text is kept as written."""
    return raw if path is BallotPath.PARSED else f"{path.value}: {raw.strip()}"


def _rank_by_likelihood(
    backend: Backend,
    committee: Committee,
    context: TurnContext,
    pool: Sequence[CandidateRecord],
    shown: Sequence[str],
    *,
    total: bool = False,
) -> _Ballot:
    """PMI per token of each candidate (``likelihood_prompts``); with ``total``, times its length
    in words (``answer_length``): the evidence of the whole answer, so a one-word reply no longer
    wins on its per-token average alone."""
    history, passage = fitted(committee, context)
    conditional, content_free = likelihood_prompts(context.question, history, passage=passage)
    text_of = {c.member: c.text for c in pool}
    requests = [ScoreRequest(p, text_of[m]) for m in shown for p in (conditional, content_free)]
    values = backend.score(requests)
    if len(values) != len(requests):
        raise ValueError(f"backend returned {len(values)} scores for {len(requests)} requests")
    pmi = {m: values[2 * i] - values[2 * i + 1] for i, m in enumerate(shown)}
    if total:
        pmi = {m: v * answer_length(text_of[m]) for m, v in pmi.items()}
    raw = " ".join(f"{m}={v:.4f}" for m, v in pmi.items())
    return ParseStatus.SCORED.value, ranking_from_scores(pmi, shown), raw


def answer_length(text: str) -> int:
    """An answer's length in words (whitespace-separated), at least 1: backend-independent,
    unlike a token count."""
    return max(1, len(text.split()))


def _rank_by_consistency(
    backend: Backend,
    reviewer: Member,
    committee: Committee,
    context: TurnContext,
    pool: Sequence[CandidateRecord],
    shown: Sequence[str],
    seed: int,
) -> _Ballot:
    """The reviewer samples ``consistency_samples`` answers of its own (its generation prompt at
    ``consistency_temperature``); each candidate scores its mean token F1 with them.

    A candidate the reviewer would often say itself ranks high. Cost: that many
    generations per turn (one batch on a batching backend). The raw record holds the
    scores and the samples.
    """
    settings = reviewer.generation
    base = _answer_prompt(reviewer, committee, context)
    prompts = [
        replace(base, temperature=settings.consistency_temperature, seed=seed + i)
        for i in range(settings.consistency_samples)
    ]
    samples = [s.strip() for s in backend.generate(prompts)]
    if len(samples) != len(prompts):
        raise ValueError(f"backend returned {len(samples)} answers for {len(prompts)} prompts")
    text_of = {c.member: c.text for c in pool}
    agreement = {m: fmean(token_f1(text_of[m], s) for s in samples) for m in shown}
    scores = " ".join(f"{m}={v:.4f}" for m, v in agreement.items())
    raw = scores + "\n" + "\n".join(f"sample: {s}" for s in samples)
    return ParseStatus.SCORED.value, ranking_from_scores(agreement, shown), raw


def _rank_by_verification(
    backend: Backend,
    committee: Committee,
    context: TurnContext,
    pool: Sequence[CandidateRecord],
    shown: Sequence[str],
) -> _Ballot:
    """Each candidate scores log P(yes) − log P(no) on its verification prompt, minus the same
    under the content-free question (``verification_prompts``); the ballot is that order."""
    history, passage = fitted(committee, context)
    text_of = {c.member: c.text for c in pool}
    requests = []
    for member in shown:
        for prompt in verification_prompts(context.question, history, text_of[member], passage=passage):
            requests += [ScoreRequest(prompt, VERIFY_YES), ScoreRequest(prompt, VERIFY_NO)]
    values = backend.score(requests)
    if len(values) != len(requests):
        raise ValueError(f"backend returned {len(values)} scores for {len(requests)} requests")
    scores = {
        m: (values[4 * i] - values[4 * i + 1]) - (values[4 * i + 2] - values[4 * i + 3])
        for i, m in enumerate(shown)
    }
    raw = " ".join(f"{m}={v:.4f}" for m, v in scores.items())
    return ParseStatus.SCORED.value, ranking_from_scores(scores, shown), raw
