#!/usr/bin/env bash
# Rewrites the generated tables in docs/subjects.md (`shop manifest --markdown`)
# and docs/security.md (`shop auth permissions --markdown`) from the services'
# declarations. The test suite fails when they differ.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo build --quiet --locked -p shop-cli
rewrite() { # FILE MARKER TABLE
  python3 - "$1" "$2" "$3" <<'PY'
import sys
path, marker, table = sys.argv[1], sys.argv[2], sys.argv[3]
begin, end = f"<!-- {marker}: begin -->", f"<!-- {marker}: end -->"
text = open(path).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(head + begin + "\n" + table.strip() + "\n" + end + tail)
PY
  echo "$1: tables rewritten"
}
rewrite docs/subjects.md "shop manifest --markdown" "$(target/debug/shop manifest --markdown)"
rewrite docs/security.md "shop auth permissions --markdown" "$(target/debug/shop auth permissions --markdown)"
