"""Rendering the report's cells as Markdown (for people) and long-format CSV (for tools)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.evaluation.stats import ALL, Cell, Comparison, PairedDifference

Cells = Mapping[str, Mapping[tuple[str, str], Cell]]  # metric -> (label, dataset) -> cell

F1 = "token_f1x100"  # official CoQA/QuAC token F1 x 100 against the gold answers (the lead metric)
EXACT = "exact_match_pct"  # official exact match, % of answers
BERTSCORE = "bertscore_f1x100"  # BERTScore F1 x 100 against the gold answers
CONTAINS = "contains_gold_pct"  # % of answers that contain a gold answer
SECONDS = "seconds_per_question"  # timings["total_s"]: from sending the question to the stored answer
CALLS = "model_calls_per_question"  # timings["model_calls"]: generations + reviews
# metric -> (section heading, cell format), in the order the tables appear
_TABLES = {
    F1: ("Quality: token F1 × 100 (official CoQA/QuAC definition)", "{:.1f}"),
    EXACT: ("Exact match (%)", "{:.1f}"),
    BERTSCORE: ("BERTScore F1 × 100", "{:.1f}"),
    CONTAINS: ("Gold answer contained in the answer (%)", "{:.1f}"),
    SECONDS: ("Time per question (s)", "{:.2f}"),
    CALLS: ("Model calls per question", "{:.1f}"),
}
METRICS = tuple(_TABLES)
CSV_COLUMNS = ("method", "dataset", "metric", "value", "n_conversations", "n_questions")


def render_markdown(
    *,
    title: str,
    encoder_name: str | None,
    notes: Sequence[str],
    order: Sequence[str],
    datasets: Sequence[str],
    cells: Cells,
    comparisons: Sequence[Comparison],
    report_notes: Sequence[str],
) -> str:
    lines = [f"# {title}", "", *_header(encoder_name), *(f"- {note}" for note in notes), ""]
    tables = metric_tables(cells, order, datasets)
    partial = any(table.partial for table in tables)
    for table in tables:
        lines += [f"## {table.heading}", "", *_table(table), ""]
    lines += ["## Coverage (conversations / questions scored)", ""]
    lines += _coverage(cells[F1], order, datasets)
    lines += ["", *_comparisons(comparisons)]
    footnotes = list(report_notes)
    if partial:
        footnotes.append("`*`: the method did not run on every dataset; its `all` averages fewer columns.")
    if footnotes:
        lines += ["## Notes", "", *(f"- {note}" for note in footnotes), ""]
    return "\n".join(lines)


def _header(encoder_name: str | None) -> list[str]:
    bertscore = (
        f"- BERTScore F1 × 100 (the best over the golds): encoder `{encoder_name}`. Raw F1, no baseline "
        "rescaling: compare rows with each other, not with numbers from another encoder. BERTScore "
        "rewards answer style: short golds (ConvQuestions entity names) favour terse answers."
        if encoder_name
        else "- BERTScore: not computed for this report."
    )
    return [
        "- Quality: token F1 × 100 and exact match of each answer against the question's gold answers, "
        "as the official CoQA/QuAC scorers define them (lower-case, punctuation and articles removed; "
        "the best over the golds, without their leave-one-out averaging). Questions whose gold is "
        "CANNOTANSWER by QuAC's rule are left out (see the notes).",
        bertscore,
        "- Averages: per conversation first, then over the conversations of a dataset; "
        "`all` is the mean of the dataset columns.",
        '- "Gold contained": the answer holds a gold answer as whole words (case, punctuation '
        "and articles ignored). Time: from sending a question to its stored answer.",
    ]


@dataclass(frozen=True)
class MetricTable:
    """One metric's table, its cells formatted: what the Markdown report and the runs page show."""

    metric: str
    heading: str
    columns: tuple[str, ...]  # the datasets, then ALL
    rows: tuple[tuple[str, tuple[str, ...]], ...]  # (label, one value per column; "—": not run there)
    partial: bool  # a row's ALL (marked "*") averages fewer datasets than the columns


def metric_tables(cells: Cells, order: Sequence[str], datasets: Sequence[str]) -> list[MetricTable]:
    """Every metric with a value, in the report's order; rows in ``order``."""
    tables = []
    for metric, (heading, fmt) in _TABLES.items():
        labels = [label for label in order if (label, ALL) in cells[metric]]
        if not labels:
            continue
        rows, partial = [], False
        for label in labels:
            values = [
                fmt.format(cells[metric][(label, d)].value) if (label, d) in cells[metric] else "—"
                for d in datasets
            ]
            star = "*" if "—" in values else ""
            partial = partial or bool(star)
            rows.append((label, (*values, fmt.format(cells[metric][(label, ALL)].value) + star)))
        tables.append(MetricTable(metric, heading, (*datasets, ALL), tuple(rows), partial))
    return tables


