#!/usr/bin/env bash
# Rewrites the generated tables in docs/subjects.md from the services'
# declarations (`shop manifest --markdown`). The test suite fails when they differ.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo build --quiet --locked -p shop-cli
tables=$(target/debug/shop manifest --markdown)
python3 - "$tables" <<'PY'
import sys
begin, end = "<!-- shop manifest --markdown: begin -->", "<!-- shop manifest --markdown: end -->"
path = "docs/subjects.md"
text = open(path).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(head + begin + "\n" + sys.argv[1].strip() + "\n" + end + tail)
PY
echo "docs/subjects.md: tables rewritten"
