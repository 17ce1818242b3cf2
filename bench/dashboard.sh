#!/usr/bin/env bash
# Dashboard and portal page times (issue 6) on the 10-million-click database
# of bench/reports.sh (generated here if missing): each page fetched RUNS
# times over HTTP with a signed-in session (curl time_total; the server on the
# same 2 cores), median and max. Target: every page under 100 ms.
#
#   bash bench/dashboard.sh            # CLICKS=10000000 RUNS=9
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLICKS=${CLICKS:-10000000}
RUNS=${RUNS:-9}
OUT=$ROOT/bench/out
DATA=$OUT/reports-data
PORT=18186
mkdir -p "$OUT"
cargo build --release -q -p clickward
BIN=$ROOT/target/release/clickward
SHARED=${CLICKWARD_SHARED:-$ROOT/../shared}

if [ ! -f "$DATA/clickward.db" ] || [ "${REGEN:-0}" = 1 ]; then
  rm -rf "$DATA"
  "$BIN" --data-dir "$DATA" gen --clicks "$CLICKS" --days 90 --links 200 --affiliates 40 \
    --visitors 2000000 --user-agents "$SHARED/data/user-agents/top-desktop.json"
  "$BIN" --data-dir "$DATA" rollup
fi
"$BIN" --data-dir "$DATA" rollup >/dev/null
echo "bench-dashboard-password" | "$BIN" --data-dir "$DATA" user add bench-admin --admin >/dev/null
echo "bench-portal-password" | "$BIN" --data-dir "$DATA" user add bench-aff --affiliate gen-a7 >/dev/null

RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --listen 127.0.0.1:$PORT > "$OUT/dashboard-serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do curl -s -o /dev/null http://127.0.0.1:$PORT/healthz && break; sleep 0.05; done

jar() { # user password -> cookie jar file
  local f="$OUT/cookies-$1.txt"
  curl -s -o /dev/null -c "$f" -d "username=$1&password=$2" http://127.0.0.1:$PORT/login
  echo "$f"
}
ADMIN=$(jar bench-admin bench-dashboard-password)
AFF=$(jar bench-aff bench-portal-password)

today=$(date -u +%Y-%m-%d)
d() { date -u -d "$today - $1 days" +%Y-%m-%d; }
declare -a NAMES=(
  "overview, last 7 days, UTC (default)"
  "overview, 30 days, Asia/Tokyo"
  "overview, 90 days, UTC"
  "live (latest 50 clicks)"
  "links (200)"
  "link page, 30 days"
  "affiliate page, 30 days"
  "program page, 30 days (postback URLs)"
  "conversions (latest 200)"
  "payouts"
  "settings"
  "portal (affiliate), last 7 days"
  "portal (affiliate), 90 days, Asia/Tokyo"
)
declare -a PATHS=(
  "/dashboard"
  "/dashboard?from=$(d 30)&to=$today&tz=Asia/Tokyo"
  "/dashboard?from=$(d 90)&to=$today&tz=UTC"
  "/dashboard/live"
  "/dashboard/links"
  "/dashboard/links/gen-l7?from=$(d 30)&to=$today"
  "/dashboard/affiliates/gen-a7?from=$(d 30)&to=$today"
  "/dashboard/programs/gen?from=$(d 30)&to=$today"
  "/dashboard/conversions"
  "/dashboard/payouts"
  "/dashboard/settings"
  "/portal"
  "/portal?from=$(d 90)&to=$today&tz=Asia/Tokyo"
)
size=$(du -sh "$DATA" | cut -f1)
echo
echo "$CLICKS clicks over 90 days, 200 links, 40 affiliates; database $size; $RUNS runs each, over HTTP (curl time_total)"
echo
echo "| page | median ms | max ms | status |"
echo "|---|---:|---:|---:|"
for i in "${!PATHS[@]}"; do
  cookies=$ADMIN
  case "${PATHS[$i]}" in /portal*) cookies=$AFF ;; esac
  times=()
  code=0
  for _ in $(seq 1 "$RUNS"); do
    r=$(curl -s -o "$OUT/page.html" -b "$cookies" -w '%{time_total} %{http_code}' "http://127.0.0.1:$PORT${PATHS[$i]}")
    times+=("${r% *}")
    code=${r#* }
  done
  python3 - "${NAMES[$i]}" "$code" "${times[@]}" <<'PY'
import statistics, sys
name, code, ts = sys.argv[1], sys.argv[2], [float(t) * 1000 for t in sys.argv[3:]]
print(f"| {name} | {statistics.median(ts):.1f} | {max(ts):.1f} | {code} |")
PY
done
