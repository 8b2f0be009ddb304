#!/usr/bin/env bash
# Start the whole system: a local nats-server (unless NATS_URL is reachable),
# REPLICAS instances of every service, the demo catalog and admin. Ctrl-C stops everything.
# Env: NATS_URL (default nats://127.0.0.1:4222), REPLICAS (default 2),
#      NATS_HTTP_PORT (monitoring port of a started server, default 8222), RUST_LOG,
#      ADMIN_EMAIL / ADMIN_PASSWORD (the demo admin account the user service creates).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
REPLICAS=${REPLICAS:-2}
NATS_HTTP_PORT=${NATS_HTTP_PORT:-8222}
RUN_DIR="$ROOT/.run"
LOG_DIR="$RUN_DIR/logs"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
BIN="$TARGET/product-service"
# The demo's admin account (created by the user service at start); override for anything real.
ADMIN_EMAIL=${ADMIN_EMAIL:-admin@shop.example}
ADMIN_PASSWORD=${ADMIN_PASSWORD:-change-me-admin-password}
CATALOG="$ROOT/services/product/demo/catalog.json"
export NATS_URL

[[ $REPLICAS =~ ^[1-9][0-9]*$ ]] || { echo "run: REPLICAS must be a positive integer, got '$REPLICAS'" >&2; exit 1; }

SERVICE_PIDS=()
NATS_PID=""
CLEANED=0

