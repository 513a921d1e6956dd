"""Printing a stored turn for people: candidates, ballots, voters, Borda scores, prior, timings."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.explain import explain_turn, live_label
from pipeline.learned import LearnedModel
from pipeline.service.client import StoredConversation, StoredTurn


def conversation_header(stored: StoredConversation, *, live: bool) -> str:
    """The line above a conversation's turns; "live" as the pages say it (``live_label``)."""
    return (
        f"conversation [bold]{stored.id}[/] ({escape(live_label(source=stored.source, live=live))}; "
        f"method {stored.method}, policy {stored.policy}, committee {stored.committee})"
    )


def print_turn(console: Console, turn: StoredTurn) -> None:
    console.rule(f"turn {turn.turn_index + 1}")
    console.print(f"[bold]Q:[/] {turn.question}")
    if turn.gold:
        console.print(f"[dim]gold: {' | '.join(turn.gold)}[/]")
    result = turn.result or {}
    scores = result.get("scores", {})
    decision = result.get("decision") or {}
    ranked = decision.get("ranked", True)
    candidates = Table("member", "answer", "s", "Borda", title="candidates", title_justify="left")
    for c in turn.candidates:
        text = escape(c["text"]) if not c["error"] else f"[red]excluded: {escape(c['error'])}[/]"
        score = scores.get(c["member"])
        shown = "not ranked (reused)" if not ranked else ("" if score is None else f"{score:g}")
        candidates.add_row(c["member"], text, f"{c['seconds']:.2f}", shown)
    console.print(candidates)
    if decision:
        print_decision(console, decision)
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
        for column in ballots.columns:  # wrap, never cut: member names stay whole at 80 columns
            column.overflow = "fold"
        for r in turn.reviews:
            voters = r.get("voters") or [r["reviewer"]]  # a voter group's one review: cast for them all
            ballots.add_row(
                r["reviewer"] if len(voters) < 2 else f"{r['reviewer']} (for {' = '.join(voters)})",
                r["method"],
                r["status"],
                ", ".join(r["shown_order"]),
                " > ".join(r["ranking"]) or f"[dim]{(r['error'] or r['raw'])[:60]!r}[/]",
                f"{r['seconds']:.2f}",
            )
        console.print(ballots)
    if result:
        print_voters(console, result.get("decision") or {})
        print_rule(console, result.get("decision") or {})
        for sentence in explain_turn(result, turn.reviews, rule=False):  # print_rule said the rule
            console.print(f"[dim]why: {escape(sentence)}[/]")
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


def print_decision(console: Console, decision: dict[str, Any]) -> None:
    """The policy decision: who answered, who reviewed, who sat out and why."""
    excluded = ", ".join(decision.get("excluded") or []) or "no one"
    console.print(
        f"[dim]policy: {escape(str(decision.get('reason', '')))}; answered: "
        f"{', '.join(decision.get('generators') or [])}; reviewed: "
        f"{', '.join(decision.get('reviewers') or []) or 'no one (not ranked)'}; sat out: {escape(excluded)}[/]"
    )


def print_voters(console: Console, decision: dict[str, Any]) -> None:
    """Independent voters (reviewers of one judgement joined by '=', with the weight of their ballots
    together), and the member prior."""
    # none stored before voters were recorded, and none by a rule that weighs no ballots (learned)
    if groups := decision.get("voters"):
        weights = decision.get("ballot_weights") or {}
        shown = "; ".join(
            f"{' = '.join(group)} ({sum(weights.get(r, 0.0) for r in group):.3g})" for group in groups
        )
        n = decision.get("independent_voters", len(groups))
        console.print(
            f"[dim]independent voters: {n} of {decision.get('ballots', 0)} ballots: {escape(shown)} "
            f"({escape(str(decision.get('weights_note', '')))})[/]"
        )
    if "prior" in decision:
        prior = ", ".join(f"{m} {q:.3f}" for m, q in sorted(decision["prior"].items(), key=lambda x: -x[1]))
        console.print(
            f"[dim]member prior (weight {decision.get('prior_weight', 0):.3g}): {escape(prior or 'none')} "
            f"({escape(str(decision.get('prior_note', '')))})[/]"
        )


def print_rule(console: Console, decision: dict[str, Any]) -> None:
    """Which rule decided the turn (the learned decision, or the prior where the judges are blind)."""
    if decision.get("decided_by"):
        version = decision.get("learned_version")
        suffix = f", learned decision v{version}" if version is not None else ""
        console.print(f"[dim]decided by: {escape(str(decision['decided_by']))}{suffix}[/]")


def print_learned(console: Console, model: LearnedModel) -> None:
    """The learned decision per bucket: its rule, features and weights, cross-validated beside the others."""
    console.print(f"learned decision v{model.version} of committee {model.committee}:")
    if not model.buckets:
        console.print("  no bucket had enough conversations to cross-validate (5): nothing learned")
    for bucket, fitted in model.buckets.items():
        cv = fitted.cv.get("scores", {})
        shown = ", ".join(f"{rule} {100 * value:.1f}" for rule, value in cv.items())
        schemes = " and ".join(fitted.cv.get("schemes", []))
        console.print(f"  {bucket} ({fitted.turns} turns): {escape(fitted.why(bucket))}")
        console.print(f"    cross-validated F1 ({schemes}): {shown}")
        if fitted.decides == "learned":
            weights = ", ".join(f"{f} {w:+.3g}" for f, w in zip(fitted.features, fitted.weights, strict=True))
            console.print(f"    weights (penalty {fitted.penalty:g}): {escape(weights)}")
