#!/usr/bin/env bash
# Print the Kubernetes Secrets of the deployment, made from an auth directory of
# `shop auth init`, as YAML on stdout (nothing is written to the cluster):
#
#   deploy/scripts/secrets.sh DIR | kubectl apply -f -
#
# DIR is made with `shop auth init DIR` when it has no auth.conf yet (SHOP_BIN, or
# `shop` on PATH, or target/release/shop); an existing DIR is used as it is, so
# run `shop auth init DIR [--rotate]` yourself to re-issue or rotate.
#
# One Secret per identity, so that each pod mounts only its own credentials:
#   namespace $SHOP_NAMESPACE (default shop):
#     shop-nats-<identity>   nats.creds       product user payment notification order gateway
#     shop-user-data-key     user-data.key    (USER_DATA_KEY_FILE of the user service)
#     shop-order-data-key    order-data.key   (ORDER_DATA_KEY_FILE of the order service)
#     shop-keda-nats         account          the application account's public key (KEDA's /jsz account)
#   namespace $NATS_NAMESPACE (default nats):
#     nats-auth              auth.conf        operator, system account, resolver preload
# operator.creds and keys/ stay where they are: they are for people, not pods.
# SECRETS_ONLY=shop or SECRETS_ONLY=nats prints only that namespace's Secrets
# (rotating credentials applies them in two steps: docs/deploy.md).
set -euo pipefail

usage() { echo "usage: $0 DIR   (env: SHOP_NAMESPACE=shop NATS_NAMESPACE=nats SHOP_BIN=shop SECRETS_ONLY=shop|nats)" >&2; exit 2; }
[[ $# -eq 1 && $1 != -* ]] || usage
dir=$1
shop_ns=${SHOP_NAMESPACE:-shop}
nats_ns=${NATS_NAMESPACE:-nats}
identities=(product user payment notification order gateway)
only=${SECRETS_ONLY:-}
[[ -z $only || $only == shop || $only == nats ]] || usage

if [[ ! -f $dir/auth.conf ]]; then
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  shop=${SHOP_BIN:-}
  if [[ -z $shop ]]; then
    if command -v shop >/dev/null 2>&1; then shop=shop
    elif [[ -x $root/target/release/shop ]]; then shop=$root/target/release/shop
    else echo "secrets: $dir/auth.conf is missing and no shop binary was found (set SHOP_BIN or build: cargo build --release -p shop-cli --bin shop)" >&2; exit 1
    fi
  fi
  # its report goes to stderr: stdout carries only the manifests
  "$shop" auth init "$dir" >&2
fi

for file in auth.conf user-data.key order-data.key "${identities[@]/%/.creds}"; do
  [[ -s $dir/$file ]] || { echo "secrets: $dir/$file is missing or empty; is $dir an auth directory of shop auth init?" >&2; exit 1; }
done

# The application account: the preloaded account that is not the system account.
system=$(sed -n 's/^system_account: *\([A-Z0-9]*\).*/\1/p' "$dir/auth.conf")
account=$(sed -n '/^resolver_preload: *{/,/^}/s/^ *\(A[A-Z0-9]\{55\}\): .*/\1/p' "$dir/auth.conf" | grep -vx "$system" || true)
if [[ -z $system || $(wc -w <<<"$account") -ne 1 ]]; then
  echo "secrets: cannot tell the application account from $dir/auth.conf (system account '$system', others: '$account')" >&2
  exit 1
fi

secret() { # namespace name --from-... ; one YAML document
  local ns=$1 name=$2; shift 2
  echo "---"
  kubectl create secret generic "$name" --namespace "$ns" "$@" --dry-run=client -o yaml \
    | sed '/^  creationTimestamp: null$/d'
}

if [[ $only != nats ]]; then
  for id in "${identities[@]}"; do
    secret "$shop_ns" "shop-nats-$id" --from-file="nats.creds=$dir/$id.creds"
  done
  secret "$shop_ns" shop-user-data-key --from-file="user-data.key=$dir/user-data.key"
  secret "$shop_ns" shop-order-data-key --from-file="order-data.key=$dir/order-data.key"
  secret "$shop_ns" shop-keda-nats --from-literal="account=$account"
fi
if [[ $only != shop ]]; then
  secret "$nats_ns" nats-auth --from-file="auth.conf=$dir/auth.conf"
fi
