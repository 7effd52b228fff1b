//! `ember report`: one Markdown report for a run (`report.md`, plots as PNG + SVG beside it),
//! read from the finished stages' artifacts — nothing is recomputed.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::stage::{Common, Manifest, StageRun};

/// The name this stage hashes and records in its manifest.
pub const NAME: &str = "report";

/// The `[report]` section of a run config; also built from the CLI flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The report's title (first heading).
    pub title: String,
    /// Bins of the energy histograms.
    pub histogram_bins: usize,
    /// Draw plots (PNG + SVG) beside `report.md`.
    pub plots: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            title: "Ember run report".into(),
            histogram_bins: 30,
            plots: true,
        }
    }
}

/// Upstream artifacts the stage reads: finished stage directories, in pipeline order.
pub struct Inputs {
    pub stages: Vec<PathBuf>,
}

/// Writes `report.md` and its plots from the stage directories in `inputs`.
pub fn run(cfg: &Config, common: &Common, inputs: &Inputs, out: &Path) -> Result<Manifest> {
    let dirs: Vec<&Path> = inputs.stages.iter().map(PathBuf::as_path).collect();
    let run = StageRun::begin(NAME, &(cfg, common), &dirs, out, false)?;
    let summary = crate::report::write(cfg, &dirs, run.dir())?;
    run.finish(summary, &[])
}

/// `ember report STAGE_DIR... --out DIR`: a report over finished stage directories.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Finished stage directories (each with a manifest.json), in pipeline order.
    #[arg(required = true)]
    pub stages: Vec<PathBuf>,
    /// Output directory (report.md, plots, manifest.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Report title.
    #[arg(long, default_value_t = Config::default().title)]
    pub title: String,
    /// Bins of the energy histograms.
    #[arg(long, default_value_t = Config::default().histogram_bins)]
    pub histogram_bins: usize,
    /// Skip the plots.
    #[arg(long)]
    pub no_plots: bool,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    for dir in &args.stages {
        if crate::stage::read_manifest(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .is_none()
        {
            return Err(crate::error::usage(format!(
                "{} is not a finished stage directory (no manifest.json)",
                dir.display()
            )));
        }
    }
    let cfg = Config {
        title: args.title,
        histogram_bins: args.histogram_bins,
        plots: !args.no_plots,
    };
    let inputs = Inputs {
        stages: args.stages,
    };
    run(&cfg, &Common::default(), &inputs, &args.out)?;
    println!("{}", args.out.join("report.md").display());
    Ok(ExitCode::SUCCESS)
}
