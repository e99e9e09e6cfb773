//! A `tokenizers::Tokenizer` rebuilt from a GGUF file's metadata, the way
//! transformers' GGUF loader and llama.cpp read it:
//!
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE with the file's merges;
//! - `tokenizer.ggml.model = llama` (SentencePiece): BPE with byte fallback
//!   and merges recovered from the vocabulary (GGUF stores none), ranked by
//!   score, or for Gemma by the token's position in the file.
//!
//! A byte-level BPE splits text into words first, and each family splits
//! differently (Llama 3 keeps up to three digits together, Qwen2 one, and
//! both glue a leading apostrophe or sign to the word; SmolLM2 splits every
//! digit). The file names its rule in `tokenizer.ggml.pre`; [`pre_split`]
//! holds the rules we have checked against transformers on each family's
//! string set (`tests/vocab_parity.rs`), and any other name is refused
//! rather than guessed, since a wrong split gives a model slightly wrong
//! input and nobody would notice.
//!
//! Tokens the file marks control (type 3) become special added tokens, and
//! user-defined ones (type 4) plain added tokens, so `<|im_start|>` or
//! `<start_of_turn>` stay whole in a prompt.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, SplitDelimiterBehavior, Tokenizer};

use super::InferenceError;

type Result<T> = std::result::Result<T, InferenceError>;

const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// The special tokens a generator needs, as ids.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    /// Every token that ends a turn (eos, `<|im_end|>`, `<end_of_turn>` …).
    pub stop: Vec<u32>,
}

fn cfg(msg: impl Into<String>) -> InferenceError {
    InferenceError::Config(msg.into())
}

fn strings(ct: &gguf_file::Content, key: &str) -> Result<Vec<String>> {
    let v = ct
        .metadata
        .get(key)
        .ok_or_else(|| cfg(format!("GGUF metadata lacks '{key}'")))?;
    v.to_vec()
        .map_err(|e| cfg(format!("GGUF metadata '{key}': {e}")))?
        .iter()
        .map(|s| s.to_string().cloned())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| cfg(format!("GGUF metadata '{key}': {e}")))
}

fn numbers<T>(
    ct: &gguf_file::Content,
    key: &str,
    f: impl Fn(&gguf_file::Value) -> candle_core::Result<T>,
) -> Result<Option<Vec<T>>> {
    let Some(v) = ct.metadata.get(key) else {
        return Ok(None);
    };
    let items = v
        .to_vec()
        .map_err(|e| cfg(format!("GGUF metadata '{key}': {e}")))?;
    items
        .iter()
        .map(&f)
        .collect::<candle_core::Result<Vec<T>>>()
        .map(Some)
        .map_err(|e| cfg(format!("GGUF metadata '{key}': {e}")))
}

fn token_id(ct: &gguf_file::Content, key: &str) -> Option<u32> {
    ct.metadata.get(key).and_then(|v| v.to_u32().ok())
}

fn flag(ct: &gguf_file::Content, key: &str) -> Option<bool> {
    ct.metadata.get(key).and_then(|v| v.to_bool().ok())
}

/// GPT-2's printable spelling of every byte.
fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('?')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('?')
        };
    }
    table
}

/// Merges implied by a SentencePiece vocabulary: every split of a token into
/// two vocabulary pieces, best token first (higher `score`), then by piece
/// lengths, as transformers' `generate_merges` orders them.
fn merges_from_vocab(tokens: &[String], scores: &[f64]) -> Vec<(String, String)> {
    let mut vocab: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.as_str(), i);
    }
    // (score, left chars, right chars, left, right), in insertion order for a stable sort.
    let mut merges: Vec<(f64, usize, usize, &str, &str)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in tokens {
        if !seen.insert(t.as_str()) {
            continue;
        }
        // Python's dict keeps a repeated token's last index.
        let score = scores[vocab[t.as_str()]];
        let mut local: Vec<(usize, usize, &str, &str)> = Vec::new();
        for (at, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(at);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                local.push((li, ri, l, r));
            }
        }
        local.sort_by_key(|&(li, ri, _, _)| (li, ri));
        for (_, _, l, r) in local {
            merges.push((score, l.chars().count(), r.chars().count(), l, r));
        }
    }
    // Descending by (score, len l, len r); `sort_by` is stable like Python's.
    merges.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.1.cmp(&a.1))
            .then(b.2.cmp(&a.2))
    });
    merges
        .into_iter()
        .map(|(_, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

/// Llama 3's word split, as its `tokenizer.json` writes it.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (and Qwen2.5's and Qwen3's): Llama 3's with one digit at a time.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` names we split words for.
pub const PRE_SUPPORTED: &[&str] = &[
    "default",
    "gpt2",
    "gpt-2",
    "smollm",
    "llama-bpe",
    "llama3",
    "qwen2",
];

/// How a byte-level BPE family prepares text, as its `tokenizer.json` says.
pub struct PreSplit {
    pub normalizer: Option<NormalizerWrapper>,
    pub pre_tokenizer: PreTokenizerWrapper,
    /// A word that is itself in the vocabulary is one token, whatever the
    /// merges would make of it (Llama 3).
    pub ignore_merges: bool,
}

/// The [`PreSplit`] of pre-tokenizer `pre`.
pub fn pre_split(pre: &str) -> Result<PreSplit> {
    let regex_then_bytes = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(pattern.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| cfg(format!("GGUF tokenizer split: {e}")))?;
        Ok(PreSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into())
    };
    let plain = |pre_tokenizer| PreSplit {
        normalizer: None,
        pre_tokenizer,
        ignore_merges: false,
    };
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" => plain(ByteLevel::new(false, true, true).into()),
        "smollm" => plain(
            PreSequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
        ),
        "llama-bpe" | "llama3" => PreSplit {
            ignore_merges: true,
            ..plain(regex_then_bytes(LLAMA3_SPLIT)?)
        },
        "qwen2" => PreSplit {
            normalizer: Some(NFC.into()),
            ..plain(regex_then_bytes(QWEN2_SPLIT)?)
        },
        other => {
            return Err(cfg(format!(
                "GGUF tokenizer pre-tokenizer '{other}' is not supported (supported: {}); put the model's tokenizer.json beside it",
                PRE_SUPPORTED.join(", ")
            )));
        }
    })
}

