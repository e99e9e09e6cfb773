#!/usr/bin/env python3
"""Writes tests/fixtures/chat_templates.json: each supported family's chat
template rendered by transformers (`render_jinja_template`, what
`apply_chat_template(..., tokenize=False)` calls) for a system + user turn
and for the answer prompt's system + worked example + user turns.

The templates are the vendors' own, as llama.cpp keeps them in
models/templates; `scripts/fetch-test-models.sh` puts them in
~/.cache/smart-support/models/vocab/templates. The clock is fixed so that
templates which print today's date (Llama 3.2) render the same every day.

    ~/.cache/smart-support/venv/bin/python scripts/chat_template_reference.py
"""

import datetime
import hashlib
import json
import os
import pathlib

import transformers
import transformers.utils.chat_template_utils as ctu

NOW = datetime.datetime(2026, 1, 15, 9, 30, 0)

# template file, bos, eos (the special tokens each family's tokenizer passes)
TEMPLATES = [
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    ("meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    ("Qwen-Qwen2.5-7B-Instruct.jinja", None, "<|im_end|>"),
    ("Qwen-Qwen3-0.6B.jinja", None, "<|im_end|>"),
    ("microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>"),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
    ("google-gemma-2-2b-it.jinja", "<bos>", "<eos>"),
]

SYSTEM = "You are a support assistant. Answer in numbered steps; never invent URLs."
EXAMPLE_USER = "Ticket (Billing, Medium): I was charged twice for March.\n  Café ☕ — “quotes” & <tags>"
EXAMPLE_ANSWER = "STEPS:\n1. Open Billing > Invoices.\n2. Compare the two charges.\nMESSAGE: We will check the duplicate charge.\nRESOLVED: no"
USER = "Ticket (Technical, High): The app crashes when I upload a 20 MB file.\n\nWhat should I do?"

CASES = {
    "system_user": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER},
    ],
    "with_example": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": EXAMPLE_USER},
        {"role": "assistant", "content": EXAMPLE_ANSWER},
        {"role": "user", "content": USER},
    ],
    # What the generator renders when a template refuses a system turn
    # (Gemma): the system text opens the first user turn.
    "system_folded": [
        {"role": "user", "content": SYSTEM + "\n\n" + USER},
    ],
}


class FixedClock(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


def render(template, messages, bos, eos):
    tokens = {"bos_token": bos, "eos_token": eos}
    return ctu.render_jinja_template(
        conversations=[messages],
        chat_template=template,
        add_generation_prompt=True,
        **{k: v for k, v in tokens.items() if v is not None},
    )[0][0]


def main():
    ctu.datetime = FixedClock
    models = pathlib.Path(os.environ.get("SMART_SUPPORT_TEST_MODELS", pathlib.Path.home() / ".cache/smart-support/models"))
    out = {"transformers": transformers.__version__, "now": NOW.isoformat(), "templates": []}
    for name, bos, eos in TEMPLATES:
        text = (models / "vocab/templates" / name).read_text()
        entry = {
            "template": name,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "bos": bos,
            "eos": eos,
            "cases": {},
        }
        for case, messages in CASES.items():
            try:
                entry["cases"][case] = {"messages": messages, "rendered": render(text, messages, bos, eos)}
            except Exception as e:  # a template that refuses, e.g. a system turn
                entry["cases"][case] = {"messages": messages, "error": str(e)}
        out["templates"].append(entry)
    dest = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/chat_templates.json"
    dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
