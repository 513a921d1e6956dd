"""The quality/latency trade-off of a report as a PNG: one labelled marker per method.

Uses matplotlib's Agg canvas directly (no pyplot), so it needs no display and
changes no global backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.evaluation.report import Point
from pipeline.evaluation.stats import ALL

_DATASET_MARKERS = "s^vD<>pP*hX"


def plot_tradeoff(points: Sequence[Point], path: Path, title: str) -> Path:
    """Mean over datasets (the ``all`` column) as a labelled marker per method, datasets faint.

    x: seconds per question, on a log scale when the values span more than 10x;
    y: token F1 x 100 (official CoQA/QuAC definition). Returns the PNG's path.
    """
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    labels = list(dict.fromkeys(p.label for p in points))
    datasets = sorted({p.dataset for p in points if p.dataset != ALL})
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    markers = {d: _DATASET_MARKERS[i % len(_DATASET_MARKERS)] for i, d in enumerate(datasets)}
    for dataset in datasets:
        mine = [p for p in points if p.dataset == dataset]
        axes.scatter(
            [p.seconds for p in mine],
            [p.f1x100 for p in mine],
            c=[colors[p.label] for p in mine],
            marker=markers[dataset],
            alpha=0.3,
            s=30,
        )
    for p in (p for p in points if p.dataset == ALL):
        axes.scatter([p.seconds], [p.f1x100], color=colors[p.label], s=90, edgecolors="black", zorder=3)
        axes.annotate(p.label, (p.seconds, p.f1x100), xytext=(6, 4), textcoords="offset points", fontsize=9)
    seconds = [p.seconds for p in points if p.seconds > 0]
    if seconds and max(seconds) > 10 * min(seconds):
        axes.set_xscale("log")
    axes.set_xlabel("seconds per question")
    axes.set_ylabel("token F1 × 100")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if datasets:
        handles = [
            Line2D([], [], marker=markers[d], color="grey", linestyle="", alpha=0.6, label=d)
            for d in datasets
        ]
        axes.legend(handles=handles, title="datasets (faint)", fontsize=8, title_fontsize=8, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    return path
