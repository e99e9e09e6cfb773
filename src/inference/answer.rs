//! A structured answer as a resumable run, so that several tickets' answers
//! are written together (continuous batching).
//!
//! [`GgufGenerator::answer`] used to be one loop that called the decoder
//! for each token. Here the same steps are a state machine: a run says which
//! tokens it needs run next ([`AnswerRun::feed`]), and [`GgufGenerator::step_runs`]
//! runs the next tokens of every run in one decoder pass and hands each run
//! its logits. Each run has its own key/value cache, sampler, place in the
//! answer format and token budget; a run joins at any pass and leaves when
//! it is done. One run alone is exactly [`GgufGenerator::answer`], and on
//! the row path a row's numbers never depend on the other rows of a pass,
//! so an answer written in a batch equals the answer written alone, token
//! for token (tested in `tests/generator.rs`).
//!
//! The format, with constrained decoding:
//!
//! ```text
//! STEPS:
//! 1. …
//! MESSAGE: …
//! RESOLVED: yes|no
//! ```
//!
//! The model writes each line freely; at each line break only the
//! continuations the format allows compete (the next step number or
//! `MESSAGE:`; then `yes` or `no`).

use std::time::Instant;

use candle_transformers::generation::LogitsProcessor;

use super::InferenceError;
use super::decoder::{KvState, Seq};
use super::generator::{Generation, GenerationParams, GgufGenerator, StopReason, sampler};
use crate::agents::troubleshooter::AnswerRequest;

type Result<T> = std::result::Result<T, InferenceError>;

/// Longest step and message lines of a structured answer, in tokens.
const STEP_TOKENS: usize = 60;
const MESSAGE_TOKENS: usize = 80;
/// Steps a generated answer may have (validation allows up to 8; small
/// models ramble past five).
const MAX_STEPS: usize = 5;
/// Most prompt tokens one run feeds in one pass, so that a long prompt
/// joining the batch delays the others' next tokens by a bounded amount.
pub const PROMPT_CHUNK: usize = 256;
/// Most prompt rows in one pass, summed over the runs (whole chunks; one
/// chunk always runs).
pub const PASS_PROMPT_TOKENS: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Step,
    Message,
}

impl LineKind {
    fn max_tokens(self) -> usize {
        match self {
            LineKind::Step => STEP_TOKENS,
            LineKind::Message => MESSAGE_TOKENS,
        }
    }
}

/// Where a run is; each state names what its next logits are for.
enum Phase {
    /// Running the shared prompt prefix; then the rest of the prompt.
    Prefix {
        rest: Vec<u32>,
    },
    /// Running the (rest of the) prompt; then the first step's line.
    Prompt,
    /// A line's token `.0` was just run.
    Typed(LineKind, u32),
    /// A line was cut (end token or length) and a line break forced.
    Cut(LineKind, String),
    /// `k.` (more steps) or `MESSAGE:` was forced.
    Forced {
        more: bool,
    },
    /// `RESOLVED:` was forced; its logits choose yes or no.
    Resolved,
    Done(Generation),
}

/// One answer being written.
pub struct AnswerRun {
    state: KvState,
    /// Tokens to run, and how many of them have run.
    feed: Vec<u32>,
    fed: usize,
    phase: Phase,
    /// Prompt and every token run since (for the repeat penalty).
    context: Vec<u32>,
    sampler: LogitsProcessor,
    params: GenerationParams,
    /// The shared prefix's tokens, kept for the cache once computed.
    prefix: Vec<u32>,
    line: Vec<u32>,
    steps: Vec<String>,
    message: String,
    generated: usize,
    budget: usize,
    prompt_tokens: usize,
    cached_prompt_tokens: usize,
    started: Instant,
    prefill_secs: f64,
    first_token_at: Option<Instant>,
}

impl AnswerRun {
    /// The tokens this run needs in the next pass (at most [`PROMPT_CHUNK`]).
    fn next_chunk(&self) -> &[u32] {
        let end = (self.fed + PROMPT_CHUNK).min(self.feed.len());
        &self.feed[self.fed..end]
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done(_))
    }

    /// The finished answer (once [`AnswerRun::is_done`]).
    pub fn result(self) -> Option<Generation> {
        match self.phase {
            Phase::Done(g) => Some(g),
            _ => None,
        }
    }

    /// Positions its cache holds or will hold by the end of its budget.
    pub fn planned_tokens(&self) -> usize {
        self.prompt_tokens + self.budget + 16
    }

    /// Bytes its key/value cache holds now.
    pub fn kv_bytes(&self) -> usize {
        self.state.bytes()
    }

    fn force(&mut self, g: &GgufGenerator, text: &str) -> Result<()> {
        let ids = g.encode(text, false)?;
        if ids.is_empty() {
            return Err(InferenceError::Model(format!(
                "'{text}' encodes to no tokens"
            )));
        }
        self.context.extend_from_slice(&ids);
        self.set_feed(ids);
        Ok(())
    }

    fn set_feed(&mut self, ids: Vec<u32>) {
        self.feed = ids;
        self.fed = 0;
    }
}

