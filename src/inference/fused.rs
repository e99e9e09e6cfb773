//! Fused CPU kernels for the BART forward (f32).
//!
//! Run as plain candle ops, each step is its own pass: a matmul into a zeroed
//! buffer, then a separate bias add; attention copies the packed rows into
//! padded heads and back (index_select, transpose, contiguous); a residual add
//! precedes every layer norm. On two cores those mostly single-threaded passes
//! cost almost as much wall time as the GEMMs. Here each step is one parallel
//! pass over the packed (token, feature) rows: the bias is written first and
//! the GEMM accumulates onto it, attention reads each sequence's rows straight
//! from the fused q|k|v output, and residual + layer norm is one kernel.
//!
//! Every function takes the fast path for contiguous f32 tensors on the CPU
//! and otherwise runs the equivalent candle ops, so CUDA/Metal and bf16/f16
//! behave as before.

use std::cell::RefCell;

use candle_core::{
    CpuStorage, CustomOp3, D, DType, Device, InplaceOp1, InplaceOp2, Layout, Result, Shape, Tensor,
};
use candle_nn::{Activation, LayerNorm, Module};
use rayon::prelude::*;

/// Whether `t` can take the fused CPU path.
pub fn is_fast(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
}

fn f32s<'a>(s: &'a CpuStorage, op: &str) -> Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("{op} needs f32 tensors"),
    }
}

/// (rows, cols, row stride, col stride) of a 2-D layout.
fn dims2(l: &Layout, op: &str) -> Result<(usize, usize, usize, usize)> {
    match (l.dims(), l.stride()) {
        ([r, c], [rs, cs]) => Ok((*r, *c, *rs, *cs)),
        _ => candle_core::bail!("{op} needs 2-D tensors, got {:?}", l.dims()),
    }
}

fn parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

// ---------------------------------------------------------------- linear

struct LinearOp;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, w, b) = (f32s(xs, op)?, f32s(ws, op)?, f32s(bs, op)?);
        let (n, k, x_rs, x_cs) = dims2(xl, op)?;
        let (o, wk, w_rs, w_cs) = dims2(wl, op)?;
        let bias = match bl.contiguous_offsets() {
            Some((s, e)) if e - s == o => &b[s..e],
            _ => candle_core::bail!("{op}: bias must be contiguous with {o} values"),
        };
        if wk != k {
            candle_core::bail!("{op}: input width {k} but weight {o}x{wk}");
        }
        // Each output row starts as the bias; the GEMM then adds x·Wᵀ onto it.
        let mut out: Vec<f32> = Vec::with_capacity(n * o);
        out.spare_capacity_mut()
            .par_chunks_mut(o.max(1))
            .for_each(|row| {
                for (d, &s) in row.iter_mut().zip(bias) {
                    d.write(s);
                }
            });
        // SAFETY: every one of the n·o elements was written just above.
        unsafe { out.set_len(n * o) };
        if n > 0 && o > 0 {
            // SAFETY: the strides and offsets come from the layouts of the
            // tensors they describe; `out` holds n·o elements, row stride o.
            // rhs is Wᵀ: element (kk, j) is W[j, kk].
            unsafe {
                gemm::gemm(
                    n,
                    o,
                    k,
                    out.as_mut_ptr(),
                    1,
                    o as isize,
                    true,
                    x.as_ptr().add(xl.start_offset()),
                    x_cs as isize,
                    x_rs as isize,
                    w.as_ptr().add(wl.start_offset()),
                    w_rs as isize,
                    w_cs as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism(),
                )
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, o))))
    }
}

/// `x · wᵀ + b` for 2-D `x` (n, k), `w` (out, k), `b` (out).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if is_fast(x) && is_fast(w) && is_fast(b) && x.rank() == 2 {
        x.apply_op3_no_bwd(w, b, &LinearOp)
    } else {
        x.matmul(&w.t()?)?.broadcast_add(b)
    }
}

struct AddBiasOp;

