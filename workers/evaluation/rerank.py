"""`peerblend rerank`: a selection rule applied to a stored run, in seconds, without models.

Reads a run's finished conversations (``db.runs.run_records``), re-decides every
turn with ``pipeline.evaluation.rerank`` and either returns report rows (the
rule's answers beside the stored ones) or stores them as a new run whose turns
copy the stored candidates, reviews and timings and record the rule
(``decision["reranked_from"]``), so `peerblend report` shows it as any run.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from db.models import Candidate, Conversation, Review, Turn, TurnResult, TurnResultBase
from pipeline.aggregate import Standings
from pipeline.committee import Committee
from pipeline.errors import InputError
from pipeline.evaluation.rerank import Calibrated, Rule, rerank
from pipeline.plan import VARIANTS, check_run_name, method_named
from pipeline.service.settings import Settings
from pipeline.service.store import Store
from pipeline.single import SINGLE
from pipeline.store_keys import calibration_key, feature_weights_key, learned_key, prior_key
from workers.runtime import Runtime


@dataclass(frozen=True)
class Reranked:
    """The stored run's report rows and the rule's, in the same order (``db.runs.run_turns`` shape)."""

    stored: list[dict[str, Any]]
    reranked: list[dict[str, Any]]
    label: str  # the rule's run name in the rows: NEW_RUN, or "RUN:rule"
    changed: int  # turns whose chosen member differs from the stored one


def rerank_run(
    settings: Settings, committee: Committee, run: str, rule: Rule, *, into: str | None = None
) -> Reranked:
    """Re-decide ``run`` under ``rule``; with ``into``, store the result as that new run."""
    database = Store.at(settings.database)
    records = database.run_records(run)
    taken = into is not None and into in database.runs()
    _check(records, run, committee)
    if into is not None:
        check_run_name(into)
        if taken:
            raise InputError(f"run {into!r} exists already; name a new run")
    store = Runtime(settings, committee).policy_store
    calibrated = Calibrated(
        store.get(calibration_key(committee.name)),
        store.get(prior_key(committee.name)),
        store.get(feature_weights_key(committee.name)),
        store.get(learned_key(committee.name)),
    )
    decided = rerank(records, rule, committee, calibrated)
    label = into or f"{run}:{rule.name}"
    stored = [_report_row(r, r["result"]["answer"], r["result"]["chosen"], run) for r in records]
    reranked = [
        _report_row(r, _answer(r, d), d.chosen, label, timings=_timings(r, f, rule), **_stored_as(rule))
        for r, (d, f) in zip(records, decided, strict=True)
    ]
    if into is not None:
        _store(settings, records, decided, rule, run=run, into=into)
    changed = sum(a["chosen"] != b["chosen"] for a, b in zip(stored, reranked, strict=True))
    return Reranked(stored, reranked, label, changed)


def _check(records: Sequence[Mapping[str, Any]], run: str, committee: Committee) -> None:
    if not records:
        raise InputError(f"run {run!r} has no finished conversation to rerank")
    for conversation in {r["conversation"]["id"]: r["conversation"] for r in records}.values():
        variant = method_named(conversation["method"])
        if variant is None or not variant.stores_ballots or conversation["top_k"] != 1:
            ranked = " or ".join(m.name for m in VARIANTS.values() if m.stores_ballots)
            raise InputError(
                f"run {run!r} holds {conversation['method']} K={conversation['top_k']} turns; rerank re-decides "
                f"{ranked} runs with K=1 (runs ranked by ballots; a fused answer cannot be rewritten without "
                "the aggregator)"
            )
        if conversation["committee"] != committee.name:
            raise InputError(
                f"run {run!r} was made by committee {conversation['committee']!r}, not {committee.name!r}: "
                "set PEERBLEND_COMMITTEE_FILE to the run's committee"
            )


def _stored_as(rule: Rule) -> dict[str, str]:
    """The method and policy the rule's run is stored under, where they differ from the source's:
    ``single:<member>`` for the single rule, so reports compare it as a single member; the
    simulated policy."""
    fields = {"policy": rule.policy} if rule.policy != "full" else {}
    return fields | ({"method": SINGLE.named(rule.member)} if rule.member is not None else {})


def _timings(record: Mapping[str, Any], fields: Mapping[str, Any], rule: Rule) -> dict[str, Any]:
    """The stored turn's timings with the rule's model calls; a single member's turn takes that
    member's generation time (``pipeline.evaluation.rerank``)."""
    timings = {**record["result"]["timings"], "model_calls": fields["rule_model_calls"]}
    alone = rule.member if rule.member is not None else (fields.get("routed") or [None])[0]
    if alone is not None:  # one member answered alone: the turn took its generation time
        seconds = {c["member"]: c["seconds"] for c in record["candidates"]}
        timings["total_s"] = seconds.get(alone, timings.get("total_s"))
    return timings


