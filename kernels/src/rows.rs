//! The decoder's passes over plain rows of f32.
//!
//! Run as candle ops, a decode step of a 30-layer model is several hundred
//! small tensor operations, each allocating and most single-threaded, and the
//! key/value cache is copied whole (`cat`) at every step. Here a pass is a
//! loop over `(token, feature)` rows: RMS norm, per-head norm and RoPE in
//! place, and attention straight on a sequence's cached key and value rows,
//! parallel over (query row, head). The cache is one growing vector per
//! layer, so appending a token copies one row; it stores f32 or f16
//! ([`KvType`]), converted to f32 as attention loads it.
//!
//! Each row's result depends only on that row (and, for attention, on its
//! own sequence's cache), never on which other rows share the pass: the
//! decoder relies on this to run several sequences together with results
//! equal to running them one at a time.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Rows per parallel task in the element-wise passes.
const ROWS_PER_TASK: usize = 8;

/// `out = x / sqrt(mean(x²) + eps) · w` for each row of `w.len()` values
/// (the sum in row order, as candle's `rms_norm` takes it).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let width = w.len();
    out.par_chunks_mut(width * ROWS_PER_TASK)
        .zip(x.par_chunks(width * ROWS_PER_TASK))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                norm_row(x, w, eps, o);
            }
        });
}

fn norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum2: f32 = x.iter().map(|v| v * v).sum();
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
        *o = v / m * w;
    }
}

/// RMS norm of every `w.len()`-wide piece of `x` (each head of each row), in place.
pub fn head_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let mut tmp = vec![0f32; w.len()];
    for head in x.chunks_exact_mut(w.len()) {
        norm_row(head, w, eps, &mut tmp);
        head.copy_from_slice(&tmp);
    }
}

/// RoPE angles for a run of positions: `cos`/`sin` rows of `rope_dim / 2`.
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub half: usize,
}

impl RopeTable {
    /// Positions `start..start + len`; `factors` divide the frequencies
    /// (Llama 3, LongRoPE) and `scale` multiplies cos and sin.
    pub fn new(
        base: f32,
        factors: Option<&[f32]>,
        scale: f64,
        rope_dim: usize,
        start: usize,
        len: usize,
    ) -> Self {
        let half = rope_dim / 2;
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in start..start + len {
            for i in 0..half {
                // f64 so that long positions keep their precision, as llama.cpp does.
                let factor = factors
                    .and_then(|f| f.get(i))
                    .map_or(1.0, |&f| f64::from(f));
                let inv = 1.0 / f64::from(base).powf((2 * i) as f64 / rope_dim as f64) / factor;
                let angle = p as f64 * inv;
                cos.push((angle.cos() * scale) as f32);
                sin.push((angle.sin() * scale) as f32);
            }
        }
        RopeTable { cos, sin, half }
    }
}

/// Rotates the first `2 · table.half` values of every `head_dim`-wide head
/// of each row of `x` (row `r` at the table's position `r`): pairs of
/// neighbours when `interleaved` (GGUF's llama layout), else the two halves
/// (NeoX: Gemma, Qwen, Phi).
pub fn rope(
    x: &mut [f32],
    row_width: usize,
    head_dim: usize,
    table: &RopeTable,
    interleaved: bool,
) {
    let half = table.half;
    for (r, row) in x.chunks_exact_mut(row_width).enumerate() {
        let (cos, sin) = (
            &table.cos[r * half..][..half],
            &table.sin[r * half..][..half],
        );
        for head in row.chunks_exact_mut(head_dim) {
            if interleaved {
                for (i, pair) in head[..2 * half].chunks_exact_mut(2).enumerate() {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * cos[i] - b * sin[i];
                    pair[1] = a * sin[i] + b * cos[i];
                }
            } else {
                let (lo, hi) = head[..2 * half].split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (lo[i], hi[i]);
                    lo[i] = a * cos[i] - b * sin[i];
                    hi[i] = a * sin[i] + b * cos[i];
                }
            }
        }
    }
}

/// The feed-forward's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// SiLU (Llama, Qwen, Phi).
    Silu,
    /// `tanh`-approximated GELU (Gemma).
    GeluTanh,
}

/// Values per task of the element-wise passes: one even share per thread
/// (a decode pass's 8 × 1536 values in 4096-value chunks gave one thread
/// two tasks and the other one), never below 2048.
fn element_chunk(len: usize) -> usize {
    len.div_ceil(rayon::current_num_threads()).max(2048)
}

/// The feed-forward's hidden rows from a fused gate|up projection: each
/// row of `both` is `[gate | up]`, `2 · ff` wide; the result's rows are
/// `act(gate) · up`, `ff` wide. One parallel pass, no copy of the gates.
pub fn gated(both: &[f32], ff: usize, act: Act) -> Vec<f32> {
    let n = both.len() / (2 * ff).max(1);
    let mut out = vec![0f32; n * ff];
    let rows_per_task = element_chunk(n * ff).div_ceil(ff.max(1));
    out.par_chunks_mut(rows_per_task * ff)
        .zip(both.par_chunks(rows_per_task * 2 * ff))
        .for_each(|(o, b)| {
            for (o, b) in o.chunks_exact_mut(ff).zip(b.chunks_exact(2 * ff)) {
                gate_slice(&b[..ff], &b[ff..], o, act);
            }
        });
    out
}

