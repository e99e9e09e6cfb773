//! Local text generation from a GGUF model: tokenizer, chat template,
//! sampling, stop strings, and the troubleshooter's structured answer.
//!
//! Answers are written by [`super::answer`] (a resumable run per ticket)
//! and the model lives on one worker thread ([`super::batching`]) that
//! writes several tickets' answers together, so a slow generation never
//! blocks HTTP and a burst is not answered one after another.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::Serialize;
use tokenizers::Tokenizer;

use super::InferenceError;
pub use super::batching::{BatchConfig, GenSnapshot, GenStats, GeneratorService};
use super::decoder::{Decoder, KvState, architecture};
use super::gguf_tokenizer::{self, SpecialTokens};
use crate::agents::troubleshooter::AnswerRequest;
pub use smart_support_kernels::rows::KvType;

type Result<T> = std::result::Result<T, InferenceError>;

/// How to sample; greedy (temperature 0) by default, so answers are reproducible.
#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub seed: u64,
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    /// Generation stops when the text ends with one of these (not included).
    pub stop: Vec<String>,
    /// Keep going past end-of-text tokens (benchmarks: a fixed token count).
    pub ignore_eos: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: None,
            seed: 42,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndOfText,
    StopString,
    MaxTokens,
    ContextFull,
    Finished,
}

/// One generation's text and its costs.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    /// Prompt submitted → first generated token.
    pub ttft_secs: f64,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_prompt_tokens: usize,
    pub stop: StopReason,
}

impl Generation {
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        rate(self.prompt_tokens, self.prefill_secs)
    }
    pub fn decode_tokens_per_sec(&self) -> f64 {
        // The first token comes from the prefill pass.
        rate(self.generated_tokens.saturating_sub(1), self.decode_secs)
    }
}

pub(super) fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// A chat turn for the template.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

pub struct GgufGenerator {
    name: String,
    facts: super::facts::ModelFacts,
    path: PathBuf,
    pub(super) decoder: Decoder,
    tokenizer: Tokenizer,
    special: SpecialTokens,
    chat_template: Option<String>,
    /// Token ids whose text holds a line break, ascending.
    newline_ids: Vec<u32>,
    /// Computed shared prompt prefixes (system text and worked example),
    /// most recently used first.
    prefixes: Vec<(Vec<u32>, KvState)>,
    /// Whether `answer` reuses them (on by default; off to measure).
    prefix_cache: bool,
}

/// Shared prefixes kept per model (one per worked example in use).
const MAX_PREFIXES: usize = 4;

impl std::fmt::Debug for GgufGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufGenerator")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> InferenceError {
    InferenceError::file(path, e)
}

