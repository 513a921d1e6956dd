#!/usr/bin/env bash
# The held-out evaluation (issue 15): one committee, two disjoint parts of the shared dev data.
#   calibration part (heldout-cal): ConvQuestions books + movies (conversations 50, 150, 250, 350
#     of each file), DoQA cooking dialogs 0, 10, ..., 90;
#   report part (heldout-test): ConvQuestions music + soccer + tv_series (conversations 50, 130,
#     210, 290, 370), DoQA cooking dialogs 100, 108, ..., 196.
# None of these ConvQuestions conversations was in the earlier replay (every 100th from 0).
# The committee (committee.json) is the default offline one plus four reviewer-only members, one
# per new review signal (verify x2 models, likelihood-total, consistency), so that every rule
# is evaluated by re-ranking the same stored candidates and ballots (`peerblend rerank`).
# Resumable: rerun to finish an interrupted run. Then docs/results/heldout/analyse.sh.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 PEERBLEND_HOME=${PEERBLEND_HOME:-var/heldout}
export PEERBLEND_COMMITTEE_FILE=docs/results/heldout/committee.json
DATA=${PEERBLEND_SHARED_DATA:-../shared/data}/convqa
CQ=$DATA/convquestions
# The CLI run from this checkout (python -c, not the console script), so a worktree runs its own code.
PY=${PEERBLEND_PYTHON:-.venv/bin/python}
replay() { "$PY" -c 'import sys; from workers.cli import main; sys.exit(main())' replay --concurrency 2 "$@"; }
for part in "${@:-cal test}"; do
  case $part in
    cal)
      replay "$CQ"/val_books.json "$CQ"/val_movies.json --start 50 --stride 100 --limit 4 --run heldout-cal
      replay "$DATA"/doqa/doqa-cooking-dev-v2.1.json --start 0 --stride 10 --limit 10 --run heldout-cal ;;
    test)
      replay "$CQ"/val_music.json "$CQ"/val_soccer.json "$CQ"/val_tv_series.json --start 50 --stride 80 --limit 5 --run heldout-test
      replay "$DATA"/doqa/doqa-cooking-dev-v2.1.json --start 100 --stride 8 --limit 13 --run heldout-test ;;
    test-p2)
      replay "$CQ"/val_music.json "$CQ"/val_soccer.json "$CQ"/val_tv_series.json --start 50 --stride 80 --limit 5 --run heldout-test-p2 --policy p2
      replay "$DATA"/doqa/doqa-cooking-dev-v2.1.json --start 100 --stride 8 --limit 13 --run heldout-test-p2 --policy p2 ;;
    *) echo "unknown part $part (cal, test, test-p2)" >&2; exit 2 ;;
  esac
done
