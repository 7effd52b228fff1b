//! The `ember` binary: parse, run, print the error chain (ripgrep style).
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ember::cli::Cli::parse();
    ember::logging::init(cli.quiet, cli.verbose);
    let verbose = cli.verbose > 0;
    match ember::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            for line in ember::error::render(&err, verbose) {
                eprintln!("{line}");
            }
            if let Some(hint) = ember::error::hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(ember::error::exit_code(&err))
        }
    }
}
