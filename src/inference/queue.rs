//! A bounded dynamic-batching queue in front of one model: the classifier's,
//! whose jobs are whole (one forward pass answers them). The generator's
//! answers take hundreds of passes each, so its worker
//! ([`super::batching`]) batches by pass instead and reports the same
//! [`QueueSnapshot`]. One worker thread owns the model. Callers send jobs (several
//! items each, e.g. a ticket's label pairs) through a bounded channel and get
//! the results on a oneshot. The worker takes the first job, keeps collecting
//! until `max_batch_items` or `max_batch_tokens` is reached or `max_wait`
//! passes, sorts the items by length so padding stays small, and runs them in
//! as few forward passes as the token budget allows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

use super::InferenceError;

/// A model the queue can feed.
pub trait BatchModel: Send + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// Tokens one input occupies (its padded batch costs `count × longest`).
    fn cost(input: &Self::Input) -> usize;
    /// One forward pass over `batch`, results in the same order.
    fn run(&mut self, batch: &[&Self::Input]) -> Result<Vec<Self::Output>, String>;
}

#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    pub capacity: usize,
    pub max_batch_items: usize,
    pub max_batch_tokens: usize,
    pub max_wait: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 256,
            max_batch_items: 56,
            max_batch_tokens: 8192,
            max_wait: Duration::from_millis(5),
        }
    }
}

type Reply<O> = oneshot::Sender<Result<Vec<O>, InferenceError>>;
type Answer<O> = oneshot::Receiver<Result<Vec<O>, InferenceError>>;
/// A job to send and where its answer will arrive.
type Pending<I, O> = (Job<I, O>, Answer<O>);

struct Job<I, O> {
    items: Vec<I>,
    reply: Reply<O>,
    enqueued: Instant,
}

#[derive(Default)]
struct Stats {
    jobs: AtomicU64,
    items: AtomicU64,
    batches: AtomicU64,
    forward_passes: AtomicU64,
    last_batch_items: AtomicU64,
    max_batch_items: AtomicU64,
    busy_us: AtomicU64,
    latency_us_total: AtomicU64,
    errors: AtomicU64,
}

/// What `/health` shows for a queue.
#[derive(Debug, Clone, Serialize)]
pub struct QueueSnapshot {
    pub name: &'static str,
    pub depth: usize,
    pub capacity: usize,
    pub jobs: u64,
    pub items: u64,
    pub batches: u64,
    pub forward_passes: u64,
    pub last_batch_items: u64,
    pub max_batch_items: u64,
    pub avg_batch_items: f64,
    pub avg_latency_ms: f64,
    pub busy_ms: f64,
    pub errors: u64,
}

pub struct BatchQueue<M: BatchModel> {
    name: &'static str,
    tx: flume::Sender<Job<M::Input, M::Output>>,
    stats: Arc<Stats>,
    cfg: QueueConfig,
}

impl<M: BatchModel> Clone for BatchQueue<M> {
    fn clone(&self) -> Self {
        BatchQueue {
            name: self.name,
            tx: self.tx.clone(),
            stats: self.stats.clone(),
            cfg: self.cfg,
        }
    }
}

impl<M: BatchModel> BatchQueue<M> {
    /// Starts the worker thread that owns `model`.
    pub fn start(name: &'static str, model: M, cfg: QueueConfig) -> Result<Self, InferenceError> {
        let (tx, rx) = flume::bounded(cfg.capacity.max(1));
        let stats = Arc::new(Stats::default());
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name(format!("{name}-model"))
            .spawn(move || worker(model, rx, cfg, worker_stats))
            .map_err(|e| InferenceError::Model(format!("cannot start the {name} worker: {e}")))?;
        Ok(BatchQueue {
            name,
            tx,
            stats,
            cfg,
        })
    }

    fn job(items: Vec<M::Input>) -> Pending<M::Input, M::Output> {
        let (reply, rx) = oneshot::channel();
        (
            Job {
                items,
                reply,
                enqueued: Instant::now(),
            },
            rx,
        )
    }

    /// Waits for room in the queue, then for the result (ticket processing:
    /// it must not fail because the queue is busy).
    pub async fn submit(&self, items: Vec<M::Input>) -> Result<Vec<M::Output>, InferenceError> {
        let (job, rx) = Self::job(items);
        self.tx
            .send_async(job)
            .await
            .map_err(|_| InferenceError::Stopped(self.name))?;
        rx.await.map_err(|_| InferenceError::Stopped(self.name))?
    }

