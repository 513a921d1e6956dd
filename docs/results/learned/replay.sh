#!/usr/bin/env bash
# The cross-domain evaluation of the learned decision (issue 24): the default committee (its
# reviewers: smollm2-concise and gemma3-fewshot-a/b, likelihood/PMI; smollm2-terse answers only),
# replayed on two disjoint parts of the shared dev data. None of these conversations was in an
# earlier replay (ConvQuestions 11, 40, ..., 417 and 11, 35, ..., 419; DoQA odd dialog numbers).
#   calibration part (learned-cal): ConvQuestions books + movies (15 conversations each),
#     DoQA cooking dialogs 1, 5, ..., 29 (8);
#   report part (learned-test): ConvQuestions music + soccer + tv_series (18 each), DoQA cooking
#     dialogs 103, 107, ..., 131 (8), and the QuAC and CoQA samples (datasets absent from
#     calibration).
# Passage turns (DoQA, QuAC, CoQA: up to 768 passage tokens in every prompt) take ~4x as long as
# ConvQuestions turns here (2 cores): about 2 turns a minute against 7-8.
# Resumable: rerun to finish an interrupted run. Then docs/results/learned/analyse.sh.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 PEERBLEND_HOME=${PEERBLEND_HOME:-var/learned} PEERBLEND_TORCH_THREADS=${PEERBLEND_TORCH_THREADS:-1}
export PEERBLEND_COMMITTEE_FILE=docs/results/learned/committee.json
DATA=${PEERBLEND_SHARED_DATA:-../shared/data}/convqa
CQ=$DATA/convquestions
PY=${PEERBLEND_PYTHON:-.venv/bin/python}
replay() { "$PY" -c 'import sys; from workers.cli import main; sys.exit(main())' replay --concurrency 6 "$@"; }
for part in ${@:-cal test}; do
  case $part in
    cal)
      replay "$CQ"/val_books.json "$CQ"/val_movies.json --start 11 --stride 29 --limit 15 --run learned-cal
      replay "$DATA"/doqa/doqa-cooking-dev-v2.1.json --start 1 --stride 4 --limit 8 --run learned-cal ;;
    test)
      replay "$CQ"/val_music.json "$CQ"/val_soccer.json "$CQ"/val_tv_series.json --start 11 --stride 24 --limit 18 --run learned-test
      replay "$DATA"/doqa/doqa-cooking-dev-v2.1.json --start 103 --stride 4 --limit 8 --run learned-test
      replay "$DATA"/quac/quac-val-sample.json "$DATA"/coqa/coqa-dev-sample.json --run learned-test ;;
    *) echo "unknown part $part (cal, test)" >&2; exit 2 ;;
  esac
done
