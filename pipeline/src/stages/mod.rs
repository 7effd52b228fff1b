//! One module per stage: its config (TOML section and CLI flags), and `run(cfg, out) -> Manifest`.
//! CLI subcommands and `ember run` call the same functions.
pub mod bench;
pub mod compare;
pub mod export;
pub mod finetune;
pub mod import;
pub mod ingest;
pub mod logprob;
pub mod rank;
pub mod refine;
pub mod report;
pub mod reward;
pub mod sample;
pub mod sft;
pub mod synth;
pub mod tokenizer;
