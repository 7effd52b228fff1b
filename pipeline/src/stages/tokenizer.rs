//! `ember tokenizer train`: a tokenizer for the policy — byte-level BPE (HF `tokenizers`) on the
//! train split's prompts and answers, or a character-level vocabulary for the synthetic tasks.
//! A run that starts from a pretrained `base` policy takes the base's tokenizer instead.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::error::usage;
use crate::stage::{self, Common, OutArg, Stage};

/// Which tokenizer to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One token per character seen in the data (the synthetic tasks).
    Char,
    /// Byte-level BPE trained with HF `tokenizers`.
    Bpe,
}

/// The `[tokenizer]` section of a run config and the flags of `ember tokenizer train`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `char` (one token per character) or `bpe` (byte-level BPE). A run config's default is
    /// `char`, the command's `bpe`.
    #[arg(long, value_enum, default_value_t = Kind::Bpe)]
    pub kind: Kind,
    /// BPE vocabulary size, special tokens included (ignored by `char`).
    #[arg(long, default_value_t = Config::default().vocab)]
    pub vocab: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kind: Kind::Char,
            vocab: 8192,
        }
    }
}

/// Upstream artifacts: a data directory (`synth` or `ingest` output), or a pretrained policy
/// whose tokenizer is taken as it is.
pub struct Inputs {
    pub data: PathBuf,
    /// A policy directory: its `tokenizer.json` (and `tokenizer_config.json`) are the output.
    pub base: Option<PathBuf>,
}

impl Inputs {
    /// The base's tokenizer files that exist (`tokenizer_config.json` is optional).
    fn base_files(&self) -> Vec<PathBuf> {
        let Some(base) = &self.base else {
            return Vec::new();
        };
        let config = base.join(policy::tokenizer::CONFIG_FILE);
        let mut files = vec![base.join(policy::TOKENIZER_FILE)];
        files.extend(config.exists().then_some(config));
        files
    }
}

/// The training texts of a data directory: prompts and answers of `sft.parquet` and the
/// prompts, chosen and rejected answers of `train.parquet`, whichever exist.
pub fn training_texts(data: &Path) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    let sft = data.join("sft.parquet");
    if sft.exists() {
        for (p, a) in
            datasets::table::read_sft(&sft).with_context(|| format!("reading {}", sft.display()))?
        {
            texts.push(p);
            texts.push(a);
        }
    }
    let train = data.join("train.parquet");
    if train.exists() {
        for r in datasets::table::read_pairs(&train)
            .with_context(|| format!("reading {}", train.display()))?
        {
            texts.extend([r.prompt, r.chosen, r.rejected]);
        }
    }
    if texts.is_empty() {
        return Err(usage(format!(
            "{} has neither sft.parquet nor train.parquet",
            data.display()
        )));
    }
    Ok(texts)
}

/// Builds the tokenizer of `cfg` from the texts of `data`.
pub fn build(cfg: &Config, data: &Path) -> Result<Tokenizer> {
    let texts = training_texts(data)?;
    let tok = match cfg.kind {
        Kind::Char => Tokenizer::char_level(&texts)?,
        Kind::Bpe => Tokenizer::train_bpe(texts.iter(), cfg.vocab)?,
    };
    Ok(tok)
}

/// The stage: `OUT/tokenizer.json`.
impl Stage for Config {
    const NAME: &'static str = "tokenizer";
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        let mut paths = vec![inputs.data.clone()];
        paths.extend(inputs.base_files());
        paths
    }

    fn check(&self) -> Vec<Invalid> {
        let too_small = self.kind == Kind::Bpe && self.vocab < 300;
        too_small
            .then(|| {
                Invalid::new(
                    "vocab",
                    format!("{} is too small for byte-level BPE (≥ 300)", self.vocab),
                )
            })
            .into_iter()
            .collect()
    }

    fn execute(&self, _: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        if let Some(base) = &inputs.base {
            let tok = Tokenizer::load(base.join(policy::TOKENIZER_FILE))
                .with_context(|| format!("the tokenizer of base {}", base.display()))?;
            tok.save(dir.join(policy::TOKENIZER_FILE))?;
            return Ok(
                serde_json::json!({"vocab_size": tok.vocab_size(), "kind": "base",
                "base": base}),
            );
        }
        let tok = build(self, &inputs.data)?;
        tok.save(dir.join(policy::TOKENIZER_FILE))?;
        Ok(serde_json::json!({"vocab_size": tok.vocab_size(), "kind": self.kind}))
    }
}

/// Tokenizers for the policy.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Train a tokenizer on a data directory's train split.
    Train(Args),
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory (`ember synth` or `ember ingest` output).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub out: OutArg,
}

pub fn cli(cmd: Command) -> Result<ExitCode> {
    let Command::Train(args) = cmd;
    let cfg = args.config;
    let vocab = if args.out.path.extension().is_some_and(|e| e == "json") {
        crate::config::reject(cfg.check(), "tokenizer")?;
        let _target = stage::Target::claim_file(&args.out.path, std::slice::from_ref(&args.data))?;
        let tok = build(&cfg, &args.data)?;
        let tmp = args.out.path.with_extension("json.partial");
        tok.save(&tmp)?;
        std::fs::rename(&tmp, &args.out.path)
            .with_context(|| format!("writing {}", args.out.path.display()))?;
        tok.vocab_size()
    } else {
        let inputs = Inputs {
            data: args.data.clone(),
            base: None,
        };
        let m = stage::run_cli(&cfg, &Common::default(), &inputs, &args.out)
            .context("ember tokenizer train failed")?;
        m.metrics["vocab_size"].as_i64().unwrap_or(0)
    };
    println!("tokenizer: {vocab} tokens → {}", args.out.path.display());
    Ok(ExitCode::SUCCESS)
}
