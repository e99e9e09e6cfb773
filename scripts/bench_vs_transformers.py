#!/usr/bin/env python3
"""Side by side: transformers' zero-shot pipeline vs smart-support on the same weights and tickets.

    python3 scripts/bench_vs_transformers.py MODEL_DIR [--tickets 28] [--runs 3] [--bin target/release/smart-support]

MODEL_DIR: a BART-MNLI directory (config.json, model.safetensors, tokenizer.json), e.g. one
written by `python3 scripts/make_tiny_bart.py --full DIR`. Prints tickets/s for transformers at
batch sizes 1, 7, 14, 28 and 56 (label pairs per batch), for our f32 and Q8_0 paths (all tickets
submitted at once, as concurrent ticket processing does, default queue settings), the ratios to
transformers' best batch size, and the largest score differences. Each configuration runs
`--runs` times, interleaved, and its median is reported.
"""
import argparse
import json
import statistics
import subprocess
import time

import torch
from transformers import pipeline

LABELS = ["Billing", "Technical", "Account", "Refund", "Security", "Order", "General"]
TICKETS = [
    "I was charged twice for my subscription this month, please refund me.",
    "The app crashes every time I open the settings page.",
    "My account was hacked and someone changed my password. URGENT!",
    "Where is my order? It was supposed to arrive last week.",
    "I can't log in, the 2FA code never arrives.",
    "Thanks so much, the new dashboard is great!",
    "The invoice shows the wrong amount, can you check?",
    "I need a refund for a damaged item, the box was crushed.",
    "Your service is terrible and I want to cancel immediately.",
    "Just wondering how to change my email address.",
    "Payment failed with error 402 but my card is fine.",
    "Le service client est excellent, merci beaucoup.",
    "Someone used my card for fraud on your site, I'm calling the police.",
    "Website shows a blank page after login since yesterday's update.",
]


def as_dict(r):
    return dict(zip(r["labels"], r["scores"]))


def run_ours(binary, model, texts, quant):
    cmd = [binary, "classify", "--nli-model", model, "--nli-quant", quant, *texts]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = [l for l in p.stderr.splitlines() if l.startswith("classified")][-1]
    secs = float(line.split(" in ")[1].split(" s ")[0])
    return [json.loads(l) for l in p.stdout.splitlines()], len(texts) / secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tickets", type=int, default=28)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default="target/release/smart-support")
    args = ap.parse_args()
    texts = (TICKETS * ((args.tickets + len(TICKETS) - 1) // len(TICKETS)))[: args.tickets]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {len(texts)} tickets x {len(LABELS)} labels, "
          f"median of {args.runs} runs")
    clf = pipeline("zero-shot-classification", model=args.model, device="cpu")
    clf(texts[0], candidate_labels=LABELS)  # warm-up
    t = time.perf_counter()
    clf(texts[0], candidate_labels=LABELS)
    single = time.perf_counter() - t
    sizes = (1, 7, 14, 28, 56)
    theirs = {bs: [] for bs in sizes}
    ours = {"none": [], "q8_0": []}
    results = {}
    for _ in range(args.runs):
        for bs in sizes:
            t = time.perf_counter()
            ref = clf(texts, candidate_labels=LABELS, batch_size=bs)
            theirs[bs].append(len(texts) / (time.perf_counter() - t))
        for quant in ours:
            results[quant], tps = run_ours(args.bin, args.model, texts, quant)
            ours[quant].append(tps)
    best = 0.0
    for bs in sizes:
        tps = statistics.median(theirs[bs])
        best = max(best, tps)
        print(f"transformers batch_size={bs:<3} {tps:.3f} tickets/s")
    print(f"transformers single-ticket latency {single:.2f} s")
    for quant, runs in ours.items():
        tps = statistics.median(runs)
        dev = max(abs(as_dict(a)[k] - v) for a, b in zip(results[quant], ref) for k, v in as_dict(b).items())
        print(f"smart-support {'f32' if quant == 'none' else quant:<5} {tps:.3f} tickets/s  "
              f"ratio vs transformers best {tps / best:.2f}x  max |score diff| vs transformers {dev:.2e}")
    dq = max(abs(as_dict(a)[k] - v) for a, b in zip(results["q8_0"], results["none"]) for k, v in as_dict(b).items())
    print(f"q8_0 vs our f32: max |score diff| {dq:.4f}")


if __name__ == "__main__":
    main()
