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
    /// `out` are `t` rows of `n_head · head_dim`. Query heads share key
    /// heads in groups (GQA): each task takes one query row and one key
    /// head with its whole group of query heads, so every key and value row
    /// is read once for the group.
    pub fn run(&self, q: &[f32], cache: &KvRows, start: usize, out: &mut [f32]) {
        let width = self.n_head / self.n_kv_head * self.head_dim;
        out.par_chunks_mut(width)
            .zip(q.par_chunks(width))
            .enumerate()
            .for_each_init(Vec::new, |scores, (i, (o, qg))| {
                let (row, kv) = (i / self.n_kv_head, i % self.n_kv_head);
                let g = Group {
                    q: qg,
                    keys: &cache.keys[kv],
                    values: &cache.values[kv],
                    p: start + row,
                };
                self.group(&g, scores, o);
            });
    }

    /// The first key a query at position `p` sees, and how many it sees.
    fn keys_seen(&self, p: usize) -> (usize, usize) {
        let lo = self.window.map_or(0, |w| (p + 1).saturating_sub(w));
        (lo, p + 1 - lo)
    }

    /// One query row's group of heads at position `p` against one key head.
    fn group(&self, g: &Group<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if self.head_dim.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F; rows are whole 16-lane chunks.
                return unsafe { self.group_avx512(g, scores, out) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA.
                return unsafe { self.group_avx2(g, scores, out) };
            }
        }
        self.group_generic(g, scores, out)
    }

    /// [`Attention::group_generic`] with 16-lane fused multiply-adds: each
    /// score one register per 16 dims, each output chunk summed in a
    /// register over the keys.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn group_avx512(&self, g: &Group<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
        use std::arch::x86_64::*;
        let hd = self.head_dim;
        let Group { q, keys, values, p } = *g;
        let heads = q.len() / hd;
        let (lo, n) = self.keys_seen(p);
        let keys = &keys[lo * hd..(p + 1) * hd];
        let values = &values[lo * hd..(p + 1) * hd];
        scores.clear();
        scores.resize(heads * n, 0.0);
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
            softmax_rows(scores, n);
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

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group_avx2(&self, g: &Group<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
        self.group_generic(g, scores, out)
    }

    #[inline(always)]
    fn group_generic(&self, g: &Group<'_>, scores: &mut Vec<f32>, out: &mut [f32]) {
        let hd = self.head_dim;
        let Group { q, keys, values, p } = *g;
        let heads = q.len() / hd;
        let (lo, n) = self.keys_seen(p);
        // scores[h * n + j]: query head h against key lo + j.
        scores.clear();
        scores.resize(heads * n, 0.0);
        for (j, k) in keys[lo * hd..(p + 1) * hd].chunks_exact(hd).enumerate() {
            for (h, qh) in q.chunks_exact(hd).enumerate() {
                scores[h * n + j] = dot(qh, k) * self.scale;
            }
        }
        softmax_rows(scores, n);
        out.fill(0.0);
        for (j, v) in values[lo * hd..(p + 1) * hd].chunks_exact(hd).enumerate() {
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
        // 24 dims run the AVX2 (or plain) loop, 32 the AVX-512 one where the CPU has it.
        let cases = [(0, 6, None), (5, 3, None), (9, 4, Some(5)), (3, 1, None)];
        for (start, t, window, hd) in cases
            .iter()
            .flat_map(|&(s, t, w)| [(s, t, w, 24), (s, t, w, 32)])
        {
            let (n_head, n_kv_head) = (4, 2);
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
            a.run(&q, &cache, start, &mut ours);
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
                "start {start} t {t} window {window:?} dims {hd}: {e}"
            );
        }
        Ok(())
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
