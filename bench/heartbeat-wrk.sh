#!/usr/bin/env bash
# Heartbeats over HTTP, three servers under the same wrk load (issue #17,
# targets 1 and 4): a presence node (--dev), the Redis design a user would
# otherwise build (redis-presence: HTTP, the same JWT check and body,
# Discourse's algorithm in Redis) and the bare handler (net/http that only
# decodes the body), run alternately in one invocation:
#
#   ROUNDS x (each server, in an order rotated every round):
#     wrk -t2 -c64 -d10s --latency -s heartbeat.lua URL -- 2
#
# 40,000 users, one heartbeat per call, each with its user's token, user u
# in channel /demo/hb/<u mod 1000>; keep-alive. Each wrk thread cycles
# through its share of the users, so a user calls every USERS/rate seconds:
# the node allows a user 2 calls a second, i.e. 80,000 req/s for 40,000
# users (fewer users in a smoke run meet 429s, which the report shows). Every server gets a warm-up
# run first (every user enters once; not reported). The report gives each
# run's req/s and latency percentiles, the server's and wrk's CPU time per request,
# the means, and the node's ratios to the bare handler (targets: rate >= 0.9x,
# p99 <= 1.5x) and to the Redis design.
#
# Nothing is pinned: the servers, Redis and wrk share the machine's cores, as
# in the issue. Measure on a quiet machine: the script refuses to start when
# the 1-minute load average is above MAX_LOAD (ALLOW_BUSY=1 runs anyway) and
# prints the load average before every run.
#
# Installs Debian's wrk when it is missing, and redis-server for the Redis
# contender (root or password-less sudo); without wrk it prints SKIP and exits
# 0, without redis-server it runs the other two.
#
#   ./heartbeat-wrk.sh                                     the issue's run
#   ROUNDS=5 DURATION=5s ./heartbeat-wrk.sh
#   USERS=2000 DURATION=2s WARMUP=1s ROUNDS=1 ALLOW_BUSY=1 ./heartbeat-wrk.sh   a smoke run
#   NODE_BIN=/tmp/node-new BEFORE_BIN=/tmp/node-old SERVERS=bare,node ./heartbeat-wrk.sh
#                                           before/after: two node builds alternated in one run
#
# Settings (environment): ROUNDS (3), DURATION (10s), WARMUP (5s; 0 = none),
# THREADS (2), CONNECTIONS (64), USERS (40000), CHANNELS (1000),
# SERVERS (bare,node,redis), MAX_LOAD (1.0), ALLOW_BUSY, NODE_BIN (the node
# binary to run; default: built from this tree), BEFORE_BIN (another node
# binary, say main's, run as the server "before" alongside the others and
# reported against: "before" is added to SERVERS), BASE_PORT (28280: the
# node uses BASE_PORT..+3, "before" +4..+7, the bare handler +10,
# redis-presence +11, redis-server +12), WORK (a new /tmp/heartbeat-wrk.* directory: binaries,
# requests, node data, every run's output, the report), KEEP_WORK=1 keeps it.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=lib.sh
. ./lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-5s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
USERS=${USERS:-40000}
CHANNELS=${CHANNELS:-1000}
SERVERS=${SERVERS:-bare,node,redis}
NODE_BIN=${NODE_BIN:-}
BEFORE_BIN=${BEFORE_BIN:-}
MAX_LOAD=${MAX_LOAD:-1.0}
BASE_PORT=${BASE_PORT:-28280}
WORK=${WORK:-$(mktemp -d /tmp/heartbeat-wrk.XXXXXX)}
mkdir -p "$WORK/bin" "$WORK/runs"

has_server() { [[ ",$SERVERS," == *",$1,"* ]]; }
if [ -n "$BEFORE_BIN" ] && ! has_server before; then
  SERVERS=$SERVERS,before
fi
IFS=, read -r -a servers <<<"$SERVERS"
for bin in "$NODE_BIN" "$BEFORE_BIN"; do
  if [ -n "$bin" ] && [ ! -x "$bin" ]; then
    echo "$bin is not an executable node binary" >&2
    exit 1
  fi
done
if has_server before && [ -z "$BEFORE_BIN" ]; then
  echo "the server \"before\" needs BEFORE_BIN, the node binary to run as it" >&2
  exit 1
fi

