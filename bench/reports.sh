#!/usr/bin/env bash
# Report latency on a large synthetic history (issue 4): generate CLICKS
# clicks over 90 days (200 links, 40 affiliates) with `clickward gen`, roll
# them up, then time each report over HTTP (RUNS runs each; median and max).
#
#   bash bench/reports.sh            # CLICKS=10000000 RUNS=9
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLICKS=${CLICKS:-10000000}
RUNS=${RUNS:-9}
OUT=$ROOT/bench/out
DATA=$OUT/reports-data
mkdir -p "$OUT"
cargo build --release -q -p clickward
BIN=$ROOT/target/release/clickward
SHARED=${CLICKWARD_SHARED:-$ROOT/../shared}

if [ ! -f "$DATA/clickward.db" ] || [ "${REGEN:-0}" = 1 ]; then
  rm -rf "$DATA"
  start=$(date +%s.%N)
  "$BIN" --data-dir "$DATA" gen --clicks "$CLICKS" --days 90 --links 200 --affiliates 40 \
    --visitors 2000000 --user-agents "$SHARED/data/user-agents/top-desktop.json"
  "$BIN" --data-dir "$DATA" rollup
  end=$(date +%s.%N)
  echo "generation + rollup: $(python3 -c "print(round($end - $start, 1))") s" > "$OUT/reports-gen.txt"
fi
cat "$OUT/reports-gen.txt"
"$BIN" --data-dir "$DATA" rollup >/dev/null
size=$(du -sh "$DATA" | cut -f1)

RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --listen 127.0.0.1:18185 > "$OUT/reports-serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do curl -s -o /dev/null http://127.0.0.1:18185/healthz && break; sleep 0.05; done
KEY=$("$BIN" --data-dir "$DATA" key create --scope read 2>/dev/null)

today=$(date -u +%Y-%m-%d)
d() { date -u -d "$today - $1 days" +%Y-%m-%d; }
declare -a NAMES=(
  "30 days by day, one link"
  "90 days by day x src, all links"
  "7 days by country x device, Asia/Kolkata"
  "90 days by program (no time dimension)"
  "90 days by day x affiliate, Asia/Tokyo"
)
declare -a QUERIES=(
  "from=$(d 30)&to=$(d 1)&group_by=day&link=gen-l7"
  "from=$(d 90)&to=$(d 1)&group_by=day,src"
  "from=$(d 7)&to=$(d 1)&tz=Asia/Kolkata&group_by=country,device"
  "from=$(d 90)&to=$(d 1)&group_by=program"
  "from=$(d 90)&to=$(d 1)&tz=Asia/Tokyo&group_by=day,affiliate"
)
echo
echo "$CLICKS clicks over 90 days, 200 links, 40 affiliates; database $size; $RUNS runs each, over HTTP (curl time_total)"
echo
echo "| report | median ms | max ms | rows |"
echo "|---|---:|---:|---:|"
for i in "${!QUERIES[@]}"; do
  url="http://127.0.0.1:18185/api/v1/reports?${QUERIES[$i]}&format=csv"
  times=()
  for _ in $(seq 1 "$RUNS"); do
    t=$(curl -s -o "$OUT/report.csv" -w '%{time_total}' -H "Authorization: Bearer $KEY" "$url")
    times+=("$t")
  done
  rows=$(($(wc -l < "$OUT/report.csv") - 1))
  python3 - "${NAMES[$i]}" "$rows" "${times[@]}" <<'PY'
import statistics, sys
name, rows, ts = sys.argv[1], sys.argv[2], [float(t) * 1000 for t in sys.argv[3:]]
print(f"| {name} | {statistics.median(ts):.1f} | {max(ts):.1f} | {rows} |")
PY
done