/// `gate = act(gate) · up`, elementwise, over rows `ff` wide (separate gate
/// and up projections).
pub fn gate_in_place(gate: &mut [f32], up: &[f32], ff: usize, act: Act) {
    let chunk = element_chunk(gate.len()).div_ceil(ff.max(1)) * ff.max(1);
    gate.par_chunks_mut(chunk)
        .zip(up.par_chunks(chunk))
        .for_each(|(g, u)| {
            for (g, u) in g.chunks_mut(ff.max(1)).zip(u.chunks(ff.max(1))) {
                let x = g.to_vec();
                gate_slice(&x, u, g, act);
            }
        });
}

/// `out = act(g) · u` over one row: whole rows only, so that a value's
/// numbers (8-lane body or scalar tail) never depend on the other rows.
fn gate_slice(g: &[f32], u: &[f32], out: &mut [f32], act: Act) {
    #[cfg(target_arch = "x86_64")]
    if act == Act::Silu && Simd::Avx2.runs(8) {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        unsafe { silu_gate_avx2(g, u, out) };
        return;
    }
    for ((o, &x), &u) in out.iter_mut().zip(g).zip(u) {
        *o = activation(x, act) * u;
    }
}

/// One value's activation, as candle computes it.
fn activation(x: f32, act: Act) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    match act {
        Act::Silu => x / (1.0 + (-x).exp()),
        Act::GeluTanh => 0.5 * x * (1.0 + (C * (x + 0.044715 * x * x * x)).tanh()),
    }
}

/// [`gate_slice`] for SiLU, 8 lanes at a time: `x · σ(x)` with σ from
/// `t = e^−|x|` (σ = 1 / (1 + t) for x ≥ 0, t / (1 + t) below), so that the
/// vector `exp` only sees softmax's range; one `expf` call per value took
/// 1.7 % of a batched decode step.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_gate_avx2(g: &[f32], u: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let len = g.len().min(u.len()).min(out.len());
    let full = len - len % 8;
    let sign = _mm256_set1_ps(-0.0);
    let one = _mm256_set1_ps(1.0);
    for i in (0..full).step_by(8) {
        // SAFETY: `i + 8 <= full <= len` of every slice.
        unsafe {
            let x = _mm256_loadu_ps(g.as_ptr().add(i));
            let t = exp_avx2(_mm256_or_ps(x, sign));
            let nonneg = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_setzero_ps());
            let sig = _mm256_div_ps(_mm256_blendv_ps(t, one, nonneg), _mm256_add_ps(one, t));
            let y = _mm256_mul_ps(_mm256_mul_ps(x, sig), _mm256_loadu_ps(u.as_ptr().add(i)));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), y);
        }
    }
    for i in full..len {
        out[i] = activation(g[i], Act::Silu) * u[i];
    }
}

/// One sequence's attention shape.
#[derive(Debug, Clone, Copy)]
pub struct Attention {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Multiplies q·k.
    pub scale: f32,
    /// A query at position p sees keys at p − window + 1 ..= p only.
    pub window: Option<usize>,
}

/// One attention task's inputs: a query row's group of heads, its key
/// head's key and value rows, and the query's position.
#[derive(Clone, Copy)]
struct Group<'a, E> {
    q: &'a [f32],
    keys: &'a [E],
    values: &'a [E],
    p: usize,
}

/// What [`Attention::seen`] gives a task: its query heads, the `n` key
/// and value rows its query sees.
struct Seen<'a, E> {
    q: &'a [f32],
    keys: &'a [E],
    values: &'a [E],
    heads: usize,
    n: usize,
}

/// One sequence's part of [`Attention::run_all`]: its query rows, its
/// cache, the position of its first row, and where its output rows go.
pub struct Job<'a> {
    pub q: &'a [f32],
    pub cache: &'a KvRows,
    pub start: usize,
    pub out: &'a mut [f32],
}

/// The attention kernels, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Simd {
    Avx512,
    Avx2,
    Generic,
}

impl Simd {
    const ALL: [Simd; 3] = [Simd::Avx512, Simd::Avx2, Simd::Generic];

    /// Whether this CPU runs this kernel for heads of `head_dim` values.
    fn runs(self, head_dim: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Simd::Avx512 => head_dim.is_multiple_of(16) && has!("avx512f"),
                Simd::Avx2 => {
                    head_dim.is_multiple_of(8) && has!("avx2") && has!("fma") && has!("f16c")
                }
                Simd::Generic => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = head_dim;
            self == Simd::Generic
        }
    }

    fn best(head_dim: usize) -> Simd {
        Simd::ALL
            .into_iter()
            .find(|s| s.runs(head_dim))
            .unwrap_or(Simd::Generic)
    }
}

/// How a key/value cache stores its rows. `F16` halves the cache's memory
/// and the bytes attention reads per step, which bound a batched decode
/// step (eight sequences' caches are far larger than the CPU's caches);
/// the rounding (relative 2⁻¹¹) is an eighth of what Q8_0 does to every
/// matmul's activations. `F32` keeps the numbers of candle's path, which the
/// parity tests hold to 1e-4 of transformers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KvType {
    #[default]
    F16,
    F32,
}

impl KvType {
    pub const ALL: [KvType; 2] = [KvType::F16, KvType::F32];

