#!/usr/bin/env bash
# Orders end to end: from order.create to order.confirmed, through real product,
# payment, user, notification and order services (release builds, one instance
# each unless REPLICAS is set), on a nats-server of its own.
#
# Open loop: orders arrive at each rate in RATES for DURATION, each timed from its
# intended send time (a server that falls behind shows as latency, not as a lower
# rate). Results go to bench-results/order-place-<run>/.
#
# Env: RATES ("100 250 500"), DURATION (10s), REPLICAS (1), SYNC (always|default:
#      JetStream sync_interval), BENCH_NATS_PORT (4334), NATS_SERVER_BIN.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RATES=${RATES:-100 250 500}
DURATION=${DURATION:-10s}
REPLICAS=${REPLICAS:-1}
SYNC=${SYNC:-always}
PORT=${BENCH_NATS_PORT:-4334}
NATS_URL="nats://127.0.0.1:$PORT"
BENCH_NAME=order-place
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

echo "bench: building release binaries..." >&2
cargo build --release --locked -p shop-bench -p product-service -p payment-service -p user-service \
  -p notification-service -p order-service
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET_DIR/release/shop-bench

port_open "$PORT" && die "port $PORT is already in use (set BENCH_NATS_PORT)"
case $SYNC in
  always) SYNC_LINE="sync_interval: always" ;;
  default) SYNC_LINE="" ;;
  *) die "SYNC must be always or default" ;;
esac
cat >"$TMP/nats.conf" <<CONF
listen: 127.0.0.1:$PORT
max_payload: 8MB
jetstream { store_dir: "$TMP/jetstream"
  $SYNC_LINE
}
CONF
spawn "$LOG_DIR/nats-server.log" "$NATS_SERVER_BIN" -c "$TMP/nats.conf"
NATS_PID=$LAST_PID
for ((i = 0; i < 100; i++)); do
  port_open "$PORT" && break
  require_alive "$NATS_PID" nats-server "$LOG_DIR/nats-server.log"
  sleep 0.1
done

for service in product payment user notification order; do
  for ((r = 1; r <= REPLICAS; r++)); do
    mkdir -p "$TMP/$service-$r"
    spawn "$LOG_DIR/$service-$r.log" env NATS_URL="$NATS_URL" INSTANCE_ID="$service-$r" DATA_DIR="$TMP/$service-$r" \
      ADMIN_ADDR=127.0.0.1:0 LOG_FORMAT=json RUST_LOG=warn "$TARGET_DIR/release/$service-service"
  done
done
wait_answering product.get '{"id":"probe"}' "$LAST_PID" services "$LOG_DIR/order-$REPLICAS.log"
wait_answering order.get '{"id":"probe"}' "$LAST_PID" order-service "$LOG_DIR/order-$REPLICAS.log"
wait_answering payment.get '{"payment_id":"probe"}' "$LAST_PID" payment-service "$LOG_DIR/order-$REPLICAS.log"
wait_answering notification.list '{"user_id":"probe"}' "$LAST_PID" notification-service "$LOG_DIR/order-$REPLICAS.log"

run_fg "$BENCH" seed-products --nats-url "$NATS_URL" --count 20 --prefix order-bench- --ids-out "$TMP/ids.jsonl"
PRODUCTS=$(sed -E 's/.*"id":"([^"]+)".*/\1/' "$TMP/ids.jsonl" | paste -sd, -)
USER_ID=$(run_fg "$BENCH" wait-for --nats-url "$NATS_URL" --subject user.register \
  --payload '{"email":"bench@example.com","password":"benchmark password","name":"Bench"}' --deadline 10s --print |
  sed -E 's/.*"id":"([^"]+)".*/\1/')
[[ -n $USER_ID ]] || die "could not register the bench user"

{
  echo "# order-place ($RUN_ID)"
  echo
  echo "- git: $REV; nats-server: $("$NATS_SERVER_BIN" --version 2>&1); JetStream sync: $SYNC"
  echo "- host: $(uname -sm), $(nproc) CPUs shared by the load generator, nats-server and every service"
  echo "- $REPLICAS instance(s) of each service; open loop, one line per order, tok_ok; $DURATION per rate"
  echo
} | tee "$RUN_DIR/summary.md"
for rate in $RATES; do
  run_fg "$BENCH" order-place --nats-url "$NATS_URL" --rate "$rate" --duration "$DURATION" \
    --products "$PRODUCTS" --user-id "$USER_ID" --label "order-place@$rate" --json-out "$RUN_DIR/rate-$rate.json" |
    tee -a "$RUN_DIR/summary.md"
done
echo "bench: results in ${RUN_DIR#"$ROOT"/}/"
