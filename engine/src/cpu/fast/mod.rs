//! The fast CPU kernels beside the reference: f32, vectorised by the compiler (`simd.rs`, with an
//! AVX2 + FMA copy of every kernel chosen at run time), on both cores when the work is large enough
//! (`../parallel.rs`). One concept per file; `CpuBackend` calls these, and
//! `engine/tests/cpu_fast.rs` checks each against `reference.rs`, the ground truth.
//!
//! Every kernel gives the same bits from run to run and whatever the thread count: no result
//! depends on how the work was split (see `parallel.rs`).

pub mod adamw;
pub mod attention;
mod attention_heads;
pub mod elementwise;
pub mod lanes;
pub mod layernorm;
pub mod loss;
pub mod math;
pub mod permute;
pub mod reduce;
pub mod rows;
pub mod simd;
pub mod small_gemm;