# SIGTERM one process and wait for it; SIGKILL after 15 s.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "run: pid $pid did not stop in 15 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Services first (all at once), then the nats-server this script started.
cleanup() {
  local status=$1 pid
  ((CLEANED)) && return 0
  CLEANED=1
  trap - INT TERM HUP EXIT
  if ((${#SERVICE_PIDS[@]} + ${#NATS_PID})); then
    echo
    echo "run: stopping..."
  fi
  for pid in "${SERVICE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SERVICE_PIDS[@]}"; do stop_pid "$pid"; done
  [[ -n $NATS_PID ]] && stop_pid "$NATS_PID"
  exit "$status"
}
trap 'cleanup 0' INT TERM HUP
trap 'cleanup $?' EXIT

# Start a child in the background in its own session (when setsid exists), so a
# terminal Ctrl-C reaches only this script, which then stops the children in order.
spawn() {
  if command -v setsid >/dev/null; then
    setsid "$@" &
  else
    "$@" &
  fi
}

# host and port of the first server in NATS_URL (scheme://user:pass@host:port,...).
nats_host_port() {
  local u=${NATS_URL%%,*}
  u=${u#*://}
  u=${u##*@}
  u=${u%%/*}
  if [[ $u =~ ^\[(.*)\](:([0-9]+))?$ ]]; then
    NATS_HOST=${BASH_REMATCH[1]}
    NATS_PORT=${BASH_REMATCH[3]:-4222}
  elif [[ $u == *:* ]]; then
    NATS_HOST=${u%:*}
    NATS_PORT=${u##*:}
  else
    NATS_HOST=$u
    NATS_PORT=4222
  fi
  [[ -n $NATS_HOST ]] || NATS_HOST=127.0.0.1
}

reachable() {
  # shellcheck disable=SC2016 # $1/$2 expand in the inner bash
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$NATS_HOST" "$NATS_PORT" 2>/dev/null
}

# shellcheck source=scripts/setup.sh
source "$ROOT/scripts/setup.sh"
echo "run: building the services (release)"
cargo build --release --locked -p product-service -p user-service -p payment-service -p notification-service \
  -p order-service -p shop-cli
mkdir -p "$LOG_DIR" "$RUN_DIR/nats" "$RUN_DIR/data"

nats_host_port
if reachable; then
  echo "run: using the NATS server at $NATS_URL"
else
  case $NATS_HOST in
    127.0.0.1 | localhost | ::1) ;;
    *) echo "run: $NATS_URL is not reachable and is not local; start that server or unset NATS_URL" >&2; exit 1 ;;
  esac
  echo "run: starting nats-server on $NATS_HOST:$NATS_PORT (store .run/nats, log .run/logs/nats-server.log)"
  spawn env NATS_STORE_DIR="$RUN_DIR/nats" "$NATS_SERVER_BIN" -c "$ROOT/nats/config/nats-server.conf" \
    -a "$NATS_HOST" -p "$NATS_PORT" -m "$NATS_HTTP_PORT" >"$LOG_DIR/nats-server.log" 2>&1
  NATS_PID=$!
  deadline=$((SECONDS + 10))
  until reachable; do
    if ! kill -0 "$NATS_PID" 2>/dev/null; then
      NATS_PID=""
      echo "run: nats-server exited at start; last lines of .run/logs/nats-server.log:" >&2
      tail -n 20 "$LOG_DIR/nats-server.log" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "run: nats-server not reachable on $NATS_HOST:$NATS_PORT after 10 s; see .run/logs/nats-server.log" >&2
      exit 1
    fi
    sleep 0.2
  done
fi

# Every service, REPLICAS instances each; instance i of the k-th service (k from 0)
# serves admin HTTP on port 9101 + 10*k + i - 1 (product 9101.., user 9111.., ...).
SERVICES=(product user payment notification order)
SERVICE_NAMES=()
for k in "${!SERVICES[@]}"; do
  service=${SERVICES[k]}
  for ((i = 1; i <= REPLICAS; i++)); do
    port=$((9101 + 10 * k + i - 1))
    mkdir -p "$RUN_DIR/data/$service-$i"
    spawn env NATS_URL="$NATS_URL" INSTANCE_ID="$service-$i" DATA_DIR="$RUN_DIR/data/$service-$i" \
      ADMIN_ADDR="127.0.0.1:$port" LOG_FORMAT=pretty ADMIN_EMAIL="$ADMIN_EMAIL" ADMIN_PASSWORD="$ADMIN_PASSWORD" \
      "$TARGET/$service-service" >"$LOG_DIR/$service-$i.log" 2>&1
    SERVICE_PIDS+=("$!")
    SERVICE_NAMES+=("$service-$i")
    echo "run: started $service-$i (pid $!, admin 127.0.0.1:$port, log .run/logs/$service-$i.log)"
  done
done

# Fail early if an instance dies at start; otherwise seed, retrying while they come up.
check_services() {
  local j
  for j in "${!SERVICE_PIDS[@]}"; do
    if ! kill -0 "${SERVICE_PIDS[j]}" 2>/dev/null; then
      echo "run: ${SERVICE_NAMES[j]} exited at start; last lines of .run/logs/${SERVICE_NAMES[j]}.log:" >&2
      tail -n 20 "$LOG_DIR/${SERVICE_NAMES[j]}.log" >&2
      exit 1
    fi
  done
}
seeded=0
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  sleep 1
  check_services
  if "$BIN" seed "$CATALOG" >"$LOG_DIR/seed.log" 2>&1; then
    seeded=1
    break
  fi
  echo "run: seeding not done yet (attempt $attempt/10); retrying"
done
if ((seeded)); then
  echo "run: demo catalog seeded from services/product/demo/catalog.json"
else
  echo "run: WARNING seeding failed; last lines of .run/logs/seed.log:" >&2
  tail -n 20 "$LOG_DIR/seed.log" >&2
fi

cat <<MSG

The system is running ($REPLICAS instance(s) each of product, user, payment, notification
and order; NATS at $NATS_URL). Admin account: $ADMIN_EMAIL (ADMIN_EMAIL / ADMIN_PASSWORD).
  Admin:    curl http://127.0.0.1:9101/health    curl http://127.0.0.1:9101/ready
            curl http://127.0.0.1:9101/metrics   (ports: product 9101.., user 9111.., payment 9121..,
                                                  notification 9131.., order 9141..)
  Status:   target/release/shop status
  Requests: target/release/shop req product.get '{"id":"sku-keyboard"}'
            target/release/shop req product.list '{"limit":5}'
            target/release/shop req user.login '{"email":"$ADMIN_EMAIL","password":"$ADMIN_PASSWORD"}'
  With the nats CLI (https://github.com/nats-io/natscli), if you have it:
            nats req product.get '{"id":"sku-keyboard"}'    nats micro ls
  Logs:     $LOG_DIR/  (nats-server.log, <service>-<i>.log, seed.log)
Press Ctrl-C to stop everything.
MSG

# wait returns early when a trapped signal arrives; the trap stops the children.
wait
