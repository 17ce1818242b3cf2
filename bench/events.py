"""Events-out benchmark (run by bench/events.sh). Prints a Markdown table.

1. Redirects/s of the bench/run.sh wrk command with 3 webhook endpoints and
   an affiliate postback, then also the NATS stream, against all off,
   alternated in one loop (PAIRS rounds): medians, ratios, CPU per request
   (clickward's own; nats-server runs on the same two cores).
2. Webhook throughput: N events in the outbox, then one endpoint (nginx
   answering 204) and a replay of all of them: deliveries/s until the last
   is delivered.
3. Conversion -> webhook latency: conversions posted one at a time, each
   timed from the postback's answer to the receiver's arrival (the Python
   receiver of the tests, which also verifies the signature).
4. NATS: a database of CLICKS generated clicks, the stream cursor at 0,
   clicks published and acknowledged per second.
"""

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out", "events")
BIN = os.environ.get("CLICKWARD_BIN", os.path.join(ROOT, "target", "release", "clickward"))
PAIRS = int(os.environ.get("PAIRS", "3"))
DURATION = os.environ.get("DURATION", "8s")
CONNECTIONS = os.environ.get("CONNECTIONS", "32")
N_EVENTS = int(os.environ.get("EVENTS", "5000"))
N_LATENCY = int(os.environ.get("LATENCY_SAMPLES", "200"))
N_CLICKS = int(os.environ.get("CLICKS", "200000"))
PORT = 18391
NGINX_PORT = 18392
NATS_PORT = 18393

