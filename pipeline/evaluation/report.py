"""The results of replayed runs: quality and cost per method and dataset, bounds, comparisons.

Input: the rows of ``db.runs.run_turns`` (one per finished turn) and, optionally, a
BERTScore scorer, ``scorer(candidates, references) -> list[float]``: one F1 in
[0, 1] per candidate, the best over that candidate's references
(``workers.evaluation.scoring.BertScorer``; any callable in tests). Token F1 and
exact match (``pipeline.evaluation.metrics``, the official CoQA/QuAC definitions)
lead every table and every comparison. Pure: no model, plotting or database import.

Methods get one row each (``method_label``: each method labels its rows and says its place,
``pipeline.method.Method.label`` and ``report_role``). Two bounds come from the candidates
stored by a full-policy run of a committee method: "random pick" is the mean score of a
turn's usable candidates (what a uniformly random pick scores on average), "oracle"
is its best candidate (picking by hindsight, per metric). Rows without a gold
answer, and no-answer questions (CANNOTANSWER by QuAC's rule: only a literal
"CANNOTANSWER" would score, and no generator is asked to say it), are left out of
every table and counted in the notes.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any, NamedTuple

from pipeline.errors import InputError
from pipeline.evaluation.metrics import best_exact, best_f1, is_no_answer
from pipeline.evaluation.stats import (
    ALL,
    Cell,
    Comparison,
    ScoredTurn,
    aggregate,
    paired_difference,
)
from pipeline.evaluation.tables import (
    BERTSCORE,
    CALLS,
    CONTAINS,
    EXACT,
    F1,
    METRICS,
    SECONDS,
    render_csv,
    render_markdown,
)
from pipeline.method import REPORT_ROLES, Method
from pipeline.plan import METHODS, method_named

Scorer = Callable[[Sequence[str], Sequence[Sequence[str]]], list[float]]
Row = Mapping[str, Any]

RANDOM_BOUND = "random pick (bound)"
ORACLE_BOUND = "oracle (bound)"
_POLICY_ORDER = {"full": 0, "p1": 1, "p2": 2, "p3": 3}
BLEND_VS_SINGLE = "Blending (full ranking) vs the best single member"
POLICY_VS_FULL = "Reduced ranking vs full ranking (same method and K)"
BLEND_VS_RANDOM = "Blending (full ranking) vs a random pick among its candidates"
VERSUS = "Requested comparisons"


class Point(NamedTuple):
    """A method's place on the quality/latency plane (dataset ALL = the mean over datasets)."""

    label: str
    dataset: str
    seconds: float  # mean seconds per question
    f1x100: float  # mean token F1 x 100


@dataclass(frozen=True)
class Report:
    markdown: str
    csv: str  # long format: method, dataset, metric, value, n_conversations, n_questions
    points: list[Point]
    cells: dict[str, dict[tuple[str, str], Cell]]  # metric -> (label, dataset) -> cell
    comparisons: list[Comparison]


@dataclass(frozen=True)
class RunKey:
    """What a run did; one table row each."""

    run: str
    method: str  # a method's name as the run gives it (``pipeline.plan.METHODS``)
    policy: str
    top_k: int

    @classmethod
    def of(cls, row: Row) -> RunKey:
        return cls(str(row["run"]), str(row["method"]), str(row["policy"]), int(row["top_k"]))

    @property
    def alone(self) -> str | None:
        """The member that answered every turn alone (``Method.alone``); None: the committee did."""
        variant = method_named(self.method)
        return None if variant is None else variant.alone(self.method)

    @property
    def stores_committee(self) -> bool:
        """Whether every member answered every turn, so candidates give the bounds."""
        return method_named(self.method) is not None and self.alone is None and self.policy == "full"

    def sort_key(self) -> tuple[int, str, int, int, str]:
        """Single members, then the blend, then the committee baselines (``Method.report_role``);
        unknown methods last (``method_label`` refuses them)."""
        variant = method_named(self.method)
        group = len(REPORT_ROLES) if variant is None else REPORT_ROLES.index(variant.report_role)
        policy = _POLICY_ORDER.get(self.policy, len(_POLICY_ORDER))
        return (group, self.alone or "", policy, self.top_k, self.run)


