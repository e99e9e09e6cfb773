#!/usr/bin/env python3
"""A webhook receiver for the tests, on loopback, with its own Standard
Webhooks verification (Python's hmac, written from the specification, not
from our Rust code).

    webhook_receiver.py --secret whsec_... --log FILE [--fail N] [--status CODE] [--port P]

Prints its port on the first line of stdout. Every request is appended to
FILE as one JSON line: path, the three webhook headers, the body, whether
the signature verified, and the status answered. The first N requests are
answered CODE (default 503) with `Retry-After: 1` (`/redirect` aside); later ones 200 when the
signature verifies, 401 when it does not. `/redirect` answers 307 to `/hook`.
"""

import argparse
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE = 5 * 60


def verify(secret, msg_id, timestamp, body, signatures):
    if not (msg_id and timestamp and signatures):
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - ts) > TOLERANCE:
        return False
    key = base64.b64decode(secret[len("whsec_"):])
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for sig in signatures.split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secret", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--fail", type=int, default=0)
    ap.add_argument("--status", type=int, default=503)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    lock = threading.Lock()
    state = {"seen": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(n)
            h = self.headers
            ok = verify(args.secret, h.get("webhook-id"), h.get("webhook-timestamp"), body, h.get("webhook-signature"))
            with lock:
                if self.path != "/redirect":
                    state["seen"] += 1
                failing = self.path != "/redirect" and state["seen"] <= args.fail
            extra = {}
            if self.path == "/redirect":
                status, extra = 307, {"location": "/hook"}
            elif failing:
                status, extra = args.status, {"retry-after": "1"}
            else:
                status = 200 if ok else 401
            record = {
                "path": self.path,
                "webhook_id": h.get("webhook-id"),
                "webhook_timestamp": h.get("webhook-timestamp"),
                "webhook_signature": h.get("webhook-signature"),
                "content_type": h.get("content-type"),
                "body": body.decode("utf-8", "replace"),
                "verified": ok,
                "status": status,
            }
            with lock, open(args.log, "a") as f:
                f.write(json.dumps(record) + "\n")
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
