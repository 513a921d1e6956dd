"""`peerblend calibrate`: fit reviewer weights, the member prior and the learned decision on a
stored run, and store them.

Quality is token F1 against the gold answers (the field's metric) unless
``metric="bertscore"`` asks for BERTScore (the packaged MiniLM encoder). Both fits
are stored per committee in the policy store (``calibration_key``, ``prior_key``),
where every later turn of that committee reads them. The learned decision
(``pipeline.evaluation.learning``) is stored under ``learned_key``, its version one more
than the one it replaces, with its cross-validated scores beside the prior's and Borda's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline.committee import Committee
from pipeline.errors import InputError
from pipeline.evaluation.calibration import Calibration, Quality, fit_calibration
from pipeline.evaluation.learning import Trial, examples_from_records, fit_learned
from pipeline.evaluation.metrics import best_f1
from pipeline.learned import LearnedModel
from pipeline.service.settings import Settings
from pipeline.service.store import Store
from pipeline.store_keys import calibration_key, feature_weights_key, learned_key, prior_key
from workers.runtime import Runtime

Metric = Literal["f1", "bertscore"]


@dataclass(frozen=True)
class Calibrated:
    """What `peerblend calibrate` fitted and stored: weights and prior, the learned decision and its trials."""

    calibration: Calibration
    learned: LearnedModel
    trials: dict[str, list[Trial]]  # bucket -> every configuration cross-validated


def calibrate_run(
    settings: Settings, committee: Committee, run: str, *, metric: Metric = "f1", note: str | None = None
) -> Calibrated:
    """Fit on ``run``'s candidates, ballots and golds; store the weights, prior and learned decision."""
    database = Store.at(settings.database)
    rows, passages, records = (
        database.run_turns([run]),
        database.run_passages([run]),
        database.run_records(run),
    )
    quality = best_f1 if metric == "f1" else _bertscore(rows)
    calibration = fit_calibration(rows, passages, quality)
    if not calibration.turns:
        raise InputError(
            f"run {run!r} has no finished turns with gold answers and candidates to calibrate on"
        )
    store = Runtime(settings, committee).policy_store
    previous = store.get(learned_key(committee.name)) or {}
    made = {"run": run, "metric": metric, "fitted_at": datetime.now(UTC).isoformat(timespec="seconds")}
    made |= {"note": note} if note else {}
    examples = examples_from_records(records, committee, quality)
    learned, trials = fit_learned(examples, committee, version=int(previous.get("version", 0)) + 1, made=made)
    store.update(calibration_key(committee.name), lambda _: calibration.weights)
    store.update(feature_weights_key(committee.name), lambda _: calibration.feature_weights)
    store.update(
        prior_key(committee.name), lambda _: {"buckets": calibration.prior, "run": run, "metric": metric}
    )
    store.update(learned_key(committee.name), lambda _: learned.to_json())
    return Calibrated(calibration, learned, trials)


def _bertscore(rows: Sequence[Mapping[str, Any]]) -> Quality:
    """BERTScore F1 of every candidate against its golds, scored in one call, as a lookup."""
    from workers.evaluation.scoring import BertScorer

    pairs = list(
        dict.fromkeys(
            (str(text), tuple(str(g) for g in r["gold"]))
            for r in rows
            if r["gold"]
            for text in r["candidates"].values()
            if str(text).strip()
        )
    )
    values = BertScorer()([t for t, _ in pairs], [list(g) for _, g in pairs]) if pairs else []
    scores = dict(zip(pairs, values, strict=True))
    return lambda text, golds: scores.get((text, tuple(golds)), 0.0)
