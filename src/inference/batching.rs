//! The generator's worker: continuous batching of answers.
//!
//! One thread owns the model. Requests wait in a bounded queue; the worker
//! keeps up to `max_sequences` answers in flight ([`AnswerRun`]s, each with
//! its own key/value cache), and every decoder pass advances all of them: a
//! request that arrives joins at the next pass, a finished answer leaves at
//! once. On two cores a pass over eight sequences costs little more than a
//! pass over one (the weights are read once for all rows), so a burst of
//! tickets is answered together instead of one after another.
//!
//! Admission is bounded twice: by the number of sequences and by a memory
//! budget for their caches (each run is counted at the size its prompt and
//! token budget can reach). One run is always admitted, whatever its size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

use super::InferenceError;
use super::answer::AnswerRun;
use super::generator::{Generation, GenerationParams, GgufGenerator, rate};
use super::queue::QueueSnapshot;
use crate::agents::EngineError;
use crate::agents::troubleshooter::{AnswerRequest, GenerationRecord, TextGenerator};

type Result<T> = std::result::Result<T, InferenceError>;

/// Answers written together, at most (`--gen-max-sequences`).
pub const DEFAULT_MAX_SEQUENCES: usize = 8;
/// Memory for the answers' key/value caches, MiB (`--gen-kv-budget-mb`).
pub const DEFAULT_KV_BUDGET_MB: usize = 512;
/// Requests the queue holds (`--gen-queue-capacity`).
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;

/// How much the worker takes on.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Requests waiting, at most; submitters wait for room beyond it.
    pub capacity: usize,
    /// Answers in flight together.
    pub max_sequences: usize,
    /// Bytes for their key/value caches.
    pub kv_budget_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            capacity: DEFAULT_QUEUE_CAPACITY,
            max_sequences: DEFAULT_MAX_SEQUENCES,
            kv_budget_bytes: DEFAULT_KV_BUDGET_MB << 20,
        }
    }
}

/// Cumulative generation figures for `/health` and `/metrics`.
#[derive(Default)]
pub struct GenStats {
    pub requests: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub prefill_us: AtomicU64,
    pub decode_us: AtomicU64,
    pub ttft_us: AtomicU64,
    pub last_decode_tps_milli: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    /// Answers in flight now, and their caches' bytes.
    pub active_sequences: AtomicU64,
    pub kv_bytes: AtomicU64,
    /// Decoder passes, and the sequences they ran (summed, last, largest).
    pub passes: AtomicU64,
    pub pass_sequences: AtomicU64,
    pub last_pass_sequences: AtomicU64,
    pub max_pass_sequences: AtomicU64,
    /// Submission to answer, summed over answered requests.
    pub latency_us: AtomicU64,
    pub busy_us: AtomicU64,
    pub errors: AtomicU64,
}

impl GenStats {
    fn answered(&self, g: &Generation, waited: Duration) {
        let add = |a: &AtomicU64, v: u64| a.fetch_add(v, Ordering::Relaxed);
        add(&self.requests, 1);
        add(&self.prompt_tokens, g.prompt_tokens as u64);
        add(&self.generated_tokens, g.generated_tokens as u64);
        add(&self.prefill_us, (g.prefill_secs * 1e6) as u64);
        add(&self.decode_us, (g.decode_secs * 1e6) as u64);
        add(&self.ttft_us, (g.ttft_secs * 1e6) as u64);
        add(&self.cached_prompt_tokens, g.cached_prompt_tokens as u64);
        add(&self.latency_us, waited.as_micros() as u64);
        self.last_decode_tps_milli
            .store((g.decode_tokens_per_sec() * 1e3) as u64, Ordering::Relaxed);
    }