pub fn from_gguf(ct: &gguf_file::Content) -> Result<(Tokenizer, SpecialTokens)> {
    let model = ct
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| {
            cfg("GGUF metadata lacks 'tokenizer.ggml.model'; put a tokenizer.json beside the model")
        })?;
    let arch = super::decoder::architecture(ct)?;
    let mut tokens = strings(ct, "tokenizer.ggml.tokens")?;
    let types = numbers(ct, "tokenizer.ggml.token_type", |v| v.to_i32())?
        .unwrap_or_else(|| vec![1; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(cfg(
            "GGUF tokenizer: token_type and tokens differ in length",
        ));
    }
    let bos = token_id(ct, "tokenizer.ggml.bos_token_id");
    let eos = token_id(ct, "tokenizer.ggml.eos_token_id");
    let unk = token_id(ct, "tokenizer.ggml.unknown_token_id");

    let (mut tokenizer, add_bos_default) = match model.as_str() {
        "gpt2" => {
            let alphabet = byte_alphabet();
            let spelled: std::collections::HashSet<char> = alphabet.iter().copied().collect();
            let mut vocab = Vocab::new();
            for (i, t) in tokens.iter().enumerate() {
                let t = if t.chars().all(|c| spelled.contains(&c)) {
                    t.clone()
                } else {
                    t.bytes().map(|b| alphabet[b as usize]).collect()
                };
                vocab.insert(t, i as u32);
            }
            let merges = strings(ct, "tokenizer.ggml.merges")?
                .into_iter()
                .map(|m| {
                    m.split_once(' ')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .ok_or_else(|| cfg(format!("GGUF tokenizer: bad merge '{m}'")))
                })
                .collect::<Result<Vec<_>>>()?;
            let pre = ct
                .metadata
                .get("tokenizer.ggml.pre")
                .and_then(|v| v.to_string().ok())
                .map_or("default", String::as_str);
            let split = pre_split(pre)?;
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .ignore_merges(split.ignore_merges)
                .build()
                .map_err(|e| cfg(format!("GGUF tokenizer: {e}")))?;
            let mut tk = Tokenizer::new(bpe);
            if let Some(n) = split.normalizer {
                tk.with_normalizer(Some(n))
                    .map_err(|e| cfg(e.to_string()))?;
            }
            tk.with_pre_tokenizer(Some(split.pre_tokenizer));
            tk.with_decoder(Some(ByteLevel::new(true, true, true)));
            (tk, false)
        }
        "llama" => {
            let gemma = arch.starts_with("gemma");
            let scores: Vec<f64> = if gemma {
                // Gemma files store runs of spaces as real spaces while the
                // model spells them with ▁, and their merge order is the
                // tokens' order in the file, not their scores.
                for t in tokens.iter_mut() {
                    if t.contains(' ') && t.trim().is_empty() {
                        *t = "\u{2581}".repeat(t.chars().count());
                    }
                }
                let mut last = HashMap::new();
                for (i, t) in tokens.iter().enumerate() {
                    last.insert(t.clone(), i);
                }
                tokens.iter().map(|t| -(last[t] as f64)).collect()
            } else {
                numbers(ct, "tokenizer.ggml.scores", |v| v.to_f32())?
                    .ok_or_else(|| cfg("GGUF metadata lacks 'tokenizer.ggml.scores'"))?
                    .into_iter()
                    .map(f64::from)
                    .collect()
            };
            if scores.len() != tokens.len() {
                return Err(cfg("GGUF tokenizer: scores and tokens differ in length"));
            }
            let merges = merges_from_vocab(&tokens, &scores);
            let mut vocab = Vocab::new();
            for (i, t) in tokens.iter().enumerate() {
                vocab.insert(t.clone(), i as u32);
            }
            let mut builder = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .byte_fallback(true)
                .fuse_unk(true);
            if let Some(u) = unk.and_then(|i| tokens.get(i as usize).cloned()) {
                builder = builder.unk_token(u);
            }
            let bpe = builder
                .build()
                .map_err(|e| cfg(format!("GGUF tokenizer: {e}")))?;
            let mut tk = Tokenizer::new(bpe);
            let space = Replace::new(" ", "\u{2581}").map_err(|e| cfg(e.to_string()))?;
            let add_prefix = flag(ct, "tokenizer.ggml.add_space_prefix").unwrap_or(!gemma);
            if add_prefix {
                let prepend = tokenizers::normalizers::prepend::Prepend::new("\u{2581}".into());
                tk.with_normalizer(Some(tokenizers::normalizers::Sequence::new(vec![
                    prepend.into(),
                    space.into(),
                ])))
                .map_err(|e| cfg(e.to_string()))?;
            } else {
                tk.with_normalizer(Some(space))
                    .map_err(|e| cfg(e.to_string()))?;
            }
            tk.with_pre_tokenizer(Some(
                Split::new(
                    SplitPattern::String(" ".into()),
                    SplitDelimiterBehavior::MergedWithPrevious,
                    false,
                )
                .map_err(|e| cfg(e.to_string()))?,
            ));
            let unspace = Replace::new("\u{2581}", " ").map_err(|e| cfg(e.to_string()))?;
            let mut steps = vec![
                DecoderWrapper::Replace(unspace),
                DecoderWrapper::ByteFallback(ByteFallback::new()),
                DecoderWrapper::Fuse(Fuse::new()),
            ];
            if add_prefix {
                // The space the normalizer prepended goes again.
                steps.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
            }
            tk.with_decoder(Some(DecoderSequence::new(steps)));
            (tk, true)
        }
        other => {
            return Err(cfg(format!(
                "GGUF tokenizer model '{other}' is not supported (gpt2, llama); put a tokenizer.json beside the model"
            )));
        }
    };

    let byte_level = model == "gpt2";
    let alphabet: std::collections::HashSet<char> = byte_alphabet().into_iter().collect();
    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(t, ty)| {
            **ty == CONTROL && (!byte_level || t.chars().all(|c| alphabet.contains(&c)))
        })
        .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
        .collect();
    tokenizer
        .add_special_tokens(control)
        .map_err(|e| cfg(e.to_string()))?;
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, ty)| **ty == USER_DEFINED)
        .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
        .collect();
    tokenizer.add_tokens(user).map_err(|e| cfg(e.to_string()))?;

    let add_bos = flag(ct, "tokenizer.ggml.add_bos_token").unwrap_or(add_bos_default);
    if add_bos && let Some((id, tok)) = bos.and_then(|i| Some((i, tokens.get(i as usize)?.clone())))
    {
        let post = TemplateProcessing::builder()
            .try_single(format!("{tok} $A"))
            .and_then(|b| b.try_pair(format!("{tok} $A {tok} $B")))
            .map_err(|e| cfg(e.to_string()))?
            .special_tokens(vec![(tok.clone(), id)])
            .build()
            .map_err(|e| cfg(e.to_string()))?;
        tokenizer.with_post_processor(Some(post));
    }

    let mut stop: Vec<u32> = eos.into_iter().collect();
    for t in [
        "<|im_end|>",
        "<end_of_turn>",
        "<|eot_id|>",
        "<|endoftext|>",
        "<|end|>",
        "<|eom_id|>",
        "<eos>",
    ] {
        if let Some(i) = tokens.iter().position(|x| x == t) {
            stop.push(i as u32);
        }
    }
    stop.sort_unstable();
    stop.dedup();
    Ok((
        tokenizer,
        SpecialTokens {
            bos,
            eos,
            add_bos,
            stop,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_word_split_is_refused_by_name() {
        let err = pre_split("tekken").err().expect("refused").to_string();
        assert!(err.contains("'tekken'"), "{err}");
        assert!(err.contains("llama-bpe") && err.contains("qwen2"), "{err}");
        assert!(err.contains("tokenizer.json"), "{err}");
        for pre in PRE_SUPPORTED {
            assert!(pre_split(pre).is_ok(), "{pre}");
        }
    }
}
