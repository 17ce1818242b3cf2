#!/usr/bin/env bash
# Paging benchmark (issue 17): a client reads every click of the 10-million
# -click history of bench/reports.sh through GET /api/v1/clicks, page by
# page (order=oldest, limit=10000, following next_cursor), over one
# keep-alive connection. Prints clicks/s, pages, and the server's CPU per
# 1,000 clicks. The history is generated (as bench/reports.sh does) when
# missing, and copied, so it is left as it was.
#
#   bash bench/paging.sh        # LIMIT=10000 MAX_CLICKS=all
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LIMIT=${LIMIT:-10000}
OUT=$ROOT/bench/out
SRC=$OUT/reports-data
DATA=$OUT/paging-data
PORT=18187
mkdir -p "$OUT"
cargo build --release -q -p clickward
BIN=$ROOT/target/release/clickward
SHARED=${CLICKWARD_SHARED:-$ROOT/../shared}
if [ ! -f "$SRC/clickward.db" ]; then
  "$BIN" --data-dir "$SRC" gen --clicks 10000000 --days 90 --links 200 --affiliates 40 \
    --visitors 2000000 --user-agents "$SHARED/data/user-agents/top-desktop.json"
  "$BIN" --data-dir "$SRC" rollup
fi
rm -rf "$DATA"
cp -r "$SRC" "$DATA"
KEY=$("$BIN" --data-dir "$DATA" key create --scope read 2>&1 | grep -o 'cwk_[A-Za-z0-9_-]*' | head -1)
RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --listen 127.0.0.1:$PORT > "$OUT/paging-serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 400); do curl -s -o /dev/null http://127.0.0.1:$PORT/healthz && break; sleep 0.05; done
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
before=$(cpu)
python3 - "$PORT" "$KEY" "$LIMIT" "${MAX_CLICKS:-0}" "$(getconf CLK_TCK)" "$PID" "$before" <<'PY'
import http.client, sys, time
port, key, limit, most, tck, pid, before = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
conn = http.client.HTTPConnection("127.0.0.1", int(port))
headers = {"Authorization": f"Bearer {key}"}
cursor, clicks, pages, seen_last = "", 0, 0, None
start = time.monotonic()
while True:
    conn.request("GET", f"/api/v1/clicks?order=oldest&limit={limit}&cursor={cursor}", headers=headers)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body[:200])
    clicks += body.count(b'"click_id"')
    pages += 1
    # `next_cursor` is the last field of the page.
    tail = body[body.rfind(b'"next_cursor"'):]
    if tail.startswith(b'"next_cursor":null'):
        break
    cursor = tail.split(b'"')[3].decode()
    if most and clicks >= most:
        break
secs = time.monotonic() - start
with open(f"/proc/{pid}/stat") as f:
    parts = f.read().split()
cpu_s = (int(parts[13]) + int(parts[14]) - before) / tck
print(f"| clicks read | pages | seconds | clicks/s | server CPU ms per 1,000 clicks |")
print(f"|---:|---:|---:|---:|---:|")
print(f"| {clicks:,} | {pages:,} | {secs:.1f} | {clicks / secs:,.0f} | {cpu_s * 1e6 / max(clicks, 1):.1f} |")
PY
