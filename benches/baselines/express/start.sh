#!/usr/bin/env bash
# Starts the Express baseline: the product service, then the gateway in front
# of it; Ctrl-C stops both. Installs the pinned modules first if missing.
# Env: GATEWAY_PORT (3100), PRODUCT_PORT (3101), PRODUCTS (1000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[[ -d node_modules/express-http-proxy ]] || npm ci --no-audit --no-fund
GATEWAY_PORT=${GATEWAY_PORT:-3100}
PRODUCT_PORT=${PRODUCT_PORT:-3101}
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait' EXIT INT TERM
NODE_ENV=production PORT=$PRODUCT_PORT node product.js &
PIDS+=("$!")
NODE_ENV=production PORT=$GATEWAY_PORT PRODUCT_URL="127.0.0.1:$PRODUCT_PORT" node gateway.js &
PIDS+=("$!")
wait
