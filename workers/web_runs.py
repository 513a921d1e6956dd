"""What the runs page shows: the runs, their report as tables and a plot, human win rates,
and the report ``peerblend report`` committed to the report folder.

The database's report is ``build_report`` over the finished turns of every run, token F1
and exact match only (BERTScore needs an encoder: ``peerblend report`` computes it); the
committed report is read back from its ``results.csv`` (``tables.read_csv``), never parsed
out of Markdown; a folder holding only ``results.md`` (written before the CSV was) shows it
as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.evaluation import human
from pipeline.evaluation.report import ORACLE_BOUND, RANDOM_BOUND, RunKey, build_report, label_runs
from pipeline.evaluation.stats import ALL
from pipeline.evaluation.tables import F1, delta_cells, metric_tables, read_csv
from pipeline.service.client import BlendClient
from workers.tradeoff_svg import points_of, tradeoff_svg

RESAMPLES = 1000  # bootstrap resamples on the page: intervals to a few tenths, in well under a second


def runs_view(client: BlendClient, report_dir: Path) -> dict[str, Any]:
    """The runs page's context: ``runs``, ``report`` (or None), ``human``, ``committed`` (or None)."""
    runs = client.store.run_summaries()
    rows = client.store.run_turns([r["run"] for r in runs])
    judged = client.store.judged()
    try:
        labels = label_runs(RunKey.of(r) for r in rows)
        report, problem = database_report(rows, list(labels.values())), None
    except InputError as error:  # a run of a method the report does not know: say so, show the rest
        labels, report, problem = {}, None, f"no report of these runs: {error}"
    return {
        "runs": runs,
        "report": report,
        "report_problem": problem,
        "human": human.win_rates(judged, resamples=RESAMPLES),
        "judgements": len(judged),
        "labels": {key.run: label for key, label in labels.items()},
        "committed": committed_report(report_dir),
        "report_dir": report_dir,
        "delta_cells": delta_cells,
    }


def database_report(rows: list[dict[str, Any]], labels: list[str]) -> dict[str, Any] | None:
    """The stored runs' report as tables, comparisons and a plot; None before a turn is stored.

    ``labels``: the runs' table rows in the report's order (``label_runs``); the bounds follow.
    """
    if not rows:
        return None
    report = build_report(rows, None, encoder_name=None, resamples=RESAMPLES)
    quality = report.cells[F1]
    order = [*labels, *(b for b in (RANDOM_BOUND, ORACLE_BOUND) if (b, ALL) in quality)]
    datasets = sorted({dataset for _, dataset in quality if dataset != ALL})
    return {
        "tables": metric_tables(report.cells, order, datasets),
        "comparisons": report.comparisons,
        "plot": tradeoff_svg(report.points),
    }


def committed_report(report_dir: Path) -> dict[str, Any] | None:
    """The report in ``report_dir``: its tables and plot from results.csv, its PNG plots; None if absent."""
    csv_file, markdown = report_dir / "results.csv", report_dir / "results.md"
    plots = sorted(p.name for p in report_dir.glob("*.png")) if report_dir.is_dir() else []
    if not (csv_file.is_file() or markdown.is_file() or plots):
        return None
    committed: dict[str, Any] = {
        "plots": plots,
        "tables": [],
        "plot": None,
        "markdown": None,
        "problem": None,
    }
    if csv_file.is_file():
        try:
            cells, order, datasets = read_csv(csv_file.read_text(encoding="utf-8"))
        except (ValueError, KeyError) as error:
            committed["problem"] = f"{csv_file} could not be read as a report: {error}"
        else:
            committed["tables"] = metric_tables(cells, order, datasets)
            committed["plot"] = tradeoff_svg(points_of(cells, order))
    if not committed["tables"] and markdown.is_file():
        committed["markdown"] = markdown.read_text(encoding="utf-8")
    return committed
