"""A PairRM-style pairwise judge from a local sequence-classification model (a reward model).

For the pairwise baseline only: ``compare`` scores each answer against the
conversation with the classifier (one logit, or the last label's logit minus the
first's) and returns sigmoid(r_first - r_second), the probability that the first
answer is better. Antisymmetric by construction, so both orders agree. Weights are
never downloaded: ``model`` must be a local folder (or already in the HF cache).
It cannot generate or score continuations; give it only the "judge" role.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipeline.backend import CrossEncoderOptions, Prompt, ScoreRequest, parse_options
from pipeline.errors import BackendError
from workers.backends.base import BackendSpec

log = logging.getLogger(__name__)


class CrossEncoderBackend:
    """Declared in ``pipeline.backend.BACKENDS`` with one capability: ``compare``."""

    def __init__(self, spec: BackendSpec) -> None:
        parse_options(CrossEncoderOptions, spec.options, backend="cross-encoder")  # it takes none
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(spec.model)
            self.model = AutoModelForSequenceClassification.from_pretrained(spec.model).to(spec.device).eval()
        except Exception as error:  # noqa: BLE001 - reported with what to do
            raise BackendError(
                f"could not load cross-encoder judge {spec.model!r}: {error} (give a local folder with a "
                "sequence-classification model and its tokenizer; nothing is downloaded)"
            ) from error
        self.device = spec.device
        self._lock = threading.Lock()  # one forward at a time: the tokenizer is not thread-safe

    def compare(self, context: str, first: str, second: str) -> float:
        """P(``first`` is the better answer to ``context``), in (0, 1)."""
        with self._lock, torch.inference_mode():
            batch = self.tokenizer(
                [context, context], [first, second], padding=True, truncation=True, return_tensors="pt"
            ).to(self.device)
            logits = self.model(**batch).logits.float()
        reward = logits[:, -1] - logits[:, 0] if logits.shape[-1] > 1 else logits[:, 0]
        return float(torch.sigmoid(reward[0] - reward[1]))

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        raise BackendError("a cross-encoder judge cannot generate; give this member only the 'judge' role")

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        raise BackendError("a cross-encoder judge cannot score continuations; give it only the 'judge' role")
