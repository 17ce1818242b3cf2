#!/usr/bin/env bash
# The closing line of scripts/test.sh: totals of every `test result:` line
# of a cargo test log, with the tests that skipped themselves (they name
# themselves, one per line, in the skip log; see CLICKWARD_SKIP_LOG) moved
# from "passed" to "skipped", so a skip never reads as a pass.
#
#   bash scripts/summary.sh CARGO_TEST_LOG SKIP_LOG
set -euo pipefail
log=$1
skips=${2:-/dev/null}
skipped=0
if [ -s "$skips" ]; then
  skipped=$(sort -u "$skips" | grep -c . || true)
  echo "skipped (each said why above):" >&2
  sort -u "$skips" | sed 's/^/  /' >&2
fi
awk -v s="$skipped" '/^test result:/ { p += $4; f += $6; i += $8 }
  END { printf "%d passed, %d failed, %d skipped\n", p - s, f, i + s }' "$log"