impl GgufGenerator {
    /// Loads a `.gguf` file; `tokenizer.json` and `tokenizer_config.json`
    /// beside it take precedence over the GGUF's own tokenizer and template.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| file_err(path, e))?;
        let ct = gguf_file::Content::read(&mut file)
            .map_err(|e| file_err(path, format!("not a readable GGUF file: {e}")))?;
        let arch = architecture(&ct).map_err(|e| file_err(path, e))?;
        let decoder = Decoder::from_gguf(&ct, &mut file, device).map_err(|e| file_err(path, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let (mut tokenizer, special) =
            gguf_tokenizer::from_gguf(&ct).map_err(|e| file_err(path, e))?;
        let tj = dir.join("tokenizer.json");
        if tj.is_file() {
            tokenizer = Tokenizer::from_file(&tj).map_err(|e| file_err(&tj, e))?;
        }
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > decoder.config.vocab_size + 1024 {
            return Err(file_err(
                path,
                format!(
                    "tokenizer has {vocab} tokens but the model only {} embeddings",
                    decoder.config.vocab_size
                ),
            ));
        }
        let chat_template = template_beside(dir).or_else(|| {
            ct.metadata
                .get("tokenizer.chat_template")
                .and_then(|v| v.to_string().ok())
                .cloned()
        });
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("gguf")
            .to_string();
        let newline_ids = line_break_ids(&tokenizer);
        tracing::info!(model = %name, %arch, chat_template = chat_template.is_some(), "text generator loaded");
        Ok(GgufGenerator {
            facts: super::facts::gguf(path),
            name,
            path: path.to_path_buf(),
            decoder,
            tokenizer,
            special,
            chat_template,
            newline_ids,
            prefixes: Vec::new(),
            prefix_cache: true,
        })
    }

    /// Turns the prefix cache on or off (benchmarks compare the two); off
    /// also forgets what it holds.
    pub fn set_prefix_cache(&mut self, on: bool) {
        self.prefix_cache = on;
        if !on {
            self.prefixes.clear();
        }
    }

    /// How the decoder stores keys and values (f16 by default; f32 keeps
    /// candle's numbers). Forgets the cached prefixes, made in the old type.
    pub fn set_kv_type(&mut self, t: KvType) {
        self.decoder.set_kv_type(t);
        self.prefixes.clear();
    }

    /// How the decoder stores keys and values.
    pub fn kv_type(&self) -> KvType {
        self.decoder.kv_type()
    }

    /// A copy of the key/value state after `prefix`, when the cache holds it.
    /// An answer's prompt always runs in the same two pieces (the shared
    /// prefix, then the rest), so a result never depends on the cache.
    pub(super) fn cached_prefix(&mut self, prefix: &[u32]) -> Option<KvState> {
        if !self.prefix_cache {
            return None;
        }
        let i = self.prefixes.iter().position(|(t, _)| t == prefix)?;
        let entry = self.prefixes.remove(i);
        let state = entry.1.clone();
        self.prefixes.insert(0, entry);
        Some(state)
    }

    /// Keeps the state after a computed shared prefix (with the cache on).
    pub(super) fn keep_prefix(&mut self, prefix: &[u32], state: &KvState) {
        if !self.prefix_cache || self.prefixes.iter().any(|(t, _)| t == prefix) {
            return;
        }
        self.prefixes.insert(0, (prefix.to_vec(), state.clone()));
        self.prefixes.truncate(MAX_PREFIXES);
    }

    /// The token ids of the answer prompt for `prompt` (ending where the
    /// first step is written) and how many of them every ticket with the
    /// same system text and example shares (chat prompts only; a base
    /// model's few-shot prompt is left whole).
    pub(super) fn answer_ids(&self, prompt: &AnswerRequest) -> Result<(Vec<u32>, usize)> {
        let head = self.answer_prompt(prompt)?;
        let text_prompt = format!("{head}STEPS:\n1.");
        let add_special = self.special.add_bos
            && !self
                .special
                .bos
                .and_then(|b| self.tokenizer.id_to_token(b))
                .is_some_and(|b| text_prompt.starts_with(&b));
        let ids = self.encode(&text_prompt, add_special)?;
        self.check_room(ids.len())?;
        let shared = if self.chat_template.is_some() {
            self.shared_prefix(prompt, &ids, add_special)?
        } else {
            0
        };
        // A prompt that is all prefix runs whole.
        Ok((ids.clone(), if shared >= ids.len() { 0 } else { shared }))
    }

    /// How many leading tokens of `ids` (the prompt for `req`) every ticket
    /// with the same system text and example shares: the common start of
    /// `ids` and the same prompt with an empty user turn.
    fn shared_prefix(&self, req: &AnswerRequest, ids: &[u32], add_special: bool) -> Result<usize> {
        let blank = AnswerRequest {
            user: String::new(),
            few_shot: String::new(),
            ..req.clone()
        };
        let other = self.encode(&self.answer_prompt(&blank)?, add_special)?;
        Ok(ids.iter().zip(&other).take_while(|(a, b)| a == b).count())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Architecture, parameters, quantization, context and template.
    pub fn facts(&self) -> &super::facts::ModelFacts {
        &self.facts
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    pub fn context_length(&self) -> usize {
        self.decoder.config.context_length
    }

    /// Token ids of `text`, with the model's BOS when `special` is set and
    /// the model wants one.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| InferenceError::Model(format!("tokenizer: {e}")))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| InferenceError::Model(format!("tokenizer: {e}")))
    }

    /// Next-token logits after `ids` (from an empty cache).
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.decoder.reset();
        Ok(self.decoder.forward(ids)?.to_vec1::<f32>()?)
    }

    /// One decode step after what the cache holds; the next-token logits.
    pub fn step(&mut self, id: u32) -> Result<Vec<f32>> {
        if self.decoder.position() >= self.context_length() {
            return Err(InferenceError::InvalidInput("the context is full".into()));
        }
        Ok(self.decoder.forward(&[id])?.to_vec1::<f32>()?)
    }

    /// Tokens in the cache.
    pub fn position(&self) -> usize {
        self.decoder.position()
    }

    /// The chat template applied to `messages`, ending where the assistant speaks.
    pub fn render_chat(&self, messages: &[Message]) -> Result<Option<String>> {
        let Some(tpl) = &self.chat_template else {
            return Ok(None);
        };
        let token = |id: Option<u32>| {
            id.and_then(|i| self.tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        chat_prompt(
            tpl,
            messages,
            &token(self.special.bos),
            &token(self.special.eos),
            time::OffsetDateTime::now_utc(),
        )
        .map(Some)
    }

    /// Greedy (or sampled) completion of a raw prompt, no template.
    pub fn complete(&mut self, prompt: &str, params: &GenerationParams) -> Result<Generation> {
        let ids = self.encode(prompt, true)?;
        self.generate_ids(&ids, params)
    }

    /// The prompt must leave room for at least one new token.
    fn check_room(&self, prompt: usize) -> Result<()> {
        if prompt == 0 {
            return Err(InferenceError::InvalidInput("empty prompt".into()));
        }
        let ctx = self.context_length();
        if prompt >= ctx {
            return Err(InferenceError::InvalidInput(format!(
                "prompt of {prompt} tokens does not fit the model's context of {ctx}"
            )));
        }
        Ok(())
    }

    pub fn generate_ids(&mut self, ids: &[u32], params: &GenerationParams) -> Result<Generation> {
        self.check_room(ids.len())?;
        let started = Instant::now();
        self.decoder.reset();
        let mut logits = self.decoder.forward(ids)?;
        let prefill_secs = started.elapsed().as_secs_f64();
        let mut sampler = sampler(params);
        let mut context: Vec<u32> = ids.to_vec();
        let mut out: Vec<u32> = Vec::new();
        let mut ttft = 0.0;
        let decode_start = Instant::now();
        let mut stop = StopReason::MaxTokens;
        let mut text = String::new();
        while out.len() < params.max_new_tokens {
            if self.decoder.position() >= self.context_length() {
                stop = StopReason::ContextFull;
                break;
            }
            let next = self.pick(&logits.to_vec1::<f32>()?, &context, params, &mut sampler)?;
            if out.is_empty() {
                ttft = started.elapsed().as_secs_f64();
            }
            if !params.ignore_eos && self.special.stop.contains(&next) {
                stop = StopReason::EndOfText;
                break;
            }
            out.push(next);
            context.push(next);
            // Decoding every step is only needed to watch for stop strings.
            if !params.stop.is_empty() {
                let so_far = self.decode(&out)?;
                if let Some(cut) = stop_at(&so_far, &params.stop) {
                    text = so_far[..cut].to_string();
                    stop = StopReason::StopString;
                    break;
                }
            }
            if out.len() == params.max_new_tokens {
                break;
            }
            logits = self.decoder.forward(&[next])?;
        }
        if stop != StopReason::StopString {
            text = self.decode(&out)?;
        }
        Ok(Generation {
            text,
            prompt_tokens: ids.len(),
            generated_tokens: out.len(),
            prefill_secs,
            decode_secs: decode_start.elapsed().as_secs_f64(),
            ttft_secs: ttft,
            cached_prompt_tokens: 0,
            stop,
        })
    }

    /// The next token: the repeat penalty on the recent context (as
    /// candle's `apply_repeat_penalty`), then the sampler.
    pub(super) fn pick(
        &self,
        logits: &[f32],
        context: &[u32],
        params: &GenerationParams,
        sampler: &mut LogitsProcessor,
    ) -> Result<u32> {
        let mut v = logits.to_vec();
        if params.repeat_penalty != 1.0 && params.repeat_last_n > 0 {
            let from = context.len().saturating_sub(params.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &id in &context[from..] {
                if !seen.insert(id) {
                    continue;
                }
                if let Some(x) = v.get_mut(id as usize) {
                    if *x >= 0.0 {
                        *x /= params.repeat_penalty;
                    } else {
                        *x *= params.repeat_penalty;
                    }
                }
            }
        }
        let n = v.len();
        Ok(sampler.sample(&Tensor::from_vec(v, n, &Device::Cpu)?)?)
    }

    /// The prompt for a structured answer: the chat template when the model
    /// has one, the few-shot completion prompt otherwise.
    pub fn answer_prompt(&self, prompt: &AnswerRequest) -> Result<String> {
        let turn = |role: &str, content: &str| Message {
            role: role.into(),
            content: content.into(),
        };
        let mut messages = vec![turn("system", &prompt.system)];
        if let Some((user, answer)) = &prompt.example {
            messages.push(turn("user", user));
            messages.push(turn("assistant", answer));
        }
        messages.push(turn("user", &prompt.user));
        Ok(match self.render_chat(&messages)? {
            Some(chat) => chat,
            None => prompt.few_shot.clone(),
        })
    }

    /// Masks line breaks and end tokens (a line may not be empty).
    pub(super) fn ban_line_end(&self, logits: &mut [f32]) {
        for &i in self.newline_ids.iter().chain(&self.special.stop) {
            if let Some(x) = logits.get_mut(i as usize) {
                *x = f32::NEG_INFINITY;
            }
        }
    }

    pub(super) fn is_line_break(&self, id: u32) -> bool {
        self.newline_ids.binary_search(&id).is_ok()
    }

    pub(super) fn is_stop(&self, id: u32) -> bool {
        self.special.stop.contains(&id)
    }

    /// Whether the model would rather start `a` than `b` here.
    pub(super) fn prefers(&self, logits: &[f32], a: &str, b: &str) -> Result<bool> {
        let first = |s: &str| -> Result<u32> {
            self.encode(s, false)?
                .first()
                .copied()
                .ok_or_else(|| InferenceError::Model(format!("'{s}' encodes to no tokens")))
        };
        let (ia, ib) = (first(a)? as usize, first(b)? as usize);
        let at = |i: usize| logits.get(i).copied().unwrap_or(f32::NEG_INFINITY);
        Ok(at(ia) >= at(ib))
    }
}

/// Ids of tokens whose text holds a line break: a real `\n`, GPT-2's byte
/// spelling `Ċ`, or SentencePiece's byte fallback `<0x0A>`.
fn line_break_ids(tokenizer: &Tokenizer) -> Vec<u32> {
    (0..tokenizer.get_vocab_size(true) as u32)
        .filter(|&id| {
            tokenizer
                .id_to_token(id)
                .is_some_and(|t| t.contains('\n') || t.contains('\u{10a}') || t == "<0x0A>")
        })
        .collect()
}

pub(super) fn sampler(params: &GenerationParams) -> LogitsProcessor {
    let sampling = if params.temperature <= 0.0 {
        Sampling::ArgMax
    } else {
        match params.top_p {
            Some(p) if p > 0.0 && p < 1.0 => Sampling::TopP {
                p,
                temperature: params.temperature,
            },
            _ => Sampling::All {
                temperature: params.temperature,
            },
        }
    };
    LogitsProcessor::from_sampling(params.seed, sampling)
}

/// Where the earliest stop string starts in `text`, if one occurs.
fn stop_at(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

fn template_beside(dir: &Path) -> Option<String> {
    let raw = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&raw).ok()?;
    v.get("chat_template")?.as_str().map(str::to_string)
}

/// Renders a Hugging Face chat template (Jinja) with minijinja, today.
pub fn render_template(tpl: &str, messages: &[Message], bos: &str, eos: &str) -> Result<String> {
    render_template_at(tpl, messages, bos, eos, time::OffsetDateTime::now_utc())
}

/// Renders a chat template as transformers' `apply_chat_template` does
/// (`add_generation_prompt`, `raise_exception`, `strftime_now` reading
/// `now`: Llama 3.2 prints today's date), checked against it on each
/// family's template in `tests/families.rs`.
pub fn render_template_at(
    tpl: &str,
    messages: &[Message],
    bos: &str,
    eos: &str,
    now: time::OffsetDateTime,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_function("strftime_now", move |fmt: String| strftime(&fmt, now));
    env.add_template("chat", tpl)
        .map_err(|e| InferenceError::Config(format!("chat template: {e}")))?;
    let t = env
        .get_template("chat")
        .map_err(|e| InferenceError::Config(format!("chat template: {e}")))?;
    t.render(minijinja::context! {
        messages => minijinja::Value::from(minijinja::value::Serde(messages)),
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| InferenceError::Config(format!("chat template: {e}")))
}

/// The chat prompt for `messages`: the template's rendering, or, when the
/// template refuses a system turn (Gemma's raise "System role not
/// supported"), the rendering with the system text opening the first user
/// turn, as Gemma 3's own template does.
pub fn chat_prompt(
    tpl: &str,
    messages: &[Message],
    bos: &str,
    eos: &str,
    now: time::OffsetDateTime,
) -> Result<String> {
    let first = render_template_at(tpl, messages, bos, eos, now);
    let [system, user, rest @ ..] = messages else {
        return first;
    };
    if first.is_ok() || system.role != "system" || user.role != "user" {
        return first;
    }
    let mut folded = vec![Message {
        role: "user".into(),
        content: format!("{}\n\n{}", system.content, user.content),
    }];
    folded.extend_from_slice(rest);
    render_template_at(tpl, &folded, bos, eos, now).or(first)
}

/// Python's `strftime` for the directives chat templates use; any other
/// directive is kept as written.
fn strftime(fmt: &str, t: time::OffsetDateTime) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let month = t.month().to_string();
        let day = t.weekday().to_string();
        match chars.next() {
            Some('Y') => out.push_str(&t.year().to_string()),
            Some('y') => out.push_str(&format!("{:02}", t.year().rem_euclid(100))),
            Some('m') => out.push_str(&format!("{:02}", u8::from(t.month()))),
            Some('d') => out.push_str(&format!("{:02}", t.day())),
            Some('e') => out.push_str(&format!("{:>2}", t.day())),
            Some('B') => out.push_str(&month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(&day),
            Some('a') => out.push_str(&day[..3]),
            Some('H') => out.push_str(&format!("{:02}", t.hour())),
            Some('M') => out.push_str(&format!("{:02}", t.minute())),
            Some('S') => out.push_str(&format!("{:02}", t.second())),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_writes_what_python_writes() {
        let t = time::macros::datetime!(2026-03-05 07:08:09 UTC);
        assert_eq!(strftime("%d %b %Y", t), "05 Mar 2026");
        assert_eq!(
            strftime("%A %B %e, %y %H:%M:%S %% %Q", t),
            "Thursday March  5, 26 07:08:09 % %Q"
        );
    }
}
