#!/usr/bin/env python3
"""Reference outputs for the GGUF generator tests, from an independent
implementation: transformers loads the tokenizer and the (dequantized, f32)
model straight from the GGUF files.

    pip install torch transformers accelerate gguf sentencepiece
    scripts/fetch-test-models.sh
    python scripts/gguf_reference.py [MODELS_DIR] > tests/fixtures/gguf_reference.json
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODELS = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/smart-support/models")
FILES = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}
STRINGS = [
    "Hello world",
    "My invoice shows a double charge!",
    "  leading and  double  spaces  ",
    "tabs\tand\nnew lines\n\n",
    "naïve café, Zürich, Ångström",
    "emoji 😀🔥👍🏽 and ❤️",
    "日本語のテキストと中文",
    "Привет, как дела?",
    "def f(x):\n    return x**2  # square",
    "if (a && b) { return [1, 2, 3]; }",
    "numbers 12345 and 3.14159 and 2026-11-24",
    "URL: https://example.com/a?b=c&d=e",
    "<|im_start|>user\nhi<|im_end|>",
    "<start_of_turn>user\nhi<end_of_turn>",
    "ALL CAPS SHOUTING!!!",
    "a",
    " ",
    "don't won't it's we're",
    "email: jane.doe+test@example.org",
    "Ünïcödé ñ ß ø œ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]
CHAT = [
    {"role": "system", "content": "You are a support assistant."},
    {"role": "user", "content": "My order #123 hasn't arrived. Can you help?"},
]
PROMPTS = [
    "The capital of France is",
    "To reset your password, first",
    "def add(a, b):\n    return",
]


def main():
    out = {"tokenizers": {}, "logits": {}, "chat": {}}
    for key, fname in FILES.items():
        tok = AutoTokenizer.from_pretrained(MODELS, gguf_file=fname)
        out["tokenizers"][key] = [{"text": s, "ids": tok.encode(s)} for s in STRINGS]
        if tok.chat_template:
            out["chat"][key] = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
        model = AutoModelForCausalLM.from_pretrained(MODELS, gguf_file=fname, dtype=torch.float32)
        model.eval()
        cases = []
        for p in PROMPTS:
            ids = tok.encode(p)
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1]
            top = torch.topk(logits, 5)
            cases.append(
                {
                    "prompt": p,
                    "ids": ids,
                    "top_ids": top.indices.tolist(),
                    "top_logits": [round(float(x), 4) for x in top.values],
                }
            )
        out["logits"][key] = cases
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    print()


if __name__ == "__main__":
    main()
