//! Command-line surface. Raw flags live in the stage modules' `Args` structs; this file only lists
//! the subcommands and dispatches. The `///` docs are the `--help` text.
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Energy-based reward models on human preference data.
#[derive(Debug, Parser)]
#[command(name = "ember", version, about, propagate_version = true)]
pub struct Cli {
    /// Only warnings and errors; no progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More logging (-v debug, -vv trace). RUST_LOG wins when set.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {}
}
