#!/usr/bin/env bash
# Idle SSE streams on one node (issue #17, target 2): starts a presence node
# (--dev), opens STREAMS streams of 10 channels each with sse-swarm (two
# epoll event loops, raw sockets, every stream its own signed-in user,
# source addresses spread over 127.0.0.0/8), reports the node's RSS before
# and after (per stream), then makes one user enter the channel every
# stream follows and reports how many streams read it and when, and the
# node's CPU time per delivered frame.
#
#   ./idle-streams.sh                                   100,000 streams
#   STREAMS=200 ALLOW_BUSY=1 ./idle-streams.sh          a smoke run
#   STREAMS=100000 ./idle-streams.sh --enters 3         extra arguments go to sse-swarm
#   NODE_FLAGS='--max-streams 110000' ./idle-streams.sh flags for the node
#
# The node and sse-swarm each need an open-file limit above STREAMS + 1,000:
# the script raises the hard limit of the shell it starts them from when it
# is lower (root may, unless a container forbids it) and stops if it cannot. A node that limits streams
# (--max-streams, default 100,000) needs NODE_FLAGS raising it above STREAMS
# for the full run; per-user and anonymous per-IP limits do not apply (each
# stream signs in as its own user).
#
# Measure on a quiet machine: the script refuses to start when the 1-minute
# load average is above MAX_LOAD (1.0) unless ALLOW_BUSY=1.
#
# Settings (environment): STREAMS (100000), NODE_FLAGS, MAX_LOAD, ALLOW_BUSY,
# BASE_PORT (28380: the node uses BASE_PORT..+3), WORK (a new
# /tmp/idle-streams.* directory: binaries, node data and log, the report).
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=lib.sh
. ./lib.sh

STREAMS=${STREAMS:-100000}
MAX_LOAD=${MAX_LOAD:-1.0}
BASE_PORT=${BASE_PORT:-28380}
WORK=${WORK:-$(mktemp -d /tmp/idle-streams.XXXXXX)}
mkdir -p "$WORK/bin"

need=$((STREAMS + 1000))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
  ulimit -Hn "$need" 2>/dev/null || {
    echo "open-file hard limit $hard < $need needed for $STREAMS streams, and it cannot be raised here." >&2
    echo "Run as root where it can be raised (ulimit -Hn $need), or set STREAMS lower." >&2
    exit 1
  }
fi
ulimit -Sn "$(ulimit -Hn)" # Go programs raise theirs to the hard limit anyway

http=127.0.0.1:$BASE_PORT
for p in 0 1 2 3; do
  port_free "127.0.0.1:$((BASE_PORT + p))" || { echo "port 127.0.0.1:$((BASE_PORT + p)) is in use: set BASE_PORT" >&2; exit 1; }
done

echo "building into $WORK/bin"
(cd .. && go build -o "$WORK/bin/presence-node" ./cmd/node)
go build -o "$WORK/bin/" ./cmd/sse-swarm

node_pid=
cleanup() {
  if [ -n "$node_pid" ]; then
    kill "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "${WORK:?}/bin" "${WORK:?}/node"
}
trap cleanup EXIT

# shellcheck disable=SC2086
"$WORK/bin/presence-node" --dev --name idle1 --http "$http" --raft 127.0.0.1:$((BASE_PORT + 1)) \
  --gossip 127.0.0.1:$((BASE_PORT + 2)) --rpc 127.0.0.1:$((BASE_PORT + 3)) --data-dir "$WORK/node" \
  --log-level warn ${NODE_FLAGS:-} 2>"$WORK/node.log" &
node_pid=$!
# Ready, and the demo prefix seeded (a channel of it exists: not null).
demo_ready() { curl -sf -g "http://$http/presence/get?channels[]=/demo/swarm/all" | grep -q '"/demo/swarm/all":{'; }
wait_until 60 "the node's demo prefix at $http" demo_ready || { tail -5 "$WORK/node.log" >&2; exit 1; }

echo "machine: $(nproc) CPUs, shared by the node and sse-swarm; open-file limit $(ulimit -n)"
echo "load average before the run: $(load_average)"
load1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load1" -v m="$MAX_LOAD" 'BEGIN { exit !(l > m) }'; then
  if [ -z "${ALLOW_BUSY:-}" ]; then
    echo "the machine is not quiet (1-minute load average $load1 > MAX_LOAD $MAX_LOAD)." >&2
    echo "Wait until it is, or run with ALLOW_BUSY=1 for a smoke run." >&2
    exit 1
  fi
  echo "WARNING: load average $load1 > $MAX_LOAD (ALLOW_BUSY): a smoke run, not a measurement"
fi
echo
"$WORK/bin/sse-swarm" --url "http://$http" --streams "$STREAMS" --pid "$node_pid" "$@" | tee "$WORK/report.txt"
echo "load average after the run: $(load_average)"
echo "report and node log in $WORK"
