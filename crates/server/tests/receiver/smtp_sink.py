"""An SMTP relay for clickward's mail tests (aiosmtpd from PyPI): every
message it accepts is written to --dir as NNNNN.eml (the raw message) and
NNNNN.json ({"from", "to"}). Prints "listening <port>" once it listens."""

import argparse
import json
import os
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out):
        self.out = out
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        base = os.path.join(self.out, f"{self.n:05}")
        with open(base + ".json.tmp", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos}, f)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".json.tmp", base + ".json")
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 OK queued as %05d" % self.n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    a = p.parse_args()
    c = Controller(Sink(a.dir), hostname="127.0.0.1", port=a.port)
    c.start()
    print(f"listening {a.port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
