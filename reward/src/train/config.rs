//! The settings of a reward training run ([`TrainConfig`], saved beside the model as
//! `train_config.json`) and where its data and starting point come from ([`TrainInputs`]).
use std::path::PathBuf;

use policy::train::OptimConfig;
use serde::{Deserialize, Serialize};

use super::mine::{MineConfig, Negatives};
use crate::error::{Result, RewardError};
use crate::loss::{LossConfig, TieMode};
use crate::metrics::Thresholds;
use crate::model::{Pooling, Score};

/// Everything `ember reward train` needs besides its inputs; saved as `train_config.json`. With
/// the `clap` feature it is also the command's flags (the `///` docs are their `--help`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    #[cfg_attr(feature = "clap", command(flatten))]
    pub loss: LossConfig,
    /// What the score reads: `head` (a linear head at the EOS) or `head+nll` (plus the
    /// answer's negative log-likelihood under the trunk; best started from an SFT trunk).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().score))]
    pub score: Score,
    /// Where the head reads the trunk: `eos` (the end-of-answer token) or `mean` (the mean over
    /// the answer's tokens).
    #[serde(skip_serializing_if = "is_eos")]
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().pooling))]
    pub pooling: Pooling,
    /// Tie rows: `skip` or `equal` (trained towards equal energy).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().ties))]
    pub ties: TieMode,
    /// Optimiser and schedule (`--lr` sets the peak; the cosine decays to a tenth of it).
    #[cfg_attr(feature = "clap", arg(skip = TrainConfig::default().optim))]
    pub optim: OptimConfig,
    /// Optimiser steps.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().steps))]
    pub steps: u64,
    /// Pairs per step (each pair is two sequences, one forward pass for all).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().batch))]
    pub batch: usize,
    /// Longest sequence; prompts are truncated from the left to fit.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().max_len))]
    pub max_len: usize,
    /// Validate every N steps (and at the end).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().eval_every))]
    pub eval_every: u64,
    /// Validation pairs used at each evaluation (0 = all).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().eval_pairs))]
    pub eval_pairs: usize,
    /// Stop after this many evaluations without a better validation accuracy (0 = never).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().patience))]
    pub patience: u64,
    /// `nll` only: the chosen answers of this many other prompts of the batch are extra
    /// negatives of each prompt.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().in_batch_negatives))]
    pub in_batch_negatives: usize,
    /// `nll` only: answers sampled (temperature 1) from the `negatives_from` policy for each
    /// training prompt, all used as extra negatives of that prompt: the model's own contrastive
    /// samples (LeCun et al. 2006, §2.2), drawn once before training. 0 = none.
    #[cfg_attr(feature = "clap", arg(short = 'k', long, default_value_t = TrainConfig::default().sampled_negatives))]
    pub sampled_negatives: usize,
    /// `refine`: during training, token-swap refinement on the current model mines negatives
    /// from the batch's answers, kept in a replay buffer per pair (`[reward.mine]`, the
    /// `--mine-*` flags); `relaxed`: embedding-space descent from the noised chosen answers
    /// gives continuous negatives; `none`: only the data's (and in-batch and sampled) negatives.
    #[serde(skip_serializing_if = "is_no_negatives")]
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().negatives))]
    pub negatives: Negatives,
    /// How `negatives = "refine"` mines.
    #[serde(skip_serializing_if = "is_default_mine")]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub mine: MineConfig,
    /// Write a resumable checkpoint every N steps (0 = only at evaluations).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().checkpoint_every))]
    pub checkpoint_every: u64,
    /// Width of a trunk trained from scratch (the shape is ignored with an init checkpoint).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().d_model))]
    pub d_model: i64,
    /// Blocks of a trunk trained from scratch.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().n_layer))]
    pub n_layer: i64,
    /// Attention heads of a trunk trained from scratch.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().n_head))]
    pub n_head: i64,
    /// Dropout of a trunk trained from scratch.
    #[cfg_attr(feature = "clap", arg(skip = TrainConfig::default().dropout))]
    pub dropout: f64,
    /// ε of the "chosen energy below ε" metric.
    #[cfg_attr(feature = "clap", arg(skip = TrainConfig::default().eps))]
    pub eps: f32,
    /// The seed of every generator of the run (the pipeline writes in the run's).
    #[cfg_attr(feature = "clap", arg(skip = TrainConfig::default().seed))]
    pub seed: u64,
    /// Train only the top K trunk blocks (with the final norm and the head); the embedding and
    /// the blocks below stay frozen, as the init checkpoint has them. Unset: the whole trunk;
    /// 0 = the head and final norm only (a linear probe of the frozen trunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "clap", arg(long, value_name = "K"))]
    pub train_blocks: Option<u64>,
    /// With `train_blocks`, keep each sequence's frozen-part output in memory so that every
    /// epoch after the first costs no forward pass through it (f32, T × d_model per sequence).
    #[serde(skip_serializing_if = "is_true")]
    #[cfg_attr(feature = "clap", arg(
        long = "no-cache-frozen",
        action = clap::ArgAction::SetFalse,
        help = "With --train-blocks: recompute the frozen blocks every step instead of caching their output per sequence (saves memory: f32 T × d_model per sequence)"
    ))]
    pub cache_frozen: bool,
    /// Train on this many usable training pairs, drawn without replacement by the run's seed
    /// (0 = all): on a CPU, a pretrained trunk's first epoch is the expensive one, so fewer
    /// pairs seen for more epochs can fit a time budget that all pairs once cannot.
    #[serde(skip_serializing_if = "is_zero")]
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().train_pairs))]
    pub train_pairs: usize,
    /// Training pairs whose energies `energy_stats.json` summarises after training (the first
    /// N): a forward pass each, which on a pretrained trunk on a CPU is worth bounding.
    #[serde(skip_serializing_if = "is_default_stats_pairs")]
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().stats_pairs))]
    pub stats_pairs: usize,
}

