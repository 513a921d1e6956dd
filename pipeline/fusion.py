"""Fusion, the finishing step: the committee's aggregator writes one answer from the best
``top_k`` candidates of a turn, best first.

It applies when a run's ``top_k`` > 1 and its method is fusable (``Method.fusable``: all but
the single-member baseline), and it needs an aggregator (``check``). The turn's aggregate task
then runs on the aggregator's queue (``aggregate_member``), so the fusion call is made where
its model is loaded. The verdict names the texts (``texts_to_fuse``); the worker calls
``fuse`` and hands its answer or its error to ``pipeline.verdict.with_fusion``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.aggregate import Standings, top_k_texts
from pipeline.backend import Backend, cut_at_stop
from pipeline.committee import Committee, Member
from pipeline.errors import InputError
from pipeline.prompts import fusion_prompt
from pipeline.records import CandidateRecord, TurnContext
from pipeline.stages import bounded, fitted


def check(committee: Committee, *, top_k: int, fuses: bool) -> None:
    """Refuse fusion without an aggregator, before anything runs."""
    if fuses and committee.aggregator is None:
        raise InputError(
            f"top_k={top_k} fuses candidates, but committee {committee.name!r} names no aggregator"
        )


def aggregate_member(committee: Committee, *, fuses: bool) -> str | None:
    """The member whose queue takes a turn's aggregate task: the aggregator when the turn fuses."""
    return committee.aggregator if fuses else None


def texts_to_fuse(
    ranked: Standings, candidates: Sequence[CandidateRecord], *, top_k: int, fuses: bool
) -> tuple[str, ...]:
    """The texts the aggregator fuses, best first (fewer if fewer are usable; none: no fusion)."""
    return tuple(top_k_texts(ranked, candidates, top_k)) if fuses else ()


def fuse(
    backend: Backend, aggregator: Member, committee: Committee, context: TurnContext, texts: Sequence[str]
) -> str:
    """The aggregator's answer written from the top-ranked texts; raises on failure."""
    history, passage = fitted(committee, context)
    prompt = fusion_prompt(
        context.question,
        history,
        texts,
        style=aggregator.generation.style,
        passage=passage,
        max_new_tokens=aggregator.generation.max_new_tokens,
    )
    (text,) = backend.generate([bounded(prompt, context)])
    return cut_at_stop(text, context.stop)
