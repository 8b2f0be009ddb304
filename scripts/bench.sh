#!/usr/bin/env bash
# The standard benchmark suite, from a fresh checkout: installs what is missing
# (scripts/setup.sh: nats-server; npm modules of the Express baseline; wrk when
# apt-get is available), builds release binaries, and runs `shop-bench suite`,
# which starts a fresh nats-server and the services for each phase and stops
# them afterwards. About 6 minutes on 2 cores (10 s per point after 2 s of
# warm-up); --quick takes about 2 (2 s per point: only shows that all works).
#
# Writes results/suite-<time>-<git>.json and process logs beside it, prints the
# tables, and rewrites the generated tables of BENCHMARKS.md (not with --quick
# unless --markdown is given).
#
# Usage: scripts/bench.sh [--quick] [--only SCENARIOS] [--compare OLD.json]
#                         [--markdown FILE | --no-markdown] [-- shop-bench suite flags]
# Env:   NO_WRK=1 (no wrk cross-check), BENCH_RUST_LOG (services' RUST_LOG),
#        NATS_SERVER_BIN, CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=0
MARKDOWN=""
NO_MARKDOWN=0
SUITE_ARGS=()
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --only) SUITE_ARGS+=(--only "${2:?--only needs a list}"); shift ;;
    --compare) SUITE_ARGS+=(--compare "${2:?--compare needs a file}"); shift ;;
    --markdown) MARKDOWN=${2:?--markdown needs a file}; shift ;;
    --no-markdown) NO_MARKDOWN=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; SUITE_ARGS+=("$@"); break ;;
    *) echo "bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ((QUICK)); then SUITE_ARGS+=(--quick); fi
if ((!NO_MARKDOWN)); then
  if [[ -n $MARKDOWN ]]; then
    SUITE_ARGS+=(--markdown "$MARKDOWN")
  elif ((!QUICK)); then
    SUITE_ARGS+=(--markdown "$ROOT/BENCHMARKS.md")
  fi
fi

BENCH_NAME=suite
BENCH_RESULTS_DIR=results
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
export NATS_SERVER_BIN
STARTED=$SECONDS

# --- baselines and tools -------------------------------------------------------------
EXPRESS_DIR="$ROOT/benches/baselines/express"
if command -v npm >/dev/null; then
  if [[ ! -d $EXPRESS_DIR/node_modules/express-http-proxy ]]; then
    echo "bench: installing the Express baseline's modules (npm ci)" >&2
    (cd "$EXPRESS_DIR" && npm ci --no-audit --no-fund --loglevel=error) ||
      echo "bench: WARNING npm ci failed; the Express baseline will be skipped" >&2
  fi
else
  echo "bench: WARNING node/npm not found; the Express baseline will be skipped" >&2
fi
if [[ ${NO_WRK:-0} == 1 ]]; then
  SUITE_ARGS+=(--no-wrk)
elif ! command -v wrk >/dev/null; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "bench: installing wrk (apt-get) for the gateway cross-check" >&2
    { apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; } ||
      echo "bench: WARNING could not install wrk; no cross-check" >&2
  else
    echo "bench: wrk not installed; no cross-check of gateway-get (apt-get install wrk)" >&2
  fi
fi

# --- build -----------------------------------------------------------------------------
echo "bench: building release binaries..." >&2
cargo build --release --locked --workspace --bins
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH=$TARGET_DIR/release/shop-bench
[[ -x $BENCH ]] || die "release binaries missing under $TARGET_DIR/release"
BUILT=$SECONDS

# --- the suite -------------------------------------------------------------------------
JSON="$ROOT/results/suite-$RUN_ID.json"
status=0
run_fg "$BENCH" suite --bin-dir "$TARGET_DIR/release" --logs-dir "$LOG_DIR" --json-out "$JSON" \
  "${SUITE_ARGS[@]}" || status=$?
echo "bench: build $((BUILT - STARTED)) s, suite $((SECONDS - BUILT)) s; results ${JSON#"$ROOT"/}, logs ${LOG_DIR#"$ROOT"/}/" >&2
exit "$status"
