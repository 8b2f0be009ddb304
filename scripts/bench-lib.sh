#!/usr/bin/env bash
# Shared by the bench scripts (sourced): finding nats-server, a results
# directory per run, starting and stopping processes, and waiting for them.
# Callers set ROOT and `set -euo pipefail`; BENCH_NAME names the run directory,
# created under BENCH_RESULTS_DIR (default bench-results); scripts that start
# processes themselves also set NATS_URL and BENCH (the shop-bench binary).

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

# --- run directory, processes, cleanup -------------------------------------------
REV=$(git rev-parse --short HEAD 2>/dev/null || echo "no-commit")
if [[ -n $(git status --porcelain 2>/dev/null | head -1) ]]; then REV="$REV+dirty"; fi
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-${REV//+/-}"
RUN_DIR="$ROOT/${BENCH_RESULTS_DIR:-bench-results}/${BENCH_NAME:-bench}-$RUN_ID"
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
  LAST_PID=$! # read by the scripts that source this file
  export LAST_PID
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