def method_label(method: str, policy: str, top_k: int) -> str:
    """The table label (``Method.label``): m0 (single), peer-blend, peer-blend p2 K=3, pairwise K=1;
    unknown methods raise."""
    variant = method_named(method)
    if variant is None:
        expected = f"{', '.join(METHODS[:-1])} or {METHODS[-1]}"
        raise InputError(f"cannot report unknown method {method!r}; expected {expected}")
    return variant.label(method, policy, top_k)


def versus_section(blend: Method, baseline: Method) -> str:
    """The section comparing a blend with a committee baseline, each as it calls itself
    (``Method.described``): "<blend> vs <baseline> (full ranking, same K)"."""
    title = f"{blend.described} vs {baseline.described} (full ranking, same K)"
    return title[:1].upper() + title[1:]


def label_runs(keys: Iterable[RunKey]) -> dict[RunKey, str]:
    """A label per run, in table order; runs that would share a label get ``[run]`` appended."""
    ordered = sorted(set(keys), key=RunKey.sort_key)
    base = {k: method_label(k.method, k.policy, k.top_k) for k in ordered}
    shared = Counter(base.values())
    return {k: base[k] if shared[base[k]] == 1 else f"{base[k]} [{k.run}]" for k in ordered}


def contains_gold(answer: str, golds: Iterable[str]) -> bool:
    """Whether a gold answer occurs in the answer as whole words, ignoring case, punctuation, articles."""
    padded = f" {_normalize(answer)} "
    return any(norm and f" {norm} " in padded for norm in map(_normalize, golds))


def _normalize(text: str) -> str:
    text = "".join(" " if ch in string.punctuation else ch for ch in text.lower())
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def build_report(
    rows: Sequence[Row],
    scorer: Scorer | None,
    *,
    encoder_name: str | None,
    title: str = "peerblend results",
    notes: Sequence[str] = (),
    resamples: int = 2000,
    seed: int = 0,
    versus: Sequence[tuple[str, str]] = (),
) -> Report:
    """Score every answer once, average, compare, and render the tables.

    ``scorer``: BERTScore (None: token F1 and exact match only, in seconds).
    ``versus``: (method run, baseline run) names to compare besides the standard comparisons.
    ``notes`` are printed under the header: say there which answer style the
    generators were asked for and whether they saw the passage.
    """
    labels = label_runs(RunKey.of(r) for r in rows)
    usable = [r for r in rows if _golds(r) and not is_no_answer(_golds(r))]
    skipped = Counter(labels[RunKey.of(r)] for r in rows if not _golds(r))
    no_answer = Counter(labels[RunKey.of(r)] for r in rows if _golds(r) and is_no_answer(_golds(r)))
    sources = _bound_sources(usable)
    bound_rows = [
        r for r in usable if sources.get(r["dataset"]) == RunKey.of(r) and len(r["candidates"]) >= 2
    ]
    scores = _score(_pairs(usable, bound_rows), scorer) if scorer is not None else {}
    turns = [_scored_turn(r, labels[RunKey.of(r)], scores) for r in usable]
    turns += [t for r in bound_rows for t in _bound_turns(r, scores)]
    cells = {metric: aggregate(turns, metric) for metric in METRICS}
    order = [*labels.values(), *(b for b in (RANDOM_BOUND, ORACLE_BOUND) if (b, ALL) in cells[F1])]
    datasets = sorted({t.dataset for t in turns})
    runs = {v: k for k, v in labels.items()}
    by_run = {k.run: label for k, label in labels.items()}
    wanted = [(by_run[a], by_run[b]) for a, b in versus if a in by_run and b in by_run]
    comparisons = _comparisons(turns, cells, runs, datasets, (resamples, seed), wanted)
    report_notes = [
        *_bound_notes(sources, labels, cells),
        *_skip_notes(skipped),
        *_no_answer_notes(no_answer),
    ]
    markdown = render_markdown(
        title=title,
        encoder_name=encoder_name if scorer is not None else None,
        notes=notes,
        order=order,
        datasets=datasets,
        cells=cells,
        comparisons=comparisons,
        report_notes=report_notes,
    )
    return Report(markdown, render_csv(cells, order, datasets), _points(cells, labels), cells, comparisons)


