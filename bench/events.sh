#!/usr/bin/env bash
# Events-out benchmark: redirects with webhooks, a postback and the NATS
# stream on vs all off (same run, alternated), webhook deliveries/s to a
# local nginx, conversion -> webhook latency, NATS clicks published/s.
# Prints a Markdown table (see bench/events.py).
#
#   bash bench/events.sh    # PAIRS=3 DURATION=8s EVENTS=5000 LATENCY_SAMPLES=200 CLICKS=200000 [CLICKWARD_BIN=path]
#
# Needs wrk, nginx and nats-server (installed with apt if missing) and
# Python's standardwebhooks (pip).
set -euo pipefail
cd "$(dirname "$0")/.."
need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx || ! need nats-server; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light nats-server >/dev/null
fi
python3 -c "import standardwebhooks" 2>/dev/null || python3 -m pip install --quiet standardwebhooks==1.0.1
[ -n "${CLICKWARD_BIN:-}" ] || cargo build --release -q -p clickward --bin clickward
exec python3 bench/events.py
