#!/usr/bin/env python3
"""Takes the README's screenshot of the dashboard overview.

Drives Debian's chromium through chromedriver (plain WebDriver over HTTP, no
extra packages): signs in at BASE/login as USER, opens PAGE and saves a PNG.

    python3 scripts/screenshot.py http://127.0.0.1:18186 bench-admin PASSWORD \
        "/dashboard?from=2026-10-22&to=2026-11-20&tz=Asia/Tokyo" docs/overview.png
"""
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def call(driver, method, path, body=None):
    req = urllib.request.Request(
        driver + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["value"]


def main():
    base, user, password, page, out = sys.argv[1:6]
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                call(driver, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        profile = tempfile.mkdtemp()
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--window-size=1280,1100", "--hide-scrollbars", f"--user-data-dir={profile}"],
        }}}}
        sid = call(driver, "POST", "/session", caps)["sessionId"]
        sess = f"/session/{sid}"
        call(driver, "POST", sess + "/url", {"url": base + "/login"})
        call(driver, "POST", sess + "/execute/sync", {
            "script": "document.getElementById('username').value = arguments[0];"
                      "document.getElementById('password').value = arguments[1];"
                      "document.getElementById('sign-in').click();",
            "args": [user, password],
        })
        for _ in range(100):
            if "/login" not in call(driver, "GET", sess + "/url"):
                break
            time.sleep(0.1)
        call(driver, "POST", sess + "/url", {"url": base + page})
        for _ in range(100):
            if call(driver, "POST", sess + "/execute/sync",
                    {"script": "return !!document.querySelector('#chart canvas');", "args": []}):
                break
            time.sleep(0.1)
        png = base64.b64decode(call(driver, "GET", sess + "/screenshot"))
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "wb") as f:
            f.write(png)
        call(driver, "DELETE", sess)
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
