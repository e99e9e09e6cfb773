//! The Q8_0 linear layer (`smart_support_kernels::q8`) as a candle op.

pub use smart_support_kernels::q8::{Q8Linear, available};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

/// The layer as a candle op on contiguous 2-D f32 input.
pub struct Q8Op<'a>(pub &'a Q8Linear);

impl CustomOp1 for Q8Op<'_> {
    fn name(&self) -> &'static str {
        "q8_0-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), Some((start, end)), [n, k]) =
            (s, l.contiguous_offsets(), l.dims())
        else {
            candle_core::bail!("{} needs a contiguous 2-D f32 tensor", self.name());
        };
        if *k != self.0.k() {
            candle_core::bail!(
                "{}: input width {k}, layer expects {}",
                self.name(),
                self.0.k()
            );
        }
        let y = self.0.forward(&x[start..end], *n);
        Ok((CpuStorage::F32(y), Shape::from((*n, self.0.out()))))
    }
}
