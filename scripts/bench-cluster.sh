#!/usr/bin/env bash
# What a three-node NATS cluster costs, and how long losing its ORDER leader
# pauses order placement, in one sitting (issue #14):
# - product-get (closed loop, 64 in flight) and order-place (open loop, RATE/s)
#   on one nats-server and on a three-node cluster (`shop-bench --nats-cluster 3`:
#   every stream with 3 replicas, services given every node, load from node 1),
#   alternated single, cluster, cluster, single so that drift in the machine's
#   load hits both alike; release builds, auth on, `sync_interval: always`;
# - the failover pause: the cluster test (cli/tests/cluster_nats.rs, release
#   builds) at FAILOVER_RATE orders/s, which kills the ORDER leader with
#   `kill -9` under load and prints p99 and max of order.create around the kill
#   and the longest gap between confirmations (its FAILOVER line).
#
# Env: DURATION (10s), WARMUP (2s), RATE (100), FAILOVER_RATE (50), NATS_SERVER_BIN.
# Writes results/cluster-<time>/{product-get,order-place}-{single,cluster}-<n>.json
# and failover.log.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/setup.sh
source "$ROOT/scripts/setup.sh"
export NATS_SERVER_BIN
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
RATE=${RATE:-100}
FAILOVER_RATE=${FAILOVER_RATE:-50}
echo "bench-cluster: building release binaries..." >&2
cargo build --release --locked -p shop-bench -p shop-cli -p product-service -p payment-service \
  -p user-service -p notification-service -p order-service
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=results/cluster-$STAMP
mkdir -p "$OUT"
point() { # SCENARIO NAME NODES LOAD-ARGS...
  local scenario=$1 name=$2 nodes=$3
  shift 3
  echo "bench-cluster: $scenario $name" >&2
  "$BIN/shop-bench" run "$scenario" --spawn --nats-cluster "$nodes" \
    --duration "$DURATION" --warmup "$WARMUP" "$@" \
    --bin-dir "$BIN" --logs-dir "$OUT/logs/$scenario-$name" \
    --json-out "$OUT/$scenario-$name.json"
}
for scenario in product-get order-place; do
  load=()
  if [[ $scenario == order-place ]]; then load=(--model open --rate "$RATE"); fi
  point "$scenario" single-1 1 "${load[@]}"
  point "$scenario" cluster-1 3 "${load[@]}"
  point "$scenario" cluster-2 3 "${load[@]}"
  point "$scenario" single-2 1 "${load[@]}"
done
echo "bench-cluster: failover at $FAILOVER_RATE orders/s" >&2
CLUSTER_TEST_RATE=$FAILOVER_RATE cargo test --release --locked -p shop-cli --test cluster_nats \
  -- --nocapture 2>&1 | tee "$OUT/failover.log" | grep -E '^(cluster up|killed|new ORDER|restarted|[0-9]+ order.create|FAILOVER|test result)'
for scenario in product-get order-place; do
  for n in 1 2; do
    echo "== $scenario: cluster vs single, pair $n (ratio = cluster/single) =="
    "$BIN/shop-bench" compare "$OUT/$scenario-cluster-$n.json" "$OUT/$scenario-single-$n.json"
  done
done
echo "bench-cluster: results in $OUT/"
