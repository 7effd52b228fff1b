//! One module per stage or command: its config (TOML section and CLI flags, defined once), its
//! [`crate::stage::Stage`] impl and its subcommand. CLI subcommands and `ember run` run the same
//! impl through [`crate::stage::run`].
use std::path::PathBuf;

pub mod bench;
pub mod compare;
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
