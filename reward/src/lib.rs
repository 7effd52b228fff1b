//! The energy-based reward model: a scalar energy E(x, y) ≥ 0 of a prompt x and an answer y on
//! the policy's transformer trunk, trained contrastively with the losses of LeCun et al. 2006
//! ("A Tutorial on Energy-Based Learning"); reward = −energy.
//!
//! [`model`] (config → trunk + head), [`loss`] (the five losses), [`batch`] and [`data`] (text
//! to fitted, padded batches), [`train`] (the loop),
//! [`eval`] and [`metrics`], [`scorer`] (the one scoring function), [`doctor`] (preflight checks),
//! [`store`] (model directory and checkpoints), and [`search`]: best-of-N, gradient refinement
//! of answers on the energy, and their comparison at equal compute.
pub mod batch;
pub mod bench;
pub mod data;
pub mod doctor;
pub mod error;
pub mod eval;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod scorer;
pub mod search;
pub mod store;
pub mod train;

pub use error::{Result, RewardError};
pub use model::{reward_from_energy, EnergyConfig, EnergyModel};
pub use scorer::EnergyScorer;
