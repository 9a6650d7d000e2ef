#!/usr/bin/env bash
# Runs the container chaos suite (package chaos/container, build tag
# "container"): the compose cluster of docker-compose.cluster.yml, driven by
# simulated clients and SSE subscribers on the host through the published
# ports 8081-8083, while nodes are killed, cut off the network, restarted one
# by one, scaled out and in, and the whole project goes down and up again or
# is recreated at new addresses.
#
#   ./scripts/container-test.sh                           every scenario
#   CHAOS_TLS=1 ./scripts/container-test.sh               every scenario, mutual TLS between nodes
#   ./scripts/container-test.sh -run TestContainerDownUp  extra arguments go to go test
#
# Without a reachable Docker engine it prints "SKIP: docker not available" and
# exits 0. Otherwise it builds the image (scripts/docker-build.sh), removes
# whatever an earlier, interrupted run left in its compose project
# (containers, network, volumes), runs the tests and always tears the project
# down again, also on failure or interrupt. When a test fails, the nodes' logs
# are saved in $CHAOS_ARTIFACTS first.
#
# The nodes always share a random cluster key (gossip and node-to-node traffic
# encrypted and authenticated). With CHAOS_TLS=1 they also speak mutual TLS 1.3:
# docker-compose.tls.yml is layered on the compose file and a CA and node
# certificates are made for the run with the image's `presence-node tls`.
#
# Environment:
#   CHAOS_TLS              1: mutual TLS between the nodes (default: 0)
#   CHAOS_COMPOSE          compose client ("docker compose" or "docker-compose";
#                          default: the first of those that works)
#   CHAOS_COMPOSE_PROJECT  compose project name (presence-chaos)
#   CHAOS_ARTIFACTS        where logs of failed runs go (/tmp/presence-container-artifacts)
#   PRESENCE_IMAGE         image to build and run (presence-node:dev)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  echo "SKIP: docker not available"
  exit 0
fi

step() { printf '==> %s\n' "$*" >&2; }
began=$(date +%s)
file=docker-compose.cluster.yml
ports=(8081 8082 8083) # published by $file

if [ -z "${CHAOS_COMPOSE:-}" ]; then
  if docker compose version >/dev/null 2>&1; then
    CHAOS_COMPOSE="docker compose"
  elif command -v docker-compose >/dev/null 2>&1; then
    CHAOS_COMPOSE=docker-compose
  else
    echo "container-test: neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 1
  fi
fi
export CHAOS_COMPOSE
export CHAOS_COMPOSE_PROJECT="${CHAOS_COMPOSE_PROJECT:-presence-chaos}"
export CHAOS_COMPOSE_FILE="$PWD/$file"
files=(-f "$file")
if [ "${CHAOS_TLS:-0}" = 1 ]; then
  export CHAOS_TLS CHAOS_COMPOSE_TLS_FILE="$PWD/docker-compose.tls.yml"
  files+=(-f docker-compose.tls.yml) # so that down -v removes the certificates' volume too
fi
export CHAOS_ARTIFACTS="${CHAOS_ARTIFACTS:-/tmp/presence-container-artifacts}"
export PRESENCE_IMAGE="${PRESENCE_IMAGE:-presence-node:dev}"
# The tests leave the project running; this script saves logs, then removes it.
export CHAOS_COMPOSE_KEEP=1

compose() { $CHAOS_COMPOSE "${files[@]}" -p "$CHAOS_COMPOSE_PROJECT" "$@"; }

# remove_project deletes the project's containers, network and volumes.
remove_project() {
  compose down -v --remove-orphans -t 15 >/dev/null 2>&1 || true
}

tests_ran=
# finish runs on every exit, with the exit status in $status.
finish() {
  trap - EXIT INT TERM
  if [ "$status" -ne 0 ] && [ -n "$(compose ps -q 2>/dev/null)" ]; then
    dir="$CHAOS_ARTIFACTS/compose-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$dir"
    compose ps >"$dir/ps.txt" 2>&1 || true
    compose logs --no-color -t >"$dir/compose.log" 2>&1 || true
    echo "container-test: container logs saved in $dir" >&2
  fi
  step "tearing down compose project $CHAOS_COMPOSE_PROJECT"
  remove_project
  local verdict=passed
  if [ "$status" -ne 0 ]; then
    verdict=FAILED
    if [ -n "$tests_ran" ]; then verdict+="; logs of failed tests in $CHAOS_ARTIFACTS"; fi
  fi
  echo "container tests: $verdict ($(($(date +%s) - began))s)"
  exit "$status"
}
trap 'status=$?; finish' EXIT
trap 'status=130; exit 130' INT TERM

step "removing leftovers of compose project $CHAOS_COMPOSE_PROJECT ($CHAOS_COMPOSE)"
remove_project

# A port already taken makes compose fail half-way with a less obvious error.
busy=()
for port in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then busy+=("$port"); fi
done
if [ ${#busy[@]} -gt 0 ]; then
  echo "container-test: host port(s) ${busy[*]} on 127.0.0.1 are in use; the compose cluster publishes" \
    "${ports[*]}. Stop what listens there (another compose cluster? docker ps) and try again." >&2
  exit 1
fi

step "building image $PRESENCE_IMAGE"
./scripts/docker-build.sh

mkdir -p "$CHAOS_ARTIFACTS"
step "running the container scenarios"
status=0
tests_ran=1
go test -tags container -count=1 -v -p 1 -timeout 15m ./chaos/container/... "$@" || status=$?
exit "$status"
