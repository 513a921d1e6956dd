"""The evaluation commands of ``peerblend``: replay, report, calibrate, rerank, reviewers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.evaluation.rerank import KINDS, POLICIES, WEIGHTS
from pipeline.service.settings import Settings
from workers.cli_args import console, count, names, preload_if_embedded, run_options, run_pair
from workers.cli_human import add_evaluate_command, human_section


def add_evaluation_commands(sub: Any) -> None:
    """replay, report, calibrate, rerank, reviewers, evaluate."""
    _replay_and_report_commands(sub)
    add_evaluate_command(sub)
    calibrate = sub.add_parser(
        "calibrate",
        help="fit reviewer weights, the member prior and the learned decision on a run's gold answers",
    )
    calibrate.add_argument("run", help="a peer-blend run with gold answers (a calibration split)")
    calibrate.add_argument(
        "--metric",
        choices=["f1", "bertscore"],
        default="f1",
        help="answer quality: token F1 (default) or BERTScore",
    )
    calibrate.add_argument(
        "--export", type=Path, default=None, help="also write the learned decision to this JSON file"
    )
    calibrate.add_argument(
        "--note", default=None, help="how the calibration data was chosen (kept in the learned decision)"
    )
    calibrate.set_defaults(command=_calibrate)

    reviewers = sub.add_parser(
        "reviewers", help="each reviewer as a judge: parse rate, voters, agreement with the gold"
    )
    reviewers.add_argument("run", help="a stored run with gold answers")
    reviewers.add_argument("--out", type=Path, default=None, help="write the table to this file too")
    reviewers.set_defaults(command=_reviewers)

    _rerank_command(sub)


def _replay_and_report_commands(sub: Any) -> None:
    replay = sub.add_parser("replay", help="replay dataset conversations as queued jobs (resumable)")
    replay.add_argument(
        "files",
        nargs="+",
        metavar="FILE|NAME:SPLIT",
        help="dataset files (ConvQuestions, CoQA, QuAC, DoQA, JSONL) or datasets by name "
        "(coqa:dev, quac:sample; see `peerblend data list`)",
    )
    replay.add_argument(
        "--fetch", action="store_true", help="fetch a named dataset that is not in the cache yet"
    )
    replay.add_argument(
        "--trust-unverified",
        action="store_true",
        help="with --fetch: as `peerblend data fetch --trust-unverified`",
    )
    replay.add_argument("--run", required=True, help="run name; rerunning it skips stored turns")
    replay.add_argument("--limit", type=count(1), default=None, help="conversations per file")
    replay.add_argument(
        "--stride", type=count(1), default=1, help="take every n-th conversation of each file"
    )
    replay.add_argument(
        "--start", type=count(0), default=0, help="begin at this conversation of each file (0-based)"
    )
    replay.add_argument("--concurrency", type=count(1), default=4, help="conversations in flight at once")
    run_options(replay)
    replay.set_defaults(command=_replay)

    report = sub.add_parser(
        "report", help="token F1, exact match, BERTScore and latency tables and the trade-off plot of runs"
    )
    report.add_argument("runs", nargs="*", help="run names (default: every run in the database)")
    report.add_argument(
        "--out", type=Path, default=Path("docs/results"), help="folder for results.md/.csv/.png"
    )
    report.add_argument(
        "--encoder", default=None, help="BERTScore encoder (default: the packaged all-MiniLM-L6-v2)"
    )
    report.add_argument(
        "--layers", type=int, default=None, help="encoder layer to use (needed for a local path)"
    )
    report.add_argument("--device", default="cpu", help="device for the encoder")
    report.add_argument(
        "--note", action="append", default=[], help="a line for the report's notes (repeatable)"
    )
    report.add_argument(
        "--no-bertscore", action="store_true", help="token F1 and exact match only (no encoder, seconds)"
    )
    report.add_argument(
        "--versus",
        type=run_pair,
        action="append",
        default=[],
        metavar="RUN:BASELINE",
        help="also compare run RUN with run BASELINE, per dataset, with a paired CI (repeatable)",
    )
    report.set_defaults(command=_report)


def _rerank_command(sub: Any) -> None:
    rerank = sub.add_parser("rerank", help="apply a selection rule to a stored run's candidates and ballots")
    rerank.add_argument("run", help="a stored run ranked by ballots (K=1)")
    rerank.add_argument("--method", choices=KINDS, default="borda", help="the rule's kind")
    rerank.add_argument("--weights", choices=WEIGHTS, default="uniform")
    rerank.add_argument(
        "--reviewers", type=names, default=None, help="count only these reviewers' ballots (comma-separated)"
    )
    rerank.add_argument("--member", default=None, help="the single rule: whose answer to take")
    rerank.add_argument(
        "--policy",
        choices=POLICIES,
        default="full",
        help="p2: simulate alternate ranking on a full-ranking run (quality only; times stay the run's); "
        "learned-route: where the learned decision is the prior's, only its top member answers",
    )
    rerank.add_argument("--prior", action="store_true", help="add the calibrated member prior to the count")
    rerank.add_argument(
        "--exclude-self", action="store_true", help="reviewers give no points to their own answer"
    )
    rerank.add_argument(
        "--into", default=None, help="store the result as this new run (default: print a report)"
    )
    rerank.set_defaults(command=_rerank)


def _replay(args: argparse.Namespace) -> int:
    from workers.cli_data import replay_paths
    from workers.embedded import connect
    from workers.evaluation.replay import load_all, replay

    files = replay_paths(args.files, fetch=args.fetch, trust_unverified=args.trust_unverified)
    # all or nothing, before anything is enqueued
    conversations = load_all(files, args.limit, args.stride, args.start)
    settings = Settings()
    with connect(settings) as client:
        preload_if_embedded(client, settings)
        summary = replay(
            client,
            conversations,
            run=args.run,
            method=args.method,
            policy=args.policy,
            top_k=args.top_k,
            concurrency=args.concurrency,
            turn_timeout_s=args.timeout,
            console=console,
        )
    console.print(
        f"run {args.run}: {summary.submitted} conversations submitted, {summary.resumed} resumed, "
        f"{summary.skipped} already done, {summary.failed} failed; {summary.turns_done}/{summary.turns_total} "
        f"turns stored; {summary.seconds:.0f} s"
    )
    return 1 if summary.failed else 0


def _report(args: argparse.Namespace) -> int:
    from pipeline.evaluation.report import build_report
    from pipeline.service.store import Store
    from workers.evaluation.plot import plot_tradeoff
    from workers.evaluation.scoring import BertScorer

    settings = Settings()
    store = Store.at(settings.database)
    known = store.runs()
    runs = args.runs or known
    unknown = sorted(set(runs) - set(known))
    if unknown:
        raise InputError(f"no run named {', '.join(unknown)}; stored runs: {', '.join(known) or 'none'}")
    rows = store.run_turns(runs)
    human = human_section(store, runs)  # blind judgements (/evaluate) of pairs of these runs
    if not rows:
        raise InputError(f"runs {', '.join(runs)} have no finished turns yet")
    # token F1 / exact match always; CANNOTANSWER questions are counted in the notes (QuAC's rule)
    scorer = None if args.no_bertscore else BertScorer(args.encoder, args.layers, device=args.device)
    with console.status("scoring answers"):
        report = build_report(
            rows, scorer, encoder_name=scorer.name if scorer else None, notes=args.note, versus=args.versus
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(report.markdown + human)
    (args.out / "results.csv").write_text(report.csv)
    plot_tradeoff(report.points, args.out / "tradeoff.png", "peerblend: time vs quality per method")
    console.print(report.markdown + human, markup=False)  # labels hold [run] names
    console.print(f"written: {args.out / 'results.md'}, results.csv, tradeoff.png")
    return 0


def _reviewers(args: argparse.Namespace) -> int:
    from pipeline.evaluation.reviewers import render_reviewers, reviewer_stats
    from pipeline.service.store import Store
    from workers.runtime import committee_from_settings

    settings = Settings()
    rows = Store.at(settings.database).run_records(args.run)
    if not rows:
        raise InputError(f"run {args.run!r} has no finished conversation")
    table = render_reviewers(reviewer_stats(rows, committee_from_settings(settings)))
    console.print(table, markup=False)
    if args.out is not None:
        args.out.write_text(table, encoding="utf-8")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from workers.evaluation.calibration import calibrate_run
    from workers.report import print_learned
    from workers.runtime import committee_from_settings

    settings = Settings()
    committee = committee_from_settings(settings)
    with console.status(f"fitting on run {args.run} ({args.metric})"):
        done = calibrate_run(settings, committee, args.run, metric=args.metric, note=args.note)
    fitted = done.calibration
    console.print(
        f"committee {committee.name}, run {args.run}, quality {args.metric}: reviewer weights from "
        f"{fitted.reviewed_turns} turns (3+ candidates, a ballot), member prior from {fitted.turns} turns"
    )
    buckets = sorted(fitted.feature_weights)
    console.print(f"  reviewer weights: pooled, {', '.join(buckets)}")
    for reviewer, weight in sorted(fitted.weights.items()):
        by_bucket = ", ".join(f"{fitted.feature_weights[b].get(reviewer, float('nan')):.3f}" for b in buckets)
        console.print(f"  reviewer {reviewer}: {weight:.3f}, {by_bucket}")
    for bucket, prior in fitted.prior.items():
        members = ", ".join(f"{m} {q:.3f}" for m, q in sorted(prior["quality"].items(), key=lambda x: -x[1]))
        console.print(f"  prior, {bucket} ({prior['turns']} turns, weight {prior['weight']:.3f}): {members}")
    print_learned(console, done.learned)
    if args.export is not None:
        args.export.write_text(json.dumps(done.learned.to_json(), indent=1) + "\n", encoding="utf-8")
        console.print(f"learned decision written to {args.export}")
    return 0


def _rerank(args: argparse.Namespace) -> int:
    from pipeline.evaluation.report import build_report
    from pipeline.evaluation.rerank import Rule
    from workers.evaluation.rerank import rerank_run
    from workers.runtime import committee_from_settings

    settings = Settings()
    rule = Rule(
        args.method,
        args.weights,
        prior=args.prior,
        exclude_self=args.exclude_self,
        reviewers=args.reviewers,
        member=args.member,
        policy=args.policy,
    )
    done = rerank_run(settings, committee_from_settings(settings), args.run, rule, into=args.into)
    console.print(
        f"{rule.name} on run {args.run}: {done.changed} of {len(done.stored)} turns choose another member",
        markup=False,  # a panel's name is in [brackets]
    )
    if args.into:
        console.print(f"stored as run {args.into}; `peerblend report` shows it beside the others")
        return 0
    notes = ["Re-ranked turns keep the stored run's histories (its earlier answers), not the rule's own."]
    report = build_report(
        [*done.stored, *done.reranked],
        None,
        encoder_name=None,
        title=f"rerank {args.run}: {rule.name}",
        notes=notes,
        versus=[(done.label, args.run)],
    )
    console.print(report.markdown, markup=False)  # labels hold [run] names
    return 0
