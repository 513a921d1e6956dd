"""Blind human evaluation: which turn a person judges next, and what the judgements add up to.

Two runs over the same dataset conversations answer the same questions; a person is
shown one question with the two answers as A and B (which run is which hidden) and
picks A, B or a tie. Pure: the database and the page live in db/judgements.py and
workers/web_evaluate.py.

- ``draw``: every turn of a pair of runs is judged once before any is judged twice;
  among the least-judged turns, those the person has not judged come first, then a
  seeded uniform pick. The run shown as A less often so far is A (a seeded coin on
  equal counts), so A/B stay balanced however the person leans to one side. The rule
  holds over stored judgements: two people drawing at the same moment may get one turn.
- ``win_rates``: per pair of runs, wins/ties/losses of the first run, its win rate
  (ties count half) and a 95 % interval from a bootstrap over conversations (the
  turns of a conversation share a history, so they are not independent).
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple, get_args

from pipeline.errors import InputError
from pipeline.evaluation.stats import bootstrap_interval

Choice = Literal["A", "B", "tie"]
CHOICES: tuple[str, ...] = get_args(Choice)
CSV_COLUMNS = (
    "judged_at",
    "judge",
    "first_run",
    "second_run",
    "dataset",
    "external_id",
    "turn",
    "shown_as_a",
    "choice",
    "winner",
    "note",
    "seed",
)


class TurnKey(NamedTuple):
    """One dataset question, as every run that replayed its conversation knows it."""

    dataset: str  # the conversation's source
    external_id: str  # the dataset's conversation id
    turn_index: int  # 0-based


def run_pair(a: str, b: str) -> tuple[str, str]:
    """The pair's canonical order (by name): X vs Y and Y vs X are one pair; two equal runs raise."""
    if a == b:
        raise InputError(f"pick two different runs to compare, got {a!r} twice")
    return (a, b) if a < b else (b, a)


class Answered(NamedTuple):
    """A run's stored answer to a turn."""

    conversation_id: str
    answer: str


@dataclass(frozen=True)
class Pool:
    """The turns of a pair of runs a person can judge: answered by both, differently."""

    turns: dict[TurnKey, tuple[str, str]]  # turn -> (first run's conversation id, second run's)
    identical: int  # turns both answered word for word alike: a tie by construction, not shown


def pair_pool(first: Mapping[TurnKey, Answered], second: Mapping[TurnKey, Answered]) -> Pool:
    """The turns both runs answered; those with the same answer (spacing aside) are only counted."""
    turns, identical = {}, 0
    for turn in sorted(first.keys() & second.keys()):
        a, b = first[turn], second[turn]
        if " ".join(a.answer.split()) == " ".join(b.answer.split()):
            identical += 1
        else:
            turns[turn] = (a.conversation_id, b.conversation_id)
    return Pool(turns, identical)


@dataclass(frozen=True)
class Draw:
    """The turn to show next, and which run of the pair is A."""

    turn: TurnKey
    first_is_a: bool  # True: the pair's first run is shown as A
    seed: int  # the draw's own randomness; stored with the judgement, so each draw is judged once


def draw(
    pool: Iterable[TurnKey],
    judged: Mapping[TurnKey, int],
    *,
    mine: Iterable[TurnKey] = (),
    first_shown_as_a: int = 0,
    second_shown_as_a: int = 0,
    seed: int,
) -> Draw | None:
    """The next turn to judge (None when the pool is empty).

    ``judged``: judgements so far per turn (everyone's); ``mine``: turns this person
    judged; ``*_shown_as_a``: how often each run of the pair was A so far.
    """
    turns = sorted(set(pool))
    if not turns:
        return None
    rng = random.Random(seed)
    fewest = min(judged.get(t, 0) for t in turns)
    least = [t for t in turns if judged.get(t, 0) == fewest]
    seen = set(mine)
    fresh = [t for t in least if t not in seen] or least  # someone else's eyes, where possible
    turn = rng.choice(fresh)
    if first_shown_as_a == second_shown_as_a:
        first_is_a = rng.random() < 0.5
    else:
        first_is_a = first_shown_as_a < second_shown_as_a
    return Draw(turn, first_is_a, seed)


@dataclass(frozen=True)
class Judged:
    """A stored judgement, as the tallies and the export read it."""

    first: str  # the pair's first run (canonical order)
    second: str
    shown_a: str  # the run whose answer was A
    choice: Choice
    turn: TurnKey
    judge: str = ""
    judged_at: datetime | None = None
    note: str = ""
    seed: int = 0

    @property
    def winner(self) -> str | None:
        """The run whose answer was picked; None for a tie."""
        if self.choice == "tie":
            return None
        shown_b = self.second if self.shown_a == self.first else self.first
        return self.shown_a if self.choice == "A" else shown_b


