//! `ember ingest`: human preference data (HH-RLHF, LLMBar, PandaLM, UltraFeedback, SHP, Chatbot
//! Arena, any pairwise table) → clean `train/val/test.parquet`, `quarantine.parquet` and
//! `stats.json` (see the `datasets` crate).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use datasets::read::expand_inputs;
use datasets::split::parse_fractions;
use datasets::{ColumnMap, DatasetError, Format, IngestOptions};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::error::usage;
use crate::stage::{Common, Manifest, StageRun};

pub const NAME: &str = "ingest";

/// The `[ingest]` section of a run config; also built from the CLI flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Record format: hh-rlhf, llmbar, pandalm, ultrafeedback, shp, arena or generic.
    pub format: String,
    /// Column map of the generic format: `prompt=COL,chosen=COL,rejected=COL[,margin=COL]`.
    pub map: Option<String>,
    /// Train, validation and test fractions; rows are split by a hash of the prompt.
    pub split: [f64; 3],
    /// Fail at the first bad row instead of quarantining it.
    pub strict: bool,
    /// Keep ties (with `tie = true`) instead of quarantining them.
    pub keep_ties: bool,
    /// Quarantine pairs whose prompt plus longer answer exceed this many characters.
    pub max_chars: Option<usize>,
    /// Drop empty answers, identical answers and repeated pairs (default: per format; LLMBar keeps them).
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

/// A library error as an anyhow error; path and option mistakes are usage errors (exit 2).
fn lift(err: DatasetError) -> anyhow::Error {
    if err.is_usage() {
        usage(err.to_string())
    } else {
        anyhow::Error::new(err)
    }
}

fn options(cfg: &Config, common: &Common) -> Result<IngestOptions> {
    let map = match &cfg.map {
        Some(m) => Some(
            m.parse::<ColumnMap>()
                .map_err(|e| usage(format!("--map: {e}")))?,
        ),
        None => None,
    };
    let format = Format::parse(&cfg.format, map).map_err(|e| usage(format!("--format: {e}")))?;
    let total: f64 = cfg.split.iter().sum();
    if cfg.split.iter().any(|f| !(0.0..=1.0).contains(f)) || (total - 1.0).abs() > 1e-6 {
        return Err(usage(format!(
            "--split: fractions must be in [0, 1] and sum to 1 (got {:?})",
            cfg.split
        )));
    }
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

/// The stage: typed config in, manifest out. On failure nothing is left at `out` (nor in its
/// staging directory).
#[instrument(skip_all, fields(out = %out.display()))]
pub fn run(cfg: &Config, common: &Common, inputs: &Inputs, out: &Path) -> Result<Manifest> {
    let opts = options(cfg, common)?;
    if inputs.data.is_empty() {
        return Err(usage("ingest needs at least one input file"));
    }
    let files = expand_inputs(&inputs.data).map_err(lift)?;
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let run = StageRun::begin(NAME, &(cfg, common), &refs, out, false)?;
    let staging = run.dir().to_path_buf();
    let result = datasets::ingest(&files, &opts, &staging)
        .map_err(lift)
        .and_then(|stats| {
            datasets::ingest::write_stats(&staging.join("stats.json"), &stats).map_err(lift)?;
            let metrics = serde_json::json!({
                "records_read": stats.records_read,
                "rows_read": stats.rows_read,
                "kept": stats.kept,
                "quarantined": stats.quarantined,
                "reasons": stats.reasons,
                "splits": stats.splits,
            });
            run.finish(metrics, &[])
        });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.with_context(|| format!("ember ingest --format {} failed", cfg.format))
}

/// Ingest preference data into clean Parquet splits, quarantining every dropped row.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input files, directories or globs (.jsonl, .jsonl.gz, .json array, .parquet, .csv).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Record format.
    #[arg(long, value_parser = ["hh-rlhf", "llmbar", "pandalm", "ultrafeedback", "shp", "arena", "generic"])]
    pub format: String,
    /// Output directory (written as OUT.partial, renamed when complete).
    #[arg(long)]
    pub out: PathBuf,
    /// Column map for --format generic: prompt=COL,chosen=COL,rejected=COL[,margin=COL].
    #[arg(long)]
    pub map: Option<String>,
    /// Train,val,test fractions (split by a hash of the prompt).
    #[arg(long, default_value = "0.9,0.05,0.05")]
    pub split: String,
    /// Seed of the split hash.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fail at the first bad row (naming file:line and reason) instead of quarantining it.
    #[arg(long)]
    pub strict: bool,
    /// Keep ties (tie = true) instead of quarantining them.
    #[arg(long)]
    pub keep_ties: bool,
    /// Quarantine pairs whose prompt plus longer answer exceed N characters.
    #[arg(long, value_name = "N")]
    pub max_chars: Option<usize>,
    /// Drop empty answers, identical answers and repeated pairs: true or false (default: per
    /// format; LLMBar, a curated benchmark, keeps them).
    #[arg(long)]
    pub drop_degenerate: Option<bool>,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let split = parse_fractions(&args.split).map_err(|e| usage(format!("--split: {e}")))?;
    let cfg = Config {
        format: args.format,
        map: args.map,
        split,
        strict: args.strict,
        keep_ties: args.keep_ties,
        max_chars: args.max_chars,
        drop_degenerate: args.drop_degenerate,
    };
    let common = Common {
        seed: args.seed,
        ..Common::default()
    };
    let manifest = run(&cfg, &common, &Inputs { data: args.inputs }, &args.out)?;
    let m = &manifest.metrics;
    println!(
        "ingest: {} rows read, {} kept, {} quarantined → {}",
        m["rows_read"],
        m["kept"],
        m["quarantined"],
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
