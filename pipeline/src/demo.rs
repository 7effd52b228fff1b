//! `ember demo`: the whole pipeline on the built-in synthetic task, with the small config
//! compiled into the binary (`examples/demo.toml`), through the same runner as `ember run`.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use crate::config;
use crate::runner::{self, Selection};

/// The built-in demo config; `ember demo --print-config` prints it.
pub const DEMO_CONFIG: &str = include_str!("../../examples/demo.toml");
const SOURCE: &str = "the built-in demo config";

/// `ember demo`: run every stage on the synthetic task and print where the report is.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directory.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Print the demo config (a starting point for `ember run`) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Override a config key, e.g. `--set sft.steps=50` (value parsed as TOML). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    if args.print_config {
        print!("{DEMO_CONFIG}");
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = config::parse(DEMO_CONFIG, SOURCE, &args.set)?;
    let clock = Instant::now();
    let outcomes = runner::run_pipeline(&cfg, &args.out, &Selection::default())?;
    let ran = outcomes.iter().filter(|o| o.ran).count();
    eprintln!(
        "demo: {ran} of {} stages ran in {:.1} s; `ember status {}` shows them",
        outcomes.len(),
        clock.elapsed().as_secs_f64(),
        args.out.display()
    );
    crate::status::print_table(&args.out)?;
    println!(
        "\nreport: {}",
        runner::stage_dir(&args.out, "report")
            .join("report.md")
            .display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `ember config print CONFIG`: the effective config with every default written out.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the effective config (file + overrides + defaults) as TOML.
    Print {
        /// The run config (TOML).
        config: PathBuf,
        /// Override a config key, e.g. `--set sft.steps=200`. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

pub fn config_cli(cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Print { config, set } => {
            let cfg = config::load(&config, &set)?;
            runner::check(&cfg)?;
            print!("{}", cfg.to_toml()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_config_parses_and_checks() {
        let cfg = crate::config::parse(super::DEMO_CONFIG, super::SOURCE, &[]).unwrap();
        crate::runner::check(&cfg).unwrap();
    }

    /// Every shipped example config parses and passes the checks a run makes before it starts.
    #[test]
    fn example_configs_parse_and_check() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let name = path.display().to_string();
                let cfg = crate::config::parse(&text, &name, &[]).unwrap();
                crate::runner::check(&cfg).unwrap_or_else(|e| panic!("{name}: {e:#}"));
                seen += 1;
            }
        }
        assert!(seen >= 2, "examples/*.toml: {seen}");
    }
}
