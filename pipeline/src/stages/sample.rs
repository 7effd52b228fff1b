//! `ember sample`: batched, KV-cached sampling from a policy (see `policy::sample`); writes
//! `samples.parquet` with per-token log-probs under the policy at temperature 1.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::sample::SampleConfig;
use policy::Policy;
use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::error::usage;
use crate::stage::{self, Common, Stage, StageArgs};

pub const SAMPLES_FILE: &str = "samples.parquet";

/// The flags of `ember sample`: the policy's sampling settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Samples per prompt.
    #[arg(short = 'n', long = "n", default_value_t = Config::default().n)]
    pub n: usize,
    /// Softmax temperature (0 = greedy).
    #[arg(long, default_value_t = Config::default().temperature)]
    pub temperature: f64,
    /// Keep the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<i64>,
    /// Nucleus sampling mass in (0, 1].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Longest answer in tokens, EOS included.
    #[arg(long, default_value_t = Config::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Sequences generated together.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        let d = SampleConfig::default();
        Self {
            n: d.n,
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            max_new_tokens: d.max_new_tokens,
            batch: d.batch,
        }
    }
}

impl Config {
    pub fn library(&self, seed: u64) -> SampleConfig {
        SampleConfig {
            n: self.n,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            batch: self.batch,
            seed,
        }
    }
}

/// Upstream artifacts.
#[derive(Debug, Clone, clap::Args)]
pub struct Inputs {
    /// Policy directory.
    #[arg(long)]
    pub policy: PathBuf,
    /// Prompts file (Parquet or JSONL with a `prompt` column).
    #[arg(long)]
    pub prompts: PathBuf,
}

/// The stage: `samples.parquet`.
impl Stage for Config {
    const NAME: &'static str = "sample";
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        vec![inputs.policy.clone(), inputs.prompts.clone()]
    }

    fn check(&self) -> Vec<Invalid> {
        let zero = [
            ("n", self.n),
            ("max_new_tokens", self.max_new_tokens),
            ("batch", self.batch),
        ];
        let mut bad: Vec<Invalid> = Invalid::zero(&zero).into_iter().collect();
        bad.extend(Invalid::below("temperature", self.temperature, 0.0, true));
        bad
    }

    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let (device, _amp) = common.device()?;
        let policy = Policy::load(&inputs.policy, device)?;
        let prompts = datasets::table::read_prompts(&inputs.prompts)
            .with_context(|| format!("reading prompts from {}", inputs.prompts.display()))?;
        if prompts.is_empty() {
            return Err(usage(format!(
                "{} holds no prompts",
                inputs.prompts.display()
            )));
        }
        let clock = std::time::Instant::now();
        let samples = policy::sample::sample(&policy, &prompts, &self.library(common.seed))
            .map_err(|e| usage(e.to_string()))?;
        let secs = clock.elapsed().as_secs_f64();
        let tokens: usize = samples.iter().map(|s| s.answer_ids.len()).sum();
        policy::io::write_samples(
            &dir.join(SAMPLES_FILE),
            &prompts,
            &policy.tokenizer,
            &samples,
        )?;
        let eos_id = policy.tokenizer.eos_id();
        let eos = samples
            .iter()
            .filter(|s| s.answer_ids.last() == Some(&eos_id))
            .count();
        let logprob_sum: f64 = samples.iter().map(|s| f64::from(s.logprob_sum)).sum();
        Ok(serde_json::json!({
            "prompts": prompts.len(),
            "samples": samples.len(),
            "new_tokens": tokens,
            "tokens_per_s": tokens as f64 / secs.max(1e-9),
            "eos_share": eos as f64 / samples.len() as f64,
            "mean_logprob_sum": logprob_sum / samples.len() as f64,
        }))
    }
}

pub type Args = StageArgs<Inputs, Config>;

pub fn cli(args: Args) -> Result<ExitCode> {
    let common = Common::from(&args.run);
    let metrics = stage::run_to(&args.config, &common, &args.inputs, &args.out, SAMPLES_FILE)
        .context("ember sample failed")?;
    println!(
        "sample: {} samples, {:.0} tokens/s, {:.0}% ended with EOS → {}",
        metrics["samples"],
        metrics["tokens_per_s"].as_f64().unwrap_or(0.0),
        100.0 * metrics["eos_share"].as_f64().unwrap_or(0.0),
        args.out.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
