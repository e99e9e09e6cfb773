//! The decoder's passes over plain rows of f32.
//!
//! Run as candle ops, a decode step of a 30-layer model is several hundred
//! small tensor operations, each allocating and most single-threaded, and the
//! key/value cache is copied whole (`cat`) at every step. Here a pass is a
//! loop over `(token, feature)` rows: RMS norm, per-head norm and RoPE in
//! place, and attention straight on a sequence's cached key and value rows,
//! parallel over (query row, head). The cache is one growing vector per
//! layer, so appending a token copies one row.
//!
//! Each row's result depends only on that row (and, for attention, on its
//! own sequence's cache), never on which other rows share the pass: the
//! decoder relies on this to run several sequences together with results
//! equal to running them one at a time.

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

/// `tanh`-approximated GELU (Gemma), in place.
pub fn gelu_tanh(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    x.par_chunks_mut(4096).for_each(|c| {
        for v in c {
            let u = *v;
            *v = 0.5 * u * (1.0 + (C * (u + 0.044715 * u * u * u)).tanh());
        }
    });
}

/// SiLU, in place.
pub fn silu(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(|c| {
        for v in c {
            *v /= 1.0 + (-*v).exp();
        }
    });
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
struct Group<'a> {
    q: &'a [f32],
    keys: &'a [f32],
    values: &'a [f32],
    p: usize,
}

/// What [`Attention::seen`] gives a task: its query heads, the `n` key
/// and value rows its query sees.
struct Seen<'a> {
    q: &'a [f32],
    keys: &'a [f32],
    values: &'a [f32],
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
                Simd::Avx2 => head_dim.is_multiple_of(8) && has!("avx2") && has!("fma"),
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

/// One layer's cached keys and values for one sequence: per key head, the
/// rows of every position so far (`head_dim` values each, contiguous, so
/// that attention streams them).
#[derive(Debug, Clone, Default)]
pub struct KvRows {
    pub keys: Vec<Vec<f32>>,
    pub values: Vec<Vec<f32>>,
}

impl KvRows {
    /// Appends the key and value rows of new positions (`n_kv_head ·
    /// head_dim` wide, position-major, as the projections write them).
    pub fn append(&mut self, k: &[f32], v: &[f32], n_kv_head: usize, head_dim: usize) {
        if self.keys.len() != n_kv_head {
            self.keys = vec![Vec::new(); n_kv_head];
            self.values = vec![Vec::new(); n_kv_head];
        }
        for (row_k, row_v) in k
            .chunks_exact(n_kv_head * head_dim)
            .zip(v.chunks_exact(n_kv_head * head_dim))
        {
            for h in 0..n_kv_head {
                self.keys[h].extend_from_slice(&row_k[h * head_dim..][..head_dim]);
                self.values[h].extend_from_slice(&row_v[h * head_dim..][..head_dim]);
            }
        }
    }

    /// Values held (keys and values).
    pub fn len(&self) -> usize {
        self.keys.iter().chain(&self.values).map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
        let width = self.n_head / self.n_kv_head * self.head_dim;
        let mut tasks = Vec::new();
        for job in jobs {
            let rows = job
                .out
                .chunks_exact_mut(width)
                .zip(job.q.chunks_exact(width));
            for (i, (o, q)) in rows.enumerate() {
                let (row, kv) = (i / self.n_kv_head, i % self.n_kv_head);
                let g = Group {
                    q,
                    keys: &job.cache.keys[kv],
                    values: &job.cache.values[kv],
                    p: job.start + row,
                };
                tasks.push((g, o));
            }
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
    fn seen<'a>(&self, g: &Group<'a>, scores: &mut Vec<f32>) -> Seen<'a> {
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
    fn group(&self, simd: Simd, g: &Group<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
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
    unsafe fn group_avx512(&self, g: &Group<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
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
                        acc = _mm512_fmadd_ps(
                            _mm512_loadu_ps(qh.add(c)),
                            _mm512_loadu_ps(k.add(c)),
                            acc,
                        );
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
                            *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(row.add(16 * l)), *a);
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
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group_avx2(&self, g: &Group<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
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
            let dot = |qh: *const f32, k: *const f32| {
                let mut acc = _mm256_setzero_ps();
                for c in (0..hd).step_by(8) {
                    acc =
                        _mm256_fmadd_ps(_mm256_loadu_ps(qh.add(c)), _mm256_loadu_ps(k.add(c)), acc);
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
    fn group_generic(&self, g: &Group<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
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
                    *o += w * v;
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
struct Pv<'a> {
    scores: &'a [f32],
    n: usize,
    values: &'a [f32],
    hd: usize,
    out: *mut f32,
}

#[cfg(target_arch = "x86_64")]
impl Pv<'_> {
    /// # Safety
    /// The CPU must have AVX2 and FMA; `scores` holds `H · n` values,
    /// `values` `n` rows of `hd` (a multiple of 8), `out` `H · hd`.
    #[target_feature(enable = "avx2,fma")]
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
                    let v0 = _mm256_loadu_ps(row);
                    let v1 = if two { _mm256_loadu_ps(row.add(8)) } else { v0 };
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
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `a *= b`, elementwise.
pub fn mul_in_place(a: &mut [f32], b: &[f32]) {
    for (a, b) in a.iter_mut().zip(b) {
        *a *= b;
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
        for (start, t, window, hd, simd, (n_head, n_kv_head)) in shapes {
            if !tested.contains(&simd) {
                tested.push(simd);
            }
            let total = start + t;
            let keys = values(total * n_kv_head * hd, 11);
            let vals = values(total * n_kv_head * hd, 12);
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
            cache.append(&keys, &vals, n_kv_head, hd);
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
                "{simd:?}: start {start} t {t} window {window:?} dims {hd} heads {n_head}: {e}"
            );
        }
        eprintln!("attention kernels tested: {tested:?}");
        Ok(())
    }

    /// Sequences run together give each sequence's numbers alone, bit for
    /// bit: a task's inputs are its own row and cache.
    #[test]
    fn attention_of_several_sequences_equals_each_alone() {
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
                cache.append(&keys, &vals, n_kv_head, hd);
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
        let x = values(5000, 21).iter().map(|v| v * 6.0).collect::<Vec<_>>();
        let t = Tensor::from_slice(&x, x.len(), &Device::Cpu)?;
        let mut g = x.clone();
        gelu_tanh(&mut g);
        assert!(worst(&g, &t.gelu()?.to_vec1::<f32>()?) < 1e-5);
        let mut s = x.clone();
        silu(&mut s);
        assert!(worst(&s, &candle_nn::ops::silu(&t)?.to_vec1::<f32>()?) < 1e-5);
        Ok(())
    }
}
