#!/usr/bin/env bash
# What NATS auth costs: echo, product-get and gateway-get (cached and uncached)
# with auth on (every process on its own identity, as shipped) and off
# (`shop-bench --no-auth`), alternated on, off, off, on in one sitting so that
# drift in the machine's load hits both alike; then each figure's on/off ratio
# (shop-bench compare). Each pass is the suite's reads phase limited to these
# scenarios, on a fresh stack.
#
# Env: DURATION (10s), WARMUP (2s), ROUNDS (2: echo/product-get alternation
#      inside a pass), CARGO_TARGET_DIR, NATS_SERVER_BIN.
# Writes results/auth-<on|off>-<n>-<time>.json.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/setup.sh
source "$ROOT/scripts/setup.sh"
export NATS_SERVER_BIN
echo "bench-auth: building release binaries..." >&2
cargo build --release --locked --workspace --bins
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p results
pass() { # NAME [--no-auth]
  local name=$1
  shift
  echo "bench-auth: pass $name" >&2
  "$BIN/shop-bench" suite --only echo,product-get,gateway-get --no-wrk \
    --duration "${DURATION:-10s}" --warmup "${WARMUP:-2s}" --rounds "${ROUNDS:-2}" \
    --bin-dir "$BIN" --logs-dir "results/logs/auth-$STAMP/$name" \
    --json-out "results/auth-$name-$STAMP.json" "$@" >/dev/null
}
pass on-1
pass off-1 --no-auth
pass off-2 --no-auth
pass on-2
for n in 1 2; do
  echo "== auth on vs off, pair $n (ratio = on/off) =="
  "$BIN/shop-bench" compare "results/auth-on-$n-$STAMP.json" "results/auth-off-$n-$STAMP.json"
done
