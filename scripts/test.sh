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
# PostgreSQL cases (store conformance on PostgreSQL, the multi-node test)
# need CLICKWARD_TEST_PG and PostgreSQL's server binaries; .ci/run provides
# both. Use the local server when it answers and nothing was set.
if [ -z "${CLICKWARD_TEST_PG:-}" ] && command -v pg_isready >/dev/null 2>&1 \
  && pg_isready -q -h 127.0.0.1 -p 5432; then
  export CLICKWARD_TEST_PG="postgres://postgres@127.0.0.1:5432/test"
fi
if [ -z "${CLICKWARD_TEST_PG:-}" ]; then
  echo "!!! CLICKWARD_TEST_PG is not set: the PostgreSQL cases will SKIP (they run in CI) !!!" >&2
fi
if [ ! -x /usr/bin/chromedriver ]; then
  echo "!!! chromium-driver is not installed: the browser tests will SKIP (they run in CI) !!!" >&2
fi
# The webhook tests verify signatures with the Standard Webhooks reference
# library for Python, the mail tests receive through aiosmtpd (both PyPI).
if ! python3 -c "import standardwebhooks, aiosmtpd" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check standardwebhooks==1.0.1 aiosmtpd==1.4.6 >/dev/null 2>&1 \
    || echo "!!! could not install Python's standardwebhooks and aiosmtpd: the webhook and mail tests will SKIP (they run in CI) !!!" >&2
fi
# The API contract test runs schemathesis (PyPI) against a live server; the
# AWS deploy test lints the SAM template with cfn-lint (PyPI); the Lambda
# runtime test uses Cargo Lambda's emulator (PyPI's cargo-lambda).
if ! command -v st >/dev/null 2>&1 || ! command -v cfn-lint >/dev/null 2>&1 \
  || ! command -v cargo-lambda >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check schemathesis==4.32.5 cfn-lint==1.51.0 cargo-lambda==1.9.2 >/dev/null 2>&1 \
    || echo "!!! could not install schemathesis, cfn-lint and cargo-lambda: the OpenAPI contract, AWS template and Lambda runtime tests will SKIP (they run in CI) !!!" >&2
fi
if ! command -v nats-server >/dev/null 2>&1; then
  echo "!!! nats-server is not installed: the stream test will SKIP (it runs in CI) !!!" >&2
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
# Tests that cannot run here (no chromedriver, no PostgreSQL) name
# themselves in this file; the closing line counts them as skipped.
export CLICKWARD_SKIP_LOG=$(mktemp)
trap 'rm -f "$log" "$CLICKWARD_SKIP_LOG"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# cargo ends with the doc-test group of the last crate ("0 passed" when it has
# none); close with the totals of every group instead.
bash scripts/summary.sh "$log" "$CLICKWARD_SKIP_LOG"
exit "$status"
