#!/usr/bin/env bash
# Shared by the bench scripts (sourced): finding nats-server, a results
# directory per run, and running shop-bench so that a signal stops it (it
# starts and stops every other process itself, through shop-process).
# Callers set ROOT and `set -euo pipefail`; BENCH_NAME names the run directory,
# created under BENCH_RESULTS_DIR (default bench-results).

die() {
  echo "bench: $*" >&2
  exit 1
}

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

# --- run directory, cleanup ------------------------------------------------------
REV=$(git rev-parse --short HEAD 2>/dev/null || echo "no-commit")
if [[ -n $(git status --porcelain 2>/dev/null | head -1) ]]; then REV="$REV+dirty"; fi
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-${REV//+/-}"
RUN_DIR="$ROOT/${BENCH_RESULTS_DIR:-bench-results}/${BENCH_NAME:-bench}-$RUN_ID"
LOG_DIR="$RUN_DIR/logs"
mkdir -p "$LOG_DIR"

FG_PID="" # the shop-bench command currently being waited for
CLEANED=0

# Stops the running shop-bench (SIGTERM; it stops what it started), SIGKILL after 10 s.
cleanup() {
  local status=$1 i
  ((CLEANED)) && return 0
  CLEANED=1
  trap - INT TERM HUP EXIT
  if [[ -n $FG_PID ]] && kill -TERM "$FG_PID" 2>/dev/null; then
    for ((i = 0; i < 100; i++)); do
      kill -0 "$FG_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$FG_PID" 2>/dev/null || true
    wait "$FG_PID" 2>/dev/null || true
  fi
  exit "$status"
}
trap 'cleanup 130' INT
trap 'cleanup 143' TERM HUP
trap 'cleanup $?' EXIT

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