    /// Its name in flags, settings and `/health`.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
        }
    }

    /// Bytes one cached value takes.
    pub fn size(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

/// A value type a cache stores: f32, or f16 read back through F16C.
pub trait KvElem: Copy + Send + Sync + Default + 'static {
    const TYPE: KvType;
    fn to_f32(self) -> f32;
    /// Appends `src`, converted, to `dst`.
    fn extend(dst: &mut Vec<Self>, src: &[f32]);
}

impl KvElem for f32 {
    const TYPE: KvType = KvType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn extend(dst: &mut Vec<f32>, src: &[f32]) {
        dst.extend_from_slice(src);
    }
}

impl KvElem for f16 {
    const TYPE: KvType = KvType::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn extend(dst: &mut Vec<f16>, src: &[f32]) {
        let at = dst.len();
        dst.resize(at + src.len(), f16::ZERO);
        dst[at..].convert_from_f32_slice(src);
    }
}

/// Per key head, the rows of every position so far (`head_dim` values
/// each, contiguous, so that attention streams them).
#[derive(Debug, Clone, Default)]
pub struct Heads<E> {
    pub keys: Vec<Vec<E>>,
    pub values: Vec<Vec<E>>,
}

impl<E: KvElem> Heads<E> {
    fn append(&mut self, k: &[f32], v: &[f32], n_kv_head: usize, head_dim: usize) {
        if self.keys.len() != n_kv_head {
            self.keys = vec![Vec::new(); n_kv_head];
            self.values = vec![Vec::new(); n_kv_head];
        }
        for (row_k, row_v) in k
            .chunks_exact(n_kv_head * head_dim)
            .zip(v.chunks_exact(n_kv_head * head_dim))
        {
            for h in 0..n_kv_head {
                E::extend(&mut self.keys[h], &row_k[h * head_dim..][..head_dim]);
                E::extend(&mut self.values[h], &row_v[h * head_dim..][..head_dim]);
            }
        }
    }

    fn to_f32(&self) -> Heads<f32> {
        let all = |v: &Vec<Vec<E>>| -> Vec<Vec<f32>> {
            v.iter()
                .map(|h| h.iter().map(|x| x.to_f32()).collect())
                .collect()
        };
        Heads {
            keys: all(&self.keys),
            values: all(&self.values),
        }
    }

    fn len(&self) -> usize {
        self.keys.iter().chain(&self.values).map(Vec::len).sum()
    }
}

/// One layer's cached keys and values for one sequence, in the type the
/// decoder asked for.
#[derive(Debug, Clone, Default)]
pub enum KvRows {
    #[default]
    Empty,
    F32(Heads<f32>),
    F16(Heads<f16>),
}

impl KvRows {
    /// Appends the key and value rows of new positions (`n_kv_head ·
    /// head_dim` wide, position-major, as the projections write them),
    /// stored as `kind`. A cache of the other type is converted first (a
    /// sequence whose decoder changed its cache type).
    pub fn append(
        &mut self,
        kind: KvType,
        k: &[f32],
        v: &[f32],
        n_kv_head: usize,
        head_dim: usize,
    ) {
        if self.kind() != Some(kind) {
            let old = self.as_f32();
            *self = match kind {
                KvType::F32 => KvRows::F32(old),
                KvType::F16 => {
                    let mut h = Heads::default();
                    if !old.keys.is_empty() {
                        h.keys = old.keys.iter().map(|r| rows_as(r)).collect();
                        h.values = old.values.iter().map(|r| rows_as(r)).collect();
                    }
                    KvRows::F16(h)
                }
            };
        }
        match self {
            KvRows::F32(h) => h.append(k, v, n_kv_head, head_dim),
            KvRows::F16(h) => h.append(k, v, n_kv_head, head_dim),
            KvRows::Empty => {}
        }
    }

    /// The type its rows are stored in (`None` before the first append).
    pub fn kind(&self) -> Option<KvType> {
        match self {
            KvRows::Empty => None,
            KvRows::F32(_) => Some(KvType::F32),
            KvRows::F16(_) => Some(KvType::F16),
        }
    }

    fn as_f32(&self) -> Heads<f32> {
        match self {
            KvRows::Empty => Heads::default(),
            KvRows::F32(h) => h.clone(),
            KvRows::F16(h) => h.to_f32(),
        }
    }

