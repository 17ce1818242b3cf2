#!/usr/bin/env bash
# Redirect benchmark: clickward (seed catalogue, full classification) against
# nginx `return 302` with a buffered access log, driven by the same wrk
# command in the same run. Prints a Markdown table of medians of RUNS runs,
# the ratio to nginx, server CPU per request, and checks that every request
# answered with a redirect has its row. A bare axum 302 (the same HTTP stack
# with no work, crates/server/examples/bare_redirect.rs) runs in the same
# loop: the ceiling of the stack.
#
#   bash bench/run.sh            # RUNS=3 DURATION=10s CONNECTIONS=32 [CLICKWARD_BIN=path]
#
# Needs wrk and nginx (installed here with apt if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${CLICKWARD_SHARED:-$ROOT/../shared}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
OUT=$ROOT/bench/out
mkdir -p "$OUT"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi

# CLICKWARD_BIN measures another build (e.g. the binary of an earlier commit,
# for a before/after in the same session) against the same references.
cargo build --release -q -p clickward --bin clickward --example bare_redirect
BIN=${CLICKWARD_BIN:-$ROOT/target/release/clickward}
BARE=$ROOT/target/release/examples/bare_redirect
python3 bench/make_mix.py "$SHARED" "$OUT/mix.lua" >&2
python3 bench/make_mix.py "$SHARED" "$OUT/mix-xff.lua" --xff >&2

WRK=(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$OUT/mix.lua")
WRK_XFF=(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$OUT/mix-xff.lua")

# The fraud pair (issue 15): the same server behind a trusted proxy with
# GeoIP and the network files, with no rules (net-1t) and with every click
# rule on (rules-1t: velocity, hosting, anonymous, countries, referrers,
# paid search, an exclusion entry), limits set so that evaluation runs on
# every human click. Requests carry X-Forwarded-For from the test files'
# networks.
GEO=$SHARED/data/geoip
cat > "$OUT/net.toml" <<TOML
trusted_proxies = ["127.0.0.1"]
geoip = ["$GEO/GeoIP2-City-Test.mmdb"]
network = ["$GEO/GeoLite2-ASN-Test.mmdb", "$GEO/GeoIP2-Anonymous-IP-Test.mmdb"]
TOML
{ cat examples/links.toml; cat <<'TOML'

[[rules]]
id = "visitor-flood"
check = "visitor_velocity"
action = "reject"
limit = 1000
window = "60s"

[[rules]]
id = "link-flood"
check = "link_velocity"
action = "flag"
limit = 1000000
window = "60s"

[[rules]]
id = "dc"
check = "hosting"
action = "reject"

[[rules]]
id = "vpn"
check = "anonymous"
action = "reject"

[[rules]]
id = "geo"
check = "countries"
action = "reject"
block = ["KP", "CN"]

[[rules]]
id = "spam"
check = "referrers"
action = "flag"
block = ["spam.example"]

[[rules]]
id = "ppc"
check = "paid_search"
action = "reject"
TOML
} > "$OUT/rules.toml"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# one_run NAME URL PID -> appends "rps p50_ms p99_ms requests cpu_us_per_req non3xx" to $OUT/NAME.runs
one_run() {
  local name=$1 url=$2 pid=$3
  local before after
  before=$(cpu_ticks "$pid")
  "${WRK[@]}" "$url" > "$OUT/$name.last" 2>&1
  after=$(cpu_ticks "$pid")
  python3 - "$OUT/$name.last" "$before" "$after" "$CLK_TCK" >> "$OUT/$name.runs" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
before, after, tck = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", text)
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
reqs = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errs = re.search(r"Socket errors: (.*)", text)
cpu_us = (after - before) / tck * 1e6 / max(reqs, 1)
print(f"{rps:.0f} {ms(*p50.groups()):.3f} {ms(*p99.groups()):.3f} {reqs} {cpu_us:.2f} {int(bad.group(1)) if bad else 0} {'errors' if errs else 'ok'}")
PY
}

wait_http() {
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "server at $1 did not come up" >&2
  return 1
}

# ---- nginx reference ---------------------------------------------------------
NGX=$OUT/nginx
rm -rf "$NGX" && mkdir -p "$NGX/logs"
cat > "$NGX/nginx.conf" <<NGINX
worker_processes 1;
error_log $NGX/logs/error.log;
pid $NGX/nginx.pid;
events { worker_connections 1024; }
http {
  access_log $NGX/logs/access.log combined buffer=64k flush=1s;
  server {
    listen 127.0.0.1:18182 reuseport;
    location / {
      add_header Cache-Control no-store always;
      return 302 https://merchant.example/landing;
    }
  }
}
NGINX

start_clickward() {
  local name=$1 durability=$2 threads=$3 kind=${4:-plain}
  local data=$OUT/$name-data
  local extra=() catalog=examples/links.toml
  rm -rf "$data"
  case $kind in
    net) extra=(--config "$OUT/net.toml") ;;
    rules)
      extra=(--config "$OUT/net.toml"); catalog=$OUT/rules.toml
      "$BIN" --data-dir "$data" exclude add --ip 203.0.113.7 --label office > /dev/null ;;
  esac
  TOKIO_WORKER_THREADS=$threads RUST_LOG=warn "$BIN" "${extra[@]}" --data-dir "$data" serve \
    --listen 127.0.0.1:18181 --catalog "$catalog" --durability "$durability" \
    > "$OUT/$name.log" 2>&1 &
  CW_PID=$!
}