def _golds(row: Row) -> list[str]:
    return [g for g in (str(g).strip() for g in row.get("gold") or ()) if g]


def _bound_sources(rows: Sequence[Row]) -> dict[str, RunKey]:
    """Per dataset, the full-committee run with the most turns of 2+ usable candidates."""
    counts: Counter[tuple[str, RunKey]] = Counter(
        (r["dataset"], RunKey.of(r))
        for r in rows
        if RunKey.of(r).stores_committee and len(r["candidates"]) >= 2
    )
    best: dict[str, RunKey] = {}
    for (dataset, key), n in sorted(counts.items(), key=lambda item: item[0][1].sort_key()):
        if dataset not in best or n > counts[(dataset, best[dataset])]:
            best[dataset] = key
    return best


def _pairs(rows: Iterable[Row], bound_rows: Iterable[Row]) -> Iterable[tuple[str, tuple[str, ...]]]:
    for r in rows:
        yield str(r["answer"]), tuple(_golds(r))
    for r in bound_rows:
        for text in r["candidates"].values():
            yield str(text), tuple(_golds(r))


def _score(
    pairs: Iterable[tuple[str, tuple[str, ...]]], scorer: Scorer
) -> dict[tuple[str, tuple[str, ...]], float]:
    """BERTScore F1 per distinct (text, golds) pair, one scorer call; an empty text scores 0 unscored."""
    unique = [p for p in dict.fromkeys(pairs) if p[0].strip()]
    if not unique:
        return {}
    scores = scorer([text for text, _ in unique], [list(golds) for _, golds in unique])
    if len(scores) != len(unique):
        raise ValueError(f"the scorer returned {len(scores)} scores for {len(unique)} candidates")
    return dict(zip(unique, scores, strict=True))


def answer_metrics(
    answer: str, golds: Sequence[str], bertscores: Mapping[tuple[str, tuple[str, ...]], float] | None = None
) -> dict[str, float]:
    """An answer's quality metrics x 100: token F1, exact match, gold contained, BERTScore when scored."""
    values = {
        F1: 100.0 * best_f1(answer, golds),
        EXACT: 100.0 * best_exact(answer, golds),
        CONTAINS: 100.0 * contains_gold(answer, golds),
    }
    if bertscores:
        values[BERTSCORE] = 100.0 * bertscores.get((answer, tuple(golds)), 0.0)
    return values


def _scored_turn(row: Row, label: str, scores: Mapping[tuple[str, tuple[str, ...]], float]) -> ScoredTurn:
    values = answer_metrics(str(row["answer"]), _golds(row), scores)
    timings = row.get("timings") or {}
    for metric, key in ((SECONDS, "total_s"), (CALLS, "model_calls")):
        if timings.get(key) is not None:
            values[metric] = float(timings[key])
    return _turn(row, label, values)


def _bound_turns(row: Row, scores: Mapping[tuple[str, tuple[str, ...]], float]) -> list[ScoredTurn]:
    golds = _golds(row)
    per_candidate = [answer_metrics(str(t), golds, scores) for t in row["candidates"].values()]
    metrics = per_candidate[0].keys()
    return [
        _turn(row, RANDOM_BOUND, {m: fmean(v[m] for v in per_candidate) for m in metrics}),
        _turn(row, ORACLE_BOUND, {m: max(v[m] for v in per_candidate) for m in metrics}),
    ]


def _turn(row: Row, label: str, values: dict[str, float]) -> ScoredTurn:
    external = row.get("external_id")
    return ScoredTurn(
        label=label,
        dataset=str(row["dataset"]),
        conversation=str(row["conversation_id"]),
        external_id=None if external is None else str(external),
        turn_index=int(row["turn_index"]),
        values=values,
    )


