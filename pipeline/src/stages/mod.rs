//! One module per stage: its config (TOML section and CLI flags), and `run(cfg, out) -> Manifest`.
//! CLI subcommands and `ember run` call the same functions.
pub mod compare;
pub mod finetune;
pub mod ingest;
pub mod rank;
pub mod refine;
pub mod report;
pub mod reward;
pub mod synth;
