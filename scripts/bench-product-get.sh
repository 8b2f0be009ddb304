#!/usr/bin/env bash
# Benchmark product.get against a raw async-nats echo responder on the same
# nats-server, in the same run (target: product.get >= 60% of echo's req/s).
#
# Starts its own nats-server (JetStream, temp store), `shop-bench echo-server`
# and ONE product-service instance (temp DATA_DIR), seeds PRODUCTS products,
# then runs closed-loop load against echo and product.get, alternating them
# ROUNDS times (order flipped every other round) so drift affects both, and
# prints a markdown table of medians. Results go to bench-results/<run>/.
#
# Env: DURATION (10s), WARMUP (2s), CONCURRENCY (64), ROUNDS (3), PRODUCTS (1000), ECHO_REPLY_BYTES (216),
#      CONNECTIONS (1), TARGET_PCT (60), BENCH_NATS_PORT (4333),
#      BENCH_RUST_LOG (RUST_LOG for product-service, default info),
#      NATS_SERVER_BIN (else .tools/bin/nats-server, else nats-server on PATH).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-64}
ROUNDS=${ROUNDS:-3}
PRODUCTS=${PRODUCTS:-1000}
CONNECTIONS=${CONNECTIONS:-1}
TARGET_PCT=${TARGET_PCT:-60}
PORT=${BENCH_NATS_PORT:-4333}
SERVICE_RUST_LOG=${BENCH_RUST_LOG:-info}
NATS_URL="nats://127.0.0.1:$PORT"
ECHO_SUBJECT=bench.echo
# ~200-byte JSON shaped like a product, so both scenarios move similar payloads.
ECHO_REPLY_BYTES=${ECHO_REPLY_BYTES:-216} # size of a seeded product's JSON reply

die() {
  echo "bench: $*" >&2
  exit 1
}

for v in CONCURRENCY ROUNDS PRODUCTS CONNECTIONS PORT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done

# --- nats-server binary --------------------------------------------------------
# Executed rather than sourced so that its failures stop us (set -e does not
# apply inside a sourced function called from an `||` list); it installs
# nats-server into .tools/bin, which the fallback below picks up.
if [[ -f $ROOT/scripts/setup.sh ]]; then
  bash "$ROOT/scripts/setup.sh" || die "scripts/setup.sh failed"
fi
if [[ -z ${NATS_SERVER_BIN:-} ]]; then
  if [[ -x $ROOT/.tools/bin/nats-server ]]; then
    NATS_SERVER_BIN=$ROOT/.tools/bin/nats-server
  else
    NATS_SERVER_BIN=$(command -v nats-server || true)
  fi
fi
[[ -n $NATS_SERVER_BIN && -x $NATS_SERVER_BIN ]] ||
  die "nats-server not found (run scripts/setup.sh or set NATS_SERVER_BIN)"

# --- build ---------------------------------------------------------------------
echo "bench: building release binaries..." >&2
cargo build --release --locked -p product-service -p shop-bench
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET_DIR/release/shop-bench
SERVICE=$TARGET_DIR/release/product-service
[[ -x $BENCH && -x $SERVICE ]] || die "release binaries missing under $TARGET_DIR/release"

