//! The settings of one refinement ([`RefineConfig`]), shared by the soft relaxation
//! ([`super::refine`]) and token swaps ([`super::swap`]), which [`Method`] chooses between.
use serde::{Deserialize, Serialize};

/// How a refinement moves: in the continuous relaxation, or by discrete token swaps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Adam on soft-answer logits (COLD-style), decoded and scored after every step.
    #[default]
    Soft,
    /// Gradient-guided single-token swaps scored exactly (HotFlip/GCG-style, [`super::swap`]).
    Swap,
    /// Langevin dynamics on the answer's embeddings, projected to the nearest tokens
    /// (MuCoLa-style, [`super::langevin`]).
    Langevin,
}

/// Optimiser settings of one refinement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RefineConfig {
    /// `soft` (the relaxation of [`super::refine`]), `swap` (token swaps; uses `steps`,
    /// `candidates`, `beta` as the weight of −log π(answer), and `extra_positions`) or
    /// `langevin` (embeddings; uses `steps`, `lr`, `noise`, `beta` as swaps do, and
    /// `extra_positions`).
    #[serde(skip_serializing_if = "is_soft")]
    pub method: Method,
    /// Swaps scored per step of `method = "swap"`.
    #[serde(skip_serializing_if = "is_default_candidates")]
    pub candidates: usize,
    /// Maximum number of gradient steps.
    pub steps: usize,
    /// Adam learning rate on the logits z.
    pub lr: f64,
    /// Weight β of KL(p ‖ policy); 0 switches the policy term (and its forwards) off.
    pub beta: f64,
    /// Softmax temperature τ at the first step.
    pub tau: f64,
    /// Temperature at the last step (geometric annealing from `tau`); equal to `tau` = constant.
    pub tau_end: f64,
    /// Langevin noise: z gets √(2·lr)·noise·ξ, ξ ~ N(0, I), after each step.
    pub noise: f64,
    /// Feed the hard one-hot of argmax(p) forward and pass gradients through p (straight-through).
    pub straight_through: bool,
    /// Undo a step whose decoded answer has a higher discrete energy than the current one.
    pub accept_if_lower: bool,
    /// Initial logit of the start answer's tokens (z = scale · one-hot).
    pub init_scale: f64,
    /// Positions appended after the start answer (initialised to end-of-answer) so refinement
    /// can lengthen the answer.
    pub extra_positions: usize,
}

impl RefineConfig {
    /// The keys left out of the serialised config at their defaults (so that fingerprints from
    /// before they existed stay the same): a run config's key check must still know them.
    pub const KEYS_SKIPPED_AT_DEFAULT: [&'static str; 2] = ["method", "candidates"];
}

const CANDIDATES: usize = 4;

fn is_soft(m: &Method) -> bool {
    *m == Method::Soft
}

fn is_default_candidates(n: &usize) -> bool {
    *n == CANDIDATES
}

impl Default for RefineConfig {
    fn default() -> Self {
        Self {
            method: Method::Soft,
            candidates: CANDIDATES,
            steps: 8,
            lr: 0.5,
            beta: 0.05,
            tau: 1.0,
            tau_end: 0.5,
            noise: 0.0,
            straight_through: false,
            accept_if_lower: false,
            init_scale: 4.0,
            extra_positions: 2,
        }
    }
}
