"""Rank correlation: how well one order of the members agrees with values of them.

Reviewer weights (``pipeline.weights``) and the member prior (``pipeline.prior``) are both
measured this way: a ballot's Spearman correlation with the Borda consensus of the others, or
with the candidates' true quality on a calibration split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (1 = smallest), ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when undefined (fewer than 3 items or a constant side)."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / (vx * vy) ** 0.5


def ballot_correlation(ranking: Sequence[str], values: Mapping[str, float]) -> float | None:
    """How well a ballot (best first) agrees with ``values`` (higher is better) on the members it ranked."""
    ranked = [m for m in ranking if m in values]
    return spearman([-float(i) for i in range(len(ranked))], [values[m] for m in ranked])
