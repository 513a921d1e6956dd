#!/usr/bin/env bash
# The held-out analysis (issue 15), after replay.sh: fit on the calibration part, decide the
# report part under every rule, report them side by side. Models run only for BERTScore.
#   1. calibrate on heldout-cal: reviewer weights (Spearman with token F1) and the member prior
#      (mean F1 per member, passage / no passage), stored for the committee;
#   2. rerank heldout-test (the stored candidates and ballots of all 8 reviewers) into one run per
#      rule: reviewer panels, calibrated weights, the prior, each member alone;
#   3. report every run (F1, EM, BERTScore, CIs) and the per-reviewer tables of both parts.
# Rerunning it starts afresh (it drops the ho-* runs it made before).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 PEERBLEND_HOME=${PEERBLEND_HOME:-var/heldout}
export PEERBLEND_COMMITTEE_FILE=docs/results/heldout/committee.json COLUMNS=200
OUT=docs/results/heldout
PY=${PEERBLEND_PYTHON:-.venv/bin/python}
pb() { "$PY" -c 'import sys; from workers.cli import main; sys.exit(main())' "$@"; }
"$PY" - <<'PY'
import os, sqlite3
db = sqlite3.connect(os.path.join(os.environ["PEERBLEND_HOME"], "peerblend.db"))
ids = [r[0] for r in db.execute("select id from conversation where run like 'ho-%'")]
for table in ("candidate", "review", "turn_result", "turn"):
    db.executemany(f"delete from {table} where conversation_id = ?", [(i,) for i in ids])
db.executemany("delete from conversation where id = ?", [(i,) for i in ids])
db.commit()
PY

DEFAULT=smollm2-concise,smollm2-terse,gemma3-fewshot-a,gemma3-fewshot-b  # the default committee's reviewers
LIKELIHOOD=smollm2-concise,gemma3-fewshot-a,gemma3-fewshot-b
pb calibrate heldout-cal | tee "$OUT/calibration.txt"
pb reviewers heldout-cal --out "$OUT/reviewers-cal.md" > /dev/null
pb reviewers heldout-test --out "$OUT/reviewers-test.md" > /dev/null

rr() { local into=$1 out; shift; out=$(pb rerank heldout-test --into "$into" "$@"); echo "${out%%$'\n'*}"; }
rr ho-default --reviewers "$DEFAULT"
rr ho-likelihood --reviewers "$LIKELIHOOD"
rr ho-ranking --reviewers smollm2-terse
rr ho-verify --reviewers gemma3-verify,smollm2-verify
rr ho-total --reviewers gemma3-total
rr ho-consistency --reviewers gemma3-consistency
rr ho-all-online --weights online
rr ho-all-calibrated --weights calibrated
rr ho-prior --method prior
rr ho-default-prior --reviewers "$DEFAULT" --prior
rr ho-all-prior --prior
rr ho-all-calibrated-prior --weights calibrated --prior
rr ho-all-calpassage --weights calibrated-passage
rr ho-all-calpassage-prior --weights calibrated-passage --prior
rr ho-all-p2 --policy p2
rr ho-default-p2 --reviewers "$DEFAULT" --policy p2
rr ho-all-calibrated-prior-p2 --weights calibrated --prior --policy p2
rr ho-all-calpassage-prior-p2 --weights calibrated-passage --prior --policy p2
for m in smollm2-concise smollm2-terse gemma3-fewshot-a gemma3-fewshot-b; do
  rr "ho-single-$m" --method single --member "$m"
done

runs=(heldout-test ho-default ho-likelihood ho-ranking ho-verify ho-total ho-consistency ho-all-online
      ho-all-calibrated ho-prior ho-default-prior ho-all-prior ho-all-calibrated-prior
      ho-all-calpassage ho-all-calpassage-prior ho-all-p2 ho-default-p2 ho-all-calibrated-prior-p2
      ho-all-calpassage-prior-p2
      ho-single-smollm2-concise ho-single-smollm2-terse ho-single-gemma3-fewshot-a ho-single-gemma3-fewshot-b)
# The headline rule, chosen on the calibration part alone before the report part was replayed:
# ho-all-calpassage-prior (every reviewer, weights calibrated per passage bucket, the member prior).
versus=(--versus ho-all-calpassage-prior:ho-default --versus ho-all-calpassage-prior:ho-prior
        --versus ho-all-calpassage-prior-p2:ho-all-calpassage-prior
        --versus heldout-test:ho-default --versus ho-all-calibrated-prior:ho-default
        --versus ho-all-calibrated-prior:ho-prior --versus ho-default-prior:ho-prior
        --versus ho-all-p2:heldout-test --versus ho-default-p2:ho-default
        --versus ho-all-calibrated-prior-p2:ho-all-calibrated-prior)
if [ -n "$(pb list --run heldout-test-p2 --json 2>/dev/null | tr -d '[] \n')" ]; then
  runs+=(heldout-test-p2)
  versus+=(--versus heldout-test-p2:heldout-test)
fi
pb report "${runs[@]}" "${versus[@]}" --out "$OUT" \
  --note "Held-out: calibrated on heldout-cal (ConvQuestions books+movies, DoQA dialogs 0-90), reported on heldout-test (music+soccer+tv_series, DoQA dialogs 100-196)." \
  --note "heldout-test = all 8 reviewers, honest voters, uniform weights (as run); ho-* = the same stored candidates re-decided (peerblend rerank), so their time and model calls are heldout-test's." \
  --note "ho-single-* = that member's candidate in heldout-test (its history is the blend's answers, not its own)." \
  --note "*-p2 = alternate ranking simulated on heldout-test's stored turns (reuse turns take the previous top member's stored answer); quality only."
