#!/usr/bin/env bash
# Runs the browser end-to-end tests (package e2e, build tag "browser"): the real
# presence-node binary, three nodes joined on loopback by default, driven
# through the real JavaScript client in headless Chromium.
#
# Installs Debian's chromium when no Chromium is on PATH (needs root, or sudo
# without a password); when it cannot, it prints SKIP and exits 0.
#
#   ./scripts/browser-test.sh                    every scenario on 3 nodes
#   E2E_NODES=1 ./scripts/browser-test.sh        one node (no failover test)
#   ./scripts/browser-test.sh -run TestDemoApp   extra arguments go to go test
#
# Screenshots, node logs and browser consoles go to $ARTIFACTS
# (/tmp/presence-e2e-artifacts by default); the demo test also rewrites
# docs/demo.png.
set -euo pipefail
cd "$(dirname "$0")/.."

have_chromium() {
  command -v chromium >/dev/null 2>&1 ||
    command -v chromium-browser >/dev/null 2>&1 ||
    command -v google-chrome >/dev/null 2>&1
}

install_chromium() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "not root and no password-less sudo"
      return 1
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "apt-get not found"; return 1; }
  echo "installing Debian's chromium (apt-get install chromium)"
  "${sudo[@]}" apt-get update &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends chromium
}

if ! have_chromium; then
  if ! install_chromium || ! have_chromium; then
    echo "SKIP: browser tests not run: no Chromium (chromium, chromium-browser or google-chrome) on PATH and it could not be installed."
    echo "      Install it (apt-get install chromium) and run this script again."
    exit 0
  fi
fi

export ARTIFACTS="${ARTIFACTS:-/tmp/presence-e2e-artifacts}"
mkdir -p "$ARTIFACTS"
start=$(date +%s)
status=0
go test -tags browser -count=1 -v -timeout 15m ./e2e/... "$@" || status=$?
echo "browser tests: $( [ $status -eq 0 ] && echo passed || echo FAILED ) in $(( $(date +%s) - start ))s; artifacts in $ARTIFACTS"
exit $status
