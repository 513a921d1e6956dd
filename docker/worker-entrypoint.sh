#!/bin/sh
# Start one Celery worker of workers.app for the queues in PEERBLEND_QUEUES.
# Installed in both images as /usr/local/bin/peerblend-worker.
#
#   peerblend-worker [extra celery worker options]   start the worker
#   peerblend-worker healthcheck                       ping this worker (exit 0 = it answered)
#
# Environment (only PEERBLEND_QUEUES is required):
#   PEERBLEND_QUEUES              comma-separated queues, e.g. "gpu0" or "peerblend"
#   PEERBLEND_WORKER_POOL         threads (default) or solo; never prefork on a GPU
#   PEERBLEND_WORKER_CONCURRENCY  task threads (default 16: concurrent tasks whose calls to one
#                                 model the worker batches; the model runs one batch at a time)
#   PEERBLEND_TASK_EVENTS         1 (default) sends task events, which Flower needs; 0 to save
#                                 broker traffic (a running Flower turns them back on
#                                 unless it runs with FLOWER_ENABLE_EVENTS=false)
#   PEERBLEND_LOG_LEVEL           info (default), debug, warning, ...
#   PEERBLEND_WORKER_NAME         node name (default celery@<container hostname>)
#
# Why threads: prefork would fork the worker after CUDA may have been touched, and a
# forked child cannot use its parent's CUDA context; each child would also load its
# own copy of every model. The threads pool keeps one process, one CUDA context and
# the models resident once, while the main thread stays free to answer heartbeats,
# `inspect ping` (the healthcheck) and Flower's control commands during a long
# generation. The solo pool runs the task on that main thread, so a worker busy for a
# minute looks offline to Flower and fails its healthcheck.
set -eu

node_name() {
    name="${PEERBLEND_WORKER_NAME:-celery@%h}"
    # Celery expands %h to the host name; do the same for the healthcheck.
    printf '%s\n' "$name" | sed "s/%h/${HOSTNAME:-$(hostname)}/g"
}

if [ "${1:-}" = "healthcheck" ]; then
    exec celery -A workers.app inspect ping --destination "$(node_name)" --timeout "${PEERBLEND_PING_TIMEOUT_S:-10}"
fi

: "${PEERBLEND_QUEUES:?set PEERBLEND_QUEUES to the queue(s) this worker serves, comma-separated (e.g. gpu0)}"

pool="${PEERBLEND_WORKER_POOL:-threads}"
case "$pool" in
    threads | solo) ;;
    *)
        echo "PEERBLEND_WORKER_POOL=$pool: use threads or solo (prefork would fork CUDA contexts)" >&2
        exit 2
        ;;
esac

case "${PEERBLEND_TASK_EVENTS:-1}" in
    1 | true | yes | on) events="-E" ;;
    0 | false | no | off) events="" ;;
    *)
        echo "PEERBLEND_TASK_EVENTS=${PEERBLEND_TASK_EVENTS}: use 1 or 0" >&2
        exit 2
        ;;
esac

# $events is deliberately unquoted: it is either empty or the single word -E.
# shellcheck disable=SC2086
exec celery -A workers.app worker \
    --queues "$PEERBLEND_QUEUES" \
    --pool "$pool" \
    --concurrency "${PEERBLEND_WORKER_CONCURRENCY:-16}" \
    --loglevel "${PEERBLEND_LOG_LEVEL:-info}" \
    --hostname "$(node_name)" \
    $events "$@"