    /// The blocking form of [`submit`](Self::submit), for non-async callers.
    pub fn submit_blocking(&self, items: Vec<M::Input>) -> Result<Vec<M::Output>, InferenceError> {
        let (job, rx) = Self::job(items);
        self.tx
            .send(job)
            .map_err(|_| InferenceError::Stopped(self.name))?;
        rx.blocking_recv()
            .map_err(|_| InferenceError::Stopped(self.name))?
    }

    /// Fails at once with `QueueFull` when the queue has no room (direct API calls).
    pub async fn try_submit(&self, items: Vec<M::Input>) -> Result<Vec<M::Output>, InferenceError> {
        let (job, rx) = Self::job(items);
        self.tx.try_send(job).map_err(|e| match e {
            flume::TrySendError::Full(_) => InferenceError::QueueFull(self.name),
            flume::TrySendError::Disconnected(_) => InferenceError::Stopped(self.name),
        })?;
        rx.await.map_err(|_| InferenceError::Stopped(self.name))?
    }

    pub fn snapshot(&self) -> QueueSnapshot {
        let s = &self.stats;
        let batches = s.batches.load(Ordering::Relaxed);
        let items = s.items.load(Ordering::Relaxed);
        let jobs = s.jobs.load(Ordering::Relaxed);
        QueueSnapshot {
            name: self.name,
            depth: self.tx.len(),
            capacity: self.cfg.capacity,
            jobs,
            items,
            batches,
            forward_passes: s.forward_passes.load(Ordering::Relaxed),
            last_batch_items: s.last_batch_items.load(Ordering::Relaxed),
            max_batch_items: s.max_batch_items.load(Ordering::Relaxed),
            avg_batch_items: if batches == 0 {
                0.0
            } else {
                items as f64 / batches as f64
            },
            avg_latency_ms: if jobs == 0 {
                0.0
            } else {
                s.latency_us_total.load(Ordering::Relaxed) as f64 / jobs as f64 / 1e3
            },
            busy_ms: s.busy_us.load(Ordering::Relaxed) as f64 / 1e3,
            errors: s.errors.load(Ordering::Relaxed),
        }
    }
}

/// Splits length-sorted items into forward passes within both budgets.
pub fn plan_chunks(
    sorted_costs: &[usize],
    max_items: usize,
    max_tokens: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < sorted_costs.len() {
        let mut end = start + 1;
        while end < sorted_costs.len() {
            let longest = sorted_costs[end]; // sorted ascending: the newcomer is the longest
            if end + 1 - start > max_items || (end + 1 - start) * longest > max_tokens {
                break;
            }
            end += 1;
        }
        chunks.push(start..end);
        start = end;
    }
    chunks
}

