//! The `ember` binary: parse, run, print the error chain (ripgrep style).
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    policy::interrupt::install();
    let cli = ember::cli::Cli::parse();
    ember::logging::init(cli.quiet || ember::dist::secondary_rank(), cli.verbose);
    let verbose = cli.verbose > 0;
    match ember::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if let Some(stop) = ember::error::interrupted(&err) {
                eprintln!("{stop}");
                eprintln!("interrupted; run the same command to resume");
                return ExitCode::from(stop.exit_code());
            }
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