    /// Values held (keys and values).
    pub fn len(&self) -> usize {
        match self {
            KvRows::Empty => 0,
            KvRows::F32(h) => h.len(),
            KvRows::F16(h) => h.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes its rows take.
    pub fn bytes(&self) -> usize {
        self.len() * self.kind().map_or(0, KvType::size)
    }
}

fn rows_as<E: KvElem>(src: &[f32]) -> Vec<E> {
    let mut v = Vec::with_capacity(src.len());
    E::extend(&mut v, src);
    v
}

impl Attention {
    /// Causal attention of `t` query rows at positions `start..start + t`
    /// over a cache that already holds positions `0..start + t`. `q` and
    /// `out` are `t` rows of `n_head · head_dim`.
    pub fn run(&self, q: &[f32], cache: &KvRows, start: usize, out: &mut [f32]) {
        self.run_all(vec![Job {
            q,
            cache,
            start,
            out,
        }]);
    }

    /// [`Attention::run`] for several sequences at once, as one set of
    /// parallel tasks: a decode pass of many sequences has a few tasks per
    /// sequence, too few to be worth a parallel call each. Query heads share
    /// key heads in groups (GQA): each task takes one query row and one key
    /// head with its whole group of query heads, so every key and value row
    /// is read once for the group.
    pub fn run_all(&self, jobs: Vec<Job<'_>>) {
        self.run_with(Simd::best(self.head_dim), jobs);
    }

    fn run_with(&self, simd: Simd, jobs: Vec<Job<'_>>) {
        // One parallel call per cache type (one in a decoder's pass).
        let mut f32_tasks = Vec::new();
        let mut f16_tasks = Vec::new();
        for job in jobs {
            match job.cache {
                KvRows::F32(h) => self.tasks(h, job.q, job.start, job.out, &mut f32_tasks),
                KvRows::F16(h) => self.tasks(h, job.q, job.start, job.out, &mut f16_tasks),
                // Nothing cached: no position to attend to (the caller
                // appends a row's own key before its attention).
                KvRows::Empty => job.out.fill(0.0),
            }
        }
        self.run_tasks(simd, f32_tasks);
        self.run_tasks(simd, f16_tasks);
    }

    /// One task per (query row, key head) of a job.
    fn tasks<'a, E: KvElem>(
        &self,
        cache: &'a Heads<E>,
        q: &'a [f32],
        start: usize,
        out: &'a mut [f32],
        tasks: &mut Vec<(Group<'a, E>, &'a mut [f32])>,
    ) {
        let width = self.n_head / self.n_kv_head * self.head_dim;
        for (i, (o, q)) in out
            .chunks_exact_mut(width)
            .zip(q.chunks_exact(width))
            .enumerate()
        {
            let (row, kv) = (i / self.n_kv_head, i % self.n_kv_head);
            let g = Group {
                q,
                keys: &cache.keys[kv],
                values: &cache.values[kv],
                p: start + row,
            };
            tasks.push((g, o));
        }
    }

    fn run_tasks<E: KvElem>(&self, simd: Simd, tasks: Vec<(Group<'_, E>, &mut [f32])>) {
        if tasks.is_empty() {
            return;
        }
        tasks
            .into_par_iter()
            .for_each_init(Vec::new, |scores, (g, o)| self.group(simd, &g, scores, o));
    }

    /// The first key a query at position `p` sees, and how many it sees.
    fn keys_seen(&self, p: usize) -> (usize, usize) {
        let lo = self.window.map_or(0, |w| (p + 1).saturating_sub(w));
        (lo, p + 1 - lo)
    }

    /// A task's query heads and the key and value rows its query sees,
    /// with `scores` cleared and sized for them (`heads · n`).
    fn seen<'a, E>(&self, g: &Group<'a, E>, scores: &mut Vec<f32>) -> Seen<'a, E> {
        let hd = self.head_dim;
        let (lo, n) = self.keys_seen(g.p);
        let heads = g.q.len() / hd;
        scores.clear();
        scores.resize(heads * n, 0.0);
        Seen {
            q: g.q,
            keys: &g.keys[lo * hd..(g.p + 1) * hd],
            values: &g.values[lo * hd..(g.p + 1) * hd],
            heads,
            n,
        }
    }

    /// One query row's group of heads at position `p` against one key head.
    fn group<E: KvElem>(
        &self,
        simd: Simd,
        g: &Group<'_, E>,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        match simd {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Simd::best` and the tests pick a path the CPU has, for
            // head dims that are whole 16- or 8-lane chunks.
            Simd::Avx512 => unsafe { self.group_avx512(g, scores, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Simd::Avx2 => unsafe { self.group_avx2(g, scores, out) },
            _ => self.group_generic(g, scores, out),
        }
    }

    /// [`Attention::group_generic`] with 16-lane fused multiply-adds: each
    /// score one register per 16 dims, each output chunk summed in a
    /// register over the keys.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn group_avx512<E: KvElem>(
        &self,
        g: &Group<'_, E>,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        let hd = self.head_dim;
        let Seen {
            q,
            keys,
            values,
            heads,
            n,
        } = self.seen(g, scores);
        // SAFETY (all loads and stores): every row is `hd` values, a whole
        // number of 16-lane chunks, and the slices above hold `n` rows.
        unsafe {
            for j in 0..n {
                let k = keys.as_ptr().add(j * hd);
                for h in 0..heads {
                    let qh = q.as_ptr().add(h * hd);
                    let mut acc = _mm512_setzero_ps();
                    for c in (0..hd).step_by(16) {
                        acc = _mm512_fmadd_ps(_mm512_loadu_ps(qh.add(c)), load16(k.add(c)), acc);
                    }
                    scores[h * n + j] = _mm512_reduce_add_ps(acc) * self.scale;
                }
            }
            softmax_rows_avx2(scores, n);
            // Four 16-lane sums at a time, so that consecutive multiply-adds
            // do not wait on each other.
            for h in 0..heads {
                let s = &scores[h * n..(h + 1) * n];
                for c0 in (0..hd).step_by(64) {
                    let lanes = ((hd - c0) / 16).min(4);
                    let mut acc = [_mm512_setzero_ps(); 4];
                    for (j, &w) in s.iter().enumerate() {
                        let w = _mm512_set1_ps(w);
                        let row = values.as_ptr().add(j * hd + c0);
                        for (l, a) in acc.iter_mut().enumerate().take(lanes) {
                            *a = _mm512_fmadd_ps(w, load16(row.add(16 * l)), *a);
                        }
                    }
                    for (l, a) in acc.iter().enumerate().take(lanes) {
                        _mm512_storeu_ps(out.as_mut_ptr().add(h * hd + c0 + 16 * l), *a);
                    }
                }
            }
        }
    }

