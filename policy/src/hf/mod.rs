//! Hugging Face `transformers` interchange: GPT-2 ([`gpt2`]) and the Llama family ([`llama`]:
//! Llama, Mistral, Qwen2). Our parameter names and layouts are HF's, so export writes the
//! tensors unchanged with an HF `config.json` (and the tokenizer, with its
//! `tokenizer_config.json` when it has one), and import renames nothing but GPT-2's
//! `transformer.` prefix. Import reads `model.safetensors` or the shards listed in
//! `model.safetensors.index.json`, in f32, f16 or bf16, converts to f32 and checks every shape.
use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::error::{PolicyError, Result};
use crate::model::TrunkConfig;
use crate::{Policy, Tokenizer, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

pub mod gpt2;
pub mod llama;

/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The integer at the first of `keys` present in `cfg`.
fn int(cfg: &Value, keys: &[&str], path: &Path) -> Result<i64> {
    let bad = |message: String| PolicyError::Config {
        path: Some(path.to_path_buf()),
        message,
    };
    let v = keys
        .iter()
        .find_map(|k| cfg.get(*k).filter(|v| !v.is_null()))
        .ok_or_else(|| bad(format!("missing key {:?}", keys[0])))?;
    v.as_i64()
        .ok_or_else(|| bad(format!("{:?} is {v}, not an integer", keys[0])))
}

/// The HF `config.json` of a policy.
pub fn hf_config(policy: &Policy) -> Value {
    match &policy.config {
        TrunkConfig::Gpt2(c) => gpt2::hf_config(c, &policy.tokenizer),
        TrunkConfig::Llama(c) => llama::hf_config(c, &policy.tokenizer),
    }
}

/// Our trunk config from an HF `config.json` (by `model_type`; none is GPT-2).
pub fn config_from_hf(cfg: &Value, path: &Path) -> Result<TrunkConfig> {
    match cfg.get("model_type").and_then(Value::as_str) {
        None | Some("gpt2") => gpt2::config_from_hf(cfg, path).map(TrunkConfig::Gpt2),
        Some(t) if llama::MODEL_TYPES.contains(&t) => {
            llama::config_from_hf(cfg, path).map(TrunkConfig::Llama)
        }
        Some(t) => Err(PolicyError::Config {
            path: Some(path.to_path_buf()),
            message: format!(
                "model_type {t:?} is not supported (supported: gpt2, {})",
                llama::MODEL_TYPES.join(", ")
            ),
        }),
    }
}

/// Writes `out/{config.json, model.safetensors, tokenizer.json}` (and `tokenizer_config.json`
/// for a pretrained model's tokenizer) loadable by `transformers`' `from_pretrained(out)`.
pub fn export(policy: &Policy, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| PolicyError::io("creating", out, e))?;
    crate::write_json(&out.join(CONFIG_FILE), &hf_config(policy))?;
    let prefix = match policy.config {
        TrunkConfig::Gpt2(_) => gpt2::PREFIX,
        TrunkConfig::Llama(_) => "",
    };
    let mut named: Vec<(String, Tensor)> = policy
        .vs
        .variables()
        .into_iter()
        .map(|(name, t)| {
            (
                format!("{prefix}{name}"),
                t.to_device(Device::Cpu).contiguous(),
            )
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let path = out.join(WEIGHTS_FILE);
    Tensor::write_safetensors(&named, &path)
        .map_err(|e| PolicyError::torch(format!("writing {}", path.display()), e))?;
    policy.tokenizer.save(out.join(TOKENIZER_FILE))
}

/// Every tensor of `dir`'s checkpoint: `model.safetensors`, or the shards its index lists.
fn read_weights(dir: &Path) -> Result<HashMap<String, Tensor>> {
    let single = dir.join(WEIGHTS_FILE);
    let index = dir.join(INDEX_FILE);
    let files: Vec<std::path::PathBuf> = if single.exists() {
        vec![single]
    } else if index.exists() {
        let text =
            std::fs::read_to_string(&index).map_err(|e| PolicyError::io("reading", &index, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|source| PolicyError::Json {
            path: index.clone(),
            source,
        })?;
        let map = value
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| PolicyError::Checkpoint {
                path: index.clone(),
                message: "no \"weight_map\" object".into(),
            })?;
        let mut shards: Vec<std::path::PathBuf> = map
            .values()
            .filter_map(Value::as_str)
            .map(|f| dir.join(f))
            .collect();
        shards.sort();
        shards.dedup();
        shards
    } else {
        return Err(PolicyError::Checkpoint {
            path: single,
            message: format!(
                "not found, nor {INDEX_FILE} (only safetensors checkpoints are read; \
                 convert pytorch_model.bin first)"
            ),
        });
    };
    let mut tensors = HashMap::new();
    for file in files {
        let read = Tensor::read_safetensors(&file)
            .map_err(|e| PolicyError::torch(format!("reading {}", file.display()), e))?;
        tensors.extend(read);
    }
    Ok(tensors)
}

/// Reads an HF checkpoint directory (`config.json`, weights, `tokenizer.json` unless
/// `tokenizer` is given) into a policy on `device`.
pub fn import(dir: &Path, tokenizer: Option<Tokenizer>, device: Device) -> Result<Policy> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&cfg_path).map_err(|e| PolicyError::io("reading", &cfg_path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|source| PolicyError::Json {
        path: cfg_path.clone(),
        source,
    })?;
    let config = config_from_hf(&value, &cfg_path)?;
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => Tokenizer::load(dir.join(TOKENIZER_FILE))?,
    };
    let tensors: HashMap<String, Tensor> = read_weights(dir)?
        .into_iter()
        .map(|(k, t)| {
            let k = k
                .strip_prefix(gpt2::PREFIX)
                .map(str::to_string)
                .unwrap_or(k);
            (k, t)
        })
        .collect();
    let policy = Policy::new(config, tokenizer, device)?;
    tch::no_grad(|| {
        for (name, mut var) in policy.vs.variables() {
            let src = tensors.get(&name).ok_or_else(|| PolicyError::Checkpoint {
                path: dir.to_path_buf(),
                message: format!("missing tensor {name}"),
            })?;
            if src.size() != var.size() {
                return Err(PolicyError::Checkpoint {
                    path: dir.to_path_buf(),
                    message: format!(
                        "{name} has shape {:?}, expected {:?}",
                        src.size(),
                        var.size()
                    ),
                });
            }
            var.copy_(&src.to_kind(Kind::Float).to_device(device));
        }
        Ok(())
    })?;
    Ok(policy)
}