impl GgufGenerator {
    /// Starts an answer to `prompt`: its prompt's shared start comes from
    /// the prefix cache when it holds it.
    pub fn start_answer(
        &mut self,
        prompt: &AnswerRequest,
        params: &GenerationParams,
    ) -> Result<AnswerRun> {
        let started = Instant::now();
        let (ids, shared) = self.answer_ids(prompt)?;
        let cached = (shared > 0)
            .then(|| self.cached_prefix(&ids[..shared]))
            .flatten();
        let (state, phase, feed, cached_prompt_tokens) = match cached {
            Some(state) => (state, Phase::Prompt, ids[shared..].to_vec(), shared),
            None if shared > 0 => (
                KvState::default(),
                Phase::Prefix {
                    rest: ids[shared..].to_vec(),
                },
                ids[..shared].to_vec(),
                0,
            ),
            None => (KvState::default(), Phase::Prompt, ids.clone(), 0),
        };
        Ok(AnswerRun {
            state,
            feed,
            fed: 0,
            phase,
            prefix: ids[..shared].to_vec(),
            prompt_tokens: ids.len(),
            context: ids,
            sampler: sampler(params),
            params: params.clone(),
            line: Vec::new(),
            steps: Vec::new(),
            message: String::new(),
            generated: 0,
            budget: params.max_new_tokens.max(16),
            cached_prompt_tokens,
            started,
            prefill_secs: 0.0,
            first_token_at: None,
        })
    }

    /// One decoder pass over every unfinished run's next tokens, then each
    /// run whose tokens have all run takes its next step. A run that fails
    /// after its pass is returned with its error (the others go on); an
    /// error of the pass itself fails them all.
    pub fn step_runs(&mut self, runs: &mut [AnswerRun]) -> Result<Vec<(usize, InferenceError)>> {
        let live = Self::this_pass(runs);
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let chunks: Vec<Vec<u32>> = live
            .iter()
            .map(|&i| runs[i].next_chunk().to_vec())
            .collect();
        let logits = {
            let mut states: Vec<KvState> = live
                .iter()
                .map(|&i| std::mem::take(&mut runs[i].state))
                .collect();
            let mut seqs: Vec<Seq<'_>> = states
                .iter_mut()
                .zip(&chunks)
                .map(|(state, tokens)| Seq { state, tokens })
                .collect();
            let out = self.decoder.forward_batch(&mut seqs);
            for (&i, state) in live.iter().zip(states) {
                runs[i].state = state;
            }
            out?
        };
        let mut failed = Vec::new();
        for ((&i, chunk), logits) in live.iter().zip(&chunks).zip(logits) {
            let run = &mut runs[i];
            run.fed += chunk.len();
            if run.fed < run.feed.len() {
                continue;
            }
            if let Err(e) = self.advance(run, logits) {
                failed.push((i, e));
            }
        }
        Ok(failed)
    }