    /// [`Attention::group_generic`] with 8-lane fused multiply-adds. Scores
    /// come eight keys at a time: eight 8-lane partial sums, folded into
    /// one register of eight scores by a tree of horizontal adds (a
    /// horizontal sum per score would cost as much as its multiply-adds).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group_avx2<E: KvElem>(
        &self,
        g: &Group<'_, E>,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        let hd = self.head_dim;
        let Seen {
            q,
            keys,
            values,
            heads,
            n,
        } = self.seen(g, scores);
        let scale = _mm256_set1_ps(self.scale);
        // SAFETY (all loads and stores): every row is `hd` values, a whole
        // number of 8-lane chunks; the slices above hold `n` rows, `scores`
        // `heads · n` values, `out` `heads · hd`.
        unsafe {
            let dot = |qh: *const f32, k: *const E| {
                let mut acc = _mm256_setzero_ps();
                for c in (0..hd).step_by(8) {
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(qh.add(c)), load8(k.add(c)), acc);
                }
                acc
            };
            // Eight keys at a time for every head, so that the eight key rows
            // are read from memory once for the whole group.
            let full = n - n % 8;
            for j in (0..full).step_by(8) {
                for h in 0..heads {
                    let qh = q.as_ptr().add(h * hd);
                    let a: [__m256; 8] =
                        std::array::from_fn(|i| dot(qh, keys.as_ptr().add((j + i) * hd)));
                    let t = [
                        _mm256_hadd_ps(a[0], a[1]),
                        _mm256_hadd_ps(a[2], a[3]),
                        _mm256_hadd_ps(a[4], a[5]),
                        _mm256_hadd_ps(a[6], a[7]),
                    ];
                    let u = [_mm256_hadd_ps(t[0], t[1]), _mm256_hadd_ps(t[2], t[3])];
                    let s = _mm256_add_ps(
                        _mm256_permute2f128_ps::<0x20>(u[0], u[1]),
                        _mm256_permute2f128_ps::<0x31>(u[0], u[1]),
                    );
                    _mm256_storeu_ps(scores.as_mut_ptr().add(h * n + j), _mm256_mul_ps(s, scale));
                }
            }
            for j in full..n {
                for h in 0..heads {
                    let a = dot(q.as_ptr().add(h * hd), keys.as_ptr().add(j * hd));
                    let a = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                    let a = _mm_hadd_ps(a, a);
                    scores[h * n + j] = _mm_cvtss_f32(_mm_hadd_ps(a, a)) * self.scale;
                }
            }
            softmax_rows_avx2(scores, n);
            // Up to four heads at a time over 16 dims of every value row:
            // each value cache line is read once per group of four heads.
            for h0 in (0..heads).step_by(4) {
                let pv = Pv {
                    scores: &scores[h0 * n..],
                    n,
                    values,
                    hd,
                    out: out.as_mut_ptr().add(h0 * hd),
                };
                match heads - h0 {
                    1 => pv.run::<1>(),
                    2 => pv.run::<2>(),
                    3 => pv.run::<3>(),
                    _ => pv.run::<4>(),
                }
            }
        }
    }

    #[inline(always)]
    fn group_generic<E: KvElem>(&self, g: &Group<'_, E>, scores: &mut Vec<f32>, out: &mut [f32]) {
        let hd = self.head_dim;
        let Seen {
            q, keys, values, n, ..
        } = self.seen(g, scores);
        // scores[h * n + j]: query head h against the j-th key it sees.
        for (j, k) in keys.chunks_exact(hd).enumerate() {
            for (h, qh) in q.chunks_exact(hd).enumerate() {
                scores[h * n + j] = dot(qh, k) * self.scale;
            }
        }
        softmax_rows(scores, n);
        out.fill(0.0);
        for (j, v) in values.chunks_exact(hd).enumerate() {
            for (h, o) in out.chunks_exact_mut(hd).enumerate() {
                let w = scores[h * n + j];
                for (o, v) in o.iter_mut().zip(v) {
                    *o += w * v.to_f32();
                }
            }
        }
    }
}

/// Softmax of each `n`-long row of `scores`, in place.
#[inline(always)]
fn softmax_rows(scores: &mut [f32], n: usize) {
    for s in scores.chunks_exact_mut(n) {
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        for x in s.iter_mut() {
            *x /= sum;
        }
    }
}

/// The weighted sum of value rows for `H` heads (AVX2): `out[h] = Σ_j
/// scores[h·n + j] · values[j]`.
#[cfg(target_arch = "x86_64")]
struct Pv<'a, E> {
    scores: &'a [f32],
    n: usize,
    values: &'a [E],
    hd: usize,
    out: *mut f32,
}

