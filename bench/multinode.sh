#!/usr/bin/env bash
# Multi-node benchmark (issue 5), on a private PostgreSQL cluster this script
# starts with initdb on its own port (the machine's shared server is never
# stopped). Prints a Markdown table:
#   1. shipping throughput: PostgreSQL is stopped while wrk drives one node
#      (clicks pile up in its spool), then started; clicks shipped per second
#      from the spool until it is empty;
#   2. one node vs two nodes behind nginx (round robin), same wrk command,
#      median of RUNS runs, sync durability, seed catalogue;
#   3. report latencies on PostgreSQL over N_CLICKS generated clicks (the
#      reports of bench/reports.sh), median of 9 over HTTP.
#
#   bash bench/multinode.sh     # RUNS=3 DURATION=10s CONNECTIONS=32 N_CLICKS=1000000
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${CLICKWARD_SHARED:-$ROOT/../shared}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
N_CLICKS=${N_CLICKS:-1000000}
OUT=$ROOT/bench/out/multinode
rm -rf "$OUT"; mkdir -p "$OUT"
need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
cargo build --release -q -p clickward
BIN=$ROOT/target/release/clickward
python3 bench/make_mix.py "$SHARED" "$OUT/mix.lua" >&2
WRK=(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$OUT/mix.lua")

# Private cluster, owned by postgres when run as root (initdb refuses root).
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PGDATA=$OUT/pg
mkdir -p "$PGDATA"; chmod 755 "$OUT"
AS=()
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGDATA"; AS=(runuser -u postgres --); fi
"${AS[@]}" "$PGBIN/initdb" -A trust -U postgres --no-sync -D "$PGDATA" >/dev/null
pg() { "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA" -w "$@" >/dev/null; }
pg -o "-p $PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=200" start
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; pg -m immediate stop 2>/dev/null || true; }
trap cleanup EXIT
export CLICKWARD_DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres"

wait_http() { for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
start_node() { # NAME PORT
  mkdir -p "$OUT/$1"
  [ -f "$OUT/a/secrets/cookie.key" ] && mkdir -p "$OUT/$1/secrets" && cp "$OUT/a/secrets/cookie.key" "$OUT/$1/secrets/" 2>/dev/null || true
  "$BIN" --data-dir "$OUT/$1" serve --listen "127.0.0.1:$2" --catalog examples/links.toml > "$OUT/$1.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$2/healthz"
}
spool() { curl -fs "http://127.0.0.1:$1/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("spool_clicks", -1))'; }
drain() { for _ in $(seq 1 6000); do [ "$(spool "$1")" = 0 ] && return 0; sleep 0.05; done; echo "spool did not drain" >&2; exit 1; }

start_node a 18181
start_node b 18182

# 1. Shipping throughput.
pg -m fast stop
wrk -t1 -c"$CONNECTIONS" -d10s -s "$OUT/mix.lua" http://127.0.0.1:18181 > "$OUT/fill.txt" 2>&1
SPOOLED=$(spool 18181)
T0=$(date +%s.%N)
pg -o "-p $PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=200" start
drain 18181
T1=$(date +%s.%N)
SHIP=$(python3 -c "print(f'{$SPOOLED / ($T1 - $T0):.0f}')")
SHIP_S=$(python3 -c "print(f'{$T1 - $T0:.2f}')")

# 2. One node vs two behind nginx.
cat > "$OUT/nginx.conf" <<NGX
worker_processes 1;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream one { server 127.0.0.1:18181; keepalive 64; }
  upstream two { server 127.0.0.1:18181; server 127.0.0.1:18182; keepalive 64; }
  server { listen 127.0.0.1:18190; location / { proxy_pass http://one; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:18191; location / { proxy_pass http://two; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGX
nginx -c "$OUT/nginx.conf"
PIDS+=($(cat "$OUT/nginx.pid"))
run() { # NAME URL
  for _ in $(seq 1 "$RUNS"); do
    "${WRK[@]}" "$2" > "$OUT/$1.last" 2>&1
    python3 - "$OUT/$1.last" >> "$OUT/$1.runs" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
ms = lambda v, u: float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
print(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)),
      ms(*re.search(r"50%\s+([\d.]+)(us|ms|s)", t).groups()),
      ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)", t).groups()))
PY
  done
}
run one http://127.0.0.1:18190
run two http://127.0.0.1:18191
drain 18181; drain 18182

# 3. Reports on PostgreSQL.
T0=$(date +%s.%N)
"$BIN" --data-dir "$OUT/a" gen --clicks "$N_CLICKS" --days 90 --links 200 --affiliates 40 \
  --visitors 2000000 --user-agents "$SHARED/data/user-agents/top-desktop.json" > "$OUT/gen.txt" 2>&1
GEN_S=$(python3 -c "print(round($(date +%s.%N) - $T0, 1))")
KEY=$("$BIN" --data-dir "$OUT/a" key create --scope read 2>/dev/null | head -1)
d() { date -u -d "-$1 days" +%F; }
report() { # NAME QUERY
  for _ in $(seq 1 9); do
    curl -s -o /dev/null -w '%{time_total}\n' -H "authorization: Bearer $KEY" "http://127.0.0.1:18181/api/v1/reports?$2"
  done | sort -n | sed -n 5p | awk -v n="$1" '{printf "| %s | %.1f ms |\n", n, $1 * 1000}' >> "$OUT/reports.md"
}
report "30 days by day, one link" "from=$(d 30)&to=$(d 1)&group_by=day&link=gen-l7"
report "90 days by day × src" "from=$(d 90)&to=$(d 1)&group_by=day,src"
report "7 days country × device, Asia/Kolkata" "from=$(d 7)&to=$(d 1)&tz=Asia/Kolkata&group_by=country,device"
report "90 days by program" "from=$(d 90)&to=$(d 1)&group_by=program"
report "90 days by day × affiliate, Asia/Tokyo" "from=$(d 90)&to=$(d 1)&tz=Asia/Tokyo&group_by=day,affiliate"

med() { sort -n -k"$2" "$1" | awk -v k="$2" '{a[NR]=$k} END {print a[int((NR+1)/2)]}'; }
R1=$(med "$OUT/one.runs" 1); R2=$(med "$OUT/two.runs" 1)
echo
echo "Shipping: $SPOOLED clicks spooled during a 10 s outage shipped in ${SHIP_S} s = **$SHIP clicks/s**"
echo
echo "| setup (behind nginx, sync, wrk -c$CONNECTIONS, median of $RUNS) | req/s | p50 ms | p99 ms |"
echo "|---|---:|---:|---:|"
echo "| one node | $R1 | $(med "$OUT/one.runs" 2) | $(med "$OUT/one.runs" 3) |"
echo "| two nodes | $R2 | $(med "$OUT/two.runs" 2) | $(med "$OUT/two.runs" 3) |"
python3 -c "print(f'| ratio two / one | {$R2 / $R1:.2f}× | | |')"
echo
echo "Reports on PostgreSQL ($N_CLICKS generated clicks over 90 days, generated in $GEN_S s; over HTTP, median of 9):"
echo
echo "| report | latency |"
echo "|---|---:|"
cat "$OUT/reports.md"
