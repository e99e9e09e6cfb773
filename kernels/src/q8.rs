//! Q8_0 linear layers with our own int8 kernels (AVX-512 VNNI, AVX2).
//!
//! The numbers are ggml's (and candle's) Q8_0: weights and activations are cut
//! into blocks of 32 along the input, each block an f16 scale `amax / 127`
//! and 32 int8 values, and `y = b + Σ_blocks dx·dw·Σ qx·qw`. candle computes
//! each output as its own dot product, one row of activations at a time, so
//! every row reads all the weights again. These kernels keep a tile of up to
//! 4 rows × 16 or 32 columns of outputs in registers over weights packed once
//! at load time, so a batch of rows reads each weight once per tile.
//!
//! - **AVX-512 VNNI** (Ice Lake, Sapphire Rapids, Zen 4 and later):
//!   `vpdpbusd` sums four unsigned × signed byte products per 32-bit lane.
//!   Activations are stored as `q + 128`; each block's accumulator starts at
//!   `−128 · Σ qw`, which cancels the offset exactly (integer arithmetic, no
//!   overflow: |Σ| ≤ 32·255·128).
//! - **AVX2** (Haswell, Zen 1–3 and later): `vpmaddubsw` multiplies unsigned by
//!   signed bytes into saturating 16-bit pair sums, so it gets `|qw|` and `qx`
//!   carrying `qw`'s sign (`vpsignb`), the mirror of ggml's AVX2 dot products:
//!   both sides stay within ±127, a pair sum within ±32 258, nothing
//!   saturates; `vpmaddwd` by ones then gives the same four-product sums per
//!   lane. `|qw|` is taken once per weight register for all the tile's rows.
//!
//! Both read the same packed weights and compute the same integer sums; the
//! scales are applied per block in the same order, so the two kernels give
//! the same outputs (tested). On other CPUs the caller keeps candle's `QMatMul`.

use half::f16;
use rayon::prelude::*;

/// Values per quantization block (Q8_0's).
const BLOCK: usize = 32;
/// Output columns per packed tile (16 × i32 / f32 lanes of a 512-bit register).
const LANES: usize = 16;
/// Rows per register tile.
const MR: usize = 4;
/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;
/// Multiply-adds a parallel task should have at least, where the product is
/// large enough to keep every thread busy with tasks of this size.
const MIN_TASK_MACS: usize = 1 << 18;
/// Activations a quantization task should have at least.
const MIN_TASK_VALUES: usize = 1 << 14;
/// Tasks per thread at least (where there is enough work), for balance.
const TASKS_PER_THREAD: usize = 4;

/// The instruction sets the kernel is written for, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512Vnni,
    Avx2,
}

impl Isa {
    pub const ALL: [Isa; 2] = [Isa::Avx512Vnni, Isa::Avx2];

    /// Whether this CPU runs this kernel.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Isa::Avx512Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
                Isa::Avx2 => has!("avx2") && has!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The best kernel this CPU runs, if any.
    pub fn detect() -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.supported())
    }
}

/// Whether this CPU runs one of the kernels.
pub fn available() -> bool {
    Isa::detect().is_some()
}

/// Q8_0 of one block: the scale as stored (f16, read back as f32) and the
/// quantized values, rounded as ggml does (`round(x / d)`).
fn quantize_block(xs: &[f32], qs: &mut [i8]) -> f32 {
    let amax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &x) in qs.iter_mut().zip(xs) {
        *q = (x * id).round() as i8;
    }
    f16::from_f32(d).to_f32()
}

/// One row of activations as Q8_0 blocks, stored as `q + 128`, with the
/// blocks' scales: exactly [`quantize_block`]'s numbers.
fn quantize_row(isa: Isa, x: &[f32], q: &mut [u8], d: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a layer is only built for an `isa` this CPU supports.
    unsafe {
        match isa {
            Isa::Avx512Vnni => quantize_row_avx512(x, q, d),
            Isa::Avx2 => quantize_row_avx2(x, q, d),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, x, q, d);
        unreachable!("Q8Linear is only built where a kernel is available")
    }
}