def _answer(record: Mapping[str, Any], decision: Standings) -> str:
    texts = {c["member"]: c["text"] for c in record["candidates"]}
    return texts.get(decision.chosen or "", "").strip()


def _report_row(
    record: Mapping[str, Any],
    answer: str,
    chosen: str | None,
    run: str,
    *,
    method: str | None = None,
    policy: str | None = None,
    timings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    conversation = record["conversation"]
    return {
        "run": run,
        "method": method or conversation["method"],
        "policy": policy or conversation["policy"],
        "top_k": conversation["top_k"],
        "dataset": conversation["source"] or "unknown",
        "conversation_id": f"{run}/{conversation['id']}",
        "external_id": conversation["external_id"],
        "turn_index": record["turn_index"],
        "gold": list(record["gold"]),
        "answer": answer,
        "chosen": chosen,
        "candidates": {
            c["member"]: c["text"] for c in record["candidates"] if c["error"] is None and c["text"].strip()
        },
        "timings": dict(record["result"]["timings"] if timings is None else timings),
    }


def _store(
    settings: Settings,
    records: Sequence[Mapping[str, Any]],
    decided: Sequence[tuple[Standings, dict[str, Any]]],
    rule: Rule,
    *,
    run: str,
    into: str,
) -> None:
    """One new conversation per stored one, each with all its turns, in one commit per conversation."""
    by_conversation: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_conversation.setdefault(record["conversation"]["id"], []).append(i)
    copies = []
    for indices in by_conversation.values():
        new_id = uuid.uuid4().hex
        source = records[indices[0]]["conversation"]
        fields = {k: source[k] for k in ("external_id", "source", "committee", "method", "policy", "top_k")}
        fields |= _stored_as(rule)
        row = Conversation(
            **fields, id=new_id, run=into, n_turns=source["n_turns"], passage=source["passage"]
        )
        copies.append(
            (row, [r for i in indices for r in _turn_rows(records[i], decided[i], new_id, rule, run=run)])
        )
    Store.at(settings.database).add_copies(copies)


def _turn_rows(
    record: Mapping[str, Any],
    decided: tuple[Standings, dict[str, Any]],
    conversation_id: str,
    rule: Rule,
    *,
    run: str,
) -> list[Any]:
    decision, fields = decided
    where = {"conversation_id": conversation_id, "turn_index": record["turn_index"]}
    stored = record["result"]
    origin = {"run": run, "rule": rule.name, "conversation_id": stored["conversation_id"]}
    result = TurnResultBase(
        **where,
        answer=_answer(record, decision),
        chosen=decision.chosen,
        status=decision.status,
        **({"method": stored["method"], "policy": stored["policy"]} | _stored_as(rule)),
        ranking=list(decision.ranking),
        scores=decision.scores,
        timings=_timings(record, fields, rule),
        decision={**stored["decision"], **fields, "reranked_from": origin},
    )
    return [
        Turn(
            **where,
            question=record["question"],
            gold=list(record["gold"]),
            attempt=1,
            sent_at=datetime.now(UTC),
        ),
        *(Candidate(**{**c, **where}) for c in record["candidates"]),
        *(Review(**{**r, **where}) for r in record["reviews"]),
        TurnResult.model_validate(result),
    ]