fn worker<M: BatchModel>(
    mut model: M,
    rx: flume::Receiver<Job<M::Input, M::Output>>,
    cfg: QueueConfig,
    stats: Arc<Stats>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut n_items = jobs[0].items.len();
        let mut n_tokens: usize = jobs[0].items.iter().map(M::cost).sum();
        let deadline = Instant::now() + cfg.max_wait;
        while n_items < cfg.max_batch_items && n_tokens < cfg.max_batch_tokens {
            match rx.recv_deadline(deadline) {
                Ok(job) => {
                    n_items += job.items.len();
                    n_tokens += job.items.iter().map(M::cost).sum::<usize>();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        // (job, item) pairs sorted by length.
        let mut order: Vec<(usize, usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, job)| {
                job.items
                    .iter()
                    .enumerate()
                    .map(move |(i, it)| (M::cost(it), j, i))
            })
            .collect();
        order.sort_by_key(|(cost, _, _)| *cost);
        let costs: Vec<usize> = order.iter().map(|(c, _, _)| *c).collect();
        let mut results: Vec<Vec<Option<M::Output>>> = jobs
            .iter()
            .map(|j| (0..j.items.len()).map(|_| None).collect())
            .collect();
        let mut failed: Vec<Option<String>> = vec![None; jobs.len()];
        let mut passes = 0u64;
        for range in plan_chunks(
            &costs,
            cfg.max_batch_items.max(1),
            cfg.max_batch_tokens.max(1),
        ) {
            let slice = &order[range];
            let inputs: Vec<&M::Input> =
                slice.iter().map(|(_, j, i)| &jobs[*j].items[*i]).collect();
            passes += 1;
            match model.run(&inputs) {
                Ok(outputs) if outputs.len() == inputs.len() => {
                    for ((_, j, i), out) in slice.iter().zip(outputs) {
                        results[*j][*i] = Some(out);
                    }
                }
                Ok(outputs) => {
                    let msg = format!(
                        "model returned {} results for {} inputs",
                        outputs.len(),
                        inputs.len()
                    );
                    slice
                        .iter()
                        .for_each(|(_, j, _)| failed[*j] = Some(msg.clone()));
                }
                Err(e) => slice
                    .iter()
                    .for_each(|(_, j, _)| failed[*j] = Some(e.clone())),
            }
        }
        let busy = started.elapsed();
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.forward_passes.fetch_add(passes, Ordering::Relaxed);
        stats.items.fetch_add(n_items as u64, Ordering::Relaxed);
        stats
            .last_batch_items
            .store(n_items as u64, Ordering::Relaxed);
        stats
            .max_batch_items
            .fetch_max(n_items as u64, Ordering::Relaxed);
        stats
            .busy_us
            .fetch_add(busy.as_micros() as u64, Ordering::Relaxed);
        for ((job, res), fail) in jobs.into_iter().zip(results).zip(failed) {
            stats.jobs.fetch_add(1, Ordering::Relaxed);
            stats
                .latency_us_total
                .fetch_add(job.enqueued.elapsed().as_micros() as u64, Ordering::Relaxed);
            let answer = match fail {
                Some(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    Err(InferenceError::Model(e))
                }
                None => Ok(res.into_iter().flatten().collect()),
            };
            // The caller may have gone away; nothing to do then.
            let _ = job.reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_both_budgets() {
        assert_eq!(plan_chunks(&[1, 2, 3, 4], 2, 100), vec![0..2, 2..4]);
        assert_eq!(plan_chunks(&[10, 10, 10, 50], 10, 40), vec![0..3, 3..4]);
        // One item over budget still runs, alone.
        assert_eq!(plan_chunks(&[500], 10, 40), vec![0..1]);
        assert!(plan_chunks(&[], 4, 4).is_empty());
    }

    /// Doubles numbers; records each batch it saw.
    struct Doubler(Arc<std::sync::Mutex<Vec<usize>>>);
    impl BatchModel for Doubler {
        type Input = u32;
        type Output = u32;
        fn cost(_: &u32) -> usize {
            1
        }
        fn run(&mut self, batch: &[&u32]) -> Result<Vec<u32>, String> {
            self.0.lock().map_err(|e| e.to_string())?.push(batch.len());
            if batch.iter().any(|x| **x == 13) {
                return Err("unlucky".into());
            }
            std::thread::sleep(Duration::from_millis(20));
            Ok(batch.iter().map(|x| **x * 2).collect())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_jobs_share_batches_and_get_their_own_results() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let cfg = QueueConfig {
            capacity: 64,
            max_batch_items: 64,
            max_batch_tokens: 1000,
            max_wait: Duration::from_millis(50),
        };
        let q = BatchQueue::start("test", Doubler(seen.clone()), cfg).expect("start");
        let tasks: Vec<_> = (0..8u32)
            .map(|k| {
                let q = q.clone();
                tokio::spawn(async move { q.submit((0..7).map(|i| k * 100 + i).collect()).await })
            })
            .collect();
        for (k, t) in tasks.into_iter().enumerate() {
            let out = t.await.expect("join").expect("ok");
            let want: Vec<u32> = (0..7).map(|i| (k as u32 * 100 + i) * 2).collect();
            assert_eq!(out, want);
        }
        let snap = q.snapshot();
        assert_eq!(snap.jobs, 8);
        assert_eq!(snap.items, 56);
        assert!(snap.batches < 8, "jobs were batched together: {snap:?}");
        assert!(snap.max_batch_items > 7);
        // A failing batch fails its jobs with the model's message, and the worker lives on.
        let err = q.submit(vec![13]).await.expect_err("fails");
        assert!(err.to_string().contains("unlucky"));
        assert_eq!(q.submit(vec![2]).await.expect("still works"), vec![4]);
    }

    #[tokio::test]
    async fn full_queue_rejects_try_submit() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let cfg = QueueConfig {
            capacity: 1,
            max_batch_items: 1,
            max_batch_tokens: 1,
            max_wait: Duration::ZERO,
        };
        let q = BatchQueue::start("tiny", Doubler(seen), cfg).expect("start");
        // Keep the worker busy and the one slot taken.
        let q1 = q.clone();
        let busy = tokio::spawn(async move { q1.submit(vec![1]).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let q2 = q.clone();
        let waiting = tokio::spawn(async move { q2.submit(vec![2]).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let r = q.try_submit(vec![3]).await;
        assert!(matches!(r, Err(InferenceError::QueueFull("tiny"))), "{r:?}");
        assert_eq!(busy.await.expect("join").expect("ok"), vec![2]);
        assert_eq!(waiting.await.expect("join").expect("ok"), vec![4]);
    }
}