#[cfg(target_arch = "x86_64")]
impl<E: KvElem> Pv<'_, E> {
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `scores` holds `H · n` values,
    /// `values` `n` rows of `hd` (a multiple of 8), `out` `H · hd`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run<const H: usize>(&self) {
        use std::arch::x86_64::*;
        let (n, hd) = (self.n, self.hd);
        // SAFETY: the sizes are the caller's promise.
        unsafe {
            for c0 in (0..hd).step_by(16) {
                let two = c0 + 8 < hd;
                let mut acc = [[_mm256_setzero_ps(); 2]; H];
                for j in 0..n {
                    let row = self.values.as_ptr().add(j * hd + c0);
                    let v0 = load8(row);
                    let v1 = if two { load8(row.add(8)) } else { v0 };
                    for (h, a) in acc.iter_mut().enumerate() {
                        let w = _mm256_set1_ps(*self.scores.get_unchecked(h * n + j));
                        a[0] = _mm256_fmadd_ps(w, v0, a[0]);
                        a[1] = _mm256_fmadd_ps(w, v1, a[1]);
                    }
                }
                for (h, a) in acc.iter().enumerate() {
                    let o = self.out.add(h * hd + c0);
                    _mm256_storeu_ps(o, a[0]);
                    if two {
                        _mm256_storeu_ps(o.add(8), a[1]);
                    }
                }
            }
        }
    }
}

/// [`softmax_rows`] with 8-lane exponentials: one `expf` call per score
/// took longer than the scores' multiply-adds.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(scores: &mut [f32], n: usize) {
    use std::arch::x86_64::*;
    for s in scores.chunks_exact_mut(n) {
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let m = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        let mut chunks = s.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` is 8 values.
            unsafe {
                let e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
                _mm256_storeu_ps(c.as_mut_ptr(), e);
                sum = _mm256_add_ps(sum, e);
            }
        }
        let mut tail = 0f32;
        for x in chunks.into_remainder() {
            *x = (*x - max).exp();
            tail += *x;
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` is 8 values.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        let inv = 1.0 / (lanes.iter().sum::<f32>() + tail);
        for x in s.iter_mut() {
            *x *= inv;
        }
    }
}

/// `e^x` in 8 lanes for x ≤ 0 (softmax's range), to within a few units in
/// the last place: x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r by Cephes'
/// `expf` polynomial, 2^n put into the exponent bits. Below −87 (where e^x
/// leaves the normal floats) it gives 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let low = _mm256_set1_ps(-87.0);
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, low);
    let x = _mm256_max_ps(x, low);
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    // ln 2 in two parts, so that n·ln 2 is subtracted exactly.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    let y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    _mm256_andnot_ps(under, y)
}

/// Dot product with 16 independent sums (so that it vectorizes).
#[inline(always)]
fn dot<E: KvElem>(a: &[f32], b: &[E]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y.to_f32())
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l].to_f32();
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Eight cached values as f32 (F16C converts f16 on the way in).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `p` must point at 8 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load8<E: KvElem>(p: *const E) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's promise; f16 is a transparent u16.
    unsafe {
        match E::TYPE {
            KvType::F32 => _mm256_loadu_ps(p.cast()),
            KvType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
        }
    }
}

/// Sixteen cached values as f32.
///
/// # Safety
/// The CPU must have AVX-512F; `p` must point at 16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load16<E: KvElem>(p: *const E) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: as above.
    unsafe {
        match E::TYPE {
            KvType::F32 => _mm512_loadu_ps(p.cast()),
            KvType::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
        }
    }
}