def _table(table: MetricTable) -> list[str]:
    lines = [_row(["method", *table.columns]), _row(["---", *("---:" for _ in table.columns)])]
    return lines + [_row([label, *values]) for label, values in table.rows]


def _coverage(
    cells: Mapping[tuple[str, str], Cell], order: Sequence[str], datasets: Sequence[str]
) -> list[str]:
    lines = [_row(["method", *datasets, ALL]), _row(["---", *("---:" for _ in (*datasets, ALL))])]
    for label in order:
        counts = [
            f"{cells[(label, d)].n_conversations} / {cells[(label, d)].n_questions}"
            if (label, d) in cells
            else "—"
            for d in (*datasets, ALL)
        ]
        lines.append(_row([label, *counts]))
    return lines


def _comparisons(comparisons: Sequence[Comparison]) -> list[str]:
    if not comparisons:
        return []
    lines = [
        "## Comparisons",
        "",
        "Paired on the questions both methods answered (same dataset conversation and turn); "
        "Δ = method − baseline in token F1 × 100 (and BERTScore F1 × 100), per conversation then over "
        "conversations; 95 % CI from a seeded bootstrap over conversations. Speed-up = baseline time / "
        "method time (cell means).",
    ]
    sections = dict.fromkeys(c.section for c in comparisons)
    for section in sections:
        lines += ["", f"### {section}", ""]
        lines.append(
            _row(
                [
                    "dataset",
                    "method",
                    "baseline",
                    "Δ F1×100",
                    "95 % CI",
                    "Δ BERTScore",
                    "95 % CI",
                    "speed-up",
                    "conv. / questions",
                ]
            )
        )
        lines.append(_row(["---", "---", "---", *("---:" for _ in range(6))]))
        lines += [_comparison_row(c) for c in comparisons if c.section == section]
    return [*lines, ""]


def _comparison_row(c: Comparison) -> str:
    q = c.quality
    speedup = "—" if c.speedup is None else f"{c.speedup:.2f}×"
    counts = f"{q.n_conversations} / {q.n_questions}"
    return _row(
        [c.dataset, c.method, c.baseline, *delta_cells(q), *delta_cells(c.bertscore), speedup, counts]
    )


def delta_cells(d: PairedDifference | None) -> list[str]:
    """A paired difference as [Δ, 95 % CI] cells ("—" where there is none)."""
    if d is None:
        return ["—", "—"]
    ci = "—" if d.n_conversations < 2 else f"[{d.low:+.1f}, {d.high:+.1f}]"  # one cluster: no interval
    return [f"{d.mean:+.1f}", ci]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render_csv(cells: Cells, order: Sequence[str], datasets: Sequence[str]) -> str:
    """One line per (method, dataset, metric); values in the metric's unit, unrounded."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for label in order:
        for dataset in (*datasets, ALL):
            for metric in _TABLES:
                cell = cells[metric].get((label, dataset))
                if cell is not None:
                    writer.writerow(
                        [label, dataset, metric, f"{cell.value:.6g}", cell.n_conversations, cell.n_questions]
                    )
    return out.getvalue()


def read_csv(text: str) -> tuple[dict[str, dict[tuple[str, str], Cell]], list[str], list[str]]:
    """``render_csv``'s output read back: (cells, row labels in order, dataset columns without ALL).

    For pages that show a report written earlier (``peerblend report``'s results.csv);
    unknown metrics are kept, a file without the report's columns raises ValueError.
    """
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
        raise ValueError(f"not a report CSV: expected the columns {', '.join(CSV_COLUMNS)}")
    cells: dict[str, dict[tuple[str, str], Cell]] = {metric: {} for metric in METRICS}
    order: dict[str, None] = {}
    datasets: dict[str, None] = {}
    for line in reader:
        cell = Cell(float(line["value"]), int(line["n_conversations"]), int(line["n_questions"]))
        cells.setdefault(line["metric"], {})[(line["method"], line["dataset"])] = cell
        order[line["method"]] = None
        if line["dataset"] != ALL:
            datasets[line["dataset"]] = None
    return cells, list(order), sorted(datasets)
