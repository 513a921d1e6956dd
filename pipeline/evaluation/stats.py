"""Averages and paired differences over scored turns, as in the original study.

Averaging: per conversation first, then over the conversations of a dataset, so a
long conversation weighs as much as a short one; the ``all`` column is the mean of
the dataset means. Paired differences resample whole conversations (a cluster
bootstrap): the turns of a conversation share a history and are not independent.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import TypeVar

ALL = "all"  # the column that averages the dataset columns
T = TypeVar("T")


@dataclass(frozen=True)
class ScoredTurn:
    """One answered question of one method, with what was measured on it."""

    label: str  # the method's row in the tables
    dataset: str
    conversation: str  # the stored conversation's id (unique per run)
    external_id: str | None  # the dataset's conversation id: pairs turns across runs
    turn_index: int  # 0-based
    values: Mapping[str, float]  # metric name -> value; a metric left out was not measured


@dataclass(frozen=True)
class Cell:
    """One table cell: a mean, and how many conversations and questions it averages."""

    value: float
    n_conversations: int
    n_questions: int


@dataclass(frozen=True)
class PairedDifference:
    """Method a minus method b on the questions both answered."""

    mean: float  # per conversation, then over conversations
    low: float  # bounds of the bootstrap confidence interval
    high: float
    n_conversations: int
    n_questions: int


@dataclass(frozen=True)
class Comparison:
    """``method`` against ``baseline`` on one dataset's shared questions."""

    section: str
    dataset: str
    method: str
    baseline: str
    quality: PairedDifference  # token F1 x 100, method − baseline
    speedup: float | None  # baseline seconds / method seconds (> 1: method is faster)
    bertscore: PairedDifference | None = None  # BERTScore F1 x 100, method − baseline (if scored)


def aggregate(turns: Iterable[ScoredTurn], metric: str) -> dict[tuple[str, str], Cell]:
    """Cells keyed by (label, dataset), plus (label, ALL) = the mean of that label's dataset cells."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for turn in turns:
        if metric in turn.values:
            groups[(turn.label, turn.dataset)][turn.conversation].append(turn.values[metric])
    cells = {key: _cell(conversations) for key, conversations in groups.items()}
    by_label: dict[str, list[Cell]] = defaultdict(list)
    for (label, _), cell in cells.items():
        by_label[label].append(cell)
    for label, row in by_label.items():
        cells[(label, ALL)] = Cell(
            value=fmean(c.value for c in row),
            n_conversations=sum(c.n_conversations for c in row),
            n_questions=sum(c.n_questions for c in row),
        )
    return cells


def _cell(conversations: Mapping[str, Sequence[float]]) -> Cell:
    return Cell(
        value=fmean(fmean(values) for values in conversations.values()),
        n_conversations=len(conversations),
        n_questions=sum(len(values) for values in conversations.values()),
    )


def paired_difference(
    a: Iterable[ScoredTurn],
    b: Iterable[ScoredTurn],
    metric: str,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference | None:
    """Mean of a − b over the questions both answered, with a seeded percentile bootstrap CI.

    Questions are matched by (dataset, external conversation id, turn index); turns
    without an external id cannot be matched and are left out. A question answered
    twice by one method (the conversation replayed twice) counts with its mean.
    None when no question matches.
    """
    by_a, by_b = _by_question(a, metric), _by_question(b, metric)
    per_conversation: dict[tuple[str, str], list[float]] = defaultdict(list)
    for key in sorted(by_a.keys() & by_b.keys()):
        per_conversation[(key[0], key[1])].append(by_a[key] - by_b[key])
    if not per_conversation:
        return None
    diffs = [fmean(values) for values in per_conversation.values()]
    low, high = bootstrap_interval(diffs, fmean, resamples=resamples, seed=seed, level=level)
    return PairedDifference(
        mean=fmean(diffs),
        low=low,
        high=high,
        n_conversations=len(diffs),
        n_questions=sum(len(values) for values in per_conversation.values()),
    )


def bootstrap_interval(
    clusters: Sequence[T],
    statistic: Callable[[Sequence[T]], float],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """A seeded percentile bootstrap interval of ``statistic`` over ``clusters`` drawn with replacement.

    A cluster is whatever is independent (here: a conversation, whose turns share a history);
    ``statistic`` sees one resample, as many clusters as given. Needs at least one cluster.
    """
    if not clusters:
        raise ValueError("a bootstrap needs at least one cluster")
    rng = random.Random(seed)
    values = sorted(statistic(rng.choices(clusters, k=len(clusters))) for _ in range(resamples))
    tail = (1.0 - level) / 2.0
    return values[int(tail * resamples)], values[min(resamples - 1, int((1.0 - tail) * resamples))]


def _by_question(turns: Iterable[ScoredTurn], metric: str) -> dict[tuple[str, str, int], float]:
    values: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for turn in turns:
        if turn.external_id is not None and metric in turn.values:
            values[(turn.dataset, turn.external_id, turn.turn_index)].append(turn.values[metric])
    return {key: fmean(v) for key, v in values.items()}
