//! `ember logprob`: log p(answer | prompt) of given answers under a policy (per token and
//! summed, answer tokens and EOS, temperature 1), the quantity later stages use for KL
//! estimates; see `policy::score`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::Policy;
use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::error::usage;
use crate::stage::{self, Common, NoFlags, RuntimeArgs, Stage, StageArgs};

pub const LOGPROBS_FILE: &str = "logprobs.parquet";

/// The flags of `ember logprob`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Sequences scored together.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { batch: 32 }
    }
}

/// Upstream artifacts.
#[derive(Debug, Clone, clap::Args)]
pub struct Inputs {
    /// Policy directory.
    #[arg(long)]
    pub policy: PathBuf,
    /// Parquet table with `prompt` and `answer` columns (e.g. `ember sample` output), or JSON
    /// Lines with those fields.
    #[arg(long)]
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

/// The stage: `logprobs.parquet`.
impl Stage for Config {
    const NAME: &'static str = "logprob";
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        vec![inputs.policy.clone(), inputs.input.clone()]
    }

    fn check(&self) -> Vec<Invalid> {
        Invalid::zero(&[("batch", self.batch)])
            .into_iter()
            .collect()
    }

    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let (device, _amp) = common.device()?;
        let policy = Policy::load(&inputs.policy, device)?;
        let rows = read_prompt_answers(&inputs.input)?;
        if rows.is_empty() {
            return Err(usage(format!("{} has no rows", inputs.input.display())));
        }
        let (prompts, answers): (Vec<String>, Vec<String>) = rows.iter().cloned().unzip();
        let scores = policy::score::answer_logprobs(&policy, &prompts, &answers, self.batch)
            .map_err(|e| usage(format!("{}: {e}", inputs.input.display())))?;
        policy::io::write_logprobs(&dir.join(LOGPROBS_FILE), &rows, &scores)?;
        let mean = scores.iter().map(|s| f64::from(s.1)).sum::<f64>() / scores.len() as f64;
        Ok(serde_json::json!({"rows": rows.len(), "mean_logprob_sum": mean}))
    }
}

pub type Args = StageArgs<Inputs, Config, NoFlags, RuntimeArgs>;

pub fn cli(args: Args) -> Result<ExitCode> {
    let ext = args
        .out
        .path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase());
    if let Some(e @ ("jsonl" | "json" | "csv" | "gz" | "txt")) = ext.as_deref() {
        return Err(usage(format!(
            "--out {}: logprobs are written as a .parquet file or into a stage directory, not .{e}",
            args.out.path.display()
        )));
    }
    let common = Common {
        device: args.run.device,
        precision: args.run.precision,
        ..Common::default()
    };
    let metrics = stage::run_to(
        &args.config,
        &common,
        &args.inputs,
        &args.out,
        LOGPROBS_FILE,
    )
    .context("ember logprob failed")?;
    println!(
        "logprob: {} rows, mean log p(answer | prompt) {:.4} → {}",
        metrics["rows"],
        metrics["mean_logprob_sum"].as_f64().unwrap_or(f64::NAN),
        args.out.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
