//! The policy: a decoder in tch, GPT-2 or Llama-family ([`model`]), tokenizers ([`tokenizer`]),
//! batched KV-cached sampling ([`sample`]), log-prob scoring ([`score`]), supervised
//! fine-tuning ([`sft`] on the training-loop toolkit [`train`]), Hugging Face export/import
//! ([`hf`]), pools of sampled answers scored by an energy model ([`pool`]) and fine-tuning on
//! them ([`finetune`]: rejection sampling and RLOO).
//!
//! A policy checkpoint is a directory with `config.json` ([`TrunkConfig`]), `model.safetensors`
//! (HF GPT-2 parameter names) and `tokenizer.json`.
use std::path::Path;

use tch::{nn, Device};

pub mod batch;
pub mod chat;
pub mod device;
pub mod dist;
pub mod error;
pub mod ext;
pub mod finetune;
pub mod gguf;
pub mod hf;
pub mod interrupt;
pub mod io;
pub mod model;
pub mod pool;
pub mod rng;
pub mod sample;
pub mod score;
pub mod sft;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use error::{PolicyError, Result};
pub use model::{Gpt, GptConfig, KvCache, Llama, LlamaConfig, Trunk, TrunkConfig};
pub use tokenizer::Tokenizer;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A model with its weights, config and tokenizer, on one device.
#[derive(Debug)]
pub struct Policy {
    pub vs: nn::VarStore,
    pub model: Trunk,
    pub config: TrunkConfig,
    pub tokenizer: Tokenizer,
    pub device: Device,
}

impl Policy {
    /// A freshly initialised model (weights drawn from the torch generator: seed it with
    /// `tch::manual_seed` first).
    pub fn new(
        config: impl Into<TrunkConfig>,
        tokenizer: Tokenizer,
        device: Device,
    ) -> Result<Self> {
        let config = config.into();
        config.check().map_err(|message| PolicyError::Config {
            path: None,
            message,
        })?;
        if config.vocab_size() < tokenizer.vocab_size() {
            return Err(PolicyError::Config {
                path: None,
                message: format!(
                    "vocab_size {} is smaller than the tokenizer's {}",
                    config.vocab_size(),
                    tokenizer.vocab_size()
                ),
            });
        }
        let vs = nn::VarStore::new(device);
        let model = Trunk::new(vs.root(), &config);
        Ok(Self {
            vs,
            model,
            config,
            tokenizer,
            device,
        })
    }

    /// Loads `dir/{config.json, model.safetensors, tokenizer.json}` onto `device`.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = read_config(&dir.join(CONFIG_FILE))?;
        let tokenizer = Tokenizer::load(dir.join(TOKENIZER_FILE))?;
        let mut policy = Self::new(config, tokenizer, device).map_err(|e| match e {
            PolicyError::Config { message, .. } => PolicyError::Config {
                path: Some(dir.join(CONFIG_FILE)),
                message,
            },
            other => other,
        })?;
        let weights = dir.join(WEIGHTS_FILE);
        weights::load_checked(&mut policy.vs, &weights)?;
        Ok(policy)
    }

    /// Writes the three files into `dir` (created if needed).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| PolicyError::io("creating", dir, e))?;
        write_json(&dir.join(CONFIG_FILE), &self.config)?;
        let weights = dir.join(WEIGHTS_FILE);
        self.vs
            .save(&weights)
            .map_err(|e| PolicyError::torch(format!("writing {}", weights.display()), e))?;
        self.tokenizer.save(dir.join(TOKENIZER_FILE))
    }
}

/// Reads a [`TrunkConfig`] JSON file.
pub fn read_config(path: &Path) -> Result<TrunkConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::io("reading", path, e))?;
    serde_json::from_str(&text).map_err(|source| PolicyError::Json {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable value");
    std::fs::write(path, text).map_err(|e| PolicyError::io("writing", path, e))
}
