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

BENCH_NAME=product-get
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

for v in CONCURRENCY ROUNDS PRODUCTS CONNECTIONS PORT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done

# --- build ---------------------------------------------------------------------
echo "bench: building release binaries..." >&2
cargo build --release --locked -p product-service -p shop-bench
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET_DIR/release/shop-bench
SERVICE=$TARGET_DIR/release/product-service
[[ -x $BENCH && -x $SERVICE ]] || die "release binaries missing under $TARGET_DIR/release"

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
