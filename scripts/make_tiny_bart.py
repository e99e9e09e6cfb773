#!/usr/bin/env python3
"""Builds tiny random-weight BART-MNLI-shaped models and transformers' reference outputs.

    pip install torch transformers safetensors tokenizers
    python3 scripts/make_tiny_bart.py                 # tests/fixtures/tiny-bart-mnli (+ -scaled variant)
    python3 scripts/make_tiny_bart.py --full DIR      # a bart-large-mnli-shaped random model for benchmarks (~1.6 GB)

The tokenizer is a byte-level BPE (BART/RoBERTa style, same special tokens and pair template
`<s> A </s></s> B </s>`) trained on a small built-in corpus, so the fixture stays under 2 MB.
"""
import argparse
import json
import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import BartConfig, BartForSequenceClassification, PreTrainedTokenizerFast, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    "Le service client est excellent, merci beaucoup. 😀",
    "Someone used my card for fraud on your site, I'm calling the police.",
    "Website shows a blank page after login since yesterday's update.",
    "Hello",
]
CORPUS = TICKETS + [
    "This example is billing. This example is technical. This example is account.",
    "This example is refund. This example is security. This example is order. This example is general.",
    "customer support ticket payment invoice subscription order delivery tracking password login",
    "error crash timeout bug server website app update install sync slow broken not working",
] * 3

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def build_tokenizer(vocab_size, max_len):
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=max_len,
    )


def config(vocab_size, **kw):
    base = dict(
        vocab_size=vocab_size, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=128, activation_function="gelu", scale_embedding=False,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
        num_labels=3, id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
        label2id={"contradiction": 0, "neutral": 1, "entailment": 2},
        init_std=0.3, dropout=0.1, attention_dropout=0.1,
    )
    base.update(kw)
    return BartConfig(**base)


def save_model(model, tok, out):
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def references(model, tok, out, full=True):
    model.eval()
    pairs = [
        (TICKETS[0], "This example is Refund."),
        (TICKETS[1], "This example is Technical."),
        (TICKETS[14], "This example is General."),
        (TICKETS[11], "This example is Order."),
    ]
    enc = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation="only_first", return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    ref = {
        "pairs": [
            {
                "premise": p[0],
                "hypothesis": p[1],
                "input_ids": tok(p[0], p[1])["input_ids"],
                "logits": logits[i].tolist(),
            }
            for i, p in enumerate(pairs)
        ]
    }
    if full:
        clf = pipeline("zero-shot-classification", model=model, tokenizer=tok, device="cpu")
        long_text = " ".join(["my invoice is wrong and the app crashes"] * 625)  # 5 000 words
        zs = []
        for text in TICKETS + [long_text]:
            for multi in (False, True):
                r = clf(text, candidate_labels=LABELS, multi_label=multi)
                zs.append({"text": text, "labels_in": LABELS, "multi_label": multi, "template": "This example is {}.",
                           "labels": r["labels"], "scores": r["scores"]})
        custom = clf(TICKETS[2], candidate_labels=["urgent", "not urgent"], hypothesis_template="The customer is {}.")
        zs.append({"text": TICKETS[2], "labels_in": ["urgent", "not urgent"], "multi_label": False,
                   "template": "The customer is {}.", "labels": custom["labels"], "scores": custom["scores"]})
        single = clf(TICKETS[0], candidate_labels=["Refund"])
        zs.append({"text": TICKETS[0], "labels_in": ["Refund"], "multi_label": False,
                   "template": "This example is {}.", "labels": single["labels"], "scores": single["scores"]})
        ref["zero_shot"] = zs
        ref["long_text_truncated_ids"] = tok(long_text, "This example is Billing.", truncation="only_first")["input_ids"]
    with open(os.path.join(out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", metavar="DIR", help="write a bart-large-mnli-shaped random model to DIR")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.full:
        tok = build_tokenizer(50265, 1024)
        cfg = config(tok.vocab_size if tok.vocab_size > 50265 else 50265, d_model=1024, encoder_layers=12, decoder_layers=12,
                     encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                     decoder_ffn_dim=4096, max_position_embeddings=1024, init_std=0.02)
        model = BartForSequenceClassification(cfg)
        save_model(model, tok, args.full)
        print(f"wrote {args.full}")
        return
    tok = build_tokenizer(1000, 128)
    out = os.path.join(ROOT, "tests/fixtures/tiny-bart-mnli")
    model = BartForSequenceClassification(config(len(tok)))
    save_model(model, tok, out)
    references(model, tok, out)
    # A variant exercising scale_embedding and another activation.
    out2 = os.path.join(ROOT, "tests/fixtures/tiny-bart-mnli-scaled")
    model2 = BartForSequenceClassification(config(len(tok), scale_embedding=True, activation_function="relu"))
    save_model(model2, tok, out2)
    references(model2, tok, out2, full=False)
    print("wrote", out, out2)


if __name__ == "__main__":
    main()