/// [`quantize_row`] with AVX-512: rounding half away from zero as
/// [`quantize_block`] does (truncate, then step away from zero where the
/// dropped part is at least one half).
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row_avx512(x: &[f32], q: &mut [u8], d: &mut [f32]) {
    use std::arch::x86_64::*;
    let half = _mm512_set1_ps(0.5);
    let sign = _mm512_set1_epi32(i32::MIN);
    let one = _mm512_set1_ps(1.0);
    let flip = _mm_set1_epi8(-128);
    for ((xb, qb), d) in x
        .chunks_exact(BLOCK)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut())
    {
        // SAFETY: each block is 32 values in and 32 bytes out.
        unsafe {
            let v = [
                _mm512_loadu_ps(xb.as_ptr()),
                _mm512_loadu_ps(xb.as_ptr().add(16)),
            ];
            let amax =
                _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
            let dv = amax / 127.0;
            let id = if dv != 0.0 { 1.0 / dv } else { 0.0 };
            *d = f16::from_f32(dv).to_f32();
            for (h, v) in v.into_iter().enumerate() {
                let y = _mm512_mul_ps(v, _mm512_set1_ps(id));
                let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
                let away =
                    _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(y, t)), half);
                let step = _mm512_castsi512_ps(_mm512_or_si512(
                    _mm512_and_si512(_mm512_castps_si512(y), sign),
                    _mm512_castps_si512(one),
                ));
                let r = _mm512_mask_add_ps(t, away, t, step);
                let bytes = _mm_xor_si128(_mm512_cvtepi32_epi8(_mm512_cvtps_epi32(r)), flip);
                _mm_storeu_si128(qb.as_mut_ptr().add(16 * h).cast(), bytes);
            }
        }
    }
}

/// [`quantize_row`] with AVX2, rounding as [`quantize_row_avx512`] does.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(x: &[f32], q: &mut [u8], d: &mut [f32]) {
    use std::arch::x86_64::*;
    let half = _mm256_set1_ps(0.5);
    let sign = _mm256_set1_ps(-0.0);
    let one = _mm256_set1_ps(1.0);
    let flip = _mm256_set1_epi8(-128);
    // packs interleaves 128-bit lanes; this puts the 4-value runs back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for ((xb, qb), d) in x
        .chunks_exact(BLOCK)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut())
    {
        // SAFETY: each block is 32 values in and 32 bytes out.
        unsafe {
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xb.as_ptr().add(8 * i)));
            let abs = |v| _mm256_andnot_ps(sign, v);
            let m = _mm256_max_ps(
                _mm256_max_ps(abs(v[0]), abs(v[1])),
                _mm256_max_ps(abs(v[2]), abs(v[3])),
            );
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
            let dv = amax / 127.0;
            let id = if dv != 0.0 { 1.0 / dv } else { 0.0 };
            *d = f16::from_f32(dv).to_f32();
            let ints = v.map(|v| {
                let y = _mm256_mul_ps(v, _mm256_set1_ps(id));
                let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
                let away = _mm256_cmp_ps::<_CMP_GE_OQ>(abs(_mm256_sub_ps(y, t)), half);
                let step = _mm256_or_ps(_mm256_and_ps(y, sign), one);
                _mm256_cvtps_epi32(_mm256_add_ps(t, _mm256_and_ps(away, step)))
            });
            let words = [
                _mm256_packs_epi32(ints[0], ints[1]),
                _mm256_packs_epi32(ints[2], ints[3]),
            ];
            let bytes = _mm256_packs_epi16(words[0], words[1]);
            let bytes = _mm256_permutevar8x32_epi32(bytes, order);
            _mm256_storeu_si256(qb.as_mut_ptr().cast(), _mm256_xor_si256(bytes, flip));
        }
    }
}

/// A linear layer `y = x·Wᵀ + b` with W in Q8_0, packed for the kernels.
#[derive(Clone)]
pub struct Q8Linear {
    isa: Isa,
    out: usize,
    k: usize,
    /// Per 16-column tile, per block: 8 groups × 16 columns × 4 values.
    weights: Vec<i8>,
    /// Per tile, per block: the 16 columns' scales (0 for padding columns).
    scales: Vec<f32>,
    /// Per tile, per block: `−128 · Σ qw` of the 16 columns (VNNI's offset).
    offsets: Vec<i32>,
    /// Padded to whole tiles.
    bias: Vec<f32>,
}