impl TrainConfig {
    /// The keys left out of the serialised config at their defaults (so that configs and
    /// fingerprints from before they existed stay the same): a run config's key check must
    /// still know them.
    pub const KEYS_SKIPPED_AT_DEFAULT: [&'static str; 7] = [
        "pooling",
        "negatives",
        "mine",
        "train_blocks",
        "cache_frozen",
        "train_pairs",
        "stats_pairs",
    ];
}

fn is_no_negatives(n: &Negatives) -> bool {
    *n == Negatives::None
}

fn is_default_mine(m: &MineConfig) -> bool {
    *m == MineConfig::default()
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_eos(p: &Pooling) -> bool {
    *p == Pooling::Eos
}

fn is_true(b: &bool) -> bool {
    *b
}

const STATS_PAIRS: usize = 2048;

fn is_default_stats_pairs(n: &usize) -> bool {
    *n == STATS_PAIRS
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            loss: LossConfig::default(),
            score: Score::Head,
            pooling: Pooling::Eos,
            ties: TieMode::Skip,
            optim: OptimConfig {
                lr: 1e-3,
                min_lr: 1e-4,
                warmup_steps: 20,
                weight_decay: 0.01,
                ..OptimConfig::default()
            },
            steps: 300,
            batch: 16,
            max_len: 64,
            eval_every: 50,
            eval_pairs: 512,
            patience: 0,
            in_batch_negatives: 2,
            sampled_negatives: 0,
            negatives: Negatives::None,
            mine: MineConfig::default(),
            checkpoint_every: 50,
            d_model: 64,
            n_layer: 2,
            n_head: 4,
            dropout: 0.0,
            eps: 0.1,
            seed: 0,
            train_blocks: None,
            cache_frozen: true,
            train_pairs: 0,
            stats_pairs: STATS_PAIRS,
        }
    }
}

impl TrainConfig {
    /// The first problem of [`TrainConfig::problems`] as an error.
    pub fn check(&self) -> Result<()> {
        match self.problems().into_iter().next() {
            Some((key, message)) => Err(RewardError::Config(format!("{key}: {message}"))),
            None => Ok(()),
        }
    }

    /// Every value that is wrong, by its key (as in a run config's `[reward]` section).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut bad = Vec::new();
        let mut check = |ok: bool, key: &'static str, message: &str| {
            if !ok {
                bad.push((key, message.to_string()));
            }
        };
        check(self.steps > 0, "steps", "must be > 0");
        check(self.batch > 0, "batch", "must be > 0");
        let lr = self.optim.lr;
        check(
            lr > 0.0 && lr.is_finite(),
            "optim.lr",
            &format!("must be a positive number, got {lr}"),
        );
        check(self.eval_every > 0, "eval_every", "must be > 0");
        check(
            self.loss.beta > 0.0 && self.loss.beta.is_finite(),
            "loss.beta",
            "must be > 0",
        );
        check(
            self.max_len >= 3,
            "max_len",
            "must be at least 3 (separator, one answer token, end of answer)",
        );
        check(
            self.pooling != Pooling::LastColumn,
            "pooling",
            "last-column reads pads under right padding: use eos or mean",
        );
        check(
            self.sampled_negatives == 0 || self.loss.kind == crate::loss::LossKind::Nll,
            "sampled_negatives",
            "sampled negatives need the nll loss (--loss nll)",
        );
        if self.negatives != Negatives::None {
            bad.extend(self.mine.problems());
        }
        bad
    }

    pub(super) fn thresholds(&self) -> Thresholds {
        Thresholds {
            eps: self.eps,
            margin: self.loss.margin as f32,
        }
    }
}

/// Where the data and the starting point come from.
#[derive(Debug, Clone)]
pub struct TrainInputs {
    /// Directory with `train.parquet` and `val.parquet`.
    pub data: PathBuf,
    /// `tokenizer.json`; defaults to the init checkpoint's.
    pub tokenizer: Option<PathBuf>,
    /// A policy (SFT) checkpoint directory whose trunk initialises the model.
    pub init: Option<PathBuf>,
    /// The policy that `sampled_negatives` are drawn from (it must share the tokenizer).
    pub negatives_from: Option<PathBuf>,
}
