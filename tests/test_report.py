"""The report over hand-made run rows, scored by a fake scorer (token-overlap F1)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import pytest

from pipeline.errors import InputError
from pipeline.evaluation.report import (
    BLEND_VS_SINGLE,
    ORACLE_BOUND,
    POLICY_VS_FULL,
    RANDOM_BOUND,
    VERSUS,
    RunKey,
    build_report,
    contains_gold,
    label_runs,
    method_label,
)
from pipeline.evaluation.stats import ALL, ScoredTurn, paired_difference
from pipeline.evaluation.tables import BERTSCORE, CSV_COLUMNS, EXACT, F1, SECONDS

PEER_VS_PAIRWISE = "Peer review vs pairwise ranking (full ranking, same K)"


class OverlapScorer:
    """Token-overlap F1, the best over a candidate's references; records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[list[str]]]] = []

    def __call__(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
        assert all(c.strip() for c in candidates), "an empty candidate reached the scorer"
        self.calls.append((list(candidates), [list(r) for r in references]))
        return [max(_overlap(c, r) for r in refs) for c, refs in zip(candidates, references, strict=True)]


def _overlap(candidate: str, reference: str) -> float:
    c, r = candidate.lower().split(), reference.lower().split()
    common = sum(min(c.count(w), r.count(w)) for w in set(c))
    return 0.0 if not common else 2 * common / (len(c) + len(r))


def row(
    conversation: str,
    turn: int,
    answer: str,
    gold: Sequence[str] = ("paris",),
    *,
    run: str = "r",
    method: str = "single:m0",
    policy: str = "full",
    top_k: int = 1,
    dataset: str = "d1",
    candidates: dict[str, str] | None = None,
    total_s: float = 1.0,
    calls: float = 1.0,
) -> dict[str, Any]:
    return {
        "run": run,
        "method": method,
        "policy": policy,
        "top_k": top_k,
        "dataset": dataset,
        "conversation_id": f"{run}-{conversation}",
        "external_id": conversation,
        "turn_index": turn,
        "gold": list(gold),
        "answer": answer,
        "chosen": None,
        "candidates": candidates or {},
        "timings": {"total_s": total_s, "model_calls": calls},
    }


def report(rows: Sequence[dict[str, Any]], **kwargs: Any):  # noqa: ANN201
    return build_report(rows, OverlapScorer(), encoder_name="fake-overlap", resamples=200, **kwargs)


def test_method_labels() -> None:
    assert method_label("single:smol", "full", 1) == "smol (single)"
    assert method_label("peer", "full", 1) == "peer-blend"
    assert method_label("peer", "p2", 1) == "peer-blend p2"
    assert method_label("peer", "full", 3) == "peer-blend K=3"
    assert method_label("pairwise", "full", 1) == "pairwise K=1"
    assert method_label("pairwise", "full", 3) == "pairwise K=3"
    with pytest.raises(InputError, match="unknown method"):
        method_label("vote", "full", 1)


def test_runs_sharing_a_label_are_kept_apart_and_ordered() -> None:
    keys = [
        RunKey("b", "pairwise", "full", 3),
        RunKey("a", "peer", "p2", 1),
        RunKey("a", "peer", "full", 1),
        RunKey("b", "peer", "full", 1),
        RunKey("a", "single:m1", "full", 1),
    ]

    labels = list(label_runs(keys).values())

    assert labels == ["m1 (single)", "peer-blend [a]", "peer-blend [b]", "peer-blend p2", "pairwise K=3"]


def test_averages_per_conversation_then_over_conversations_then_datasets() -> None:
    # Given d1: conversation A scores 1, 0, 0 (mean 1/3), B scores 1; d2: one conversation scores 0
    rows = [
        row("A", 0, "paris", total_s=1.0),
        row("A", 1, "rome", total_s=1.0),
        row("A", 2, "rome", total_s=1.0),
        row("B", 0, "paris", total_s=4.0),
        row("C", 0, "rome", dataset="d2", total_s=2.0),
    ]

    cells = report(rows).cells

    # Then d1 = (1/3 + 1) / 2, not the pooled 2/4; all = mean of the dataset means
    assert cells[F1][("m0 (single)", "d1")].value == pytest.approx(100 * 2 / 3)
    assert cells[F1][("m0 (single)", "d2")].value == pytest.approx(0.0)
    assert cells[F1][("m0 (single)", ALL)].value == pytest.approx(100 / 3)
    assert cells[SECONDS][("m0 (single)", "d1")].value == pytest.approx(2.5)
    assert cells[SECONDS][("m0 (single)", ALL)].value == pytest.approx(2.25)
    cell = cells[F1][("m0 (single)", ALL)]
    assert (cell.n_conversations, cell.n_questions) == (3, 5)


def test_bounds_are_the_mean_and_the_best_candidate_of_full_committee_runs() -> None:
    # Given a full peer run storing three candidates per turn, and a p2 run that must not be used
    candidates = {"m0": "paris", "m1": "rome", "m2": "paris france"}  # F1: 1, 0, 2/3
    rows = [
        row("A", 0, "paris", method="peer", candidates=candidates),
        row("A", 0, "rome", run="q", method="peer", policy="p2", candidates={"m0": "paris", "m1": "x"}),
    ]

    result = report(rows)

    f1 = result.cells[F1]
    assert f1[(RANDOM_BOUND, "d1")].value == pytest.approx(100 * (1 + 0 + 2 / 3) / 3)
    assert f1[(ORACLE_BOUND, "d1")].value == pytest.approx(100.0)
    assert f1[(RANDOM_BOUND, "d1")].n_questions == 1
    assert "from the candidates of run `r` (peer-blend)" in result.markdown
    assert (RANDOM_BOUND, ALL) not in result.cells[SECONDS]  # bounds have no latency
    assert all(p.label not in (RANDOM_BOUND, ORACLE_BOUND) for p in result.points)


def test_csv_is_long_format_with_counts() -> None:
    rows = [row("A", 0, "paris"), row("A", 1, "rome")]

    lines = list(csv.DictReader(io.StringIO(report(rows).csv)))

    assert tuple(lines[0]) == CSV_COLUMNS
    quality = next(x for x in lines if x["metric"] == F1 and x["dataset"] == "d1")
    assert quality == {
        "method": "m0 (single)",
        "dataset": "d1",
        "metric": F1,
        "value": "50",
        "n_conversations": "1",
        "n_questions": "2",
    }


def test_rows_without_gold_are_skipped_and_counted() -> None:
    rows = [row("A", 0, "paris"), row("A", 1, "rome", gold=[]), row("A", 2, "x", gold=["  "])]

    result = report(rows)

    assert result.cells[F1][("m0 (single)", "d1")].n_questions == 1
    assert "m0 (single): 2 question(s) without a gold answer left out." in result.markdown


def test_each_distinct_answer_is_scored_once_and_empty_answers_score_zero() -> None:
    scorer = OverlapScorer()
    rows = [row("A", 0, "paris"), row("B", 0, "paris"), row("C", 0, "   ")]

    result = build_report(rows, scorer, encoder_name="fake")

    assert scorer.calls == [(["paris"], [["paris"]])]
    assert result.cells[F1][("m0 (single)", "d1")].value == pytest.approx(200 / 3)


def test_paired_difference_matches_questions_and_averages_per_conversation() -> None:
    def turns(label: str, values: dict[tuple[str, int], float]) -> list[ScoredTurn]:
        return [ScoredTurn(label, "d", f"{label}{c}", c, t, {F1: v}) for (c, t), v in values.items()]

    # Given conversation A differs by +10 and +30 (mean +20), B by -10; C is answered by one method only
    a = turns("a", {("A", 0): 60, ("A", 1): 80, ("B", 0): 40, ("C", 0): 99})
    b = turns("b", {("A", 0): 50, ("A", 1): 50, ("B", 0): 50})

    diff = paired_difference(a, b, F1, resamples=500, seed=1)

    assert diff is not None
    assert diff.mean == pytest.approx(5.0)
    assert (diff.n_conversations, diff.n_questions) == (2, 3)
    assert -10.0 <= diff.low <= diff.mean <= diff.high <= 20.0
    assert paired_difference(a, b, F1, resamples=500, seed=1) == diff  # seeded
    assert paired_difference(a, turns("c", {("Z", 0): 1}), F1) is None


def test_blend_is_compared_with_the_best_single_member_and_policies_with_full() -> None:
    # Given two singles (m1 better), a full peer run that is always right and a p2 run twice as fast
    rows = []
    for c in ("A", "B", "C"):
        rows += [
            row(c, 0, "rome", method="single:m0", run="s0"),
            row(c, 0, "paris rome", method="single:m1", run="s1"),
            row(
                c,
                0,
                "paris",
                method="peer",
                run="full",
                total_s=4.0,
                candidates={"m0": "rome", "m1": "paris"},
            ),
            row(c, 0, "paris rome", method="peer", policy="p2", run="p2", total_s=2.0),
        ]

    comparisons = {(c.section, c.method, c.baseline): c for c in report(rows).comparisons}

    vs_single = comparisons[(BLEND_VS_SINGLE, "peer-blend", "m1 (single)")]
    assert vs_single.quality.mean == pytest.approx(100 - 100 * 2 / 3)
    assert vs_single.quality.low == pytest.approx(vs_single.quality.mean)  # every conversation agrees
    policy = comparisons[(POLICY_VS_FULL, "peer-blend p2", "peer-blend")]
    assert policy.quality.mean == pytest.approx(100 * 2 / 3 - 100)
    assert policy.speedup == pytest.approx(2.0)


def test_the_blend_is_compared_with_a_committee_baseline_of_the_same_k_only() -> None:
    # Given full peer runs with K=1 and K=3 and a pairwise run with K=1
    rows = []
    for c in ("A", "B"):
        candidates = {"m0": "rome", "m1": "paris"}
        rows += [
            row(c, 0, "paris", method="peer", run="peer1", candidates=candidates),
            row(c, 0, "paris", method="peer", run="peer3", top_k=3, candidates=candidates),
            row(c, 0, "rome", method="pairwise", run="pw1", candidates=candidates),
        ]

    versus = [(c.method, c.baseline) for c in report(rows).comparisons if c.section == PEER_VS_PAIRWISE]

    # Then: peer-blend against pairwise K=1 only (the section titled by what each method is called)
    assert versus == [("peer-blend", "pairwise K=1")]


def test_a_reduced_run_is_compared_automatically_only_with_the_one_full_run_of_its_method() -> None:
    # Given p1 and p2 runs and two full peer runs (a re-ranked one beside the stored one)
    rows = []
    for c in ("A", "B"):
        rows += [
            row(c, 0, "paris", method="peer", run=run, policy=policy)
            for run, policy in (("full", "full"), ("full-2", "full"), ("p1", "p1"), ("p2", "p2"))
        ]

    built = report(rows)
    sections = {c.section for c in built.comparisons}

    # Then: no reduced run is compared with another reduced run, nor with an arbitrary full run
    assert POLICY_VS_FULL not in sections
    # Unless --versus names the baseline
    requested = build_report(rows, None, encoder_name=None, versus=[("p2", "full-2")]).comparisons
    assert {(c.method, c.baseline) for c in requested if c.section == VERSUS} == {
        ("peer-blend p2", "peer-blend [full-2]")
    }


def test_markdown_names_the_encoder_and_the_averaging() -> None:
    rows = [row("A", 0, "paris"), row("A", 0, "paris", method="peer", run="p", dataset="d2")]

    markdown = report(rows, notes=["Generators were asked for short answers."]).markdown

    assert "`fake-overlap`" in markdown
    assert "no baseline rescaling" in markdown
    assert "per conversation first" in markdown
    assert "- Generators were asked for short answers." in markdown
    assert "| m0 (single) | 100.0 | — | 100.0* |" in markdown


def test_points_hold_every_method_per_dataset_and_overall() -> None:
    rows = [row("A", 0, "paris", total_s=2.0), row("A", 0, "rome", method="peer", run="p", total_s=3.0)]

    points = report(rows).points

    assert [(p.label, p.dataset, p.seconds, round(p.f1x100)) for p in points] == [
        ("m0 (single)", "d1", 2.0, 100),
        ("m0 (single)", ALL, 2.0, 100),
        ("peer-blend", "d1", 3.0, 0),
        ("peer-blend", ALL, 3.0, 0),
    ]


@pytest.mark.parametrize(
    ("answer", "golds", "expected"),
    [
        ("The answer is Paris.", ["paris"], True),
        ("It is The Hobbit, by Tolkien", ["Hobbit"], True),
        ("He said so", ["ai"], False),  # whole words only
        ("Rome", ["Paris", "rome"], True),
        ("anything", ["", "  "], False),
    ],
)
def test_contains_gold(answer: str, golds: list[str], expected: bool) -> None:
    assert contains_gold(answer, golds) is expected


def test_token_f1_and_exact_match_lead_and_bertscore_follows() -> None:
    # Given one answer with partial overlap: token F1 2/3, no exact match; the fake BERTScore agrees
    rows = [row("A", 0, "Frank Herbert", gold=["Herbert"])]

    result = report(rows)

    assert result.cells[F1][("m0 (single)", "d1")].value == pytest.approx(200 / 3)
    assert result.cells[EXACT][("m0 (single)", "d1")].value == 0.0
    assert result.cells[BERTSCORE][("m0 (single)", "d1")].value == pytest.approx(200 / 3)
    headings = [line for line in result.markdown.splitlines() if line.startswith("## ")]
    assert headings[:3] == [
        "## Quality: token F1 × 100 (official CoQA/QuAC definition)",
        "## Exact match (%)",
        "## BERTScore F1 × 100",
    ]


def test_without_a_bertscore_scorer_the_report_has_token_metrics_only() -> None:
    result = build_report([row("A", 0, "paris")], None, encoder_name=None, resamples=50)

    assert result.cells[F1][("m0 (single)", "d1")].value == 100.0
    assert not result.cells[BERTSCORE]
    assert "BERTScore: not computed" in result.markdown


def test_cannotanswer_questions_are_left_out_and_counted() -> None:
    rows = [row("A", 0, "paris"), row("A", 1, "I do not know", gold=["CANNOTANSWER"])]

    result = report(rows)

    assert result.cells[F1][("m0 (single)", "d1")].n_questions == 1
    assert "m0 (single): 1 question(s) whose gold is CANNOTANSWER left out" in result.markdown


def test_comparisons_lead_with_token_f1_and_carry_bertscore() -> None:
    # Given a blend that answers "paris france" (token F1 2/3) and a single member that answers "rome"
    rows = []
    for c in ("A", "B"):
        rows += [
            row(c, 0, "rome", method="single:m0", run="s0"),
            row(c, 0, "paris france", method="peer", run="full", candidates={"m0": "rome", "m1": "paris"}),
        ]

    (comparison,) = [c for c in report(rows).comparisons if c.section == BLEND_VS_SINGLE]

    assert comparison.quality.mean == pytest.approx(200 / 3)
    assert comparison.bertscore is not None and comparison.bertscore.mean == pytest.approx(200 / 3)
