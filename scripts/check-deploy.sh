#!/usr/bin/env bash
# Offline checks of deploy/ and .github/ (docs/deploy.md, "What the checks prove"):
# render every kustomization with `kubectl kustomize` and validate what comes out
# against the Kubernetes 1.32 schemas (strict) and KEDA's CRD models, check the
# Secrets deploy/scripts/secrets.sh makes, the NATS chart values, the Dockerfile
# (hadolint) and the workflows (actionlint). Each validator proves first that it
# rejects a known-bad input. The validators are pinned (deploy/check/) and
# installed into .tools/deploy-check on first use. Exit 1 on any problem.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CHECK=$ROOT/deploy/check
TOOLS=$ROOT/.tools/deploy-check
say() { echo "check-deploy: $*"; }
fail() { echo "check-deploy: FAILED: $*" >&2; exit 1; }

command -v kubectl >/dev/null || fail "kubectl (with kustomize built in) is needed to render deploy/k8s"
command -v python3 >/dev/null || fail "python3 is needed"
command -v npm >/dev/null || fail "node and npm are needed for the KEDA models"

# --- pinned validators, installed once per lock file ---------------------------
mkdir -p "$TOOLS"
want=$(cat "$CHECK/requirements.txt" | sha256sum | cut -d' ' -f1)
if [[ ! -x $TOOLS/venv/bin/kubernetes-validate || $(cat "$TOOLS/venv/.lock" 2>/dev/null) != "$want" ]]; then
  say "installing the pinned Python validators into $TOOLS/venv"
  rm -rf "$TOOLS/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: \
    -r "$CHECK/requirements.txt"
  echo "$want" >"$TOOLS/venv/.lock"
fi
want=$(cat "$CHECK/package.json" "$CHECK/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ ! -d $TOOLS/node/node_modules || $(cat "$TOOLS/node/.lock" 2>/dev/null) != "$want" ]]; then
  say "installing the pinned KEDA models into $TOOLS/node"
  rm -rf "$TOOLS/node"
  mkdir -p "$TOOLS/node"
  cp "$CHECK/package.json" "$CHECK/package-lock.json" "$TOOLS/node/"
  (cd "$TOOLS/node" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" >"$TOOLS/node/.lock"
fi
# ES modules resolve packages from the script's own folder
cp "$CHECK/validate-keda.mjs" "$TOOLS/node/"
PY=$TOOLS/venv/bin/python
validate() { "$PY" "$CHECK/validate.py" "$@"; }
keda() { node "$TOOLS/node/validate-keda.mjs" "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- each validator must reject a known-bad input ------------------------------
expect_failure() { # what command...
  local what=$1; shift
  if "$@" >"$work/selftest.out" 2>&1; then
    cat "$work/selftest.out" >&2
    fail "self-test: $what was accepted"
  fi
}
cat >"$work/bad-k8s.yaml" <<'BAD'
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: "two"
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers: [{name: bad, image: bad, imagePullPolicy: Always, unknownField: 1}]
BAD
expect_failure "a Deployment with a string replica count and an unknown field" validate manifests "$work/bad-k8s.yaml"
cat >"$work/bad-keda.json" <<'BAD'
[{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "bad"},
  "spec": {"scaleTargetRef": {"name": "bad"}, "minReplicaCount": "one",
           "triggers": [{"type": "nats-jetstream", "metadata": {"stream": "ORDER", "lagTreshold": "5"}}]}}]
BAD
expect_failure "a ScaledObject with a string minReplicaCount and a misspelt trigger parameter" keda "$work/bad-keda.json"
printf 'FROM debian:12\nRUN cd /tmp && ls\n' >"$work/Dockerfile.bad"
expect_failure "a Dockerfile that uses cd in RUN" "$TOOLS/venv/bin/hadolint" "$work/Dockerfile.bad"
# shellcheck disable=SC2016 # the ${{ }} is the workflow's, not the shell's
printf 'on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n' >"$work/bad-workflow.yml"
expect_failure "a workflow reading an unknown context property" "$TOOLS/venv/bin/actionlint" "$work/bad-workflow.yml"
say "self-tests: each validator rejects its known-bad input"

# --- the Secrets secrets.sh makes, from a stand-in auth directory ----------------
auth=$work/auth
mkdir -p "$auth"
for id in product user payment notification order gateway operator; do
  printf -- '-----BEGIN NATS USER JWT-----\nplaceholder-%s\n------END NATS USER JWT------\n' "$id" >"$auth/$id.creds"
done
echo placeholder >"$auth/user-data.key"
echo placeholder >"$auth/order-data.key"
sys=A$(printf 'S%.0s' {1..55}) app=A$(printf 'P%.0s' {1..55})
printf 'operator: placeholder\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: placeholder\n  %s: placeholder\n}\n' \
  "$sys" "$app" "$sys" >"$auth/auth.conf"
deploy/scripts/secrets.sh "$auth" >"$work/secrets.yaml"
grep -q "account: $(printf %s "$app" | base64 -w0)" "$work/secrets.yaml" \
  || fail "secrets.sh did not put the application account's key into shop-keda-nats"
say "secrets.sh: $(grep -c '^kind: Secret' "$work/secrets.yaml") Secrets from a stand-in auth directory"

# --- every kustomization, rendered and validated --------------------------------
count=0
while IFS= read -r kfile; do
  dir=$(dirname "$kfile")
  out=$work/render-$count.yaml
  kubectl kustomize "$dir" >"$out" || fail "kubectl kustomize $dir"
  args=(manifests "$out" --keda-json "$work/keda-$count.json")
  # the overlay is what gets applied: its Secrets must all come from secrets.sh
  [[ $dir == deploy/k8s/overlays/* ]] && args+=(--secrets "$work/secrets.yaml")
  validate "${args[@]}" || fail "$dir: invalid objects (above)"
  keda "$work/keda-$count.json" || fail "$dir: invalid KEDA objects (above)"
  say "$dir: $(grep -c '^kind:' "$out") objects valid (Kubernetes 1.32 schemas, strict; KEDA models)"
  count=$((count + 1))
done < <(find deploy/k8s -name kustomization.yaml | sort)
((count >= 2)) || fail "found $count kustomizations under deploy/k8s, want base and overlays"

# --- NATS chart values, Dockerfile, workflows -------------------------------------
validate values deploy/nats/values.yaml || fail "deploy/nats/values.yaml (above)"
say "deploy/nats/values.yaml: the keys set are the chart's, with the values docs/deploy.md describes"
"$TOOLS/venv/bin/hadolint" deploy/Dockerfile || fail "hadolint deploy/Dockerfile"
say "deploy/Dockerfile: hadolint $("$TOOLS/venv/bin/hadolint" --version | grep -o '[0-9][0-9.]*' | head -1) clean"
shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
((${#workflows[@]})) || fail "no workflow under .github/workflows"
# actionlint runs shellcheck on every run: step when it is on PATH
PATH=$TOOLS/venv/bin:$PATH actionlint "${workflows[@]}" || fail "actionlint (above)"
"$TOOLS/venv/bin/shellcheck" scripts/check-deploy.sh deploy/scripts/secrets.sh || fail "shellcheck (above)"
say "scripts/check-deploy.sh, deploy/scripts/secrets.sh: shellcheck clean"
say "${workflows[*]}: actionlint (with shellcheck) $("$TOOLS/venv/bin/actionlint" --version | head -1 | grep -o '[0-9][0-9.]*' | head -1) clean"
say "all deploy checks passed"
