"""The field's answer metrics: token-level F1 and exact match, as the official CoQA and QuAC scorers.

Normalisation (identical in both scorers' ``normalize_answer``): lower-case, remove
every ASCII punctuation character, remove the articles a/an/the as whole words,
collapse whitespace. Tokens are the normalised text split on whitespace.

- ``token_f1(prediction, gold)``: 2PR/(P+R) over the multiset of shared tokens.
  When either side has no token left, the score is 1 if both are empty, else 0
  (CoQA's ``compute_f1``; QuAC's ``f1_score`` gives 0 when both are empty, a case
  no real gold reaches).
- ``exact_match(prediction, gold)``: the normalised texts are equal.
- Several golds: the best score over the golds (``best_f1``, ``best_exact``). The
  official scorers also report a leave-one-out average over the golds when a
  question has several (to compare with human F1); that is not applied here, so
  scores on multi-gold questions (CoQA, QuAC) are max-over-golds, a little higher.

No-answer questions (QuAC/DoQA's ``CANNOTANSWER``), as QuAC's ``handle_cannot`` and
``compute_span_overlap`` do: if at least as many golds are CANNOTANSWER as are
spans, the golds become just ``["CANNOTANSWER"]`` and a prediction scores 1 (F1
and EM) only if it is literally the string ``CANNOTANSWER`` (no normalisation),
else 0; otherwise the CANNOTANSWER golds are dropped and the spans score as
usual. Our loaders de-duplicate golds, so the counts are over distinct strings.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

CANNOTANSWER = "CANNOTANSWER"  # QuAC/DoQA gold meaning "no answer in the passage"
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, no punctuation, no articles, single spaces (the official scorers' rule)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    """Token-level F1 in [0, 1] of one prediction against one gold."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def quac_references(golds: Sequence[str]) -> list[str]:
    """QuAC's ``handle_cannot``: ``[CANNOTANSWER]`` when no-answer golds are at least half, else the spans."""
    cannot = sum(1 for g in golds if g == CANNOTANSWER)
    if cannot and cannot >= len(golds) - cannot:
        return [CANNOTANSWER]
    return [g for g in golds if g != CANNOTANSWER]


def is_no_answer(golds: Sequence[str]) -> bool:
    """Whether the QuAC rule makes this a no-answer question (only a literal CANNOTANSWER scores)."""
    return quac_references(golds) == [CANNOTANSWER]


def best_f1(prediction: str, golds: Sequence[str]) -> float:
    """The best token F1 over the golds (0.0 without golds), CANNOTANSWER handled as QuAC does."""
    return _best(prediction, golds, token_f1)


def best_exact(prediction: str, golds: Sequence[str]) -> float:
    """The best exact match over the golds (0.0 without golds), CANNOTANSWER handled as QuAC does."""
    return _best(prediction, golds, exact_match)


def _best(prediction: str, golds: Sequence[str], metric: Callable[[str, str], float]) -> float:
    references = quac_references(golds)
    if references == [CANNOTANSWER]:
        return float(prediction == CANNOTANSWER)
    return max((metric(prediction, gold) for gold in references), default=0.0)