CATALOG = """
[[programs]]
slug = "shop"
currency = "USD"
commission = { default = { type = "share", bps = 1000 } }
postback_token = "tok-bench"

[[affiliates]]
slug = "pub"

[[links]]
code = "p1"
program = "shop"
affiliate = "pub"
destination = "https://shop.example/?cid={click_id}"
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
            return float(line.split()[-1])
    return 0.0


def metric_exact(name):
    try:
        text = get(f"http://127.0.0.1:{PORT}/metrics")
    except Exception:
        return 0.0
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.split()[-1])
    return 0.0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])


def cli(data, cfg, *args):
    out = subprocess.run([BIN, "--config", cfg, "--data-dir", data, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"clickward {' '.join(args)}: {out.stderr}")
    return out.stdout


class Server:
    def __init__(self, data, cfg, catalog):
        env = dict(os.environ, TOKIO_WORKER_THREADS="1", RUST_LOG="warn")
        self.p = subprocess.Popen(
            [BIN, "--config", cfg, "--data-dir", data, "serve", "--listen", f"127.0.0.1:{PORT}", "--catalog", catalog],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(OUT, "server.log"), "a"), env=env)
        for _ in range(400):
            try:
                get(f"http://127.0.0.1:{PORT}/healthz", 1)
                return
            except Exception:
                time.sleep(0.05)
        sys.exit("clickward did not start; see bench/out/events/server.log")

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(60)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def config(name, on, nats=True):
    text = f'data_dir = "{OUT}/{name}-data"\n[outbound]\nallow_private = true\n'
    if on and nats:
        text += f'[stream]\nnats = "nats://127.0.0.1:{NATS_PORT}"\n'
    return write(os.path.join(OUT, f"{name}.toml"), text)


def fresh(name):
    d = os.path.join(OUT, f"{name}-data")
    shutil.rmtree(d, ignore_errors=True)
    return d


def wrk(mix):
    out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}", "--latency", "-s", mix,
                          f"http://127.0.0.1:{PORT}"], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, reqs, ms


def redirects(catalog, mix):
    runs = {"off": [], "hooks": [], "on": []}
    for i in range(PAIRS):
        order = ["off", "hooks", "on"] if i % 2 == 0 else ["on", "hooks", "off"]
        for mode in order:
            name = f"redirect-{mode}"
            data = fresh(name)
            cfg = config(name, mode == "on")
            if mode in ("on", "hooks"):
                cli(data, cfg, "--init", "program", "list")
                for k in range(3):
                    cli(data, cfg, "webhook", "add", "--url", f"http://127.0.0.1:{NGINX_PORT}/hook{k}", "--events", "*")
                cli(data, cfg, "affiliate", "add", "--slug", "gourmet_guide")
                cli(data, cfg, "webhook", "add", "--postback", "--affiliate", "gourmet_guide",
                    "--url", f"http://127.0.0.1:{NGINX_PORT}/pb?cid={{click_id}}")
            else:
                cli(data, cfg, "--init", "program", "list")
            subprocess.run(["sync"])
            s = Server(data, cfg, os.path.join(ROOT, "examples", "links.toml"))
            before = cpu_ticks(s.p.pid)
            rps, reqs, p99 = wrk(mix)
            after = cpu_ticks(s.p.pid)
            s.stop()
            cpu = (after - before) / os.sysconf("SC_CLK_TCK") * 1e6 / max(reqs, 1)
            runs[mode].append((rps, p99, cpu))
    med = {m: tuple(statistics.median(r[i] for r in v) for i in range(3)) for m, v in runs.items()}
    return med, runs


def throughput(catalog_path):
    name = "throughput"
    data = fresh(name)
    cfg = config(name, False)
    # N affiliates in the catalogue: N affiliate.created events at start.
    many = CATALOG + "".join(f'\n[[affiliates]]\nslug = "a{i}"\n' for i in range(N_EVENTS))
    cat = write(os.path.join(OUT, "many.toml"), many)
    cli(data, cfg, "--init", "program", "list")
    s = Server(data, cfg, cat)
    added = cli(data, cfg, "webhook", "add", "--url", f"http://127.0.0.1:{NGINX_PORT}/hook", "--events", "affiliate.created")
    ep = re.search(r"(ep_\w+)", added).group(1)
    start = time.time()
    out = cli(data, cfg, "webhook", "replay", "--endpoint", ep, "--events", "affiliate.created",
              "--from", "0", "--to", str(int(time.time()) + 3600))
    queued = int(out.split()[0])
    name_m = 'clickward_delivery_attempts_total{kind="webhook",result="delivered"}'
    while metric_exact(name_m) < queued:
        time.sleep(0.05)
        if time.time() - start > 300:
            break
    elapsed = time.time() - start
    done = metric_exact(name_m)
    s.stop()
    return queued, done, elapsed


def latency(receiver_port, secret_holder):
    name = "latency"
    data = fresh(name)
    cfg = config(name, False)
    cat = write(os.path.join(OUT, "bench.toml"), CATALOG)
    cli(data, cfg, "--init", "program", "list")
    s = Server(data, cfg, cat)
    added = cli(data, cfg, "webhook", "add", "--url", f"http://127.0.0.1:{receiver_port}/hook", "--events", "conversion.created")
    secret = re.search(r"secret (\S+)", added).group(1)
    req = urllib.request.Request(f"http://127.0.0.1:{receiver_port}/_secret", data=json.dumps({"secret": secret}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    urllib.request.urlopen(req).read()
    time.sleep(0.5)
    sent = {}

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.6.1 Mobile/15E148 Safari/604.1"
    for i in range(N_LATENCY):
        try:
            opener.open(urllib.request.Request(f"http://127.0.0.1:{PORT}/r/p1", headers={"user-agent": ua}))
            sys.exit("no redirect")
        except urllib.error.HTTPError as e:
            cid = e.headers["location"].rsplit("cid=", 1)[1]
        body = get(f"http://127.0.0.1:{PORT}/postback?click_id={cid}&order_id=L{i}&amount=10.00&token=tok-bench")
        conv = json.loads(body)["conversion"]["conversion_id"]
        sent[conv] = time.time()
        time.sleep(0.02)
    deadline = time.time() + 60
    while time.time() < deadline:
        got = json.loads(get(f"http://127.0.0.1:{receiver_port}/_received"))
        if len(got) >= N_LATENCY:
            break
        time.sleep(0.2)
    s.stop()
    lat, valid = [], 0
    for r in got:
        body = json.loads(r["body"])
        conv = body["data"]["conversion"]["conversion_id"]
        if conv in sent:
            lat.append((r["at"] - sent[conv]) * 1000)
            valid += r["valid"] is True
    lat.sort()
    return lat, valid


def nats():
    name = "nats"
    data = fresh(name)
    cfg = config(name, True)
    cli(data, cfg, "--init", "gen", "--clicks", str(N_CLICKS), "--days", "1")
    db = sqlite3.connect(os.path.join(data, "clickward.db"))
    total = db.execute("SELECT COUNT(*) FROM clicks WHERE seq IS NOT NULL").fetchone()[0]
    db.execute("INSERT INTO delivery_cursors (name, seq) VALUES ('stream.clicks', 0) ON CONFLICT (name) DO UPDATE SET seq = 0")
    db.commit()
    db.close()
    s = Server(data, cfg, os.path.join(ROOT, "examples", "links.toml"))
    start = time.time()
    name_m = 'clickward_stream_published_total{kind="click"}'
    while metric_exact(name_m) < total and time.time() - start < 300:
        time.sleep(0.05)
    elapsed = time.time() - start
    done = metric_exact(name_m)
    s.stop()
    return total, done, elapsed


def main():
    os.makedirs(OUT, exist_ok=True)
    mix = os.path.join(OUT, "mix.lua")
    shared = os.environ.get("CLICKWARD_SHARED", os.path.join(ROOT, "..", "shared"))
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "make_mix.py"), shared, mix], check=True,
                   stderr=subprocess.DEVNULL)
    # nginx answering 204 to every delivery; a JetStream server of our own.
    conf = write(os.path.join(OUT, "nginx.conf"), f"""
