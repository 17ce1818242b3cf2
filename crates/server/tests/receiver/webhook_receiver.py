"""A webhook and postback receiver for clickward's delivery tests.

It verifies every webhook with the Standard Webhooks reference library for
Python (`standardwebhooks` from PyPI, by the spec's authors) and records
what it got; tests read the records and steer its answers over HTTP:

  POST /_control  {"status": 503, "delay_s": 0, "body_bytes": 0, "redirect": ""}
  GET  /_received -> [{"path", "method", "id", "valid", "error", "body", "query", "headers", "at"}]

Any other path is a delivery: /hook* is verified with --secret (or the
secret set by POST /_secret {"secret": "whsec_..."}), anything else (a
postback) is only recorded. Prints "listening <port>" once it listens.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

lock = threading.Lock()
received = []
control = {"status": 200, "delay_s": 0.0, "body_bytes": 0, "redirect": ""}
secrets = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path == "/_received":
            with lock:
                data = json.dumps(received).encode()
            return self._answer(200, data, [("Content-Type", "application/json")])
        self._delivery(b"")

    def do_POST(self):
        body = self._body()
        if self.path == "/_control":
            with lock:
                control.update(json.loads(body))
            return self._answer(204)
        if self.path == "/_secret":
            with lock:
                secrets.append(json.loads(body)["secret"])
            return self._answer(204)
        self._delivery(body)

    def _delivery(self, body):
        url = urlsplit(self.path)
        record = {
            "path": url.path,
            "query": url.query,
            "method": self.command,
            "id": self.headers.get("webhook-id"),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "valid": None,
            "error": None,
            "body": body.decode("utf-8", "replace"),
            "at": time.time(),
        }
        if url.path.startswith("/hook"):
            with lock:
                keys = list(secrets)
            record["valid"] = False
            for key in keys:
                try:
                    Webhook(key).verify(body, dict(self.headers.items()))
                    record["valid"] = True
                    break
                except WebhookVerificationError as e:
                    record["error"] = str(e)
        with lock:
            answer = dict(control)
            received.append(record)
        if answer["delay_s"]:
            time.sleep(answer["delay_s"])
        if answer["redirect"]:
            return self._answer(302, b"", [("Location", answer["redirect"])])
        self._answer(int(answer["status"]), b"x" * int(answer["body_bytes"]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--secret", action="append", default=[])
    a = p.parse_args()
    secrets.extend(a.secret)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