if ! command -v wrk >/dev/null 2>&1; then
  if ! apt_install wrk || ! command -v wrk >/dev/null 2>&1; then
    echo "SKIP: heartbeat benchmark not run: wrk is not installed and could not be installed."
    echo "      Install it (apt-get install wrk) and run this script again."
    exit 0
  fi
fi
if has_server redis && ! command -v redis-server >/dev/null 2>&1; then
  if ! apt_install redis-server || ! command -v redis-server >/dev/null 2>&1; then
    echo "NOTE: redis-server is not installed and could not be installed; running without the Redis design."
    SERVERS=$(tr , '\n' <<<"$SERVERS" | grep -vx redis | paste -sd,)
    IFS=, read -r -a servers <<<"$SERVERS"
  fi
fi

node_http=127.0.0.1:$BASE_PORT
before_http=127.0.0.1:$((BASE_PORT + 4))
bare_http=127.0.0.1:$((BASE_PORT + 10))
redis_http=127.0.0.1:$((BASE_PORT + 11))
redis_addr=127.0.0.1:$((BASE_PORT + 12))
for addr in "$node_http" 127.0.0.1:$((BASE_PORT + 1)) 127.0.0.1:$((BASE_PORT + 2)) 127.0.0.1:$((BASE_PORT + 3)) \
  "$before_http" 127.0.0.1:$((BASE_PORT + 5)) 127.0.0.1:$((BASE_PORT + 6)) 127.0.0.1:$((BASE_PORT + 7)) \
  "$bare_http" "$redis_http" "$redis_addr"; do
  port_free "$addr" || { echo "port $addr is in use: stop what listens there or set BASE_PORT" >&2; exit 1; }
done

echo "building into $WORK/bin"
if [ -n "$NODE_BIN" ]; then
  cp "$NODE_BIN" "$WORK/bin/presence-node"
else
  (cd .. && go build -o "$WORK/bin/presence-node" ./cmd/node)
fi
if [ -n "$BEFORE_BIN" ]; then
  cp "$BEFORE_BIN" "$WORK/bin/presence-node-before"
fi
go build -o "$WORK/bin/" ./cmd/redis-presence ./cmd/bare-handler ./cmd/wrk-heartbeat

pids=()
declare -A server_pids # server name -> the pids whose CPU time it uses
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -z "${KEEP_WORK:-}" ]; then
    rm -rf "${WORK:?}/bin" "${WORK:?}/node" "${WORK:?}/before" "${WORK:?}/redis" "${WORK:?}/requests.tsv"
  fi
}
trap cleanup EXIT

declare -A url
# start_node NAME BINARY PORT: a --dev node on PORT (HTTP) and the three
# ports after it (raft, gossip, rpc), its data in $WORK/NAME.
start_node() {
  local name=$1 bin=$2 port=$3
  "$bin" --dev --name hb1 --http "127.0.0.1:$port" --raft "127.0.0.1:$((port + 1))" \
    --gossip "127.0.0.1:$((port + 2))" --rpc "127.0.0.1:$((port + 3))" --data-dir "$WORK/$name" \
    --log-level warn 2>"$WORK/$name.log" &
  pids+=($!)
  server_pids[$name]=$!
  url[$name]=http://127.0.0.1:$port
}
if has_server node; then start_node node "$WORK/bin/presence-node" "$BASE_PORT"; fi
if has_server before; then start_node before "$WORK/bin/presence-node-before" $((BASE_PORT + 4)); fi
if has_server bare; then
  "$WORK/bin/bare-handler" --http "$bare_http" 2>"$WORK/bare.log" &
  pids+=($!)
  server_pids[bare]=$!
  url[bare]=http://$bare_http
fi
if has_server redis; then
  mkdir -p "$WORK/redis"
  redis-server --port "${redis_addr##*:}" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/redis" \
    --loglevel warning >"$WORK/redis-server.log" 2>&1 &
  pids+=($!)
  redis_server_pid=$!
  wait_until 10 "redis-server on $redis_addr" redis-cli -h 127.0.0.1 -p "${redis_addr##*:}" ping
  "$WORK/bin/redis-presence" --dev --http "$redis_http" --redis "$redis_addr" --log-level warn \
    2>"$WORK/redis-presence.log" &
  pids+=($!)
  server_pids[redis]="$! $redis_server_pid"
  url[redis]=http://$redis_http
fi

echo "generating $USERS users' tokens and the wrk script"
script=$("$WORK/bin/wrk-heartbeat" gen --out "$WORK" --users "$USERS" --channels "$CHANNELS" --run-id "hb$$")
IFS=$'\t' read -r first_token first_body <"$WORK/requests.tsv"