worker_processes 1; daemon off; pid {OUT}/nginx.pid; error_log {OUT}/nginx.err;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{NGINX_PORT}; location / {{ return 204; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", conf, "-p", OUT], stderr=subprocess.DEVNULL)
    js = os.path.join(OUT, "js")
    shutil.rmtree(js, ignore_errors=True)
    natsd = subprocess.Popen(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(NATS_PORT), "-sd", js],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rport = free_port()
    receiver = subprocess.Popen([sys.executable, os.path.join(ROOT, "crates/server/tests/receiver/webhook_receiver.py"),
                                 "--port", str(rport)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    receiver.stdout.readline()
    time.sleep(0.5)
    try:
        med, runs = redirects(None, mix)
        queued, done, elapsed = throughput(None)
        lat, valid = latency(rport, None)
        total, published, nats_s = nats()
    finally:
        for p in (nginx, natsd, receiver):
            p.terminate()
    off, hooks, on = med["off"], med["hooks"], med["on"]
    print("| measure | result | target |")
    print("|---|---|---|")
    print(f"| redirects/s, all off (median of {PAIRS}) | {off[0]:.0f} (p99 {off[1]:.2f} ms, {off[2]:.1f} µs CPU/req) | |")
    print(f"| redirects/s, 3 webhooks + postback on | {hooks[0]:.0f} (p99 {hooks[1]:.2f} ms, {hooks[2]:.1f} µs CPU/req); ratio {hooks[0] / off[0]:.3f} | ≥ 0.95 |")
    print(f"| redirects/s, 3 webhooks + postback + NATS stream on | {on[0]:.0f} (p99 {on[1]:.2f} ms, {on[2]:.1f} µs CPU/req); ratio {on[0] / off[0]:.3f} | ≥ 0.95 |")
    print(f"| webhook deliveries/s (nginx 204, {queued} replayed) | {done / elapsed:.0f} ({done:.0f} in {elapsed:.2f} s) | ≥ 2,000 |")
    if lat:
        p50 = lat[len(lat) // 2]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"| conversion → webhook received, p50 / p99 ({len(lat)} conversions, {valid} valid signatures) | {p50:.1f} ms / {p99:.1f} ms | < 50 ms / < 250 ms |")
    print(f"| NATS clicks published and acknowledged/s ({total} clicks) | {published / nats_s:.0f} ({published:.0f} in {nats_s:.2f} s) | ≥ 50,000 |")
    print()
    print("runs (rps, p99 ms, CPU µs/req):", json.dumps(runs))


if __name__ == "__main__":
    main()
