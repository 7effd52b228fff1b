//! `ember ingest`: human preference data (HH-RLHF, LLMBar, PandaLM, UltraFeedback, SHP, Chatbot
//! Arena, any pairwise table) → clean `train/val/test.parquet`, `quarantine.parquet` and
//! `stats.json` (see the `datasets` crate).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use datasets::read::expand_inputs;
use datasets::{ColumnMap, Format, IngestOptions};
use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::error::usage;
use crate::stage::{self, Common, OutArg, SeedArg, Stage};

/// The `[data]` section of a run config with `kind = "ingest"` (beside `inputs`), and the flags
/// of `ember ingest`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Record format: hh-rlhf, llmbar, pandalm, ultrafeedback, shp, arena, alpaca-eval or generic.
    #[arg(long, value_parser = ["hh-rlhf", "llmbar", "pandalm", "ultrafeedback", "shp", "arena", "alpaca-eval", "generic"])]
    pub format: String,
    /// Column map of the generic format: `prompt=COL,chosen=COL,rejected=COL[,margin=COL]`.
    #[arg(long)]
    pub map: Option<String>,
    /// Train, validation and test fractions; rows are split by a hash of the prompt.
    #[arg(long, default_value = "0.9,0.05,0.05", value_parser = crate::config::parse_split)]
    pub split: [f64; 3],
    /// Fail at the first bad row (naming file:line and reason) instead of quarantining it.
    #[arg(long)]
    pub strict: bool,
    /// Keep ties (with `tie = true`) instead of quarantining them.
    #[arg(long)]
    pub keep_ties: bool,
    /// Quarantine pairs whose prompt plus longer answer exceed this many characters.
    #[arg(long, value_name = "N")]
    pub max_chars: Option<usize>,
    /// Drop empty answers, identical answers and repeated pairs: true or false (default: per
    /// format; LLMBar, a curated benchmark, keeps them).
    #[arg(long)]
    pub drop_degenerate: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            format: "hh-rlhf".into(),
            map: None,
            split: [0.9, 0.05, 0.05],
            strict: false,
            keep_ties: false,
            max_chars: None,
            drop_degenerate: None,
        }
    }
}

/// Upstream artifacts the stage reads: files, directories or globs.
pub struct Inputs {
    pub data: Vec<String>,
}

/// The ingest options of a config; its values were checked by [`IngestStage::check`].
fn options(cfg: &Config, common: &Common) -> Result<IngestOptions> {
    let map = cfg.map.as_deref().map(str::parse::<ColumnMap>).transpose();
    let map = map.map_err(|e| usage(format!("--map: {e}")))?;
    let format = Format::parse(&cfg.format, map).map_err(|e| usage(format!("--format: {e}")))?;
    Ok(IngestOptions {
        format,
        split: cfg.split,
        seed: common.seed,
        strict: cfg.strict,
        keep_ties: cfg.keep_ties,
        max_chars: cfg.max_chars,
        drop_degenerate: cfg.drop_degenerate,
    })
}

/// The stage: `train/val/test.parquet`, `quarantine.parquet` and `stats.json`. On failure
/// nothing is left at `out` (nor in its staging directory).
impl Stage for Config {
    const NAME: &'static str = "ingest";
    type Inputs = Inputs;

    /// The files the inputs' globs expand to (an input that does not expand fails in `execute`).
    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        expand_inputs(&inputs.data).unwrap_or_default()
    }

    fn check(&self) -> Vec<Invalid> {
        let mut bad = Vec::new();
        let map = self.map.as_deref().map(str::parse::<ColumnMap>).transpose();
        match map {
            Err(e) => bad.push(Invalid::new("map", e.to_string())),
            Ok(map) => {
                if let Err(e) = Format::parse(&self.format, map) {
                    bad.push(Invalid::new("format", e.to_string()));
                }
            }
        }
        let total: f64 = self.split.iter().sum();
        if self.split.iter().any(|f| !(0.0..=1.0).contains(f)) || (total - 1.0).abs() > 1e-6 {
            let got = format!(
                "fractions must be in [0, 1] and sum to 1 (got {:?})",
                self.split
            );
            bad.push(Invalid::new("split", got));
        }
        bad
    }

    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let opts = options(self, common)?;
        if inputs.data.is_empty() {
            return Err(usage("ingest needs at least one input file"));
        }
        let files = expand_inputs(&inputs.data)?;
        let stats = datasets::ingest(&files, &opts, dir)?;
        datasets::ingest::write_stats(&dir.join("stats.json"), &stats)?;
        Ok(serde_json::json!({
            "records_read": stats.records_read,
            "rows_read": stats.rows_read,
            "kept": stats.kept,
            "quarantined": stats.quarantined,
            "reasons": stats.reasons,
            "splits": stats.splits,
        }))
    }
}

/// Ingest preference data into clean Parquet splits, quarantining every dropped row.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input files, directories or globs (.jsonl, .jsonl.gz, .json array, .parquet, .csv).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub config: Config,
    /// The seed of the split hash.
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub out: OutArg,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let (cfg, common) = (&args.config, Common::seeded(&args.seed));
    let inputs = Inputs { data: args.inputs };
    let manifest = stage::run_cli(cfg, &common, &inputs, &args.out)
        .with_context(|| format!("ember ingest --format {} failed", cfg.format))?;
    let m = &manifest.metrics;
    println!(
        "ingest: {} rows read, {} kept, {} quarantined → {}",
        m["rows_read"],
        m["kept"],
        m["quarantined"],
        args.out.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
