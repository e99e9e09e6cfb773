//! CPU kernels of smart-support's models, in a crate of their own so that
//! dev and test builds optimise them (`[profile.dev.package]` in the
//! workspace's Cargo.toml): the tests run real weights through them.
//!
//! - [`q8`]: the AVX-512 VNNI Q8_0 linear layer (BART and the decoder).
//! - [`rows`]: the decoder's passes over plain rows of f32 (RMS norm, RoPE,
//!   attention straight on a sequence's cached keys and values).

pub mod q8;
pub mod rows;