impl std::fmt::Debug for Q8Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q8Linear({}x{}, {:?})", self.out, self.k, self.isa)
    }
}

impl Q8Linear {
    /// Quantizes the row-major `w` (out × k) and packs it; `None` when this
    /// CPU runs neither kernel or `k` is not a whole number of blocks.
    pub fn new(w: &[f32], bias: &[f32], out: usize, k: usize) -> Option<Self> {
        Self::new_for(Isa::detect()?, w, bias, out, k)
    }

    /// As [`Q8Linear::new`], for the kernel `isa` (`None` where this CPU
    /// lacks it).
    pub fn new_for(isa: Isa, w: &[f32], bias: &[f32], out: usize, k: usize) -> Option<Self> {
        if w.len() != out * k {
            return None;
        }
        Self::from_rows_for(isa, out, k, bias, |rows| {
            w[rows.start * k..rows.end * k].to_vec()
        })
    }

    /// As [`Q8Linear::new`], with the weights' rows asked for a range at a
    /// time (`rows(range)` returns those rows, row-major), so that a large
    /// matrix is never held whole in f32.
    pub fn from_rows(
        out: usize,
        k: usize,
        bias: &[f32],
        rows: impl FnMut(std::ops::Range<usize>) -> Vec<f32>,
    ) -> Option<Self> {
        Self::from_rows_for(Isa::detect()?, out, k, bias, rows)
    }

    fn from_rows_for(
        isa: Isa,
        out: usize,
        k: usize,
        bias: &[f32],
        mut rows: impl FnMut(std::ops::Range<usize>) -> Vec<f32>,
    ) -> Option<Self> {
        let shapes_fit = k > 0 && k.is_multiple_of(BLOCK) && bias.len() == out;
        if !isa.supported() || !shapes_fit {
            return None;
        }
        let (blocks, tiles) = (k / BLOCK, out.div_ceil(LANES));
        let mut weights = vec![0i8; tiles * blocks * LANES * BLOCK];
        let mut scales = vec![0f32; tiles * blocks * LANES];
        let mut offsets = vec![0i32; tiles * blocks * LANES];
        let mut q = [0i8; BLOCK];
        const CHUNK: usize = 4096;
        for first in (0..out).step_by(CHUNK) {
            let chunk = first..(first + CHUNK).min(out);
            let w = rows(chunk.clone());
            if w.len() != chunk.len() * k {
                return None;
            }
            for (col, row) in chunk.zip(w.chunks_exact(k)) {
                let (tile, lane) = (col / LANES, col % LANES);
                for kb in 0..blocks {
                    let d = quantize_block(&row[kb * BLOCK..][..BLOCK], &mut q);
                    let tb = tile * blocks + kb;
                    scales[tb * LANES + lane] = d;
                    offsets[tb * LANES + lane] = -128 * q.iter().map(|&v| v as i32).sum::<i32>();
                    for (g, four) in q.chunks_exact(4).enumerate() {
                        let at = ((tb * 8 + g) * LANES + lane) * 4;
                        weights[at..at + 4].copy_from_slice(four);
                    }
                }
            }
        }
        let mut b = bias.to_vec();
        b.resize(tiles * LANES, 0.0);
        Some(Q8Linear {
            isa,
            out,
            k,
            weights,
            scales,
            offsets,
            bias: b,
        })
    }

    /// Output width.
    pub fn out(&self) -> usize {
        self.out
    }

