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
    /// Read stage directories without checking their files against the sha256 sums in their
    /// manifest.json (a model or table edited by hand on purpose).
    #[arg(long, global = true)]
    pub no_verify: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest preference data into clean Parquet splits, quarantining every dropped row.
    Ingest(crate::stages::ingest::Args),
    /// Generate the built-in preference task with a gold reward.
    Synth(crate::stages::synth::Args),
    /// Run a pipeline config: every stage in order, skipping those already done.
    Run(crate::runner::Args),
    /// One row per stage of a run directory: done / stale / missing / failed.
    Status(crate::status::Args),
    /// Inspect run configs.
    #[command(subcommand)]
    Config(crate::demo::ConfigCommand),
    /// The whole pipeline on the built-in synthetic task (≤ 5 minutes on 2 cores).
    Demo(crate::demo::Args),
    /// Best-of-N by lowest energy: candidates, selected answers and the best-of-n table.
    Rank(crate::stages::rank::Args),
    /// Tokenizers for the policy (char-level or byte-level BPE).
    #[command(subcommand)]
    Tokenizer(crate::stages::tokenizer::Command),
    /// Supervised fine-tuning of the policy on demonstrations.
    Sft(crate::stages::sft::Args),
    /// Sample answers from a policy (batched, KV-cached).
    Sample(crate::stages::sample::Args),
    /// Log-probabilities of given answers under a policy.
    Logprob(crate::stages::logprob::Args),
    /// Export a policy to another checkpoint format (Hugging Face GPT-2).
    Export(crate::stages::export::Args),
    /// Import a checkpoint from another format as a policy directory.
    Import(crate::stages::import::Args),
    /// Throughput benchmarks (one JSON line each).
    #[command(subcommand)]
    Bench(crate::stages::bench::Command),
    /// Fine-tune the policy on its lowest-energy samples (rejection sampling), or with RLOO.
    Finetune(crate::stages::finetune::Args),
    /// A Markdown report (with plots) over finished stage directories.
    Report(crate::stages::report::Args),
    /// The energy-based reward model: train, eval, score, doctor.
    #[command(subcommand)]
    Reward(crate::stages::reward::Command),
    /// Refine policy answers by gradient descent on the energy in a continuous relaxation.
    Refine(crate::stages::refine::Args),
    /// Best-of-N vs refinement vs hybrids at equal energy-model compute, with CIs and plots.
    Compare(crate::stages::compare::Args),
    /// Run an ember command as N local ranks of a data-parallel job (as torchrun does).
    Launch(crate::dist::LaunchArgs),
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    crate::stage::manifest::set_verify_inputs(!cli.no_verify);
    crate::dist::join(&cli.command)?;
    match cli.command {
        Command::Ingest(a) => crate::stages::ingest::cli(a),
        Command::Synth(a) => crate::stages::synth::cli(a),
        Command::Run(a) => crate::runner::cli(a),
        Command::Status(a) => crate::status::cli(a),
        Command::Config(c) => crate::demo::config_cli(c),
        Command::Demo(a) => crate::demo::cli(a),
        Command::Rank(a) => crate::stages::rank::cli(a),
        Command::Tokenizer(c) => crate::stages::tokenizer::cli(c),
        Command::Sft(a) => crate::stages::sft::cli(a),
        Command::Sample(a) => crate::stages::sample::cli(a),
        Command::Logprob(a) => crate::stages::logprob::cli(a),
        Command::Export(a) => crate::stages::export::cli(a),
        Command::Import(a) => crate::stages::import::cli(a),
        Command::Bench(c) => crate::stages::bench::cli(c),
        Command::Finetune(a) => crate::stages::finetune::cli(a),
        Command::Report(a) => crate::stages::report::cli(a),
        Command::Reward(c) => crate::stages::reward::cli(c),
        Command::Refine(a) => crate::stages::refine::cli(a),
        Command::Compare(a) => crate::stages::compare::cli(a),
        Command::Launch(a) => crate::dist::launch(a),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks flag ids, names and defaults only in debug builds; the flattened stage
    /// configs and shared groups must not collide (an `eval_prompts` field did) in any build.
    #[test]
    fn every_subcommand_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
