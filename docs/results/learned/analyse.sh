#!/usr/bin/env bash
# The cross-domain analysis of the learned decision (issue 24), after replay.sh. Models run only
# for BERTScore.
#   1. calibrate on learned-cal: reviewer weights, the member prior, and the learned decision
#      (features and penalty chosen by cross-validation over conversations and leaving one domain
#      out: books, movies, doqa:cooking), stored for the committee (calibration.txt);
#   2. rerank learned-test (the stored candidates and ballots) into one run per rule: uniform
#      Borda (as run), calibrated weights with and without the prior, the prior, the learned
#      decision, learned-route, p2, each member alone;
#   3. report them per domain (F1, EM, BERTScore, paired bootstrap CIs), and each reviewer as a judge.
# Rerunning it starts afresh (it drops the lr-* runs it made before).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 PEERBLEND_HOME=${PEERBLEND_HOME:-var/learned}
export PEERBLEND_COMMITTEE_FILE=docs/results/learned/committee.json COLUMNS=200
OUT=${OUT:-docs/results/learned}
DATA=${PEERBLEND_SHARED_DATA:-../shared/data}/convqa
PY=${PEERBLEND_PYTHON:-.venv/bin/python}
pb() { "$PY" -c 'import sys; from workers.cli import main; sys.exit(main())' "$@"; }
pb db upgrade > /dev/null
# Drop earlier lr-* runs; name the domain of conversations replayed before sources named it
# (ConvQuestions: the record's domain, found by its id in the shared files; DoQA: cooking).
DATA="$DATA" "$PY" - <<'PY'
import glob, json, os, sqlite3
db = sqlite3.connect(os.path.join(os.environ["PEERBLEND_HOME"], "peerblend.db"))
ids = [r[0] for r in db.execute("select id from conversation where run like 'lr-%'")]
for table in ("candidate", "review", "turn_result", "turn"):
    db.executemany(f"delete from {table} where conversation_id = ?", [(i,) for i in ids])
db.executemany("delete from conversation where id = ?", [(i,) for i in ids])
domain = {}
for path in glob.glob(os.path.join(os.environ["DATA"], "convquestions", "val_*.json")):
    domain.update({str(c["conv_id"]): c["domain"] for c in json.load(open(path))})
rows = db.execute("select id, external_id from conversation where source = 'convquestions'").fetchall()
db.executemany("update conversation set source = ? where id = ?", [(f"convquestions:{domain[e]}", i) for i, e in rows])
db.execute("update conversation set source = 'doqa:cooking' where source = 'doqa'")
db.commit()
PY

pb calibrate learned-cal --export ${EXPORT:-pipeline/data/learned-offline-4.json} \
  --note "docs/results/learned: the default committee replayed on ConvQuestions dev books + movies (15 conversations each) and DoQA cooking dev dialogs 1, 5, ..., 29; learned-cal of replay.sh" \
  | tee "$OUT/calibration.txt"
pb reviewers learned-cal --out "$OUT/reviewers-cal.md" > /dev/null
pb reviewers learned-test --out "$OUT/reviewers-test.md" > /dev/null

rr() { local into=$1 out; shift; out=$(pb rerank learned-test --into "$into" "$@"); echo "${out%%$'\n'*}"; }
rr lr-calibrated --weights calibrated
rr lr-calibrated-prior --weights calibrated --prior
rr lr-calpassage-prior --weights calibrated-passage --prior
rr lr-prior --method prior
rr lr-learned --method learned
rr lr-route --method learned --policy learned-route
rr lr-p2 --policy p2
for m in smollm2-concise smollm2-terse gemma3-fewshot-a gemma3-fewshot-b; do
  rr "lr-single-$m" --method single --member "$m"
done

runs=(learned-test lr-calibrated lr-calibrated-prior lr-calpassage-prior lr-prior lr-learned lr-route lr-p2
      lr-single-smollm2-concise lr-single-smollm2-terse lr-single-gemma3-fewshot-a lr-single-gemma3-fewshot-b)
versus=(--versus lr-learned:lr-prior --versus lr-learned:learned-test --versus lr-route:lr-learned
        --versus lr-learned:lr-calpassage-prior)
pb report "${runs[@]}" "${versus[@]}" --out "$OUT" \
  --note "Calibrated on learned-cal (ConvQuestions books + movies, DoQA cooking dialogs 1-29), reported on learned-test (ConvQuestions music, soccer, tv_series; DoQA cooking dialogs 103-131; the QuAC and CoQA samples): every report domain but doqa:cooking is absent from calibration, and QuAC/CoQA are datasets it never saw." \
  --note "learned-test = the default committee's reviewers (SmolLM2 and Gemma likelihood/PMI; gemma3-fewshot-a and -b one voter), uniform Borda (as run); lr-* = the same stored candidates re-decided (peerblend rerank), so their time and model calls are learned-test's, except lr-route (a routed turn: its one member's generation time and one call) and the singles." \
  --note "lr-single-* = that member's candidate in learned-test (its history is the blend's answers, not its own)." \
  --note "lr-learned = the learned decision fitted on learned-cal (calibration.txt); lr-route = learned-route: questions of a bucket the learned decision leaves to the prior are answered by the prior's top member alone, without review."