    fn pass(&self, sequences: usize, kv_bytes: usize, took: Duration) {
        let n = sequences as u64;
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.pass_sequences.fetch_add(n, Ordering::Relaxed);
        self.last_pass_sequences.store(n, Ordering::Relaxed);
        self.max_pass_sequences.fetch_max(n, Ordering::Relaxed);
        self.active_sequences.store(n, Ordering::Relaxed);
        self.kv_bytes.store(kv_bytes as u64, Ordering::Relaxed);
        self.busy_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GenSnapshot {
    pub model: String,
    pub facts: super::facts::ModelFacts,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub prefill_tokens_per_sec: f64,
    pub decode_tokens_per_sec: f64,
    pub last_decode_tokens_per_sec: f64,
    pub avg_ttft_ms: f64,
    /// Prompt tokens taken from the shared-prefix cache instead of computed.
    pub cached_prompt_tokens: u64,
    /// Answers being written now, and the most written together.
    pub active_sequences: u64,
    pub max_sequences: usize,
    /// How the key/value caches store their rows (`f16` or `f32`).
    pub kv_cache_type: &'static str,
    /// Bytes the active answers' key/value caches take, and their budget.
    pub kv_cache_bytes: u64,
    pub kv_budget_bytes: usize,
    /// Sequences per decoder pass: the last, the largest, the average.
    pub last_batch_sequences: u64,
    pub max_batch_sequences: u64,
    pub avg_batch_sequences: f64,
    pub queue: QueueSnapshot,
}

struct Job {
    request: AnswerRequest,
    reply: oneshot::Sender<Result<Generation>>,
    enqueued: Instant,
}

/// The generator on its worker thread; cheap to clone.
#[derive(Clone)]
pub struct GeneratorService {
    name: String,
    facts: super::facts::ModelFacts,
    kv_cache_type: &'static str,
    tx: flume::Sender<Job>,
    stats: Arc<GenStats>,
    config: BatchConfig,
}

impl GeneratorService {
    pub fn start(
        model: GgufGenerator,
        params: GenerationParams,
        config: BatchConfig,
    ) -> Result<Self> {
        let config = BatchConfig {
            capacity: config.capacity.max(1),
            max_sequences: config.max_sequences.max(1),
            ..config
        };
        let name = model.name().to_string();
        let facts = model.facts().clone();
        let kv_cache_type = model.kv_type().name();
        let stats = Arc::new(GenStats::default());
        let (tx, rx) = flume::bounded(config.capacity);
        let worker = Worker {
            model,
            params,
            config,
            stats: stats.clone(),
            runs: Vec::new(),
            jobs: Vec::new(),
            held: None,
        };
        std::thread::Builder::new()
            .name("generator-model".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| {
                InferenceError::Model(format!("cannot start the generator worker: {e}"))
            })?;
        Ok(GeneratorService {
            name,
            kv_cache_type,
            facts,
            tx,
            stats,
            config,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Blocking: waits for room and for the answer (ticket processing).
    pub fn answer_blocking(&self, request: AnswerRequest) -> Result<Generation> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            request,
            reply,
            enqueued: Instant::now(),
        };
        let stopped = || InferenceError::Stopped("generator");
        self.tx.send(job).map_err(|_| stopped())?;
        rx.blocking_recv().map_err(|_| stopped())?
    }

    pub fn snapshot(&self) -> GenSnapshot {
        let s = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (requests, passes) = (l(&s.requests), l(&s.passes));
        let per = |total: u64, n: u64| if n == 0 { 0.0 } else { total as f64 / n as f64 };
        GenSnapshot {
            model: self.name.clone(),
            facts: self.facts.clone(),
            requests,
            prompt_tokens: l(&s.prompt_tokens),
            generated_tokens: l(&s.generated_tokens),
            prefill_tokens_per_sec: rate(
                l(&s.prompt_tokens) as usize,
                l(&s.prefill_us) as f64 / 1e6,
            ),
            decode_tokens_per_sec: rate(
                l(&s.generated_tokens) as usize,
                l(&s.decode_us) as f64 / 1e6,
            ),
            last_decode_tokens_per_sec: l(&s.last_decode_tps_milli) as f64 / 1e3,
            avg_ttft_ms: per(l(&s.ttft_us), requests) / 1e3,
            cached_prompt_tokens: l(&s.cached_prompt_tokens),
            active_sequences: l(&s.active_sequences),
            max_sequences: self.config.max_sequences,
            kv_cache_type: self.kv_cache_type,
            kv_cache_bytes: l(&s.kv_bytes),
            kv_budget_bytes: self.config.kv_budget_bytes,
            last_batch_sequences: l(&s.last_pass_sequences),
            max_batch_sequences: l(&s.max_pass_sequences),
            avg_batch_sequences: per(l(&s.pass_sequences), passes),
            queue: QueueSnapshot {
                name: "generator",
                depth: self.tx.len(),
                capacity: self.config.capacity,
                jobs: requests,
                items: requests,
                batches: passes,
                forward_passes: passes,
                last_batch_items: l(&s.last_pass_sequences),
                max_batch_items: l(&s.max_pass_sequences),
                avg_batch_items: per(l(&s.pass_sequences), passes),
                avg_latency_ms: per(l(&s.latency_us), requests) / 1e3,
                busy_ms: l(&s.busy_us) as f64 / 1e3,
                errors: l(&s.errors),
            },
        }
    }
}

/// The worker thread's state: the runs in flight and their requests.
struct Worker {
    model: GgufGenerator,
    params: GenerationParams,
    config: BatchConfig,
    stats: Arc<GenStats>,
    runs: Vec<AnswerRun>,
    jobs: Vec<Job>,
    /// A started run that did not fit the memory budget yet.
    held: Option<(AnswerRun, Job)>,
}

impl Worker {
    fn run(mut self, rx: flume::Receiver<Job>) {
        while self.admit(&rx) {
            let started = Instant::now();
            let n = self.runs.len();
            let outcome = self.model.step_runs(&mut self.runs);
            let kv: usize = self.runs.iter().map(AnswerRun::kv_bytes).sum();
            self.stats.pass(n, kv, started.elapsed());
            match outcome {
                Ok(failed) => {
                    // Highest index first, so that removing one leaves the others' places.
                    for (i, e) in failed.into_iter().rev() {
                        self.fail(i, e);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, sequences = n, "generator pass failed");
                    while !self.runs.is_empty() {
                        self.fail(0, InferenceError::Model(e.to_string()));
                    }
                }
            }
            self.reply_finished();
        }
    }

    /// Takes new requests while there is room; blocks when idle. False once
    /// every sender is gone and nothing is left to do.
    fn admit(&mut self, rx: &flume::Receiver<Job>) -> bool {
        let per_token = self.model.decoder.kv_bytes_per_token();
        loop {
            if self.runs.len() >= self.config.max_sequences {
                return true;
            }
            let (run, job) = match self.held.take() {
                Some(held) => held,
                None => {
                    let job = if self.runs.is_empty() {
                        match rx.recv() {
                            Ok(job) => job,
                            Err(_) => return false,
                        }
                    } else {
                        match rx.try_recv() {
                            Ok(job) => job,
                            Err(_) => return true,
                        }
                    };
                    if job.reply.is_closed() {
                        continue;
                    }
                    match self.model.start_answer(&job.request, &self.params) {
                        Ok(run) => (run, job),
                        Err(e) => {
                            self.stats.errors.fetch_add(1, Ordering::Relaxed);
                            let _ = job.reply.send(Err(e));
                            continue;
                        }
                    }
                }
            };
            let planned: usize = self
                .runs
                .iter()
                .chain(std::iter::once(&run))
                .map(AnswerRun::planned_tokens)
                .sum();
            if !self.runs.is_empty() && planned * per_token > self.config.kv_budget_bytes {
                self.held = Some((run, job));
                return true;
            }
            self.runs.push(run);
            self.jobs.push(job);
        }
    }

    fn fail(&mut self, i: usize, e: InferenceError) {
        self.runs.swap_remove(i);
        let job = self.jobs.swap_remove(i);
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let _ = job.reply.send(Err(e));
    }

    fn reply_finished(&mut self) {
        let mut i = 0;
        while i < self.runs.len() {
            if !self.runs[i].is_done() {
                i += 1;
                continue;
            }
            let run = self.runs.swap_remove(i);
            let job = self.jobs.swap_remove(i);
            match run.result() {
                Some(g) => {
                    self.stats.answered(&g, job.enqueued.elapsed());
                    let _ = job.reply.send(Ok(g));
                }
                None => {
                    let _ = job
                        .reply
                        .send(Err(InferenceError::Model("unfinished answer".into())));
                }
            }
        }
        self.stats
            .active_sequences
            .store(self.runs.len() as u64, Ordering::Relaxed);
    }
}

impl TextGenerator for GeneratorService {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn generate(
        &self,
        request: &AnswerRequest,
    ) -> std::result::Result<GenerationRecord, EngineError> {
        let started = Instant::now();
        let g = self
            .answer_blocking(request.clone())
            .map_err(|e| EngineError {
                engine: self.name.clone(),
                message: e.to_string(),
            })?;
        Ok(GenerationRecord {
            engine: self.name.clone(),
            tokens_per_sec: (g.decode_tokens_per_sec() * 10.0).round() / 10.0,
            raw_output: g.text,
            prompt_tokens: g.prompt_tokens,
            generated_tokens: g.generated_tokens,
            ms: (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            ttft_ms: (g.ttft_secs * 1e4).round() / 10.0,
            rejected: None,
        })
    }
}