# --- run directory, processes, cleanup -------------------------------------------
REV=$(git rev-parse --short HEAD 2>/dev/null || echo "no-commit")
if [[ -n $(git status --porcelain 2>/dev/null | head -1) ]]; then REV="$REV+dirty"; fi
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-${REV//+/-}"
RUN_DIR="$ROOT/bench-results/$RUN_ID"
LOG_DIR="$RUN_DIR/logs"
mkdir -p "$LOG_DIR"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/shop-bench.XXXXXX")

PIDS=()   # started background processes, in start order
FG_PID="" # the shop-bench client command currently being waited for
CLEANED=0

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "bench: pid $pid did not stop in 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Stop in reverse start order (services before the nats-server), remove temp data.
cleanup() {
  local status=$1 i
  ((CLEANED)) && return 0
  CLEANED=1
  trap - INT TERM HUP EXIT
  [[ -n $FG_PID ]] && stop_pid "$FG_PID"
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  rm -rf "$TMP"
  exit "$status"
}
trap 'cleanup 130' INT
trap 'cleanup 143' TERM HUP
trap 'cleanup $?' EXIT

# Start a child in its own session (when setsid exists) so a terminal Ctrl-C
# reaches only this script, which then stops the children itself.
spawn() {
  local log=$1
  shift
  if command -v setsid >/dev/null; then
    setsid "$@" >"$log" 2>&1 &
  else
    "$@" >"$log" 2>&1 &
  fi
  PIDS+=("$!")
  LAST_PID=$!
}

# Run a client command in the background and wait for it, so that a signal to
# this script is handled at once (bash runs traps only between foreground commands).
run_fg() {
  local rc=0
  "$@" &
  FG_PID=$!
  wait "$FG_PID" || rc=$?
  FG_PID=""
  return "$rc"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Fails with the log tail if the process is gone.
require_alive() {
  local pid=$1 name=$2 log=$3
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "bench: $name exited unexpectedly; last log lines ($log):" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
}

# wait-for with a liveness check of the responder on failure.
wait_answering() {
  local subject=$1 payload=$2 pid=$3 name=$4 log=$5
  if ! run_fg "$BENCH" wait-for --nats-url "$NATS_URL" --subject "$subject" --payload "$payload" --deadline 30s; then
    require_alive "$pid" "$name" "$log"
    echo "bench: $name is running but did not answer on $subject; last log lines:" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
}

# --- nats-server -------------------------------------------------------------------
port_open "$PORT" && die "port $PORT is already in use (set BENCH_NATS_PORT)"
NATS_VERSION=$("$NATS_SERVER_BIN" --version 2>&1 || true)
spawn "$LOG_DIR/nats-server.log" "$NATS_SERVER_BIN" -a 127.0.0.1 -p "$PORT" -js -sd "$TMP/jetstream"
NATS_PID=$LAST_PID
for ((i = 0; i < 100; i++)); do
  port_open "$PORT" && break
  require_alive "$NATS_PID" nats-server "$LOG_DIR/nats-server.log"
  sleep 0.1
done
port_open "$PORT" || die "nats-server did not open port $PORT within 10 s"

# --- responders ----------------------------------------------------------------------
# Same requests as product.get, and a reply of a seeded product's size: the only
# difference left between the two is the work product.get does.
spawn "$LOG_DIR/echo-server.log" "$BENCH" echo-server --nats-url "$NATS_URL" --subject "$ECHO_SUBJECT" --queue bench \
  --reply-bytes "$ECHO_REPLY_BYTES"
ECHO_PID=$LAST_PID
mkdir -p "$TMP/product-data"
spawn "$LOG_DIR/product-service.log" env NATS_URL="$NATS_URL" INSTANCE_ID=bench-1 \
  DATA_DIR="$TMP/product-data" ADMIN_ADDR=127.0.0.1:0 LOG_FORMAT=json RUST_LOG="$SERVICE_RUST_LOG" \
  "$SERVICE"
SERVICE_PID=$LAST_PID

wait_answering "$ECHO_SUBJECT" '{}' "$ECHO_PID" echo-server "$LOG_DIR/echo-server.log"
# Any reply (a 404 for this id is expected) proves product.get is being served.
wait_answering product.get '{"id":"bench-probe"}' "$SERVICE_PID" product-service "$LOG_DIR/product-service.log"

IDS_FILE="$RUN_DIR/product-ids.jsonl"
run_fg "$BENCH" seed-products --nats-url "$NATS_URL" --count "$PRODUCTS" --prefix bench- --ids-out "$IDS_FILE"

# --- header ----------------------------------------------------------------------------
{
  echo "# product.get vs echo ($RUN_ID)"
  echo
  echo "- git: $REV"
  echo "- nats-server: $NATS_VERSION ($NATS_SERVER_BIN)"
  echo "- host: $(uname -sm), $(nproc 2>/dev/null || echo '?') CPUs (load generator, nats-server and responders share them)"
  echo "- load: concurrency $CONCURRENCY, connections $CONNECTIONS, warmup $WARMUP, duration $DURATION, rounds $ROUNDS"
  echo "- product-service: 1 instance, RUST_LOG=$SERVICE_RUST_LOG, $PRODUCTS seeded products"
  echo "- echo: same {\"id\":...} requests, fixed $ECHO_REPLY_BYTES-byte reply (a seeded product's size)"
  echo
} | tee "$RUN_DIR/summary.md"

# --- load rounds -------------------------------------------------------------------------
run_echo() {
  run_fg "$BENCH" load --nats-url "$NATS_URL" --subject "$ECHO_SUBJECT" --label echo \
    --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" \
    --payloads-file "$IDS_FILE" --json-out "$RUN_DIR/echo-r$1.json"
}
run_product_get() {
  run_fg "$BENCH" load --nats-url "$NATS_URL" --subject product.get --label product-get \
    --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" \
    --payloads-file "$IDS_FILE" --json-out "$RUN_DIR/product-get-r$1.json"
}

for ((r = 1; r <= ROUNDS; r++)); do
  require_alive "$ECHO_PID" echo-server "$LOG_DIR/echo-server.log"
  require_alive "$SERVICE_PID" product-service "$LOG_DIR/product-service.log"
  echo "## round $r/$ROUNDS" >&2
  # ABBA order: echo first in odd rounds, product-get first in even rounds.
  if ((r % 2)); then
    run_echo "$r"
    run_product_get "$r"
  else
    run_product_get "$r"
    run_echo "$r"
  fi
done
require_alive "$SERVICE_PID" product-service "$LOG_DIR/product-service.log"

RESULT_FILES=()
for ((r = 1; r <= ROUNDS; r++)); do
  RESULT_FILES+=("$RUN_DIR/echo-r$r.json" "$RUN_DIR/product-get-r$r.json")
done
echo
"$BENCH" compare --baseline echo --target-pct "$TARGET_PCT" --json-out "$RUN_DIR/summary.json" \
  "${RESULT_FILES[@]}" | tee -a "$RUN_DIR/summary.md"
echo
echo "bench: results in ${RUN_DIR#"$ROOT"/}/"
