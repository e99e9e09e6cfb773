//! CPU kernels of smart-support's models, in a crate of their own so that
//! dev and test builds optimise them (`[profile.dev.package]` in the
//! workspace's Cargo.toml): the tests run real weights through them.
//!
//! - [`q8`]: the Q8_0 linear layer, AVX-512 VNNI or AVX2 (BART and the decoder).
//! - [`rows`]: the decoder's passes over plain rows of f32 (RMS norm, RoPE,
//!   attention straight on a sequence's cached keys and values).

pub mod q8;
pub mod rows;

/// Reproducible inputs for the kernels' tests (xorshift, in [-1, 1)).
#[cfg(test)]
mod test_values {
    pub fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }
}