impl InplaceOp2 for AddBiasOp {
    fn name(&self) -> &'static str {
        "fused-add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let op = InplaceOp2::name(self);
        let b = f32s(s2, op)?;
        let (Some((ds, de)), Some((bs, be))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("{op} needs contiguous tensors");
        };
        let CpuStorage::F32(x) = s1 else {
            candle_core::bail!("{op} needs f32 tensors");
        };
        let bias = &b[bs..be];
        if bias.is_empty() || !(de - ds).is_multiple_of(bias.len()) {
            candle_core::bail!("{op}: bias of {} does not divide the rows", bias.len());
        }
        x[ds..de].par_chunks_mut(bias.len()).for_each(|row| {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        });
        Ok(())
    }
}

/// `x + b` with `b` broadcast over the rows; in place on the fast path, so
/// `x` must be a fresh result that nothing else holds.
pub fn add_bias(x: Tensor, b: &Tensor) -> Result<Tensor> {
    if is_fast(&x) && is_fast(b) && x.is_contiguous() && b.is_contiguous() {
        x.inplace_op2(b, &AddBiasOp)?;
        Ok(x)
    } else {
        x.broadcast_add(b)
    }
}

// ------------------------------------------------------------ activation

/// erf(x) for f32, max abs error ≈ 1e-7 (clamped to ±1 beyond |x| = 4): the
/// rational approximation Eigen and XLA use. candle's exact GELU calls scalar
/// `libm::erff` per element; this one vectorizes. Plain `a * b + c`, not
/// `mul_add`: without a compile-time FMA target `mul_add` is a libm call.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_473_9e-2;
    p / q
}

struct ActivateOp(Activation);

impl InplaceOp1 for ActivateOp {
    fn name(&self) -> &'static str {
        "fused-activation"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let (CpuStorage::F32(data), Some((start, end))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("fused-activation needs a contiguous f32 tensor");
        };
        let data = &mut data[start..end];
        match self.0 {
            Activation::Gelu => data.par_chunks_mut(4096).for_each(|c| {
                for x in c {
                    *x = 0.5 * *x * (1.0 + erf_f32(*x * std::f32::consts::FRAC_1_SQRT_2));
                }
            }),
            Activation::Relu => data.par_chunks_mut(4096).for_each(|c| {
                for x in c {
                    *x = x.max(0.0);
                }
            }),
            other => candle_core::bail!("fused-activation: {other:?} has no fused kernel"),
        }
        Ok(())
    }
}

/// The activation named in config.json: exact (erf) GELU and ReLU in place
/// and in parallel on the fast path (so `xs` must be a fresh result that
/// nothing else holds), candle's kernels otherwise.
pub fn activate(act: Activation, xs: Tensor) -> Result<Tensor> {
    if is_fast(&xs) && xs.is_contiguous() && matches!(act, Activation::Gelu | Activation::Relu) {
        xs.inplace_op1(&ActivateOp(act))?;
        Ok(xs)
    } else {
        xs.apply(&act)
    }
}

// ------------------------------------------------------ residual + norm

/// A layer norm that can also add the residual in the same pass.
#[derive(Debug, Clone)]
pub struct AddNorm {
    weight: Tensor,
    bias: Tensor,
    /// weight and bias stacked (2, d), for the fused kernel.
    wb: Tensor,
    eps: f64,
}

impl AddNorm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Result<Self> {
        let wb = Tensor::stack(&[&weight, &bias], 0)?.to_dtype(DType::F32)?;
        Ok(AddNorm {
            weight,
            bias,
            wb,
            eps,
        })
    }

    /// `LayerNorm(x + residual)`.
    pub fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if is_fast(x) && is_fast(residual) && x.is_contiguous() && residual.is_contiguous() {
            return x.apply_op3_no_bwd(residual, &self.wb, &AddNormOp(self.eps as f32));
        }
        let x = (x + residual)?;
        if x.dtype() == DType::F64 {
            // candle's layer-norm kernel has no f64 (the tests check this path in f64).
            let c = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
            let var = c.sqr()?.mean_keepdim(D::Minus1)?;
            c.broadcast_div(&(var + self.eps)?.sqrt()?)?
                .broadcast_mul(&self.weight)?
                .broadcast_add(&self.bias)
        } else {
            LayerNorm::new(self.weight.clone(), self.bias.clone(), self.eps).forward(&x)
        }
    }
}

struct AddNormOp(f32);