def next_draw(pool: Iterable[TurnKey], judgements: Sequence[Judged], *, judge: str, seed: int) -> Draw | None:
    """``draw`` given one pair's stored judgements, for the person named ``judge``."""
    first_a = sum(j.shown_a == j.first for j in judgements)
    return draw(
        pool,
        Counter(j.turn for j in judgements),
        mine=[j.turn for j in judgements if j.judge == judge],
        first_shown_as_a=first_a,
        second_shown_as_a=len(judgements) - first_a,
        seed=seed,
    )


class Progress(NamedTuple):
    """Where a pair's judging stands: round r judges every turn an r-th time."""

    round: int  # 1: every turn once; 2: every turn twice; ...
    done: int  # turns judged at least ``round`` times
    total: int  # turns in the pool


def progress(pool: Iterable[TurnKey], judgements: Iterable[Judged]) -> Progress:
    turns = set(pool)
    counts = Counter(j.turn for j in judgements if j.turn in turns)
    if not turns:
        return Progress(1, 0, 0)
    round_ = min(counts.get(t, 0) for t in turns) + 1
    return Progress(round_, sum(counts.get(t, 0) >= round_ for t in turns), len(turns))


@dataclass(frozen=True)
class WinRate:
    """The first run against the second on the judged turns."""

    first: str
    second: str
    wins: int  # the first run's answer picked
    ties: int
    losses: int  # the second run's answer picked
    rate: float  # (wins + ties / 2) / judgements
    low: float | None  # bounds of the 95 % bootstrap interval; None with one conversation
    high: float | None
    n_conversations: int

    @property
    def judgements(self) -> int:
        return self.wins + self.ties + self.losses


def win_rates(judged: Iterable[Judged], *, resamples: int = 2000, seed: int = 0) -> list[WinRate]:
    """Per pair of runs (in name order), the first run's wins, ties, losses and win rate with its CI."""
    by_pair: dict[tuple[str, str], list[Judged]] = defaultdict(list)
    for j in judged:
        by_pair[(j.first, j.second)].append(j)
    return [_win_rate(pair, rows, resamples, seed) for pair, rows in sorted(by_pair.items())]


def _win_rate(pair: tuple[str, str], rows: Sequence[Judged], resamples: int, seed: int) -> WinRate:
    outcomes = Counter("tie" if j.winner is None else "win" if j.winner == pair[0] else "loss" for j in rows)
    # One cluster per conversation: (points of the first run, judgements), resampled whole.
    clusters: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for j in rows:
        points = 0.5 if j.winner is None else float(j.winner == pair[0])
        cluster = clusters[(j.turn.dataset, j.turn.external_id)]
        cluster[0] += points
        cluster[1] += 1
    sums = [(points, n) for points, n in clusters.values()]
    low = high = None
    if len(sums) >= 2:  # one conversation resamples to itself: no interval to speak of
        low, high = bootstrap_interval(sums, _pooled_rate, resamples=resamples, seed=seed)
    return WinRate(
        *pair,
        wins=outcomes["win"],
        ties=outcomes["tie"],
        losses=outcomes["loss"],
        rate=_pooled_rate(sums),
        low=low,
        high=high,
        n_conversations=len(sums),
    )


def _pooled_rate(clusters: Sequence[tuple[float, float]]) -> float:
    return sum(points for points, _ in clusters) / sum(n for _, n in clusters)


def render_markdown(rates: Sequence[WinRate]) -> list[str]:
    """The report's section on human judgements (no lines when there are none)."""
    if not rates:
        return []
    lines = [
        "## Human judgements (blind pairs)",
        "",
        "A person saw one question, the conversation so far and two answers as A and B (which run was "
        "which hidden, sides balanced) and picked one or a tie. Win rate of the first run: ties count "
        "half; 95 % CI from a seeded bootstrap over conversations.",
        "",
        "| first run | second run | wins | ties | losses | win rate | 95 % CI | conv. / judgements |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rates:
        ci = "—" if r.low is None or r.high is None else f"[{100 * r.low:.0f} %, {100 * r.high:.0f} %]"
        lines.append(
            f"| {r.first} | {r.second} | {r.wins} | {r.ties} | {r.losses} | {100 * r.rate:.0f} % | {ci} "
            f"| {r.n_conversations} / {r.judgements} |"
        )
    return [*lines, ""]


def render_csv(judged: Iterable[Judged]) -> str:
    """One line per judgement (``CSV_COLUMNS``), in the order given; times in ISO 8601."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for j in judged:
        when = j.judged_at.isoformat() if j.judged_at is not None else ""
        writer.writerow(
            [
                when,
                j.judge,
                j.first,
                j.second,
                j.turn.dataset,
                j.turn.external_id,
                j.turn.turn_index + 1,  # numbered from 1, as people read turns everywhere
                j.shown_a,
                j.choice,
                j.winner or "tie",
                j.note,
                j.seed,
            ]
        )
    return out.getvalue()
