#!/usr/bin/env bash
# product.get against a raw echo responder on the same nats-server, in one run
# (target: product.get >= 60% of echo's req/s): the reads phase of the
# standard suite, limited to echo and product-get. See scripts/bench.sh.
#
# Env: DURATION (10s), WARMUP (2s), ROUNDS (3); other arguments go to bench.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec "$ROOT/scripts/bench.sh" --only echo,product-get --no-markdown "$@" -- \
  --duration "${DURATION:-10s}" --warmup "${WARMUP:-2s}" --rounds "${ROUNDS:-3}"