stop_clickward() {
  kill -TERM "$1"
  # SIGTERM drains the queue; wait for the process to be gone.
  while kill -0 "$1" 2>/dev/null; do sleep 0.05; done
}

rm -f "$OUT"/*.runs "$OUT/rollup.runs"
CONFIGS=("sync-1t sync 1" "sync-2t sync 2" "buffered-1t buffered 1")
# A build from before the fraud rules (CLICKWARD_BIN=…) runs without the pair.
if "$BIN" exclude --help > /dev/null 2>&1; then
  CONFIGS+=("net-1t sync 1 net" "rules-1t sync 1 rules")
fi
for run in $(seq 1 "$RUNS"); do
  nginx -c "$NGX/nginx.conf" -p "$NGX" -g 'daemon on;'
  wait_http http://127.0.0.1:18182/r/x
  NPID=$(pgrep -f "nginx: worker process" | head -1)
  one_run nginx "http://127.0.0.1:18182" "$NPID"
  nginx -c "$NGX/nginx.conf" -p "$NGX" -s stop
  sleep 0.5
  # The HTTP stack alone (axum/hyper/tokio, one worker, a fixed 302): the
  # ceiling for anything built on it.
  TOKIO_WORKER_THREADS=1 "$BARE" 127.0.0.1:18183 > "$OUT/bare.log" 2>&1 &
  BPID=$!
  wait_http http://127.0.0.1:18183/r/x
  one_run bare "http://127.0.0.1:18183" "$BPID"
  kill "$BPID"; wait "$BPID" 2>/dev/null || true
  for cfg in "${CONFIGS[@]}"; do
    set -- $cfg
    start_clickward "$1" "$2" "$3" "${4:-plain}"
    pid=$CW_PID
    wait_http http://127.0.0.1:18181/healthz
    if [ "${4:-plain}" = plain ]; then
      one_run "$1" "http://127.0.0.1:18181" "$pid"
    else
      WRK_SAVED=("${WRK[@]}"); WRK=("${WRK_XFF[@]}")
      one_run "$1" "http://127.0.0.1:18181" "$pid"
      WRK=("${WRK_SAVED[@]}")
    fi
    stop_clickward "$pid"
    # Every request wrk saw answered must have its row (kill -TERM drains).
    rows=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from clicks').fetchone()[0])" "$OUT/$1-data/clickward.db")
    answered=$(tail -1 "$OUT/$1.runs" | awk '{print $4 - $6}')
    echo "$rows" >> "$OUT/$1.rows"
    if [ "$rows" -lt "$answered" ]; then
      echo "LOST CLICKS: $1 run $run answered $answered, stored $rows" >&2
      exit 1
    fi
    if [ "$1" = sync-1t ]; then
      # Rollup maintenance (issue 4): aggregate this run's clicks once, as
      # the background task does for every settled bucket, and charge its
      # CPU to each click.
      /usr/bin/time -f "%U %S" -o "$OUT/rollup.time" "$BIN" --data-dir "$OUT/$1-data" rollup \
        --from "$(date -u -d yesterday +%F)" --to "$(date -u +%F)" >/dev/null
      awk -v rows="$rows" '{printf "%.3f\n", ($1 + $2) * 1e6 / rows}' "$OUT/rollup.time" >> "$OUT/rollup.runs"
    fi
  done
done

python3 - "$OUT" "$RUNS" "$DURATION" "$CONNECTIONS" <<'PY'
import statistics, sys
out, runs, dur, conns = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
def load(name):
    rows = [l.split() for l in open(f"{out}/{name}.runs")]
    med = lambda i: statistics.median(float(r[i]) for r in rows)
    return dict(rps=med(0), p50=med(1), p99=med(2), reqs=sum(int(r[3]) for r in rows), cpu=med(4), bad=sum(int(r[5]) for r in rows))
import os
ng = load("nginx")
fraud_pair = os.path.exists(f"{out}/rules-1t.runs")
names = [("nginx", "nginx 1.22 `return 302`, buffered access log, 1 worker"),
         ("bare", "bare axum 302 (clickward's HTTP stack, no work), 1 tokio worker"),
         ("sync-1t", "clickward, durability=sync, 1 tokio worker"),
         ("sync-2t", "clickward, durability=sync, 2 tokio workers"),
         ("buffered-1t", "clickward, durability=buffered, 1 tokio worker"),
         ("net-1t", "clickward, sync, 1 worker, behind a proxy, GeoIP + network files, no fraud rules"),
         ("rules-1t", "the same with every click rule on (velocity, hosting, anonymous, countries, referrers, PPC, exclusions)")]
print(f"wrk -t1 -c{conns} -d{dur} --latency, realistic UA/src mix; median of {runs} runs\n")
print("| server | req/s | ratio to nginx | p50 ms | p99 ms | CPU µs/req | non-3xx |")
print("|---|---:|---:|---:|---:|---:|---:|")
for key, label in names:
    if key in ("net-1t", "rules-1t") and not fraud_pair:
        continue
    r = load(key)
    print(f"| {label} | {r['rps']:.0f} | {r['rps']/ng['rps']:.2f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['cpu']:.1f} | {r['bad']} |")
if fraud_pair:
    net, rules = load("net-1t"), load("rules-1t")
    print(f"\nfraud rules on / off: {rules['rps'] / net['rps']:.3f}× req/s, "
          f"{rules['cpu'] - net['cpu']:+.2f} µs CPU per request (target: at most 3% fewer req/s)")
roll = statistics.median(float(l) for l in open(f"{out}/rollup.runs"))
redirect = load("sync-1t")["cpu"]
print(f"\nrollup maintenance: {roll:.2f} µs CPU per click (median of {runs}), "
      f"{roll / redirect * 100:.1f}% of a sync redirect's {redirect:.1f} µs; "
      f"on a CPU-bound node it costs {roll / (redirect + roll) * 100:.1f}% of redirect throughput")
PY
rm -f "$OUT/rollup.runs"
for cfg in "${CONFIGS[@]}"; do
  set -- $cfg
  echo "rows stored after each $1 run (all >= answered redirects): $(tr '\n' ' ' < "$OUT/$1.rows")"
  rm -f "$OUT/$1.rows"
done