/// `a += b`, elementwise.
pub fn add_in_place(a: &mut [f32], b: &[f32]) {
    for (a, b) in a.iter_mut().zip(b) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;
    use candle_core::{Device, Tensor};

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn rms_norm_matches_candle() -> candle_core::Result<()> {
        let (n, d) = (19, 72);
        let (x, w) = (values(n * d, 1), values(d, 2));
        let mut ours = vec![0f32; n * d];
        rms_norm(&x, &w, 1e-6, &mut ours);
        let theirs = candle_nn::ops::rms_norm(
            &Tensor::from_vec(x, (n, d), &Device::Cpu)?,
            &Tensor::from_vec(w, d, &Device::Cpu)?,
            1e-6,
        )?
        .flatten_all()?
        .to_vec1::<f32>()?;
        assert!(worst(&ours, &theirs) < 1e-6, "{}", worst(&ours, &theirs));
        Ok(())
    }

    /// Both layouts, whole and partial rotation, against candle's kernels.
    #[test]
    fn rope_matches_candle() -> candle_core::Result<()> {
        let (t, heads, hd) = (5, 3, 16);
        for (rope_dim, interleaved) in [(16, true), (16, false), (8, false)] {
            let table = RopeTable::new(10_000.0, None, 1.0, rope_dim, 7, t);
            let x = values(t * heads * hd, 3);
            let mut ours = x.clone();
            rope(&mut ours, heads * hd, hd, &table, interleaved);
            // candle: (b, heads, t, d) on the rotated dims.
            let xt = Tensor::from_vec(x, (1, t, heads, hd), &Device::Cpu)?.transpose(1, 2)?;
            let rot = xt.narrow(3, 0, rope_dim)?.contiguous()?;
            let cos = Tensor::from_vec(table.cos.clone(), (t, rope_dim / 2), &Device::Cpu)?;
            let sin = Tensor::from_vec(table.sin.clone(), (t, rope_dim / 2), &Device::Cpu)?;
            let turned = if interleaved {
                candle_nn::rotary_emb::rope_i(&rot, &cos, &sin)?
            } else {
                candle_nn::rotary_emb::rope(&rot, &cos, &sin)?
            };
            let pass = xt.narrow(3, rope_dim, hd - rope_dim)?;
            let theirs = Tensor::cat(&[&turned, &pass], 3)?
                .transpose(1, 2)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            assert!(
                worst(&ours, &theirs) < 1e-6,
                "rope {rope_dim} {interleaved}"
            );
        }
        Ok(())
    }

    /// Softmax(q·kᵀ·scale + causal/window mask)·v, with grouped heads.
    #[test]
    fn attention_matches_masked_softmax() -> candle_core::Result<()> {
        // Every kernel this CPU runs: 20 dims only the plain loop, 24 also
        // AVX2's, 32 also AVX-512's. Key counts below, at and past 8 and 16
        // (AVX2 takes scores eight keys at a time).
        let cases = [
            (0, 6, None),
            (5, 3, None),
            (9, 4, Some(5)),
            (3, 1, None),
            (14, 3, None),
            (30, 2, Some(17)),
        ];
        // Groups of 2 and of 5 query heads per key head (AVX2 sums values
        // for up to four heads at a time).
        let shapes = cases.iter().flat_map(|&(s, t, w)| {
            [20, 24, 32].into_iter().flat_map(move |hd| {
                Simd::ALL
                    .into_iter()
                    .filter(move |simd| simd.runs(hd))
                    .flat_map(move |simd| [(4, 2), (10, 2)].map(|h| (s, t, w, hd, simd, h)))
            })
        });
        let mut tested = Vec::new();
        let shapes = shapes.flat_map(|c| [KvType::F32, KvType::F16].map(|kind| (c, kind)));
        for ((start, t, window, hd, simd, (n_head, n_kv_head)), kind) in shapes {
            if !tested.contains(&(simd, kind)) {
                tested.push((simd, kind));
            }
            let total = start + t;
            // An f16 cache holds the rows rounded to f16: the reference
            // takes the same rounded rows.
            let stored = |v: Vec<f32>| match kind {
                KvType::F32 => v,
                KvType::F16 => v.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
            };
            let keys = stored(values(total * n_kv_head * hd, 11));
            let vals = stored(values(total * n_kv_head * hd, 12));
            let q = values(t * n_head * hd, 13);
            let a = Attention {
                n_head,
                n_kv_head,
                head_dim: hd,
                scale: 0.2,
                window,
            };
            let mut ours = vec![0f32; t * n_head * hd];
            let mut cache = KvRows::default();
            cache.append(kind, &keys, &vals, n_kv_head, hd);
            assert_eq!(cache.kind(), Some(kind));
            let job = Job {
                q: &q,
                cache: &cache,
                start,
                out: &mut ours,
            };
            a.run_with(simd, vec![job]);
            let mut want = Vec::new();
            for i in 0..t {
                let p = start + i;
                for h in 0..n_head {
                    let g = h / (n_head / n_kv_head);
                    let qh = Tensor::from_slice(
                        &q[(i * n_head + h) * hd..][..hd],
                        (1, hd),
                        &Device::Cpu,
                    )?;
                    let pick = |src: &[f32]| -> candle_core::Result<Tensor> {
                        let rows: Vec<f32> = (0..total)
                            .flat_map(|j| src[(j * n_kv_head + g) * hd..][..hd].to_vec())
                            .collect();
                        Tensor::from_vec(rows, (total, hd), &Device::Cpu)
                    };
                    let scores = (qh.matmul(&pick(&keys)?.t()?)? * 0.2)?;
                    let mask: Vec<f32> = (0..total)
                        .map(|j| {
                            let seen = j <= p && window.is_none_or(|w| p - j < w);
                            if seen { 0.0 } else { f32::NEG_INFINITY }
                        })
                        .collect();
                    let scores =
                        scores.broadcast_add(&Tensor::from_vec(mask, total, &Device::Cpu)?)?;
                    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                    want.extend(
                        probs
                            .matmul(&pick(&vals)?)?
                            .flatten_all()?
                            .to_vec1::<f32>()?,
                    );
                }
            }
            let e = worst(&ours, &want);
            assert!(
                e < 1e-5,
                "{simd:?} {kind:?}: start {start} t {t} window {window:?} dims {hd} heads {n_head}: {e}"
            );
        }
        eprintln!("attention kernels tested: {tested:?}");
        Ok(())
    }

    /// Sequences run together give each sequence's numbers alone, bit for
    /// bit: a task's inputs are its own row and cache.
    #[test]
    fn attention_of_several_sequences_equals_each_alone() {
        for kind in [KvType::F32, KvType::F16] {
            several_sequences_equal_each_alone(kind);
        }
    }

    fn several_sequences_equal_each_alone(kind: KvType) {
        let (n_head, n_kv_head, hd) = (6, 2, 32);
        let a = Attention {
            n_head,
            n_kv_head,
            head_dim: hd,
            scale: 0.125,
            window: None,
        };
        let width = n_kv_head * hd;
        let seqs: Vec<(usize, usize, KvRows)> = [(0, 5), (11, 1), (20, 3)]
            .iter()
            .enumerate()
            .map(|(i, &(start, t))| {
                let mut cache = KvRows::default();
                let total = start + t;
                let keys = values(total * width, 20 + i as u64);
                let vals = values(total * width, 30 + i as u64);
                cache.append(kind, &keys, &vals, n_kv_head, hd);
                (start, t, cache)
            })
            .collect();
        let qs: Vec<Vec<f32>> = seqs
            .iter()
            .enumerate()
            .map(|(i, &(_, t, _))| values(t * n_head * hd, 40 + i as u64))
            .collect();
        let alone: Vec<Vec<f32>> = seqs
            .iter()
            .zip(&qs)
            .map(|((start, t, cache), q)| {
                let mut out = vec![0f32; t * n_head * hd];
                a.run(q, cache, *start, &mut out);
                out
            })
            .collect();
        let mut together: Vec<Vec<f32>> = seqs
            .iter()
            .map(|(_, t, _)| vec![0f32; t * n_head * hd])
            .collect();
        let jobs = seqs
            .iter()
            .zip(&qs)
            .zip(together.iter_mut())
            .map(|(((start, _, cache), q), out)| Job {
                q,
                cache,
                start: *start,
                out,
            })
            .collect();
        a.run_all(jobs);
        assert_eq!(together, alone);
    }

    /// A cache keeps every row through a change of type, rounded once.
    #[test]
    fn a_cache_changes_type_keeping_its_rows() {
        let (n_kv_head, hd) = (2, 8);
        let width = n_kv_head * hd;
        let (k, v) = (values(3 * width, 1), values(3 * width, 2));
        let mut c = KvRows::default();
        assert_eq!((c.kind(), c.bytes()), (None, 0));
        c.append(KvType::F32, &k[..2 * width], &v[..2 * width], n_kv_head, hd);
        assert_eq!(
            (c.kind(), c.bytes()),
            (Some(KvType::F32), 2 * 2 * width * 4)
        );
        c.append(KvType::F16, &k[2 * width..], &v[2 * width..], n_kv_head, hd);
        assert_eq!(
            (c.kind(), c.bytes()),
            (Some(KvType::F16), 3 * 2 * width * 2)
        );
        let KvRows::F16(h) = &c else {
            panic!("f16 cache")
        };
        for head in 0..n_kv_head {
            let want: Vec<f16> = (0..3)
                .flat_map(|p| k[p * width + head * hd..][..hd].to_vec())
                .map(f16::from_f32)
                .collect();
            assert_eq!(h.keys[head], want);
        }
        c.append(KvType::F32, &k[..width], &v[..width], n_kv_head, hd);
        assert_eq!((c.kind(), c.len()), (Some(KvType::F32), 4 * 2 * width));
    }

    /// The vector exponential against `f32::exp` over softmax's range.
    #[test]
    fn vector_exp_matches_expf() {
        #[cfg(target_arch = "x86_64")]
        if Simd::Avx2.runs(8) {
            use std::arch::x86_64::*;
            let xs: Vec<f32> = (0..=200_000)
                .map(|i| -90.0 * i as f32 / 200_000.0)
                .collect();
            for c in xs.chunks_exact(8) {
                let mut got = [0f32; 8];
                // SAFETY: the CPU has AVX2 and FMA; `c` and `got` are 8 values.
                unsafe {
                    _mm256_storeu_ps(got.as_mut_ptr(), exp_avx2(_mm256_loadu_ps(c.as_ptr())))
                };
                for (&x, &y) in c.iter().zip(&got) {
                    let want = x.exp();
                    if x >= -87.0 {
                        assert!(
                            (y - want).abs() <= 4.0 * f32::EPSILON * want,
                            "e^{x}: {y} vs {want}"
                        );
                    } else {
                        assert!(y == 0.0 && want < 2e-38, "e^{x}: {y} vs {want}");
                    }
                }
            }
            let mut s = values(3 * 21, 9);
            let mut want = s.clone();
            softmax_rows(&mut want, 21);
            // SAFETY: as above.
            unsafe { softmax_rows_avx2(&mut s, 21) };
            assert!(worst(&s, &want) < 1e-6);
        }
    }

    #[test]
    fn activations_match_candle() -> candle_core::Result<()> {
        // Past ±87 too, where e^−|x| leaves the normal floats; 5003 values,
        // so that the 8-lane path has a tail.
        let x: Vec<f32> = values(5003, 21).iter().map(|v| v * 100.0).collect();
        let u = values(5003, 22);
        let t = Tensor::from_slice(&x, x.len(), &Device::Cpu)?;
        let ut = Tensor::from_slice(&u, u.len(), &Device::Cpu)?;
        for (act, want) in [
            (Act::Silu, candle_nn::ops::silu(&t)?),
            (Act::GeluTanh, t.gelu()?),
        ] {
            let want = (want * &ut)?.to_vec1::<f32>()?;
            let mut g = x.clone();
            gate_in_place(&mut g, &u, x.len(), act);
            assert!(worst(&g, &want) < 1e-4, "{act:?}: {}", worst(&g, &want));
            // The same values from a fused [gate | up] row.
            let both: Vec<f32> = x.iter().chain(&u).copied().collect();
            assert!(gated(&both, x.len(), act) == g, "{act:?}: fused differs");
            // Rows of 41 (a tail of 1 after five 8-lane steps): each row's
            // numbers as alone.
            let mut three = x[..41 * 3].to_vec();
            gate_in_place(&mut three, &u[..41 * 3], 41, act);
            for r in 0..3 {
                let mut one = x[41 * r..41 * (r + 1)].to_vec();
                gate_in_place(&mut one, &u[41 * r..41 * (r + 1)], 41, act);
                assert!(one == three[41 * r..41 * (r + 1)], "{act:?}: row {r}");
            }
        }
        Ok(())
    }
}
