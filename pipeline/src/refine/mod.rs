//! Gradient refinement of answers on the energy in a continuous relaxation, and its comparison
//! with rank-and-select (best-of-N) at equal compute.
//!
//! - [`compute`]: the forward-pass-equivalent ledger every method records into.
//! - [`optim`]: the optimiser over answer logits, generic over an [`optim::Energy`].
//! - [`analytic`]: a closed-form energy (distance to a target sequence) for tests.
//! - [`models`]: the real energy: a trained energy model and the policy on one prompt.
//! - [`stats`]: bootstrap CIs over prompts and the Gao et al. (2022) best-of-N fit.
//! - [`compare`]: budgets → methods → rows → aggregated cells and verdicts.
//! - [`report`]: `report.md`, `compare.json` and the plots.
//! - [`io`]: start answers and the Parquet tables.
pub mod analytic;
pub mod compare;
pub mod compute;
pub mod io;
pub mod models;
pub mod optim;
pub mod report;
pub mod stats;

pub use compute::Compute;
pub use optim::{refine, Energy, RefineConfig, RefineOutcome, StepTrace};