/// Sum of `f(i)` over `0..n` in 16 lanes, so the compiler vectorizes it (and
/// the rounding error stays that of 16 short sums).
#[inline(always)]
fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let full = n - n % 16;
    for base in (0..full).step_by(16) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(base + l);
        }
    }
    let tail: f32 = (full..n).map(&f).sum();
    acc.iter().sum::<f32>() + tail
}

impl CustomOp3 for AddNormOp {
    fn name(&self) -> &'static str {
        "fused-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        wbs: &CpuStorage,
        wbl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, r, wb) = (f32s(xs, op)?, f32s(rs, op)?, f32s(wbs, op)?);
        let (Some((xs0, xe)), Some((rs0, re)), Some((ws0, we))) = (
            xl.contiguous_offsets(),
            rl.contiguous_offsets(),
            wbl.contiguous_offsets(),
        ) else {
            candle_core::bail!("{op} needs contiguous tensors");
        };
        let (x, r, wb) = (&x[xs0..xe], &r[rs0..re], &wb[ws0..we]);
        let d = wb.len() / 2;
        if d == 0 || x.len() != r.len() || !x.len().is_multiple_of(d) || xl.dims() != rl.dims() {
            candle_core::bail!(
                "{op}: shapes {:?} and {:?} with width {d}",
                xl.dims(),
                rl.dims()
            );
        }
        let (g, b) = wb.split_at(d);
        let eps = self.0;
        let mut out: Vec<f32> = Vec::with_capacity(x.len());
        out.spare_capacity_mut()
            .par_chunks_mut(d)
            .zip(x.par_chunks(d).zip(r.par_chunks(d)))
            .for_each(|(o, (x, r))| {
                let mean = lane_sum(d, |i| x[i] + r[i]) / d as f32;
                let var = lane_sum(d, |i| {
                    let c = x[i] + r[i] - mean;
                    c * c
                }) / d as f32;
                let inv = 1.0 / (var + eps).sqrt();
                for i in 0..d {
                    o[i].write((x[i] + r[i] - mean) * inv * g[i] + b[i]);
                }
            });
        // SAFETY: each row of `out` was written in full above.
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

// -------------------------------------------------------------- attention

/// Where one sequence's queries and keys sit in the packed rows. Query row
/// `i` of the span stands at position `q_pos + i` of its sequence; a causal
/// query sees keys `0..=q_pos + i`, any other query all `k_len` keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub q_start: usize,
    pub q_len: usize,
    pub k_start: usize,
    pub k_len: usize,
    pub q_pos: usize,
}

struct AttentionOp<'a> {
    spans: &'a [Span],
    heads: usize,
    causal: bool,
}

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Softmax of `row[..allowed]` in place; the masked rest becomes 0.
fn softmax_prefix(row: &mut [f32], allowed: usize) {
    let (live, masked) = row.split_at_mut(allowed);
    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in live.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    live.iter_mut().for_each(|v| *v *= inv);
    masked.fill(0.0);
}

