#!/usr/bin/env bash
# Before/after on the redirect path: two clickward binaries, alternated in
# one loop (old-new, then new-old, so neither always runs after the other's
# disk writes) so the host's drift hits both alike, each answering the wrk
# command of bench/run.sh. Dirty pages are flushed (`sync`) before each run.
# Prints medians and the ratio new/old.
#
#   bash bench/ab.sh OLD_BIN NEW_BIN   # PAIRS=5 DURATION=8s CONNECTIONS=32 WORKERS=1 DURABILITY=sync
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OLD=$1 NEW=$2
SHARED=${CLICKWARD_SHARED:-$ROOT/../shared}
PAIRS=${PAIRS:-5} DURATION=${DURATION:-8s} CONNECTIONS=${CONNECTIONS:-32}
WORKERS=${WORKERS:-1} DURABILITY=${DURABILITY:-sync}
OUT=$ROOT/bench/out/ab
mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
python3 bench/make_mix.py "$SHARED" "$OUT/mix.lua" >&2
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
one() {
  local bin=$1 name=$2 data=$OUT/$2-data
  rm -rf "$data"
  sync
  TOKIO_WORKER_THREADS=$WORKERS RUST_LOG=warn "$bin" --data-dir "$data" serve --listen 127.0.0.1:18191 \
    --catalog examples/links.toml --durability "$DURABILITY" > "$OUT/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 200); do curl -s -o /dev/null http://127.0.0.1:18191/healthz && break; sleep 0.05; done
  local before; before=$(cpu_ticks "$pid")
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$OUT/mix.lua" http://127.0.0.1:18191 > "$OUT/$name.last" 2>&1
  local after; after=$(cpu_ticks "$pid")
  kill -TERM "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  python3 - "$OUT/$name.last" "$before" "$after" "$(getconf CLK_TCK)" >> "$OUT/$name.runs" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
reqs = int(re.search(r"(\d+) requests in", t).group(1))
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4]) * 1e6 / max(reqs, 1)
print(f"{rps:.0f} {ms:.3f} {cpu:.2f}")
PY
}
rm -f "$OUT"/*.runs
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then one "$OLD" old; one "$NEW" new; else one "$NEW" new; one "$OLD" old; fi
done
python3 - "$OUT/old.runs" "$OUT/new.runs" <<'PY'
import statistics, sys
def load(p): return [list(map(float, l.split())) for l in open(p)]
o, n = load(sys.argv[1]), load(sys.argv[2])
med = lambda rows, i: statistics.median(r[i] for r in rows)
print("| binary | req/s (median) | p99 ms | CPU µs/req | runs (req/s) |")
print("|---|---:|---:|---:|---|")
for name, rows in (("old", o), ("new", n)):
    print(f"| {name} | {med(rows,0):.0f} | {med(rows,1):.2f} | {med(rows,2):.1f} | {' '.join(str(int(r[0])) for r in rows)} |")
print(f"\nnew/old req/s: {med(n,0)/med(o,0):.3f}; CPU per request new/old: {med(n,2)/med(o,2):.3f}")
PY
