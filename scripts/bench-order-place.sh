#!/usr/bin/env bash
# Orders end to end, from order.create to order.confirmed, through product,
# payment, user, notification and order (release builds, one instance each), on
# a fresh nats-server per rate with JetStream sync SYNC. Open loop: each order
# is timed from its intended send time. Results: results/order-place-<run>/rate-<R>.json.
#
# Env: RATES ("100 250 500"), DURATION (10s), SYNC (always|default), NATS_SERVER_BIN.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RATES=${RATES:-100 250 500}
DURATION=${DURATION:-10s}
SYNC=${SYNC:-always}
case $SYNC in always | default) ;; *) echo "bench: SYNC must be always or default" >&2; exit 2 ;; esac

BENCH_NAME=order-place
BENCH_RESULTS_DIR=results
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
export NATS_SERVER_BIN

echo "bench: building release binaries..." >&2
cargo build --release --locked -p shop-bench -p product-service -p payment-service -p user-service \
  -p notification-service -p order-service
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET_DIR/release/shop-bench

for rate in $RATES; do
  run_fg "$BENCH" run order-place --spawn --sync "$SYNC" --model open --rate "$rate" \
    --duration "$DURATION" --bin-dir "$TARGET_DIR/release" --logs-dir "$LOG_DIR/rate-$rate" \
    --json-out "$RUN_DIR/rate-$rate.json"
done
echo "bench: results in ${RUN_DIR#"$ROOT"/}/"
