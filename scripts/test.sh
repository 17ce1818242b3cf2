#!/usr/bin/env bash
# Runs every test of the workspace. On a fresh machine this is all the set-up
# there is: the Rust toolchain builds everything (SQLite is compiled in), and
# the tests read ../shared/data (user-agent corpora, GeoIP test databases).
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d ../shared/data/user-agents ] && [ -z "${CLICKWARD_SHARED_DATA:-}" ]; then
  echo "error: ../shared/data not found beside the repository (or set CLICKWARD_SHARED_DATA)" >&2
  exit 1
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
