#!/usr/bin/env bash
# Start the whole system: install what is missing (scripts/setup.sh), build release
# binaries, then hand over to `shop up`, which starts a local nats-server (unless
# NATS_URL is reachable), REPLICAS instances of every service, the gateway, the demo
# catalog and admin, prints where everything is, and stops it all on Ctrl-C.
# Env: NATS_URL (default nats://127.0.0.1:4222), REPLICAS (default 2),
#      NATS_HTTP_PORT (monitoring port of a started server, default 8222), GATEWAY_ADDR
#      (default 127.0.0.1:3000), RUST_LOG, LOG_FORMAT, ADMIN_EMAIL / ADMIN_PASSWORD
#      (the demo admin account the user service creates), OTEL_EXPORTER_OTLP_ENDPOINT,
#      NATS_CLUSTER (3: a local three-node NATS cluster instead of one server, every
#      stream with 3 replicas; docs/cluster.md).
# The bus is locked: `shop up` runs `shop auth init .run/auth` (every process gets
# its own identity; `.run/auth/operator.creds` is for you: keep the directory secret).
# `scripts/run.sh --no-auth` runs without (a warning says so); a running NATS_URL
# server needs `--auth-dir DIR`, the directory `shop auth init` made for it.
# Extra arguments go to `shop up` (see `target/release/shop up --help`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

REPLICAS=${REPLICAS:-2}
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
[[ $REPLICAS =~ ^[1-9]$ ]] || { echo "run: REPLICAS must be 1 to 9, got '$REPLICAS'" >&2; exit 1; }

# shellcheck source=scripts/setup.sh
source "$ROOT/scripts/setup.sh"
echo "run: building the services, the gateway and shop (release)"
cargo build --release --locked -p product-service -p user-service -p payment-service -p notification-service \
  -p order-service -p gateway -p shop-cli

# Data keys (the user and order services seal their secrets with them) and the
# demo admin's credentials: `shop up` passes them on (the auth directory's keys,
# or .run/keys with --no-auth; ADMIN_EMAIL / ADMIN_PASSWORD when set).
# exec: Ctrl-C reaches `shop up`, which stops its children in order.
exec "$TARGET/shop" up --replicas "$REPLICAS" --root "$ROOT" --bin-dir "$TARGET" "$@"
