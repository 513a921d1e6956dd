#!/usr/bin/env bash
# Install the headless browser the web page tests drive: Debian's chromium and
# chromium-driver (selenium finds /usr/bin/chromedriver; nothing is downloaded at
# test time). Does nothing when both are installed; needs root or sudo otherwise.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "browser.sh: chromium-driver is missing and there is no root or sudo to install it" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromedriver
