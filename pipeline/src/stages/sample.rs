//! `ember sample`: batched, KV-cached sampling from a policy (see `policy::sample`); writes
//! `samples.parquet` with per-token log-probs under the policy at temperature 1.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::sample::SampleConfig;
use policy::Policy;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::error::usage;
use crate::stage::{Common, Manifest, StageRun};

pub const NAME: &str = "sample";
pub const SAMPLES_FILE: &str = "samples.parquet";

/// The `[sample]` section of a run config; also built from the CLI flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Samples per prompt.
    pub n: usize,
    /// Softmax temperature (0 = greedy).
    pub temperature: f64,
    /// Keep the k most likely tokens.
    pub top_k: Option<i64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Longest answer in tokens, EOS included.
    pub max_new_tokens: usize,
    /// Sequences generated together.
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
pub struct Inputs {
    /// Policy directory.
    pub policy: PathBuf,
    /// Prompts: Parquet or JSONL with a `prompt` column/field.
    pub prompts: PathBuf,
}

/// Samples `cfg` from the policy and writes the table to `path`; returns (rows, tokens/s).
fn sample_to(
    cfg: &Config,
    common: &Common,
    inputs: &Inputs,
    path: &Path,
) -> Result<serde_json::Value> {
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
    let samples = policy::sample::sample(&policy, &prompts, &cfg.library(common.seed))
        .map_err(|e| usage(e.to_string()))?;
    let secs = clock.elapsed().as_secs_f64();
    let tokens: usize = samples.iter().map(|s| s.answer_ids.len()).sum();
    policy::io::write_samples(path, &prompts, &policy.tokenizer, &samples)?;
    let eos = samples
        .iter()
        .filter(|s| s.answer_ids.last() == Some(&policy.tokenizer.eos_id()))
        .count();
    Ok(serde_json::json!({
        "prompts": prompts.len(),
        "samples": samples.len(),
        "new_tokens": tokens,
        "tokens_per_s": tokens as f64 / secs.max(1e-9),
        "eos_share": eos as f64 / samples.len() as f64,
        "mean_logprob_sum": samples.iter().map(|s| f64::from(s.logprob_sum)).sum::<f64>() / samples.len() as f64,
    }))
}

/// The stage: writes `OUT/samples.parquet`.
#[instrument(skip_all, fields(out = %out.display()))]
pub fn run(cfg: &Config, common: &Common, inputs: &Inputs, out: &Path) -> Result<Manifest> {
    let run = StageRun::begin(
        NAME,
        &(cfg, common),
        &[&inputs.policy, &inputs.prompts],
        out,
        false,
    )?;
    let metrics = sample_to(cfg, common, inputs, &run.dir().join(SAMPLES_FILE))?;
    run.finish(metrics, &[]).context("ember sample failed")
}

/// Sample answers from a policy.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy directory.
    #[arg(long)]
    pub policy: PathBuf,
    /// Prompts file (Parquet or JSONL with a `prompt` column).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Samples per prompt.
    #[arg(short = 'n', long = "n", default_value_t = 4)]
    pub n: usize,
    /// Softmax temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Keep the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<i64>,
    /// Nucleus sampling mass in (0, 1].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Longest answer in tokens, EOS included.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Sequences generated together.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Seed of the per-sample random streams.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or auto.
    #[arg(long, value_enum, default_value_t = policy::device::DeviceArg::Cpu)]
    pub device: policy::device::DeviceArg,
    /// fp32, or bf16 (autocast on CUDA; weights and optimizer state stay fp32).
    #[arg(long, value_enum, default_value_t = policy::device::Precision::Fp32)]
    pub precision: policy::device::Precision,
    /// Output: a `.parquet` file, or a stage directory holding `samples.parquet`.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let cfg = Config {
        n: args.n,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        batch: args.batch,
    };
    let device = serde_json::to_value(args.device)?
        .as_str()
        .unwrap_or("cpu")
        .to_string();
    let common = Common {
        precision: args.precision,
        seed: args.seed,
        device,
    };
    let inputs = Inputs {
        policy: args.policy,
        prompts: args.prompts,
    };
    let metrics = if args.out.extension().is_some_and(|e| e == "parquet") {
        let tmp = args.out.with_extension("parquet.partial");
        let m = sample_to(&cfg, &common, &inputs, &tmp)?;
        std::fs::rename(&tmp, &args.out)
            .with_context(|| format!("writing {}", args.out.display()))?;
        m
    } else {
        run(&cfg, &common, &inputs, &args.out)?.metrics
    };
    println!(
        "sample: {} samples, {:.0} tokens/s, {:.0}% ended with EOS → {}",
        metrics["samples"],
        metrics["tokens_per_s"].as_f64().unwrap_or(0.0),
        100.0 * metrics["eos_share"].as_f64().unwrap_or(0.0),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
