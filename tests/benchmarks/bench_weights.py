"""Benchmark: do reviewer weights or self-vote exclusion close the gap to the oracle?

Re-aggregates the ballots *stored* by a peer-blend run (no model is called again)
under several Borda variants and scores each variant's chosen answers with
BERTScore against the gold answers (per conversation, then over conversations):

- uniform (what the run did), excluding self-votes,
- online trust (agreement with the other reviewers on earlier turns of the run),
- calibrated trust, 2-fold cross-validated over conversations (weights fitted on
  one half's gold answers, applied to the other half), with and without self-votes,
- and for reference: each member alone on these turns (its candidate), a random
  pick (mean over candidates), the oracle (best candidate).

Also prints, per reviewer, its Spearman correlation with true quality and how
often it puts its own answer first.

    .venv/bin/python tests/benchmarks/bench_weights.py --home var/replay --run peer-full
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


from pipeline.borda import Ballot, borda_ranking  # noqa: E402
from pipeline.committee import load_committee  # noqa: E402
from pipeline.correlation import ballot_correlation  # noqa: E402
from pipeline.evaluation.datasets import answerable  # noqa: E402
from pipeline.service.store import Store  # noqa: E402
from pipeline.weights import add_agreement, calibrate, consensus_agreement, trust_weights  # noqa: E402
from workers.evaluation.scoring import BertScorer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("var/replay"))
    parser.add_argument("--run", default="peer-full")
    parser.add_argument("--committee", type=Path, default=ROOT / "docs" / "results" / "committee.json")
    args = parser.parse_args()
    rows = Store.at(f"sqlite:///{args.home / 'peerblend.db'}").run_turns([args.run])
    rows = [r for r in rows if answerable(r["gold"]) and len(r["candidates"]) >= 2]
    scorer = BertScorer()
    pairs = [(text, r["gold"]) for r in rows for text in r["candidates"].values()]
    values = scorer([p[0] for p in pairs], [p[1] for p in pairs])
    cursor = iter(values)
    quality = [{m: next(cursor) for m in r["candidates"]} for r in rows]
    members = sorted({m for r in rows for m in r["candidates"]})
    conversations = sorted({r["conversation_id"] for r in rows})
    fold = {c: i % 2 for i, c in enumerate(conversations)}

    def ballots(row):
        return [Ballot(reviewer, tuple(ranking)) for reviewer, ranking in row["ballots"].items()]

    calibrated = {}
    for f in (0, 1):
        train = [
            (ballots(r), q) for r, q in zip(rows, quality, strict=True) if fold[r["conversation_id"]] != f
        ]
        calibrated[f] = calibrate(train)
    choices: dict[str, list[str]] = defaultdict(list)
    stats: dict = {}
    order = {m.name: i for i, m in enumerate(load_committee(args.committee).members)}
    for row in rows:
        pool = sorted(
            row["candidates"], key=lambda m: order.get(m, len(order))
        )  # committee order breaks ties
        b = ballots(row)
        online = trust_weights(stats, row["ballots"])
        weights = calibrated[fold[row["conversation_id"]]]
        choices["peer-blend, uniform Borda"].append(borda_ranking(b, pool)[0])
        choices["excluding self-votes"].append(borda_ranking(b, pool, exclude_self=True)[0])
        choices["online trust"].append(borda_ranking(b, pool, weights=online)[0])
        choices["calibrated trust (2-fold CV)"].append(borda_ranking(b, pool, weights=weights)[0])
        choices["calibrated trust, excluding self"].append(
            borda_ranking(b, pool, weights=weights, exclude_self=True)[0]
        )
        stats = add_agreement(stats, consensus_agreement(b, pool))
    for member in members:
        choices[f"{member} (its candidate)"] = [member] * len(rows)

    def mean_by_dataset(per_turn):
        table = {}
        for dataset in sorted({r["dataset"] for r in rows}):
            per_conv = defaultdict(list)
            for r, v in zip(rows, per_turn, strict=True):
                if r["dataset"] == dataset and v is not None:
                    per_conv[r["conversation_id"]].append(v)
            table[dataset] = 100 * statistics.mean(statistics.mean(v) for v in per_conv.values())
        return table

    results = {}
    for name, chosen in choices.items():
        results[name] = mean_by_dataset([q.get(m) for q, m in zip(quality, chosen, strict=True)])
    results["random pick (mean of candidates)"] = mean_by_dataset(
        [statistics.mean(q.values()) for q in quality]
    )
    results["oracle (best candidate)"] = mean_by_dataset([max(q.values()) for q in quality])
    datasets = sorted({r["dataset"] for r in rows})
    print(
        f"run {args.run}: {len(rows)} scored turns with 2+ candidates, {len(conversations)} conversations; "
        "BERTScore F1 x 100 (MiniLM), per conversation then dataset"
    )
    print(f"  {'variant':38s}" + "".join(f"{d:>16s}" for d in datasets))
    for name, table in results.items():
        print(f"  {name:38s}" + "".join(f"{table.get(d, float('nan')):16.1f}" for d in datasets))
    print(
        "\nper reviewer: Spearman with true quality (mean over turns), own answer ranked first (% of its ballots)"
    )
    for reviewer in sorted({r for row in rows for r in row["ballots"]}):
        rhos, own_first, n = [], 0, 0
        for row, q in zip(rows, quality, strict=True):
            ranking = row["ballots"].get(reviewer)
            if not ranking:
                continue
            n += 1
            own_first += ranking[0] == reviewer
            rho = ballot_correlation(ranking, q)
            if rho is not None:
                rhos.append(rho)
        mean_rho = statistics.mean(rhos) if rhos else float("nan")
        print(
            f"  {reviewer:22s} rho {mean_rho:+.2f}  own-first {100 * own_first / max(n, 1):5.1f}%  ({n} ballots)"
        )
    for f in (0, 1):
        print(
            f"  calibrated weights fitted on fold {1 - f}: "
            + ", ".join(f"{r} {w:.2f}" for r, w in sorted(calibrated[f].items()))
        )


if __name__ == "__main__":
    main()