    /// Input width.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The kernel this layer runs.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `x·Wᵀ + b` for `n` contiguous rows of `k` values.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (k, blocks) = (self.k, self.k / BLOCK);
        let mut qx = vec![0u8; n * k];
        let mut dx = vec![0f32; n * blocks];
        qx.par_chunks_mut(k)
            .zip(dx.par_chunks_mut(blocks))
            .zip(x.par_chunks(k))
            // A decode pass's few rows are quicker quantized here than handed out.
            .with_min_len(MIN_TASK_VALUES.div_ceil(k))
            .for_each(|((qrow, drow), xrow)| quantize_row(self.isa, xrow, qrow, drow));
        // AVX2 takes the activations as signed bytes.
        if self.isa == Isa::Avx2 {
            qx.iter_mut().for_each(|q| *q ^= 0x80);
        }
        let out = self.out;
        let mut y: Vec<f32> = Vec::with_capacity(n * out);
        let dst = y.as_mut_ptr() as usize;
        let pairs = self.bias.len().div_ceil(2 * LANES);
        let row_tasks = n.div_ceil(ROWS_PER_TASK);
        let span = self.pairs_per_task(n.min(ROWS_PER_TASK), pairs, row_tasks);
        let col_tasks = pairs.div_ceil(span);
        (0..row_tasks * col_tasks).into_par_iter().for_each(|task| {
            let (rt, ct) = (task / col_tasks, task % col_tasks);
            let rows = rt * ROWS_PER_TASK..((rt + 1) * ROWS_PER_TASK).min(n);
            for pair in ct * span..((ct + 1) * span).min(pairs) {
                for r0 in rows.clone().step_by(MR) {
                    let mr = (rows.end - r0).min(MR);
                    let args = Tile {
                        qx: &qx[r0 * k..],
                        dx: &dx[r0 * blocks..],
                        k,
                        tile: 2 * pair,
                        // SAFETY: tasks cover disjoint (row range, column range) blocks of y.
                        dst: (dst as *mut f32).wrapping_add(r0 * out),
                    };
                    // SAFETY: the layer was built for an `isa` this CPU supports.
                    unsafe { self.tile_dispatch(mr, &args) };
                }
            }
        });
        // SAFETY: the tasks above wrote every row and every column below `out`.
        unsafe { y.set_len(n * out) };
        y
    }

    /// How many pairs of column tiles one task takes, for `rows` rows per
    /// task, `pairs` pairs and `row_tasks` row tasks: enough work per task
    /// that scheduling does not dominate a decode step's small products, yet
    /// several tasks per thread so that the threads finish together, and
    /// where a slightly larger span allows it, a number of tasks the threads
    /// share evenly (9 tasks on 2 threads leave one thread idle a ninth of
    /// the time).
    fn pairs_per_task(&self, rows: usize, pairs: usize, row_tasks: usize) -> usize {
        let threads = rayon::current_num_threads();
        let per_pair = (rows * self.k * 2 * LANES).max(1);
        let enough = MIN_TASK_MACS.div_ceil(per_pair);
        let balanced = pairs * row_tasks / (TASKS_PER_THREAD * threads);
        let span = enough.min(balanced).max(1);
        (span..=2 * span)
            .find(|s| (row_tasks * pairs.div_ceil(*s)).is_multiple_of(threads))
            .unwrap_or(span)
    }

    /// Runs `mr` rows × the two column tiles from `a.tile` (one where the
    /// last tile is odd).
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile_dispatch(&self, mr: usize, a: &Tile) {
        let two = a.tile + 1 < self.bias.len() / LANES;
        // SAFETY: forwarded from the caller.
        unsafe {
            match self.isa {
                Isa::Avx512Vnni => match (mr, two) {
                    (4, true) => self.tile_vnni::<4, 2>(a),
                    (3, true) => self.tile_vnni::<3, 2>(a),
                    (2, true) => self.tile_vnni::<2, 2>(a),
                    (1, true) => self.tile_vnni::<1, 2>(a),
                    (4, false) => self.tile_vnni::<4, 1>(a),
                    (3, false) => self.tile_vnni::<3, 1>(a),
                    (2, false) => self.tile_vnni::<2, 1>(a),
                    _ => self.tile_vnni::<1, 1>(a),
                },
                Isa::Avx2 => {
                    for tile in a.tile..a.tile + 1 + two as usize {
                        let a = &Tile { tile, ..*a };
                        match mr {
                            4 => self.tile_avx2::<4>(a),
                            3 => self.tile_avx2::<3>(a),
                            2 => self.tile_avx2::<2>(a),
                            _ => self.tile_avx2::<1>(a),
                        }
                    }
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn tile_dispatch(&self, _mr: usize, _a: &Tile) {
        unreachable!("Q8Linear is only built where a kernel is available")
    }

    /// `R` rows × `T` tiles of 16 columns, over all blocks of the input.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_vnni<const R: usize, const T: usize>(&self, a: &Tile) {
        use std::arch::x86_64::*;
        let blocks = self.k / BLOCK;
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        // SAFETY (all loads and stores below): tiles `a.tile..a.tile + T` exist
        // in the packed arrays, `R` rows of `k` activations and `blocks` scales
        // follow `a.qx` / `a.dx`, and stores are masked to the real columns.
        unsafe {
            for kb in 0..blocks {
                let tb = |t: usize| (a.tile + t) * blocks + kb;
                let mut iacc = [[_mm512_setzero_si512(); T]; R];
                for t in 0..T {
                    let off = _mm512_loadu_si512(self.offsets.as_ptr().add(tb(t) * LANES).cast());
                    for row in iacc.iter_mut() {
                        row[t] = off;
                    }
                }
                for g in 0..8 {
                    let mut w = [_mm512_setzero_si512(); T];
                    for (t, wt) in w.iter_mut().enumerate() {
                        *wt = _mm512_loadu_si512(
                            self.weights
                                .as_ptr()
                                .add((tb(t) * 8 + g) * LANES * 4)
                                .cast(),
                        );
                    }
                    for (r, row) in iacc.iter_mut().enumerate() {
                        let four = a.qx.as_ptr().add(r * a.k + kb * BLOCK + g * 4);
                        let x = _mm512_set1_epi32(four.cast::<i32>().read_unaligned());
                        for t in 0..T {
                            row[t] = _mm512_dpbusd_epi32(row[t], x, w[t]);
                        }
                    }
                }
                for t in 0..T {
                    let s = _mm512_loadu_ps(self.scales.as_ptr().add(tb(t) * LANES));
                    for r in 0..R {
                        let d = _mm512_set1_ps(*a.dx.as_ptr().add(r * blocks + kb));
                        acc[r][t] = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(iacc[r][t]),
                            _mm512_mul_ps(s, d),
                            acc[r][t],
                        );
                    }
                }
            }
            for t in 0..T {
                let col = (a.tile + t) * LANES;
                let valid = self.out.saturating_sub(col).min(LANES);
                let mask: __mmask16 = ((1u32 << valid) - 1) as __mmask16;
                let b = _mm512_loadu_ps(self.bias.as_ptr().add(col));
                for (r, row) in acc.iter().enumerate() {
                    let p = a.dst.add(r * self.out + col);
                    _mm512_mask_storeu_ps(p, mask, _mm512_add_ps(row[t], b));
                }
            }
        }
    }

    /// `R` rows × one tile of 16 columns (two 8-lane halves), over all
    /// blocks of the input.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_avx2<const R: usize>(&self, a: &Tile) {
        use std::arch::x86_64::*;
        let blocks = self.k / BLOCK;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // SAFETY (all loads and stores below): tile `a.tile` exists in the
        // packed arrays, `R` rows of `k` activations and `blocks` scales follow
        // `a.qx` / `a.dx`, and stores stop at the real columns.
        unsafe {
            for kb in 0..blocks {
                let tb = a.tile * blocks + kb;
                let mut iacc = [[_mm256_setzero_si256(); 2]; R];
                for g in 0..8 {
                    let wp = self.weights.as_ptr().add((tb * 8 + g) * LANES * 4);
                    let w = [
                        _mm256_loadu_si256(wp.cast()),
                        _mm256_loadu_si256(wp.add(32).cast()),
                    ];
                    let aw = [_mm256_abs_epi8(w[0]), _mm256_abs_epi8(w[1])];
                    for (r, row) in iacc.iter_mut().enumerate() {
                        let at = r * a.k + kb * BLOCK + g * 4;
                        let x =
                            _mm256_set1_epi32(a.qx.as_ptr().add(at).cast::<i32>().read_unaligned());
                        for h in 0..2 {
                            let pairs = _mm256_maddubs_epi16(aw[h], _mm256_sign_epi8(x, w[h]));
                            row[h] = _mm256_add_epi32(row[h], _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
                for h in 0..2 {
                    let s = _mm256_loadu_ps(self.scales.as_ptr().add(tb * LANES + 8 * h));
                    for r in 0..R {
                        let d = _mm256_set1_ps(*a.dx.as_ptr().add(r * blocks + kb));
                        acc[r][h] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(iacc[r][h]),
                            _mm256_mul_ps(s, d),
                            acc[r][h],
                        );
                    }
                }
            }
            let col = a.tile * LANES;
            let valid = self.out.saturating_sub(col).min(LANES);
            let b = [0, 8].map(|h| _mm256_loadu_ps(self.bias.as_ptr().add(col + h)));
            for (r, row) in acc.iter().enumerate() {
                let y = [0, 1].map(|h| _mm256_add_ps(row[h], b[h]));
                let dst = a.dst.add(r * self.out + col);
                if valid == LANES {
                    // Whole tiles (all but maybe the last) store straight
                    // from registers: a copy call per tile and row cost 3 %
                    // of a batched decode step.
                    _mm256_storeu_ps(dst, y[0]);
                    _mm256_storeu_ps(dst.add(8), y[1]);
                } else {
                    let mut part = [0f32; LANES];
                    _mm256_storeu_ps(part.as_mut_ptr(), y[0]);
                    _mm256_storeu_ps(part.as_mut_ptr().add(8), y[1]);
                    std::ptr::copy_nonoverlapping(part.as_ptr(), dst, valid);
                }
            }
        }
    }
}

/// One register tile's inputs: activations from its first row, the first of
/// its column tiles, and where its first output row starts.
#[derive(Clone, Copy)]
struct Tile<'a> {
    /// VNNI: `q + 128`; AVX2: q (as bytes).
    qx: &'a [u8],
    dx: &'a [f32],
    k: usize,
    tile: usize,
    dst: *mut f32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// Q8_0 of `w` and `x` multiplied exactly (integer dots, f64 sums), plus `bias`.
    fn exact(w: &[f32], x: &[f32], bias: &[f32], (n, k, out): (usize, usize, usize)) -> Vec<f32> {
        let (mut qa, mut qb) = ([0i8; BLOCK], [0i8; BLOCK]);
        let mut y = Vec::with_capacity(n * out);
        for i in 0..n {
            for j in 0..out {
                let mut acc = bias[j] as f64;
                for kb in 0..k / BLOCK {
                    let da = quantize_block(&x[i * k + kb * BLOCK..][..BLOCK], &mut qa);
                    let db = quantize_block(&w[j * k + kb * BLOCK..][..BLOCK], &mut qb);
                    let dot: i32 = qa.iter().zip(&qb).map(|(&a, &b)| a as i32 * b as i32).sum();
                    acc += da as f64 * db as f64 * dot as f64;
                }
                y.push(acc as f32);
            }
        }
        y
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0f32, f32::max)
    }

    /// Widths that fill whole tiles, a partial tile and an odd last tile; row
    /// counts that leave register-tile and task remainders.
    #[test]
    fn matches_exact_q8_0_and_candle() -> candle_core::Result<()> {
        for isa in kernels() {
            matches_exact_q8_0_and_candle_with(isa)?;
        }
        Ok(())
    }

    /// The kernels this CPU runs, each announced on stderr; on x86-64 there
    /// is always one (AVX2 is the floor of the CPUs we support).
    fn kernels() -> Vec<Isa> {
        let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.supported()).collect();
        for isa in Isa::ALL {
            eprintln!(
                "{isa:?}: {}",
                if isas.contains(&isa) {
                    "tested"
                } else {
                    "not on this CPU"
                }
            );
        }
        if cfg!(target_arch = "x86_64") {
            assert!(!isas.is_empty(), "no Q8_0 kernel runs on this x86-64 CPU");
        }
        isas
    }

    fn matches_exact_q8_0_and_candle_with(isa: Isa) -> candle_core::Result<()> {
        for &(n, k, out) in &[
            (1, 32, 16),
            (7, 64, 40),
            (65, 64, 16),
            (67, 256, 48),
            (130, 128, 100),
        ] {
            let w = values(out * k, (n + k + out) as u64);
            let x = values(n * k, 7 + n as u64);
            let bias = values(out, 3);
            let layer = Q8Linear::new_for(isa, &w, &bias, out, k).expect("kernel available");
            let ours = layer.forward(&x, n);
            let e = worst(&ours, &exact(&w, &x, &bias, (n, k, out)));
            assert!(e < 1e-5, "{isa:?} {n}x{k}x{out} vs exact Q8_0: {e}");
            // Within quantization error of the f32 product (a few % of its size).
            let (wt, xt) = (
                Tensor::from_vec(w, (out, k), &Device::Cpu)?,
                Tensor::from_vec(x, (n, k), &Device::Cpu)?,
            );
            let bt = Tensor::from_vec(bias, out, &Device::Cpu)?;
            let f32s = xt
                .matmul(&wt.t()?)?
                .broadcast_add(&bt)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let rms = (f32s.iter().map(|v| v * v).sum::<f32>() / f32s.len() as f32).sqrt();
            let e = ours
                .iter()
                .zip(&f32s)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
                / rms;
            assert!(
                e < 5e-2,
                "{n}x{k}x{out} vs f32: max error {e} of the outputs' RMS"
            );
            // candle's QMatMul takes another path when k is a multiple of 256;
            // below that it computes the same Q8_0 numbers.
            if k % 256 != 0 {
                let qm = QMatMul::from_qtensor(QTensor::quantize(&wt, GgmlDType::Q8_0)?)?;
                let theirs = qm
                    .forward(&xt)?
                    .broadcast_add(&bt)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let e = worst(&ours, &theirs);
                assert!(e < 1e-5, "{n}x{k}x{out} vs candle: {e}");
            }
        }
        Ok(())
    }

    /// The vector quantizer gives the scalar one's bytes and scales,
    /// halves included (values placed exactly on .5 after scaling).
    #[test]
    fn row_quantizer_equals_the_block_quantizer() {
        for isa in kernels() {
            row_quantizer_equals_the_block_quantizer_with(isa);
        }
    }

    fn row_quantizer_equals_the_block_quantizer_with(isa: Isa) {
        let mut x = values(32 * 40, 5);
        // Block 0: amax 127 → d = 1, so k + 0.5 are exact halves.
        for (i, v) in x[..32].iter_mut().enumerate() {
            *v = if i == 0 {
                127.0
            } else {
                (i as f32 - 16.0) + 0.5
            };
        }
        x[32..64].fill(0.0);
        let (mut q, mut d) = (vec![0u8; x.len()], vec![0f32; x.len() / 32]);
        quantize_row(isa, &x, &mut q, &mut d);
        let mut want = [0i8; BLOCK];
        for (b, xb) in x.chunks_exact(BLOCK).enumerate() {
            assert_eq!(
                d[b],
                quantize_block(xb, &mut want),
                "{isa:?}: scale of block {b}"
            );
            let got: Vec<i8> = q[b * BLOCK..][..BLOCK]
                .iter()
                .map(|&u| (u ^ 0x80) as i8)
                .collect();
            assert_eq!(got, want, "{isa:?}: block {b}");
        }
    }

    /// Where a CPU runs both kernels they give the same bits: the same
    /// integer sums, the scales applied in the same order.
    #[test]
    fn both_kernels_give_the_same_outputs() {
        let isas = kernels();
        let (n, k, out) = (9, 192, 72);
        let (w, x, bias) = (values(out * k, 11), values(n * k, 12), values(out, 13));
        let ys: Vec<Vec<f32>> = isas
            .iter()
            .map(|&isa| {
                Q8Linear::new_for(isa, &w, &bias, out, k)
                    .expect("kernel available")
                    .forward(&x, n)
            })
            .collect();
        for (isa, y) in isas.iter().zip(&ys).skip(1) {
            assert_eq!(y, &ys[0], "{isa:?} vs {:?}", isas[0]);
        }
    }

    #[test]
    fn rejects_partial_blocks() {
        assert!(Q8Linear::new(&[0.0; 48], &[0.0; 2], 2, 24).is_none());
        assert!(Q8Linear::new(&[0.0; 64], &[0.0; 3], 2, 32).is_none());
    }
}
