//! `ember logprob`: log p(answer | prompt) of given answers under a policy (per token and
//! summed, answer tokens and EOS, temperature 1), the quantity later stages use for KL
//! estimates; see `policy::score`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::Policy;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::error::usage;
use crate::stage::{Common, Manifest, StageRun};

pub const NAME: &str = "logprob";
pub const LOGPROBS_FILE: &str = "logprobs.parquet";

/// The `[logprob]` section of a run config; also built from the CLI flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Sequences scored together.
    pub batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { batch: 32 }
    }
}

/// Upstream artifacts.
pub struct Inputs {
    /// Policy directory.
    pub policy: PathBuf,
    /// A Parquet table with `prompt` and `answer` columns (e.g. `ember sample` output), or
    /// JSON Lines with those fields.
    pub input: PathBuf,
}

/// (prompt, answer) rows of a Parquet table or a JSON Lines file; bad JSONL rows are named.
fn read_prompt_answers(path: &Path) -> Result<Vec<(String, String)>> {
    let name = path.to_string_lossy().to_lowercase();
    if !(name.ends_with(".jsonl") || name.ends_with(".jsonl.gz")) {
        return datasets::table::read_sft(path)
            .with_context(|| format!("reading prompt/answer columns of {}", path.display()));
    }
    let rows = crate::stages::reward::read_rows(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let (prompts, answers) = crate::stages::reward::prompts_answers(&rows).map_err(|bad| {
        let shown: Vec<&str> = bad.iter().take(5).map(String::as_str).collect();
        usage(format!(
            "{}: {} bad row(s): {}",
            path.display(),
            bad.len(),
            shown.join("; ")
        ))
    })?;
    Ok(prompts.into_iter().zip(answers).collect())
}

fn score_to(
    cfg: &Config,
    common: &Common,
    inputs: &Inputs,
    path: &Path,
) -> Result<serde_json::Value> {
    let (device, _amp) = common.device()?;
    let policy = Policy::load(&inputs.policy, device)?;
    let rows = read_prompt_answers(&inputs.input)?;
    if rows.is_empty() {
        return Err(usage(format!("{} has no rows", inputs.input.display())));
    }
    let (prompts, answers): (Vec<String>, Vec<String>) = rows.iter().cloned().unzip();
    let scores = policy::score::answer_logprobs(&policy, &prompts, &answers, cfg.batch.max(1))
        .map_err(|e| usage(format!("{}: {e}", inputs.input.display())))?;
    policy::io::write_logprobs(path, &rows, &scores)?;
    let mean = scores.iter().map(|s| f64::from(s.1)).sum::<f64>() / scores.len() as f64;
    Ok(serde_json::json!({"rows": rows.len(), "mean_logprob_sum": mean}))
}

/// The stage: writes `OUT/logprobs.parquet`.
#[instrument(skip_all, fields(out = %out.display()))]
pub fn run(cfg: &Config, common: &Common, inputs: &Inputs, out: &Path) -> Result<Manifest> {
    let run = StageRun::begin(
        NAME,
        &(cfg, common),
        &[&inputs.policy, &inputs.input],
        out,
        false,
    )?;
    let metrics = score_to(cfg, common, inputs, &run.dir().join(LOGPROBS_FILE))?;
    run.finish(metrics, &[]).context("ember logprob failed")
}

/// Log-probabilities of given answers under a policy.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy directory.
    #[arg(long)]
    pub policy: PathBuf,
    /// Parquet table with `prompt` and `answer` columns, or JSON Lines with those fields.
    #[arg(long)]
    pub input: PathBuf,
    /// Sequences scored together.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// cpu, cuda or auto.
    #[arg(long, value_enum, default_value_t = policy::device::DeviceArg::Cpu)]
    pub device: policy::device::DeviceArg,
    /// fp32, or bf16 (autocast on CUDA; weights and optimizer state stay fp32).
    #[arg(long, value_enum, default_value_t = policy::device::Precision::Fp32)]
    pub precision: policy::device::Precision,
    /// Output: a `.parquet` file, or a stage directory holding `logprobs.parquet`.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let cfg = Config { batch: args.batch };
    let device = serde_json::to_value(args.device)?
        .as_str()
        .unwrap_or("cpu")
        .to_string();
    let common = Common {
        precision: args.precision,
        device,
        ..Common::default()
    };
    let inputs = Inputs {
        policy: args.policy,
        input: args.input,
    };
    let ext = args
        .out
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase());
    let metrics = match ext.as_deref() {
        Some("parquet") => {
            let tmp = args.out.with_extension("parquet.partial");
            let m = score_to(&cfg, &common, &inputs, &tmp)?;
            std::fs::rename(&tmp, &args.out)
                .with_context(|| format!("writing {}", args.out.display()))?;
            m
        }
        Some(e @ ("jsonl" | "json" | "csv" | "gz" | "txt")) => {
            return Err(usage(format!(
                "--out {}: logprobs are written as a .parquet file or into a stage directory, not .{e}",
                args.out.display()
            )));
        }
        _ => run(&cfg, &common, &inputs, &args.out)?.metrics,
    };
    println!(
        "logprob: {} rows, mean log p(answer | prompt) {:.4} → {}",
        metrics["rows"],
        metrics["mean_logprob_sum"].as_f64().unwrap_or(f64::NAN),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
