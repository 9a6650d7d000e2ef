#!/usr/bin/env bash
# Runs every test of the project. It installs what the tests need when it is
# missing (Debian's chromium for the browser tests) and skips, with a message,
# only the suites whose tools cannot be had on this machine.
#
#   ./scripts/test.sh            everything
#   QUICK=1 ./scripts/test.sh    Go unit tests and vet only
set -euo pipefail
cd "$(dirname "$0")/.."

export GOFLAGS="${GOFLAGS:--mod=mod}"
step() { printf '\n=== %s\n' "$*"; }
failures=()
run() { # run NAME CMD...: keeps going after a failing suite, fails at the end
  local name=$1 start=$SECONDS; shift
  step "$name"
  if "$@"; then echo "--- $name: ok ($((SECONDS - start)) s)"; else echo "--- $name: FAILED ($((SECONDS - start)) s)"; failures+=("$name"); fi
}

step "gofmt and go vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; failures+=(gofmt); fi
go vet ./... || failures+=(vet)

run "go test -race (unit and in-process cluster tests)" \
  go test -race -count=1 -timeout 15m ./...

if [ -z "${QUICK:-}" ]; then
  run "load tool module (bench/)" bash -c 'cd bench && go vet ./... && go test -race -count=1 ./...'
  if command -v node >/dev/null 2>&1; then
    run "browser client unit tests (node --test)" node --test web/test/
  else
    echo "SKIP: node is not installed; the JS client unit tests did not run"
  fi
  run "process cluster and chaos tests (real binary, 3 nodes on loopback)" ./scripts/chaos-test.sh
  run "browser end-to-end tests (headless Chromium, 3 nodes)" ./scripts/browser-test.sh
  # Once, with every node-to-node protection on: mutual TLS and the cluster key.
  run "container chaos tests (docker compose, 3 nodes, mutual TLS and cluster key)" \
    env CHAOS_TLS=1 ./scripts/container-test.sh
  # Budgets are counts of executions, not durations: Go 1.26's fuzz coordinator
  # can report a spurious "context deadline exceeded" when a -fuzztime duration
  # ends under CPU contention (golang/go#75804, fixed in Go 1.27). Each budget
  # is about 10 s of fuzzing on the CI machine; -timeout bounds a slow machine.
  for target in FuzzValidChannelName:./presence:60000 FuzzParsePrefixDocument:./presence:50000 FuzzParseUpdate:./api:50000 \
      FuzzParseServerUpdate:./api:50000 FuzzParseServerQuery:./api:100000 \
      FuzzParseJWKS:./jwtkeys:200000 FuzzParsePEM:./jwtkeys:100000; do
    IFS=: read -r name pkg execs <<<"$target"
    run "fuzz smoke $name (${execs} execs)" \
      go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "${execs}x" -timeout 5m
  done
fi

if [ ${#failures[@]} -gt 0 ]; then
  printf '\nFAILED suites: %s\n' "${failures[*]}"
  exit 1
fi
printf '\nall suites passed in %d s\n' "$SECONDS"
