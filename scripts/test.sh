#!/usr/bin/env bash
# Run every check and test: set-up, rustfmt, clippy (unless SKIP_LINT=1), cargo test.
# Extra arguments go to `cargo test`, e.g. scripts/test.sh -p product-service -- --nocapture
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Exports NATS_SERVER_BIN; the Rust tests start their own servers with it.
# shellcheck source=scripts/setup.sh
source "$ROOT/scripts/setup.sh"
export RUST_BACKTRACE=1
bash "$ROOT/scripts/check-deploy.sh"  # deploy/ and .github/, offline: kustomize render, k8s+KEDA schemas, linters

if [[ ${SKIP_LINT:-0} != 1 ]]; then
  if cargo fmt --version >/dev/null 2>&1; then
    echo "test: cargo fmt --check"
    cargo fmt --all -- --check
  else
    echo "test: WARNING rustfmt is not installed (rustup component add rustfmt); skipping format check" >&2
  fi
  echo "test: no import circles between a crate's modules"
  python3 scripts/check-import-cycles.py "$ROOT"
  if cargo clippy --version >/dev/null 2>&1; then
    echo "test: cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
  else
    echo "test: WARNING clippy is not installed (rustup component add clippy); skipping lint" >&2
  fi
fi

# Tests that run several services start the other crates' binaries: build them all first.
echo "test: cargo build --workspace --bins"
cargo build --workspace --bins --locked
echo "test: cargo test (NATS_SERVER_BIN=$NATS_SERVER_BIN)"
cargo test --workspace --locked --no-fail-fast "$@"
