//! Searching for low-energy answers with the energy model: best-of-N over pools of policy
//! samples (`policy::pool`), gradient refinement of answers in a continuous relaxation, hybrids
//! of the two, and their comparison at equal compute.
//!
//! - [`bon`]: best-of-n from N ≥ n samples with the unbiased (U-statistic) estimators of the
//!   selected answer's energy, gold and win rate, next to the bounds of Beirami et al. 2024.
//! - [`summary`]: the best-of-n table of a pool, aggregated with Polars.
//! - [`compute`]: the forward-pass-equivalent ledger every method records into.
//! - [`refine`]: the optimiser over answer logits, generic over an [`Energy`].
//! - [`optimiser`]: the settings of a refinement ([`RefineConfig`]), for either method.
//! - [`swap`]: gradient-guided token swaps, the discrete optimiser (`method = "swap"`).
//! - [`langevin`]: Langevin dynamics on answer embeddings with projection to the nearest
//!   tokens (`method = "langevin"`).
//! - [`energy`]: the [`Energy`] trait and the real energy: a trained energy model and the
//!   policy on one prompt.
//! - [`analytic`]: a closed-form energy (distance to a target sequence) for tests.
//! - [`refined`]: one refinement per prompt from the policy's start answers.
//! - [`methods`]: best-of-N, refine and hybrid at every budget on every prompt.
//! - [`compare`]: rows → aggregated cells with bootstrap CIs, verdicts and the Gao et al. fit.
//! - [`io`]: start answers and the Parquet tables.
pub mod analytic;
pub mod bon;
pub mod compare;
pub mod compute;
pub mod energy;
pub mod io;
pub mod langevin;
pub mod methods;
pub mod optimiser;
pub mod refine;
pub mod refined;
pub mod summary;
pub mod swap;

pub use compute::Compute;
pub use energy::Energy;
pub use refine::{refine, Method, RefineConfig, RefineOutcome, StepTrace};
