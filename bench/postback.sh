#!/usr/bin/env bash
# Postback throughput: wrk sends S2S postbacks (90% new orders, 10% exact
# replays of an earlier order) to clickward with the SQLite store, and checks
# that the database holds one conversion per 201 answered (plus at most one
# per connection still in flight when wrk stopped) and that no other answer
# than 201/200 was given.
#
#   bash bench/postback.sh        # DURATION=10s CONNECTIONS=32 CLICKS=500
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
CLICKS=${CLICKS:-500}
OUT=$ROOT/bench/out
mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p clickward
BIN=$ROOT/target/release/clickward
DATA=$OUT/postback-data
rm -rf "$DATA"
cat > "$OUT/postback-catalog.toml" <<'TOML'
[[programs]]
slug = "bench"
currency = "USD"
commission = { default = { type = "share", bps = 1000 } }
postback_token = "bench-token"

[[affiliates]]
slug = "pub"

[[links]]
code = "b"
program = "bench"
affiliate = "pub"
destination = "https://shop.example/?cid={click_id}"
TOML
RUST_LOG=warn "$BIN" --data-dir "$DATA" serve --listen 127.0.0.1:18184 --catalog "$OUT/postback-catalog.toml" > "$OUT/postback.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do curl -s -o /dev/null http://127.0.0.1:18184/healthz && break; sleep 0.05; done

# Clicks to convert (browser user agent, so they are human clicks).
UA='Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.6.1 Mobile/15E148 Safari/604.1'
{
  echo "local clicks = {"
  for i in $(seq 1 "$CLICKS"); do
    loc=$(curl -s -o /dev/null -w '%{redirect_url}' -A "$UA" "http://127.0.0.1:18184/r/b?src=s$i")
    echo "\"${loc##*cid=}\","
  done
  echo "}"
  cat <<'LUA'
local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  n = 0
  created, replayed, other = 0, 0, 0
end
request = function()
  n = n + 1
  local order = n
  -- Every tenth request replays an earlier order exactly.
  if n % 10 == 0 and n > 10 then order = n - 5 end
  local click = clicks[(order % #clicks) + 1]
  local path = string.format("/postback?click_id=%s&order_id=t%d-%d&amount=%d.%02d&token=bench-token",
    click, id, order, 10 + order % 90, order % 100)
  return wrk.format("GET", path)
end
response = function(status)
  if status == 201 then created = created + 1
  elseif status == 200 then replayed = replayed + 1
  else other = other + 1 end
end
done = function(summary, latency, requests)
  local c, r, o = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created"); r = r + t:get("replayed"); o = o + t:get("other")
  end
  io.write(string.format("ANSWERS %d %d %d\n", c, r, o))
end
LUA
} > "$OUT/postback.lua"
# `id` per thread for order ids
sed -i 's/^function init(args)/function init(args)\n  id = wrk.thread:get("id")/' "$OUT/postback.lua"

wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$OUT/postback.lua" http://127.0.0.1:18184 > "$OUT/postback.wrk" 2>&1
kill -TERM $PID; while kill -0 $PID 2>/dev/null; do sleep 0.05; done
trap - EXIT
rows=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from conversions').fetchone()[0])" "$DATA/clickward.db")
python3 - "$OUT/postback.wrk" "$rows" "$DURATION" "$CONNECTIONS" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rows, dur, conns = int(sys.argv[2]), sys.argv[3], sys.argv[4]
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(*re.search(r"50%\s+([\d.]+)(us|ms|s)", text).groups())
p99 = ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)", text).groups())
c, r, o = map(int, re.search(r"ANSWERS (\d+) (\d+) (\d+)", text).groups())
print(f"wrk -t1 -c{conns} -d{dur}: S2S postbacks, 90% new orders, 10% exact replays\n")
print("| postbacks/s | p50 ms | p99 ms | 201 created | 200 replays | other | conversions in DB |")
print("|---:|---:|---:|---:|---:|---:|---:|")
print(f"| {rps:.0f} | {p50:.3f} | {p99:.3f} | {c} | {r} | {o} | {rows} |")
# wrk stops counting at the deadline with up to one request per connection
# in flight; those were still answered and stored.
if not (c <= rows <= c + int(conns)) or o != 0:
    print(f"MISMATCH: {c} created answers, {rows} conversions stored, {o} other answers", file=sys.stderr)
    sys.exit(1)
print(f"\n{rows - c} conversions were committed for requests still in flight when wrk stopped (≤ {conns}).")
PY
