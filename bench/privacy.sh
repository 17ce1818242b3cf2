#!/usr/bin/env bash
# Privacy benchmark (issue 16), on the 10-million-click history of
# bench/reports.sh (generated the same way when missing, then copied, so the
# reports database is left as it was):
#
# 1. erase one visitor over HTTP (`{"visitor_key": …}`), RUNS times, each a
#    different generated visitor: median and max ms, and the rows changed;
# 2. redirects/s with wrk on one link, alone, then in 10 s windows back to
#    back while a batch of BATCH erasures runs in the background (paced:
#    minutes), then alone again: the ratio of the mean window to the mean
#    of the two runs around them, and how long the batch took.
#
#   bash bench/privacy.sh        # CLICKS=10000000 RUNS=9 BATCH=10000 DURATION=10s
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLICKS=${CLICKS:-10000000}
RUNS=${RUNS:-9}
BATCH=${BATCH:-10000}
DURATION=${DURATION:-10s}
OUT=$ROOT/bench/out
SRC=$OUT/reports-data
DATA=$OUT/privacy-data
PORT=18186
mkdir -p "$OUT"
command -v wrk >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
cargo build --release -q -p clickward
BIN=$ROOT/target/release/clickward
SHARED=${CLICKWARD_SHARED:-$ROOT/../shared}

if [ ! -f "$SRC/clickward.db" ] || [ "${REGEN:-0}" = 1 ]; then
  rm -rf "$SRC"
  "$BIN" --data-dir "$SRC" gen --clicks "$CLICKS" --days 90 --links 200 --affiliates 40 \
    --visitors 2000000 --user-agents "$SHARED/data/user-agents/top-desktop.json"
  "$BIN" --data-dir "$SRC" rollup
fi
rm -rf "$DATA"
cp -r "$SRC" "$DATA"

# The first open of an older database builds the new indexes (once).
start=$(date +%s.%N)
"$BIN" --data-dir "$DATA" key create --scope admin > "$OUT/privacy-key.txt" 2>&1 \
  || { cat "$OUT/privacy-key.txt" >&2; exit 1; }
end=$(date +%s.%N)
KEY=$(grep -o 'cwk_[A-Za-z0-9_-]*' "$OUT/privacy-key.txt" | head -1)
migrate_s=$(python3 -c "print(round($end - $start, 1))")

RUST_LOG=${RUST_LOG:-warn} "$BIN" --data-dir "$DATA" serve --listen 127.0.0.1:$PORT > "$OUT/privacy-serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 400); do curl -s -o /dev/null http://127.0.0.1:$PORT/healthz && break; sleep 0.05; done

# `clickward gen` gives visitor n the key n (8 bytes, big-endian) ++ seed 1.
vkey() { printf '%016x%016x' "$1" 1; }

echo "$CLICKS generated clicks, $(du -sh "$DATA" | cut -f1) database; first open (new indexes) ${migrate_s} s"
echo
echo "| one visitor erased over HTTP | median ms | max ms | clicks changed (median) |"
echo "|---|---:|---:|---:|"
times=()
rows=()
for i in $(seq 1 "$RUNS"); do
  body=$(printf '{"visitor_key":"%s"}' "$(vkey $((i * 7919)))")
  read -r t n < <(curl -s -o "$OUT/privacy-erase.json" -w '%{time_total}\n' \
      -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
      -d "$body" http://127.0.0.1:$PORT/api/v1/privacy/erasures \
    | { read -r t; echo "$t $(python3 -c "import json;print(json.load(open('$OUT/privacy-erase.json'))['counts']['clicks'])")"; })
  times+=("$t")
  rows+=("$n")
done
python3 - "${#times[@]}" "${times[@]}" "${rows[@]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
ts = [float(t) * 1000 for t in sys.argv[2:2 + n]]
rows = [int(r) for r in sys.argv[2 + n:]]
print(f"| visitor_key (a scan of clicks: no visitor-key index) | {statistics.median(ts):.1f} | {max(ts):.1f} | {statistics.median(rows):.0f} |")
PY

UA='Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/153.0.0.0 Safari/537.36'
load() {
  wrk -t1 -c32 -d"$DURATION" -H "User-Agent: $UA" "http://127.0.0.1:$PORT/r/gen-l7" \
    | awk '/Requests\/sec/ {print $2}'
}
# Receipts still `received`, over every page of the list.
pending() {
  python3 - "$PORT" "$KEY" <<'PY'
import json, sys, urllib.request
port, key = sys.argv[1], sys.argv[2]
cursor, left = "", 0
while True:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/privacy/erasures?limit=1000&cursor={cursor}",
        headers={"Authorization": f"Bearer {key}"})
    page = json.load(urllib.request.urlopen(req))
    left += sum(1 for r in page["items"] if r["status"] == "received")
    cursor = page["next_cursor"]
    if not cursor:
        break
print(left)
PY
}
python3 - "$BATCH" > "$OUT/privacy-batch.json" <<'PY'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"batch": [{"visitor_key": "%016x%016x" % (100_000 + i * 13, 1)} for i in range(n)]}))
PY
before=$(load)
start=$(date +%s.%N)
curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
  --data-binary @"$OUT/privacy-batch.json" http://127.0.0.1:$PORT/api/v1/privacy/erasures > "$OUT/privacy-batch.code"
accepted=$(date +%s.%N)
# The load in windows back to back for as long as the batch runs (it is
# paced: minutes), then alone again.
rates=()
left=$BATCH
for _ in $(seq 1 120); do
  rates+=("$(load)")
  left=$(pending)
  [ "$left" = 0 ] && break
done
finished=$(date +%s.%N)
during=$(python3 -c "import statistics,sys; print(round(statistics.mean(float(x) for x in sys.argv[1:]), 2))" "${rates[@]}")
worst=$(python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "${rates[@]}")
after=$(load)
echo
echo "| redirects/s on one link (wrk -c32, $DURATION) | req/s |"
echo "|---|---:|"
echo "| alone, before | $before |"
echo "| while a batch of $BATCH erasures runs (answer $(cat "$OUT/privacy-batch.code"); mean of ${#rates[@]} windows, the worst $worst; $left still received at the end) | $during |"
echo "| alone, after | $after |"
python3 -c "print(f'\nratio during / mean(before, after): {$during / (($before + $after) / 2):.3f}')"
python3 -c "print(f'batch: accepted in {$accepted - $start:.1f} s, all {$BATCH} done {$finished - $start:.1f} s after it was sent')"
