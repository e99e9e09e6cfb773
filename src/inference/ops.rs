//! Fast CPU kernels candle lacks. candle's exact GELU calls scalar
//! `libm::erff` per element, which cost almost half as much as the GEMM
//! before it in BART's feed-forward layers; this rational erf
//! approximation (the one Eigen and XLA use for f32) vectorizes and stays
//! within a few ULP of erf.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use candle_nn::Activation;

/// erf(x) for f32, max abs error ≈ 1e-7 (clamped to ±1 beyond |x| = 4).
/// Plain `a * b + c`, not `mul_add`: without a compile-time FMA target
/// `mul_add` becomes a libm call per operation and nothing vectorizes.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
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

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf-fast"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("gelu-erf-fast needs a contiguous f32 tensor");
        };
        let out: Vec<f32> = data[start..end]
            .iter()
            .map(|&x| 0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2)))
            .collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// The activation named in config.json, with the fast exact GELU on CPU f32.
pub fn activate(act: Activation, xs: &Tensor) -> Result<Tensor> {
    match act {
        Activation::Gelu
            if xs.dtype() == DType::F32
                && matches!(xs.device(), Device::Cpu)
                && xs.is_contiguous() =>
        {
            xs.apply_op1_no_bwd(&GeluErf)
        }
        other => xs.apply(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn fast_gelu_matches_candle() {
        let xs = Tensor::arange(-600i64, 600, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t / 100.0);
        let xs = xs.expect("tensor");
        let fast = activate(Activation::Gelu, &xs)
            .and_then(|t| t.to_vec1::<f32>())
            .expect("fast");
        let slow = xs
            .gelu_erf()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("slow");
        let worst = fast
            .iter()
            .zip(&slow)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 5e-6, "max |gelu error| {worst}");
    }
}
