#!/usr/bin/env python3
"""A burst of tickets into a running service: how fast answers come back.

Starts `smart-support serve` (release build) on a fresh database with the
given models, then

1. submits N tickets one at a time, each after the last one's answer;
2. submits the same N tickets at once (a burst, as an outage brings);

and reports, for each, tickets per minute, the median and 95th percentile of
the time from submission to the stored answer, the generator's median time to
first token (from each ticket's staff record), and the service's peak and
steady resident memory (VmHWM / VmRSS). Standard library only.

    python3 scripts/bench_burst.py --gen-model PATH.gguf [--nli-model DIR|none] [--tickets 8]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

TOKEN = "bench-burst-admin-token-0123456789abcdef"

TICKETS = [
    ("Charged twice for my subscription", "My card was charged two times this month for the same plan. Please refund the second payment."),
    ("Cannot log in after password reset", "I reset my password yesterday and now the login page says my password is wrong."),
    ("Parcel never arrived", "My order 4471 was marked delivered last week but nothing came. What can I do?"),
    ("App crashes on start", "Since the last update the app closes right after I open it on my phone."),
    ("Reset email does not arrive", "I asked for a password reset link three times today but no email came."),
    ("Refund for a cancelled order", "I cancelled order 5123 within an hour and still have not received my money back."),
    ("Someone used my account", "There are logins from another country and my email address was changed. Urgent."),
    ("Invoice shows the wrong amount", "The invoice for November shows 49 euros but my plan costs 29 euros."),
]


def call(port, method, path, body=None, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def memory(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) // 1024  # MiB
    return out


def find(v, key):
    if isinstance(v, dict):
        if key in v:
            return v[key]
        for x in v.values():
            r = find(x, key)
            if r is not None:
                return r
    if isinstance(v, list):
        for x in v:
            r = find(x, key)
            if r is not None:
                return r
    return None


def submit(port, subject, description):
    t = call(port, "POST", "/api/tickets", {"subject": subject, "description": description})
    return t["id"], time.monotonic()


def wait_done(port, tid, timeout=1800):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = call(port, "GET", f"/api/tickets/{tid}", token=TOKEN)
        if str(v.get("processing", "")).lower() == "done":
            return time.monotonic(), v
        time.sleep(0.05)
    raise SystemExit(f"ticket {tid} not answered in {timeout} s")


def summary(name, started, rows):
    took = [done - sent for sent, done, _, _ in rows]
    ttft = [x for _, _, x, _ in rows if x is not None]
    tokens = sum(n for _, _, _, n in rows if n is not None)
    wall = max(done for _, done, _, _ in rows) - started
    took.sort()
    p95 = took[min(len(took) - 1, round(0.95 * (len(took) - 1)))]
    return {
        "mode": name,
        "tickets": len(rows),
        "tickets_per_minute": round(60 * len(rows) / wall, 2),
        "median_s": round(statistics.median(took), 2),
        "p95_s": round(p95, 2),
        "median_ttft_ms": round(statistics.median(ttft), 1) if ttft else None,
        "generated_tokens_per_s": round(tokens / wall, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/smart-support")
    ap.add_argument("--gen-model", default="none")
    ap.add_argument("--nli-model", default="none")
    ap.add_argument("--tickets", type=int, default=8)
    ap.add_argument("--port", type=int, default=18711)
    args = ap.parse_args()
    binary = os.environ.get("CARGO_TARGET_DIR", "target") + "/release/smart-support" \
        if args.binary == "target/release/smart-support" else args.binary
    tickets = [TICKETS[i % len(TICKETS)] for i in range(args.tickets)]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SMART_SUPPORT_ADMIN_TOKEN=TOKEN, RUST_LOG="warn")
        proc = subprocess.Popen(
            [binary, "serve", "--bind", f"127.0.0.1:{args.port}", "--db", f"{tmp}/t.db",
             "--gen-model", args.gen_model, "--nli-model", args.nli_model,
             "--intake-per-address", "10000", "--intake-per-minute", "10000"],
            env=env, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    health = call(args.port, "GET", "/health", token=TOKEN)
                    break
                except OSError:
                    time.sleep(0.2)
            else:
                raise SystemExit("the service did not start")
            engines = health.get("engines", {})
            results = []
            # One at a time.
            rows, started = [], time.monotonic()
            for s, d in tickets:
                tid, sent = submit(args.port, s, d)
                done, v = wait_done(args.port, tid)
                rows.append((sent, done, find(v, "ttft_ms"), find(v, "generated_tokens")))
            results.append(summary("one at a time", started, rows))
            steady = memory(proc.pid)
            # The burst: everything at once.
            sent_ids, lock = [], threading.Lock()
            started = time.monotonic()

            def one(s, d):
                r = submit(args.port, s, d)
                with lock:
                    sent_ids.append(r)

            threads = [threading.Thread(target=one, args=t) for t in tickets]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rows = []
            for tid, sent in sent_ids:
                done, v = wait_done(args.port, tid)
                rows.append((sent, done, find(v, "ttft_ms"), find(v, "generated_tokens")))
            results.append(summary("burst", started, rows))
            mem = memory(proc.pid)
            gen = (call(args.port, "GET", "/health", token=TOKEN) or {}).get("generator") or {}
            batching = {k: gen.get(k) for k in (
                "max_sequences", "max_batch_sequences", "avg_batch_sequences")}
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    report = {
        "engines": {k: engines.get(k) for k in ("classifier", "troubleshooter")},
        "cpus": os.cpu_count(),
        "results": results,
        "batching": batching,
        "peak_rss_mib": mem.get("VmHWM"),
        "steady_rss_mib": steady.get("VmRSS"),
    }
    print(json.dumps(report, indent=2))
    print(f"{'mode':<14} {'tickets/min':>11} {'median s':>9} {'p95 s':>7} {'median TTFT ms':>15}", file=sys.stderr)
    for r in results:
        print(f"{r['mode']:<14} {r['tickets_per_minute']:>11} {r['median_s']:>9} {r['p95_s']:>7} "
              f"{str(r['median_ttft_ms']):>15}", file=sys.stderr)


if __name__ == "__main__":
    main()
