#!/usr/bin/env python3
"""Decode (and prefill) tokens/s of our GGUF runtime against llama.cpp on the
same file, prompt and thread count, side by side in one run.

    pip install llama-cpp-python        # builds llama.cpp from source (slow)
    cargo build --release
    python scripts/bench_vs_llamacpp.py ~/.cache/smart-support/models/SmolLM2-135M-Instruct.Q4_1.gguf

Prints the median of --runs runs for each and the ratio ours / llama.cpp.
"""
import argparse
import os
import re
import statistics
import subprocess
import time

# A support ticket of about 400 tokens (SmolLM2: 425, Gemma 3: 415), the
# size of a real answer prompt.
DETAILS = (
    "I use the mobile app on Android and the website on my laptop. Yesterday I also changed my "
    "email address in the account settings, and since then the two-factor codes arrive late. "
    "My colleague on the same plan has no problem. I cleared the browser cache, tried another "
    "browser and restarted the phone. The app shows error 401 after the code screen. "
)
PROMPT = (
    "Customer support ticket. Subject: Cannot log in. Description: I reset my password "
    "twice but the login page still says invalid credentials, and the reset email took "
    "an hour to arrive. " + DETAILS * 5 + "What should I do next? Answer:"
)


def ours(binary, model, n, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), RUST_LOG="warn")
    out = subprocess.run(
        [binary, "generate", "--device", "cpu", "--ignore-eos", "--gen-model", model,
         "--max-new-tokens", str(n), PROMPT],
        capture_output=True, text=True, env=env, check=True,
    )
    m = re.search(
        r"prompt (\d+) tokens, prefill ([\d.]+) tokens/s; generated (\d+) tokens, decode ([\d.]+) tokens/s",
        out.stderr,
    )
    if not m:
        raise SystemExit(f"unexpected output from {binary}:\n{out.stderr}")
    return float(m.group(2)), float(m.group(4)), int(m.group(3))


def llama_cpp(llm, n):
    llm.reset()
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True)
    t0 = time.perf_counter()
    llm.eval(tokens)
    t1 = time.perf_counter()
    made = 0
    first = True
    t2 = None
    for _ in range(n):
        tok = llm.sample(temp=0.0)
        if first:
            t2 = time.perf_counter()
            first = False
        llm.eval([tok])
        made += 1
    t3 = time.perf_counter()
    # Decode rate over the tokens fed back one by one (as ours reports it).
    return len(tokens) / (t1 - t0), (made - 1) / (t3 - t2) if made > 1 else 0.0, made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "smart-support"))
    a = ap.parse_args()

    from llama_cpp import Llama

    llm = Llama(model_path=a.model, n_ctx=2048, n_threads=a.threads, n_batch=512, verbose=False)
    results = {"ours": [], "llama.cpp": []}
    for _ in range(a.runs):  # interleaved so that machine noise hits both
        results["ours"].append(ours(a.binary, a.model, a.tokens, a.threads))
        results["llama.cpp"].append(llama_cpp(llm, a.tokens))
    med = {}
    for name, rs in results.items():
        pre = statistics.median(r[0] for r in rs)
        dec = statistics.median(r[1] for r in rs)
        med[name] = (pre, dec)
        print(f"{name:10s} prefill {pre:8.1f} tokens/s   decode {dec:7.1f} tokens/s   ({rs[0][2]} tokens, {a.runs} runs, {a.threads} threads)")
    print(f"ratio ours/llama.cpp: prefill {med['ours'][0] / med['llama.cpp'][0]:.2f}x, "
          f"decode {med['ours'][1] / med['llama.cpp'][1]:.2f}x")


if __name__ == "__main__":
    main()