impl CustomOp3 for AttentionOp<'_> {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (q, k, v) = (f32s(qs, op)?, f32s(ks, op)?, f32s(vs, op)?);
        let (nq, d, q_rs, q_cs) = dims2(ql, op)?;
        let (nk, kd, k_rs, k_cs) = dims2(kl, op)?;
        let (nv, vd, v_rs, v_cs) = dims2(vl, op)?;
        if kd != d || vd != d || nv != nk || self.heads == 0 || !d.is_multiple_of(self.heads) {
            candle_core::bail!(
                "{op}: q {nq}x{d}, k {nk}x{kd}, v {nv}x{vd}, {} heads",
                self.heads
            );
        }
        for s in self.spans {
            let q_end = s.q_start + s.q_len;
            if q_end > nq || s.k_start + s.k_len > nk || s.k_len == 0 {
                candle_core::bail!("{op}: span {s:?} outside q {nq} / k {nk} rows");
            }
        }
        let hd = d / self.heads;
        let mut out = vec![0f32; nq * d];
        // Addresses, not pointers, cross into the parallel tasks (pointers are not Send).
        let dst = out.as_mut_ptr() as usize;
        let (q, k, v) = (
            q[ql.start_offset()..].as_ptr() as usize,
            k[kl.start_offset()..].as_ptr() as usize,
            v[vl.start_offset()..].as_ptr() as usize,
        );
        (0..self.spans.len() * self.heads)
            .into_par_iter()
            .for_each(|task| {
                let (s, h) = (self.spans[task / self.heads], task % self.heads);
                let (tq, tk) = (s.q_len, s.k_len);
                SCORES.with_borrow_mut(|scores| {
                    scores.clear();
                    scores.resize(tq * tk, 0.0);
                    // SAFETY: the spans were checked against the row counts, the
                    // column offsets h·hd + hd ≤ d, and each task writes only its
                    // own (query rows, head columns) block of `out`.
                    unsafe {
                        let qp = (q as *const f32).add(s.q_start * q_rs + h * hd * q_cs);
                        let kp = (k as *const f32).add(s.k_start * k_rs + h * hd * k_cs);
                        let vp = (v as *const f32).add(s.k_start * v_rs + h * hd * v_cs);
                        // scores = q · kᵀ (the 1/√d scale is folded into q_proj).
                        gemm::gemm(
                            tq,
                            tk,
                            hd,
                            scores.as_mut_ptr(),
                            1,
                            tk as isize,
                            false,
                            qp,
                            q_cs as isize,
                            q_rs as isize,
                            kp,
                            k_rs as isize,
                            k_cs as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                        for (i, row) in scores.chunks_exact_mut(tk).enumerate() {
                            let allowed = if self.causal {
                                (s.q_pos + i + 1).min(tk)
                            } else {
                                tk
                            };
                            softmax_prefix(row, allowed);
                        }
                        gemm::gemm(
                            tq,
                            hd,
                            tk,
                            (dst as *mut f32).add(s.q_start * d + h * hd),
                            1,
                            d as isize,
                            false,
                            scores.as_ptr(),
                            1,
                            tk as isize,
                            vp,
                            v_cs as isize,
                            v_rs as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                });
            });
        Ok((CpuStorage::F32(out), Shape::from((nq, d))))
    }
}

/// Multi-head attention on packed rows: `q` (nq, d), `k` and `v` (nk, d), any
/// strides (e.g. column slices of a fused q|k|v projection). Each span's
/// queries attend to that span's keys only. CPU f32 only: callers check
/// [`is_fast`] and use padded candle ops elsewhere.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spans: &[Span],
    heads: usize,
    causal: bool,
) -> Result<Tensor> {
    q.apply_op3_no_bwd(
        k,
        v,
        &AttentionOp {
            spans,
            heads,
            causal,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(shape: (usize, usize), seed: u64) -> Tensor {
        // A small deterministic generator: the tests need varied values, not randomness.
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor")
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff")
    }

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf_f32(x) - candle_core::cpu::erf::erf_f32(x)).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst}");
        assert!((erf_f32(10.0) - 1.0).abs() < 2e-7);
        assert!((erf_f32(-10.0) + 1.0).abs() < 2e-7);
    }

    #[test]
    fn activations_match_candle() -> Result<()> {
        let xs = (Tensor::arange(-600i64, 600, &Device::Cpu)?.to_dtype(DType::F32)? / 100.0)?;
        for act in [Activation::Gelu, Activation::Relu] {
            let slow = xs.apply(&act)?;
            let fast = activate(act, xs.copy()?)?;
            assert!(max_diff(&fast, &slow) < 5e-6, "{act:?}");
        }
        Ok(())
    }

    #[test]
    fn linear_matches_matmul_for_any_strides() -> Result<()> {
        let x = rand((37, 48), 1);
        let w = rand((3 * 20, 48), 2);
        let b = rand((1, 60), 3).flatten_all()?;
        let slow = x.matmul(&w.t()?)?.broadcast_add(&b)?;
        assert!(max_diff(&linear(&x, &w, &b)?, &slow) < 1e-5);
        // A column slice of a wider input (the q|k|v case) and a row-sliced weight.
        let wide = rand((37, 96), 4);
        let xv = wide.narrow(1, 48, 48)?;
        let wv = w.narrow(0, 20, 40)?;
        let bv = b.narrow(0, 20, 40)?;
        let slow = xv.matmul(&wv.t()?)?.broadcast_add(&bv)?;
        assert!(max_diff(&linear(&xv, &wv, &bv)?, &slow) < 1e-5);
        // Bias added in place equals a broadcast add.
        let y = x.matmul(&w.t()?)?;
        assert!(max_diff(&add_bias(y.copy()?, &b)?, &y.broadcast_add(&b)?) < 1e-6);
        Ok(())
    }

    #[test]
    fn add_norm_matches_layer_norm() -> Result<()> {
        let (x, r) = (rand((9, 70), 5), (rand((9, 70), 6) * 3.0)?);
        let (g, b) = (
            rand((1, 70), 7).flatten_all()?,
            rand((1, 70), 8).flatten_all()?,
        );
        let n = AddNorm::new(g.clone(), b.clone(), 1e-5)?;
        let slow = LayerNorm::new(g, b, 1e-5).forward(&(&x + &r)?)?;
        assert!(max_diff(&n.forward(&x, &r)?, &slow) < 1e-5);
        Ok(())
    }

    /// Reference: each span on its own with candle ops and an explicit mask.
    fn reference(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        spans: &[Span],
        heads: usize,
        causal: bool,
    ) -> Result<Tensor> {
        let d = q.dim(1)?;
        let hd = d / heads;
        let mut rows = Vec::new();
        for s in spans {
            let split = |t: &Tensor, start, len| -> Result<Tensor> {
                t.narrow(0, start, len)?
                    .reshape((len, heads, hd))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let (qs, ks, vs) = (
                split(q, s.q_start, s.q_len)?,
                split(k, s.k_start, s.k_len)?,
                split(v, s.k_start, s.k_len)?,
            );
            let mask: Vec<f32> = (0..s.q_len)
                .flat_map(|i| {
                    (0..s.k_len).map(move |j| {
                        if causal && j > s.q_pos + i {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (1, s.q_len, s.k_len), &Device::Cpu)?;
            let p = candle_nn::ops::softmax_last_dim(&qs.matmul(&ks.t()?)?.broadcast_add(&mask)?)?;
            rows.push(p.matmul(&vs)?.transpose(0, 1)?.reshape((s.q_len, d))?);
        }
        Tensor::cat(&rows, 0)
    }

    #[test]
    fn attention_matches_per_sequence_reference() -> Result<()> {
        let heads = 4;
        let qkv = rand((50, 3 * 32), 9);
        let (q, k, v) = (
            qkv.narrow(1, 0, 32)?,
            qkv.narrow(1, 32, 32)?,
            qkv.narrow(1, 64, 32)?,
        );
        // Three sequences of 7, 40 and 3 rows.
        let spans: Vec<Span> = [(0, 7), (7, 40), (47, 3)]
            .iter()
            .map(|&(start, len)| Span {
                q_start: start,
                q_len: len,
                k_start: start,
                k_len: len,
                q_pos: 0,
            })
            .collect();
        for causal in [false, true] {
            let fast = attention(&q, &k, &v, &spans, heads, causal)?;
            let slow = reference(&q, &k, &v, &spans, heads, causal)?;
            assert!(max_diff(&fast, &slow) < 1e-5, "causal {causal}");
        }
        // One query row per sequence at a given position (the last decoder layer).
        let rows = rand((3, 32), 10);
        let spans = vec![
            Span {
                q_start: 0,
                q_len: 1,
                k_start: 0,
                k_len: 7,
                q_pos: 5,
            },
            Span {
                q_start: 1,
                q_len: 1,
                k_start: 7,
                k_len: 40,
                q_pos: 39,
            },
            Span {
                q_start: 2,
                q_len: 1,
                k_start: 47,
                k_len: 3,
                q_pos: 0,
            },
        ];
        let fast = attention(&rows, &k, &v, &spans, heads, true)?;
        let slow = reference(&rows, &k, &v, &spans, heads, true)?;
        assert!(max_diff(&fast, &slow) < 1e-5);
        // A span outside the rows is an error, not a read out of bounds.
        let bad = [Span {
            q_start: 0,
            q_len: 60,
            k_start: 0,
            k_len: 7,
            q_pos: 0,
        }];
        assert!(attention(&q, &k, &v, &bad, heads, false).is_err());
        Ok(())
    }
}
