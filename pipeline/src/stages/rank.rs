//! `ember rank`: best-of-N by lowest energy. N samples per prompt from the policy, energies from
//! the reward model, every candidate and the selected answer per prompt written as Parquet, and
//! the best-of-n table for n = 1, 2, 4, …, N estimated from the same samples with the unbiased
//! estimators of [`reward::search::bon`] next to the bounds of Beirami et al. 2024.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::pool::{best_per_prompt, draw, write_candidates};
use policy::sample::SampleConfig;
use reward::search::summary::{summarize, SummaryRow};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::Invalid;
use crate::stage::{self, Common, Stage, StageArgs};

pub const CANDIDATES: &str = "candidates.parquet";
pub const SELECTED: &str = "selected.parquet";
pub const SUMMARY: &str = "summary.json";

/// The `[rank]` section of a run config, and the flags of `ember rank`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Samples per prompt (N); the table covers n = 1, 2, 4, …, N.
    #[arg(short = 'n', long = "samples", default_value_t = Config::default().n)]
    pub n: usize,
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = Config::default().temperature)]
    pub temperature: f64,
    /// Keep only the k most likely tokens when sampling.
    #[arg(long)]
    pub top_k: Option<i64>,
    /// Nucleus sampling: the smallest token set with probability ≥ p.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Longest answer in tokens, EOS included.
    #[arg(long, default_value_t = Config::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Sequences generated together.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
    /// Answers scored together by the energy model.
    #[arg(long, default_value_t = Config::default().score_batch)]
    pub score_batch: usize,
    /// Use only the first this many prompts (0 = all).
    #[arg(long, default_value_t = Config::default().max_prompts)]
    pub max_prompts: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            n: 16,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            max_new_tokens: 16,
            batch: 256,
            score_batch: 256,
            max_prompts: 100,
        }
    }
}

impl Config {
    /// The policy's sampling settings for this config under `seed`.
    pub fn sampling(&self, seed: u64) -> SampleConfig {
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

/// Upstream artifacts: a policy directory, a reward model directory and a prompts file.
pub type Inputs = super::OnPolicy;

/// The stage: `candidates.parquet`, `selected.parquet` and `summary.json`.
impl Stage for Config {
    const NAME: &'static str = "rank";
    const SHARDS: bool = true;
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        inputs.paths()
    }

    fn check(&self) -> Vec<Invalid> {
        let zero = [
            ("n", self.n),
            ("batch", self.batch),
            ("score_batch", self.score_batch),
        ];
        let mut bad: Vec<Invalid> = Invalid::zero(&zero).into_iter().collect();
        bad.extend(Invalid::zero(&[("max_new_tokens", self.max_new_tokens)]));
        bad.extend(super::sampled_temperature(self.temperature));
        bad
    }

    /// Samples, scores, selects; writes the candidates, the selected answers and the table.
    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let cfg = self;
        let on = inputs.load(common, cfg.max_prompts, Some(common.seed as i64))?;
        let started = std::time::Instant::now();
        let cands = draw(
            &on.policy,
            &on.scorer,
            &on.prompts,
            &cfg.sampling(common.seed),
            cfg.score_batch,
        )?;
        let seconds = started.elapsed().as_secs_f64();
        info!(candidates = cands.len(), seconds, "sampled and scored");
        write_candidates(&dir.join(CANDIDATES), &cands)?;
        write_candidates(&dir.join(SELECTED), &best_per_prompt(&cands))?;
        let rows = summarize(&cands, cfg.n)?;
        let summary = serde_json::json!({
            "prompts": on.prompts.len(),
            "n": cfg.n,
            "sample_and_score_seconds": seconds,
            "rows": rows,
        });
        let path = dir.join(SUMMARY);
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(summary)
    }
}

pub type Args = StageArgs<Inputs, Config>;

pub fn cli(args: Args) -> Result<ExitCode> {
    let (cfg, common) = (&args.config, Common::from(&args.run));
    let manifest =
        stage::run_cli(cfg, &common, &args.inputs, &args.out).context("ember rank failed")?;
    let rows: Vec<SummaryRow> = serde_json::from_value(manifest.metrics["rows"].clone())?;
    print!("{}", render(&rows));
    println!(
        "rank: {} candidates → {}",
        manifest.metrics["prompts"].as_u64().unwrap_or(0) as usize * cfg.n,
        args.out.path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The table as aligned text.
pub fn render(rows: &[SummaryRow]) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let mut out = format!(
        "{:>5} {:>7} {:>16} {:>16} {:>8} {:>8} {:>8} {:>8}\n",
        "n", "prompts", "energy ± se", "gold ± se", "win", "win≤", "KL emp", "KL≤"
    );
    for r in rows {
        let gold = match (r.gold, r.gold_se) {
            (Some(g), Some(se)) => format!("{g:.4} ± {se:.4}"),
            _ => "-".to_string(),
        };
        out += &format!(
            "{:>5} {:>7} {:>16} {:>16} {:>8} {:>8.4} {:>8.4} {:>8.4}\n",
            r.n,
            r.prompts,
            format!("{:.4} ± {:.4}", r.energy, r.energy_se),
            gold,
            opt(r.win_rate),
            r.win_rate_bound,
            r.kl_empirical,
            r.kl_bound
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_prints_a_header_and_one_line_per_n() {
        let row = |n: usize, gold: Option<f64>| SummaryRow {
            n,
            prompts: 2,
            energy: 0.5,
            energy_se: 0.1,
            gold,
            gold_se: gold.map(|_| 0.0),
            win_rate: None,
            win_rate_bound: reward::search::bon::win_rate_bound(n),
            kl_empirical: 0.0,
            kl_bound: reward::search::bon::kl_bound(n),
        };
        let text = render(&[row(1, Some(0.25)), row(2, None)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("KL≤"), "{text}");
        assert!(lines[1].contains("0.2500 ± 0.0000") && lines[1].contains("0.5000 ± 0.1000"));
        assert!(
            lines[2].trim_start().starts_with('2') && lines[2].contains(" - "),
            "{text}"
        );
    }
}
