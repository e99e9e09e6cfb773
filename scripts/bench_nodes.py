#!/usr/bin/env python3
"""Several processes on one database: intake throughput, and tickets
processed per minute with one, two and three worker processes.

For each backend (a SQLite file; PostgreSQL when --postgres URL is given)
and each worker count, on a fresh database:

1. one `serve --role web` node takes --tickets submissions from 8 client
   threads with no worker running: intake, in tickets per second;
2. then N `serve --role worker` processes start and work that backlog off;
3. once it is empty, --tickets more are submitted the same way and the clock
   runs from the first submission until the backlog is empty again:
   processing, in tickets per minute, with every worker already running.

Rules only by default; with --gen-model the workers also load that GGUF
model (each worker process loads its own copy). On one machine the worker
processes share its cores: each gets an equal share (RAYON_NUM_THREADS =
cores / workers, at least 1), so the figure says what splitting one
machine's cores among processes costs or buys, not what another machine
would add. Prints a Markdown table and a JSON line per run. Standard
library only; builds nothing (pass --bin, default target/release).

    python3 scripts/bench_nodes.py [--postgres postgres://USER@HOST:PORT/DB] \\
        [--tickets 300] [--workers 1,2,3] [--gen-model FILE.gguf]
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

TOKEN = "bench-nodes-admin-token-0123456789abcdef"

# The same tickets as the burst benchmark.
from bench_burst import TICKETS  # noqa: E402


def call(addr, method, path, body=None):
    req = urllib.request.Request(f"http://{addr}{path}", method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


class Node:
    """A `serve` process, once it listens."""

    def __init__(self, binary, db, role, extra, threads=None):
        args = [binary, "serve", "--bind", "127.0.0.1:0", "--db", db, "--role", role,
                "--intake-per-address", "0", "--intake-per-minute", "0"] + extra
        env = dict(os.environ, SMART_SUPPORT_ADMIN_TOKEN=TOKEN, RUST_LOG="warn,smart_support=info")
        if threads:
            env["RAYON_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
        self.addr = None
        deadline = time.time() + 600
        for line in self.proc.stderr:
            m = re.search(r"listening on http://(\S+)", line)
            if m:
                self.addr = m.group(1)
                break
            if time.time() > deadline:
                break
        if self.addr is None:
            self.stop()
            raise SystemExit(f"{role} node did not start")
        # Keep reading its log so the pipe never fills.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def fresh_postgres(base, n):
    """A new database on the server of `base`, as a URL."""
    name = f"bench_nodes_{os.getpid()}_{n}"
    subprocess.run(["psql", base, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    u = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + name, u.query, u.fragment))


def submit_all(addr, count, threads=8):
    done = []

    def run(k):
        for i in range(k, count, threads):
            s, d = TICKETS[i % len(TICKETS)]
            call(addr, "POST", "/api/tickets", {"subject": f"{s} #{i}", "description": d})
            done.append(i)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.perf_counter() - t0
    assert len(done) == count
    return took


def backlog(addr):
    """Tickets not yet processed, read from the database at each call
    (`/metrics`; `/health` caches its figures for a few seconds)."""
    req = urllib.request.Request(f"http://{addr}/metrics")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=60) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("tickets_backlog "):
                return int(float(line.split()[1]))
    raise SystemExit("no tickets_backlog in /metrics")


def drained(addr):
    while backlog(addr) > 0:
        time.sleep(0.02)


def one_run(binary, db, workers, tickets, gen_model):
    models = ["--nli-model", "none", "--gen-model", gen_model or "none"]
    web = Node(binary, db, "web", ["--nli-model", "none", "--gen-model", "none"])
    started = []
    try:
        intake = submit_all(web.addr, tickets)
        for _ in range(workers):
            threads = max(1, (os.cpu_count() or 1) // workers)
            started.append(Node(binary, db, "worker", models, threads))
        drained(web.addr)
        t0 = time.perf_counter()
        submit_all(web.addr, tickets)
        drained(web.addr)
        took = time.perf_counter() - t0
        return {
            "intake_per_sec": round(tickets / intake, 1),
            "per_minute": round(tickets / took * 60, 1),
            "seconds": round(took, 2),
        }
    finally:
        for n in started + [web]:
            n.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "smart-support"))
    ap.add_argument("--postgres", help="postgres://USER@HOST:PORT/DB on which databases may be created")
    ap.add_argument("--tickets", type=int, default=300)
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--gen-model")
    ap.add_argument("--no-sqlite", action="store_true")
    a = ap.parse_args()
    counts = [int(x) for x in a.workers.split(",")]
    backends = ([] if a.no_sqlite else ["sqlite"]) + (["postgres"] if a.postgres else [])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}")
    print(f"tickets per run: {a.tickets}; models: {'generator ' + os.path.basename(a.gen_model) if a.gen_model else 'rules only'}")
    rows = []
    n = 0
    for backend in backends:
        for w in counts:
            n += 1
            with tempfile.TemporaryDirectory() as d:
                db = os.path.join(d, "tickets.db") if backend == "sqlite" else fresh_postgres(a.postgres, n)
                r = one_run(a.bin, db, w, a.tickets, a.gen_model)
            r.update(backend=backend, workers=w, tickets=a.tickets,
                     models="generator" if a.gen_model else "rules")
            print(json.dumps(r), file=sys.stderr)
            rows.append(r)
    print()
    print("| backend | models | worker processes | intake (tickets/s, one web node) | processed (tickets/min) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['models']} | {r['workers']} | {r['intake_per_sec']} | {r['per_minute']} |")


if __name__ == "__main__":
    main()