# check_server NAME: the first user's heartbeat is answered 200 with the
# channel present (the bare handler: {"ok":true}).
check_server() {
  local answer
  answer=$(curl -sS -m 5 -X POST "${url[$1]}/presence/update" -H "Authorization: Bearer $first_token" \
    -H 'Content-Type: application/json' -d "$first_body" -w ' %{http_code}') || return 1
  [[ "$answer" == *'true}'*' 200' ]]
}
for s in "${servers[@]}"; do
  # The node answers once it has a leader and its demo prefix (false before).
  wait_until 60 "$s to accept a heartbeat at ${url[$s]}" check_server "$s" || {
    echo "last answer of $s:" >&2
    curl -sS -m 5 -X POST "${url[$s]}/presence/update" -H "Authorization: Bearer $first_token" \
      -H 'Content-Type: application/json' -d "$first_body" >&2 || true
    tail -5 "$WORK/$s.log" "$WORK/redis-presence.log" 2>/dev/null >&2 || true
    exit 1
  }
done

echo
echo "machine: $(nproc) CPUs; servers, Redis and wrk share them (nothing pinned)"
echo "load average before the runs: $(load_average)"
load1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load1" -v m="$MAX_LOAD" 'BEGIN { exit !(l > m) }'; then
  if [ -z "${ALLOW_BUSY:-}" ]; then
    echo "the machine is not quiet (1-minute load average $load1 > MAX_LOAD $MAX_LOAD): figures would not be comparable." >&2
    echo "Wait until it is, or run with ALLOW_BUSY=1 for a smoke run." >&2
    exit 1
  fi
  echo "WARNING: load average $load1 > $MAX_LOAD (ALLOW_BUSY): these figures are a smoke run, not a measurement"
fi
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $USERS users, $CHANNELS channels, servers: ${servers[*]}"

# measure NAME ROUND DURATION FILE: one wrk run, recorded with its headers.
measure() {
  local name=$1 round=$2 duration=$3 file=$4 before after client_before client_after
  # shellcheck disable=SC2086
  before=$(cpu_seconds ${server_pids[$name]})
  {
    echo "# server: $name"
    echo "# round: $round"
    echo "# load: $(load_average)"
  } >"$file"
  client_before=$(children_cpu_seconds $$) # wrk runs in this shell's foreground: its CPU is added on exit
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --latency -s "$script" "${url[$name]}/" -- "$THREADS" >"$file.wrk" 2>&1 ||
    { echo "wrk failed against $name:" >&2; cat "$file.wrk" >&2; exit 1; }
  client_after=$(children_cpu_seconds $$)
  # shellcheck disable=SC2086
  after=$(cpu_seconds ${server_pids[$name]})
  awk -v a="$after" -v b="$before" 'BEGIN { printf "# cpu_seconds: %.3f\n", a - b }' >>"$file"
  awk -v a="$client_after" -v b="$client_before" 'BEGIN { printf "# client_cpu_seconds: %.3f\n", a - b }' >>"$file"
  cat "$file.wrk" >>"$file"
  rm -f "$file.wrk"
  printf '  %-6s round %s  load before %s  %s req/s  p99 %s%s\n' "$name" "$round" "$(sed -n 's/^# load: //p' "$file")" \
    "$(awk '/^Requests\/sec:/ { print $2 }' "$file")" "$(awk '$1 == "99%" { print $2 }' "$file")" \
    "$(awk '/Non-2xx|Socket errors/ { printf "  (%s)", $0 }' "$file")"
}

if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
  echo "warm-up, $WARMUP each (every user enters its channel; not reported):"
  for s in "${servers[@]}"; do measure "$s" 0 "$WARMUP" "$WORK/runs/warmup-$s.out"; done
fi
n=0
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS:"
  count=${#servers[@]}
  for i in $(seq 0 $((count - 1))); do
    s=${servers[$(((i + round - 1) % count))]} # the order rotates every round
    n=$((n + 1))
    measure "$s" "$round" "$DURATION" "$WORK/runs/$(printf '%02d' "$n")-r$round-$s.out"
  done
done

echo
"$WORK/bin/wrk-heartbeat" report --baseline bare --subject node "$WORK"/runs/[0-9]*-r*.out | tee "$WORK/report.txt"
echo
echo "runs and report in $WORK"
