#!/usr/bin/env bash
# The replay behind docs/results: the default offline committee (passages cut to
# ~256 tokens to fit a 2-core CPU), 20 ConvQuestions conversations (4 per domain,
# every 100th) and 20 DoQA cooking dialogs, 2 conversations in flight.
# Resumable: rerun to finish an interrupted run. Then: peerblend report ... (see README).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 PEERBLEND_HOME=${PEERBLEND_HOME:-var/replay}
export PEERBLEND_COMMITTEE_FILE=docs/results/committee.json
DATA=${PEERBLEND_SHARED_DATA:-../shared/data}/convqa
replay() {
  local run=$1; shift
  .venv/bin/peerblend replay "$DATA"/convquestions/val_*.json --limit 4 --stride 100 --run "$run" --concurrency 2 "$@"
  .venv/bin/peerblend replay "$DATA"/doqa/doqa-cooking-dev-v2.1.json --limit 20 --run "$run" --concurrency 2 "$@"
}
for runs in "${@:-singles peer-full peer-p2 pairwise-k1 peer-p1 peer-p3 pairwise-k3}"; do
  for run in $runs; do
    case $run in
      singles)
        for m in smollm2-concise smollm2-terse gemma3-fewshot-a gemma3-fewshot-b; do
          replay "single-$m" --method "single:$m"
        done ;;
      peer-full) replay peer-full ;;
      peer-p1) replay peer-p1 --policy p1 ;;
      peer-p2) replay peer-p2 --policy p2 ;;
      peer-p3) replay peer-p3 --policy p3 ;;
      pairwise-k1) replay pairwise-k1 --method pairwise ;;
      pairwise-k3) replay pairwise-k3 --method pairwise --top-k 3 ;;
      *) echo "unknown run $run" >&2; exit 2 ;;
    esac
  done
done
