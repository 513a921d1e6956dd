"""Printing a stored turn for people: candidates, ballots, Borda scores, timings."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pipeline.client import StoredTurn


def print_turn(console: Console, turn: StoredTurn) -> None:
    console.rule(f"turn {turn.turn_index + 1}")
    console.print(f"[bold]Q:[/] {turn.question}")
    if turn.gold:
        console.print(f"[dim]gold: {' | '.join(turn.gold)}[/]")
    result = turn.result or {}
    scores = result.get("scores", {})
    candidates = Table("member", "answer", "s", "Borda", title="candidates", title_justify="left")
    for c in turn.candidates:
        text = c["text"] if not c["error"] else f"[red]excluded: {c['error']}[/]"
        score = scores.get(c["member"])
        candidates.add_row(c["member"], text, f"{c['seconds']:.2f}", "" if score is None else f"{score:g}")
    console.print(candidates)
    if turn.reviews:
        ballots = Table(
            "reviewer",
            "method",
            "status",
            "shown as A, B, ...",
            "ballot (best first)",
            "s",
            title="ballots",
            title_justify="left",
        )
        for r in turn.reviews:
            ballots.add_row(
                r["reviewer"],
                r["method"],
                r["status"],
                ", ".join(r["shown_order"]),
                " > ".join(r["ranking"]) or f"[dim]{(r['error'] or r['raw'])[:60]!r}[/]",
                f"{r['seconds']:.2f}",
            )
        console.print(ballots)
    if not result:
        console.print("[yellow]not finished yet[/]")
        return
    chosen = result["chosen"] or "fused"
    console.print(f"[bold green]A:[/] {result['answer']}  [dim]({chosen}; {result['status']})[/]")
    t = result["timings"]
    console.print(
        f"[dim]timings: generation {t['generation_s']:.2f} s, review {t['review_s']:.2f} s, "
        f"aggregate {t['aggregate_s']:.3f} s, total {t['total_s']:.2f} s[/]"
    )
