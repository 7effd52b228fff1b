//! Gradient refinement of answers on the energy in a continuous relaxation, and its comparison
//! with rank-and-select (best-of-N) at equal compute.
//!
//! - [`compute`]: the forward-pass-equivalent ledger every method records into.
//! - [`optim`]: the optimiser over answer logits, generic over an [`optim::Energy`].
//! - [`analytic`]: a closed-form energy (distance to a target sequence) for tests.
//! - [`stats`]: bootstrap CIs over prompts and the Gao et al. (2022) best-of-N fit.
pub mod analytic;
pub mod compute;
pub mod optim;
pub mod stats;

pub use compute::Compute;
pub use optim::{refine, Energy, RefineConfig, RefineOutcome, StepTrace};
