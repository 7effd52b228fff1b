//! Fine-tuning the policy on answers scored by an energy model: rejection-sampling fine-tuning
//! on its own lowest-energy answers (expert iteration, Anthony et al. 2017; RAFT, Dong et al.
//! 2023), with a KL penalty to the reference policy or SFT data mixed in; or REINFORCE
//! leave-one-out (RLOO; Ahmadian et al. 2024) on the reward −E − β(log π − log π_ref). Both log
//! the same held-out numbers per round, so they compare on the same axes. The energy model is
//! seen through [`crate::score::Scorer`], so this crate does not depend on `reward`.
//!
//! - [`run`]: the resumable round loop ([`finetune`]) and its `rounds.jsonl` rows.
//! - [`select`]: a round's prompts, its selected answers (keep rule applied) and SFT mix-in.
//! - [`keep`]: which lowest-energy answers a round keeps (`best|below:E|above-median`).
//! - [`rounds`]: the resumable training steps of one round (SFT+KL, RLOO).
//! - [`update`]: the fine-tuning losses (SFT with a KL penalty, RLOO policy gradient).
//! - [`rloo`]: leave-one-out advantages and the KL-penalised reward.
//! - [`heldout`]: the per-round held-out evaluation.
//! - [`kl`]: Monte-Carlo KL(π‖π_ref) from sampled answers' log-probs (k1, k3; Schulman 2020).
use serde::{Deserialize, Serialize};

use crate::sample::SampleConfig;
use crate::train::OptimConfig;

pub mod heldout;
pub mod keep;
pub mod kl;
pub mod rloo;
pub mod rounds;
pub mod run;
pub mod select;
pub mod update;

pub use keep::KeepRule;
pub use run::{finetune, RoundRow, CHECKPOINT, ROUNDS};

/// How the policy learns from the energy model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// Rank-and-select: keep the lowest-energy of N samples, fine-tune on the kept pairs.
    Rs,
    /// REINFORCE leave-one-out on −E − β(log π − log π_ref).
    Rloo,
}

/// `rs` or `rloo`.
impl std::str::FromStr for Algo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rs" => Ok(Self::Rs),
            "rloo" => Ok(Self::Rloo),
            other => Err(format!("unknown algo {other:?}: expected rs or rloo")),
        }
    }
}

impl std::fmt::Display for Algo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rs => "rs",
            Self::Rloo => "rloo",
        })
    }
}

/// The settings of a fine-tuning run.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneConfig {
    pub algo: Algo,
    /// Rounds of sample → select → train.
    pub rounds: usize,
    /// Training prompts used per round (0 = all); rounds walk through a shuffled list.
    pub prompts_per_round: usize,
    /// Which selected answers are trained on (rs).
    pub keep: KeepRule,
    /// KL weight: rs, the per-token KL(π‖π_ref) term of the SFT loss; rloo, β in the reward.
    pub kl_coef: f64,
    /// SFT pairs mixed in per kept pair when SFT pairs are given.
    pub mix_ratio: f64,
    /// Optimizer steps per round (rs); rloo takes ⌈prompts per round / rloo_prompts⌉ steps.
    pub steps: u64,
    /// Sequences per SFT step.
    pub batch: usize,
    /// Prompts per RLOO step (each with `sampling.n` samples).
    pub rloo_prompts: usize,
    /// Optimizer and schedule (warmup + cosine within each round).
    pub optim: OptimConfig,
    /// The sampler of training answers: `n` samples per prompt (N for rs, k ≥ 2 for rloo);
    /// its seed is replaced by one derived from `seed` for each use.
    pub sampling: SampleConfig,
    /// Fresh samples per held-out prompt.
    pub eval_samples: usize,
    /// Sequences scored together (energy and log-probs).
    pub score_batch: usize,
    /// Checkpoint every this many steps inside a round (0 = only at round ends).
    pub checkpoint_every: u64,
    /// Bootstrap resamples of the held-out gold gain's standard error.
    pub bootstrap: usize,
    /// The seed of every generator.
    pub seed: u64,
}

impl FinetuneConfig {
    /// The sampler with `n` samples per prompt and the given seed.
    pub fn sampling(&self, n: usize, seed: u64) -> SampleConfig {
        SampleConfig {
            n,
            seed,
            ..self.sampling.clone()
        }
    }

    /// The training steps of round `round` over `prompts` prompts.
    pub fn steps(&self, prompts: usize, round: usize) -> rounds::Steps {
        let total = match self.algo {
            Algo::Rs => self.steps,
            Algo::Rloo => prompts.div_ceil(self.rloo_prompts) as u64,
        };
        rounds::Steps {
            total,
            optim: self.optim.clone(),
            seed: self.seed,
            round,
            checkpoint_every: self.checkpoint_every,
        }
    }
}

/// The text a fine-tuning run reads.
#[derive(Debug, Clone, Default)]
pub struct FinetuneData {
    /// Training prompts.
    pub train: Vec<String>,
    /// Held-out prompts, evaluated after every round.
    pub eval: Vec<String>,
    /// SFT (prompt, answer) pairs mixed into every rs round.
    pub mix: Option<Vec<(String, String)>>,
    /// Refined (prompt, answer) pairs trained on instead of the policy's samples (rs).
    pub refined: Option<Vec<(String, String)>>,
}