def _comparisons(
    turns: Sequence[ScoredTurn],
    cells: Mapping[str, Mapping[tuple[str, str], Cell]],
    runs: Mapping[str, RunKey],
    datasets: Sequence[str],
    bootstrap: tuple[int, int],
    versus: Sequence[tuple[str, str]],
) -> list[Comparison]:
    resamples, seed = bootstrap
    by_cell: dict[tuple[str, str], list[ScoredTurn]] = defaultdict(list)
    for turn in turns:
        by_cell[(turn.label, turn.dataset)].append(turn)
    out = []
    requested = ((VERSUS, d, a, b) for a, b in versus for d in datasets)
    for section, dataset, method, baseline in (*_what_to_compare(cells[F1], runs, datasets), *requested):
        quality = paired_difference(
            by_cell[(method, dataset)], by_cell[(baseline, dataset)], F1, resamples=resamples, seed=seed
        )
        if quality is not None:
            seconds = cells[SECONDS]
            m, b = seconds.get((method, dataset)), seconds.get((baseline, dataset))
            speedup = b.value / m.value if m and b and m.value > 0 else None
            bert = paired_difference(
                by_cell[(method, dataset)],
                by_cell[(baseline, dataset)],
                BERTSCORE,
                resamples=resamples,
                seed=seed,
            )
            out.append(Comparison(section, dataset, method, baseline, quality, speedup, bert))
    return out


def _what_to_compare(
    quality: Mapping[tuple[str, str], Cell], runs: Mapping[str, RunKey], datasets: Sequence[str]
) -> Iterable[tuple[str, str, str, str]]:
    """(section, dataset, method, baseline) for every comparison the report shows."""
    singles = [label for label, k in runs.items() if k.alone is not None]
    blends = [label for label, k in runs.items() if k.stores_committee]
    for dataset in datasets:
        ran = [s for s in singles if (s, dataset) in quality]
        if ran:
            best = max(ran, key=lambda s: quality[(s, dataset)].value)
            yield from ((BLEND_VS_SINGLE, dataset, b, best) for b in blends)
    for dataset in (d for d in datasets if (RANDOM_BOUND, d) in quality):
        yield from ((BLEND_VS_RANDOM, dataset, b, RANDOM_BOUND) for b in blends if (b, dataset) in quality)
    for a, b in ((a, b) for a in blends for b in blends):
        blend, baseline = method_named(runs[a].method), method_named(runs[b].method)
        if blend is None or baseline is None or runs[a].top_k != runs[b].top_k:
            continue
        if (blend.report_role, baseline.report_role) == ("blend", "baseline"):
            yield from ((versus_section(blend, baseline), d, a, b) for d in datasets)
    for label, k in runs.items():
        if k.alone is None and k.policy != "full":
            fulls = [
                f
                for f in blends
                if (runs[f].method, runs[f].top_k, runs[f].policy) == (k.method, k.top_k, "full")
            ]
            if len(fulls) == 1:  # several full runs: which is its baseline is for --versus to say
                yield from ((POLICY_VS_FULL, d, label, fulls[0]) for d in datasets)


def _bound_notes(
    sources: Mapping[str, RunKey], labels: Mapping[RunKey, str], cells: Mapping[str, Mapping[Any, Cell]]
) -> list[str]:
    notes = []
    for dataset, key in sorted(sources.items()):
        n = cells[F1][(RANDOM_BOUND, dataset)].n_questions
        notes.append(
            f"Bounds on {dataset}: from the candidates of run `{key.run}` ({labels[key]}), "
            f"{n} questions with 2+ usable candidates. Candidates depend on that run's blended history."
        )
    return notes


def _skip_notes(skipped: Mapping[str, int]) -> list[str]:
    return [f"{label}: {n} question(s) without a gold answer left out." for label, n in skipped.items()]


def _no_answer_notes(no_answer: Mapping[str, int]) -> list[str]:
    return [
        f"{label}: {n} question(s) whose gold is CANNOTANSWER left out (QuAC's scorer gives them 1 only "
        "for the literal answer CANNOTANSWER, which no generator is asked to give: 0 for every method)."
        for label, n in no_answer.items()
    ]


def _points(cells: Mapping[str, Mapping[tuple[str, str], Cell]], labels: Mapping[RunKey, str]) -> list[Point]:
    """Every (method, dataset) cell, ALL included, that has both a quality and a latency."""
    keys = [key for label in labels.values() for key in cells[F1] if key[0] == label]
    return [
        Point(*key, cells[SECONDS][key].value, cells[F1][key].value) for key in keys if key in cells[SECONDS]
    ]
