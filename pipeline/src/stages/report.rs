//! `ember report`: one Markdown report for a run (`report.md`, plots as PNG + SVG beside it),
//! read from the finished stages' artifacts — nothing is recomputed.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::stage::{self, Common, OutArg, Stage};

/// The `[report]` section of a run config, and the flags of `ember report`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The report's title (first heading).
    #[arg(long, default_value_t = Config::default().title)]
    pub title: String,
    /// Bins of the energy histograms.
    #[arg(long, default_value_t = Config::default().histogram_bins)]
    pub histogram_bins: usize,
    /// Draw plots (PNG + SVG) beside `report.md` (`--no-plots` skips them).
    #[arg(long = "no-plots", action = clap::ArgAction::SetFalse)]
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

/// The stage: `report.md` and its plots from the stage directories of its inputs.
impl Stage for Config {
    const NAME: &'static str = "report";
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        inputs.stages.clone()
    }

    fn check(&self) -> Vec<Invalid> {
        Invalid::zero(&[("histogram_bins", self.histogram_bins)])
            .into_iter()
            .collect()
    }

    fn execute(&self, _: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let dirs: Vec<&Path> = inputs.stages.iter().map(PathBuf::as_path).collect();
        crate::report::write(self, &dirs, dir)
    }
}

/// `ember report STAGE_DIR... --out DIR`: a report over finished stage directories.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Finished stage directories (each with a manifest.json), in pipeline order.
    #[arg(required = true)]
    pub stages: Vec<PathBuf>,
    #[command(flatten)]
    pub out: OutArg,
    #[command(flatten)]
    pub config: Config,
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
    let inputs = Inputs {
        stages: args.stages,
    };
    stage::run_cli(&args.config, &Common::default(), &inputs, &args.out)?;
    println!("{}", args.out.path.join("report.md").display());
    Ok(ExitCode::SUCCESS)
}