    /// The runs in the next pass: every unfinished run writing its answer,
    /// and prompt chunks, in arrival order, up to [`PASS_PROMPT_TOKENS`]
    /// rows (always at least one). A run's chunks are the same whether it
    /// runs alone or not; a burst's prompts then take turns while the
    /// answers already started keep going.
    fn this_pass(runs: &[AnswerRun]) -> Vec<usize> {
        let mut prompt_rows = 0;
        let mut live = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            if run.is_done() {
                continue;
            }
            let chunk = run.next_chunk().len();
            if matches!(run.phase, Phase::Prefix { .. } | Phase::Prompt) {
                if prompt_rows > 0 && prompt_rows + chunk > PASS_PROMPT_TOKENS {
                    continue;
                }
                prompt_rows += chunk;
            }
            live.push(i);
        }
        live
    }

    /// Writes a troubleshooting answer in the format above, alone.
    pub fn answer(
        &mut self,
        prompt: &AnswerRequest,
        params: &GenerationParams,
    ) -> Result<Generation> {
        let mut all = self.answer_all(std::slice::from_ref(prompt), params)?;
        all.pop()
            .ok_or_else(|| InferenceError::Model("no answer".into()))?
    }

    /// Writes the answers to `prompts` together, all runs in each pass.
    pub fn answer_all(
        &mut self,
        prompts: &[AnswerRequest],
        params: &GenerationParams,
    ) -> Result<Vec<Result<Generation>>> {
        let mut runs = Vec::with_capacity(prompts.len());
        let mut errors: Vec<Option<InferenceError>> = Vec::new();
        for p in prompts {
            runs.push(self.start_answer(p, params)?);
            errors.push(None);
        }
        while runs.iter().any(|r| !r.is_done()) {
            for (i, e) in self.step_runs(&mut runs)? {
                errors[i] = Some(e);
                runs[i].phase = Phase::Done(empty_generation());
            }
        }
        Ok(runs
            .into_iter()
            .zip(errors)
            .map(|(r, e)| match e {
                Some(e) => Err(e),
                None => r
                    .result()
                    .ok_or_else(|| InferenceError::Model("unfinished answer".into())),
            })
            .collect())
    }

    /// The run's next step, given the logits after its last tokens.
    fn advance(&mut self, run: &mut AnswerRun, logits: Vec<f32>) -> Result<()> {
        match std::mem::replace(&mut run.phase, Phase::Resolved) {
            Phase::Prefix { rest } => {
                self.keep_prefix(&run.prefix, &run.state);
                run.set_feed(rest);
                run.phase = Phase::Prompt;
                Ok(())
            }
            Phase::Prompt => {
                run.prefill_secs = run.started.elapsed().as_secs_f64();
                self.line_token(run, LineKind::Step, logits)
            }
            Phase::Typed(kind, token) => {
                if self.is_line_break(token) {
                    let text = self.decode(&run.line)?;
                    let cut = text.find('\n').unwrap_or(text.len());
                    return self.end_line(run, kind, text[..cut].to_string(), &logits);
                }
                let full = run.state.position() + 8 >= self.context_length();
                if run.line.len() >= kind.max_tokens() || full {
                    return self.cut_line(run, kind);
                }
                self.line_token(run, kind, logits)
            }
            Phase::Cut(kind, text) => self.end_line(run, kind, text, &logits),
            Phase::Forced { more } => {
                let kind = if more {
                    LineKind::Step
                } else {
                    LineKind::Message
                };
                self.line_token(run, kind, logits)
            }
            Phase::Resolved => {
                let resolved = self.prefers(&logits, " yes", " no")?;
                run.phase = Phase::Done(self.finish(run, resolved));
                Ok(())
            }
            done @ Phase::Done(_) => {
                run.phase = done;
                Ok(())
            }
        }
    }

    /// Picks a line's next token (the first may not end the line).
    fn line_token(&self, run: &mut AnswerRun, kind: LineKind, mut logits: Vec<f32>) -> Result<()> {
        if run.line.is_empty() {
            self.ban_line_end(&mut logits);
        }
        let next = self.pick(&logits, &run.context, &run.params, &mut run.sampler)?;
        if self.is_stop(next) {
            return self.cut_line(run, kind);
        }
        if run.generated == 0 {
            run.first_token_at = Some(Instant::now());
        }
        run.generated += 1;
        run.context.push(next);
        run.line.push(next);
        run.set_feed(vec![next]);
        run.phase = Phase::Typed(kind, next);
        Ok(())
    }

    /// Ends a line without a line break of its own: writes one so the
    /// format continues.
    fn cut_line(&self, run: &mut AnswerRun, kind: LineKind) -> Result<()> {
        let text = self.decode(&run.line)?;
        run.force(self, "\n")?;
        run.phase = Phase::Cut(kind, text);
        Ok(())
    }

    /// A finished line: the next step number or `MESSAGE:` after a step;
    /// `RESOLVED:` after the message.
    fn end_line(
        &self,
        run: &mut AnswerRun,
        kind: LineKind,
        text: String,
        logits: &[f32],
    ) -> Result<()> {
        run.line.clear();
        let line = text.trim().to_string();
        if kind == LineKind::Message {
            run.message = line;
            run.force(self, "RESOLVED:")?;
            run.phase = Phase::Resolved;
            return Ok(());
        }
        // A repeated step means the model is looping: end the list there.
        let repeat = run.steps.iter().any(|s| s.eq_ignore_ascii_case(&line));
        if !repeat {
            run.steps.push(line);
        }
        let k = run.steps.len() + 1;
        let more = !repeat
            && run.steps.len() < MAX_STEPS
            && run.generated + STEP_TOKENS < run.budget
            && self.prefers(logits, &format!("{k}."), "MESSAGE:")?;
        let forced = if more {
            format!("{k}.")
        } else {
            "MESSAGE:".to_string()
        };
        run.force(self, &forced)?;
        run.phase = Phase::Forced { more };
        Ok(())
    }

    fn finish(&self, run: &AnswerRun, resolved: bool) -> Generation {
        let total = run.started.elapsed().as_secs_f64();
        // The first token picked; a model that ends at once has none, and
        // its prompt time stands in.
        let ttft = run.first_token_at.map_or(run.prefill_secs, |t| {
            t.duration_since(run.started).as_secs_f64()
        });
        let mut text = String::from("STEPS:\n");
        for (i, s) in run.steps.iter().enumerate() {
            text.push_str(&format!("{}. {s}\n", i + 1));
        }
        text.push_str(&format!(
            "MESSAGE: {}\nRESOLVED: {}",
            run.message,
            if resolved { "yes" } else { "no" }
        ));
        Generation {
            text,
            prompt_tokens: run.prompt_tokens,
            generated_tokens: run.generated,
            prefill_secs: run.prefill_secs,
            decode_secs: total - run.prefill_secs,
            ttft_secs: ttft,
            cached_prompt_tokens: run.cached_prompt_tokens,
            stop: StopReason::Finished,
        }
    }
}

fn empty_generation() -> Generation {
    Generation {
        text: String::new(),
        prompt_tokens: 0,
        generated_tokens: 0,
        prefill_secs: 0.0,
        decode_secs: 0.0,
        ttft_secs: 0.0,
        cached_prompt_tokens: 0,
        stop: StopReason::Finished,
    }
}
