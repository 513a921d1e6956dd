"""`peerblend calibrate`: fit reviewer weights and the member prior on a stored run, store them.

Quality is token F1 against the gold answers (the field's metric) unless
``metric="bertscore"`` asks for BERTScore (the packaged MiniLM encoder). Both fits
are stored per committee in the policy store (``calibration_key``, ``prior_key``),
where every later turn of that committee reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from sqlmodel import Session

from db import crud
from db.engine import get_engine
from pipeline.committee import Committee
from pipeline.errors import InputError
from pipeline.evaluation.calibration import Calibration, Quality, fit_calibration
from pipeline.evaluation.metrics import best_f1
from pipeline.policy import calibration_key
from pipeline.settings import Settings
from pipeline.weights import feature_weights_key, prior_key
from workers.runtime import Runtime

Metric = Literal["f1", "bertscore"]


def calibrate_run(
    settings: Settings, committee: Committee, run: str, *, metric: Metric = "f1"
) -> Calibration:
    """Fit on ``run``'s candidates, ballots and golds; store the weights and prior of ``committee``."""
    with Session(get_engine(settings.database)) as session:
        rows = crud.run_turns(session=session, runs=[run])
        passages = crud.run_passages(session=session, runs=[run])
    quality = best_f1 if metric == "f1" else _bertscore(rows)
    calibration = fit_calibration(rows, passages, quality)
    if not calibration.turns:
        raise InputError(
            f"run {run!r} has no finished turns with gold answers and candidates to calibrate on"
        )
    store = Runtime(settings, committee).policy_store
    store.update(calibration_key(committee.name), lambda _: calibration.weights)
    store.update(feature_weights_key(committee.name), lambda _: calibration.feature_weights)
    store.update(
        prior_key(committee.name), lambda _: {"buckets": calibration.prior, "run": run, "metric": metric}
    )
    return calibration


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
