//! One module per stage or command: its config (TOML section and CLI flags, defined once), its
//! [`crate::stage::Stage`] impl and its subcommand. CLI subcommands and `ember run` run the same
//! impl through [`crate::stage::run`].
use std::path::PathBuf;

use ::reward::search::energy::check_compatible;
use ::reward::EnergyScorer;
use anyhow::{Context as _, Result};
use policy::Policy;

use crate::config::Invalid;
use crate::error::usage;
use crate::stage::Common;

pub mod bench;
pub mod compare;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod import;
pub mod ingest;
pub mod logprob;
pub mod rank;
pub mod refine;
pub mod report;
pub mod reward;
pub mod sample;
pub mod sft;
pub mod synth;
pub mod tokenizer;

/// What a stage that puts a policy's answers before the energy model reads (rank, refine,
/// compare, finetune): `--policy`, `--reward` and `--prompts`, hashed in that order.
#[derive(Debug, Clone, clap::Args)]
pub struct OnPolicy {
    /// Policy directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub policy: PathBuf,
    /// Reward model directory (from `ember reward train`).
    #[arg(long)]
    pub reward: PathBuf,
    /// Prompts: Parquet or JSONL with a `prompt` column (rank, refine and compare evaluate on
    /// them, e.g. synth's eval_prompts.parquet; finetune trains on them).
    #[arg(long)]
    pub prompts: PathBuf,
}

impl OnPolicy {
    /// The three paths, in the order they are hashed.
    pub fn paths(&self) -> Vec<PathBuf> {
        vec![
            self.policy.clone(),
            self.reward.clone(),
            self.prompts.clone(),
        ]
    }
}

/// What [`OnPolicy::load`] gives a stage: its prompts and the two models on the run's device
/// (under the autocast scope of its precision while this lives).
pub struct Loaded {
    pub prompts: Vec<String>,
    pub policy: Policy,
    pub scorer: EnergyScorer,
    _amp: Option<policy::device::Autocast>,
}

impl OnPolicy {
    /// The first `max_prompts` prompts (0 = all; none is a usage error), then the policy and the
    /// energy model on `common`'s device with frozen weights, checked to share a tokenizer.
    /// `torch_seed` seeds libtorch's generator before the models load, for stages that sample.
    pub fn load(
        &self,
        common: &Common,
        max_prompts: usize,
        torch_seed: Option<i64>,
    ) -> Result<Loaded> {
        let (device, amp) = common.device()?;
        let prompts = load_prompts(&self.prompts, max_prompts)?;
        if let Some(seed) = torch_seed {
            tch::manual_seed(seed);
        }
        let mut policy = Policy::load(&self.policy, device)
            .with_context(|| format!("loading the policy from {}", self.policy.display()))?;
        let mut scorer = EnergyScorer::load(&self.reward, device)
            .with_context(|| format!("loading the reward model from {}", self.reward.display()))?;
        policy.vs.freeze();
        scorer.vs.freeze();
        check_compatible(&scorer, &policy)?;
        Ok(Loaded {
            prompts,
            policy,
            scorer,
            _amp: amp,
        })
    }
}

/// Reads the prompts (at most `max`, 0 = all); an empty file is a usage error.
pub fn load_prompts(path: &std::path::Path, max: usize) -> Result<Vec<String>> {
    let mut prompts = datasets::read_prompts(path)
        .with_context(|| format!("reading prompts from {}", path.display()))?;
    if max > 0 {
        prompts.truncate(max);
    }
    if prompts.is_empty() {
        return Err(usage(format!("{}: no prompts", path.display())));
    }
    Ok(prompts)
}

/// `temperature` of a stage that compares several samples per prompt: it must be > 0, or every
/// sample would be the same greedy answer.
pub fn sampled_temperature(temperature: f64) -> Option<Invalid> {
    Invalid::below("temperature", temperature, 0.0, false).map(|i| {
        let why = "best-of-N needs distinct samples";
        Invalid::new(i.key, format!("{}; {why}", i.message))
    })
}
