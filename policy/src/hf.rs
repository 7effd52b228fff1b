//! Hugging Face GPT-2 interchange. Our parameter names and shapes already are HF's (Conv1D
//! weights `[in, out]`, see [`crate::model`]), so export writes the tensors unchanged under the
//! `transformer.` prefix of `GPT2LMHeadModel` (the LM head is tied to `wte`, as in HF) with an
//! HF `config.json` (`activation_function: gelu_new`, i.e. tanh GELU); import accepts keys with
//! or without the prefix, converts to f32, and checks every shape.
use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use crate::error::{PolicyError, Result};
use crate::model::GptConfig;
use crate::{Policy, Tokenizer, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

const PREFIX: &str = "transformer.";

/// The HF `config.json` of a policy.
pub fn hf_config(policy: &Policy) -> Value {
    let c = &policy.config;
    let t = &policy.tokenizer;
    json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.n_ctx,
        "n_ctx": c.n_ctx,
        "n_embd": c.d_model,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": null,
        "activation_function": "gelu_new",
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "layer_norm_epsilon": c.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "use_cache": true,
        "bos_token_id": t.sep_id(),
        "eos_token_id": t.eos_id(),
        "pad_token_id": t.pad_id(),
        "tie_word_embeddings": true,
        "torch_dtype": "float32"
    })
}

/// Writes `out/{config.json, model.safetensors, tokenizer.json}` loadable by
/// `transformers.GPT2LMHeadModel.from_pretrained(out)`.
pub fn export(policy: &Policy, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| PolicyError::io("creating", out, e))?;
    crate::write_json(&out.join(CONFIG_FILE), &hf_config(policy))?;
    let mut named: Vec<(String, Tensor)> = policy
        .vs
        .variables()
        .into_iter()
        .map(|(name, t)| {
            (
                format!("{PREFIX}{name}"),
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

fn field(cfg: &Value, keys: &[&str], path: &Path) -> Result<Value> {
    keys.iter()
        .find_map(|k| cfg.get(*k).filter(|v| !v.is_null()).cloned())
        .ok_or_else(|| PolicyError::Config {
            path: Some(path.to_path_buf()),
            message: format!("missing key {:?}", keys[0]),
        })
}

/// Our [`GptConfig`] from an HF GPT-2 `config.json`.
pub fn config_from_hf(cfg: &Value, path: &Path) -> Result<GptConfig> {
    let bad = |message: String| PolicyError::Config {
        path: Some(path.to_path_buf()),
        message,
    };
    let int = |keys: &[&str]| -> Result<i64> {
        field(cfg, keys, path)?
            .as_i64()
            .ok_or_else(|| bad(format!("{:?} is not an integer", keys[0])))
    };
    if let Some(t) = cfg.get("model_type").and_then(Value::as_str) {
        if t != "gpt2" {
            return Err(bad(format!("model_type {t:?} is not gpt2")));
        }
    }
    let act = cfg
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("gelu_new");
    if !matches!(act, "gelu_new" | "gelu_pytorch_tanh") {
        return Err(bad(format!(
            "activation_function {act:?}: only gelu_new (tanh GELU) is supported"
        )));
    }
    let d_model = int(&["n_embd"])?;
    if let Some(inner) = cfg.get("n_inner").and_then(Value::as_i64) {
        if inner != 4 * d_model {
            return Err(bad(format!("n_inner {inner} must be 4 × n_embd")));
        }
    }
    let config = GptConfig {
        vocab_size: int(&["vocab_size"])?,
        n_ctx: int(&["n_positions", "n_ctx"])?,
        d_model,
        n_layer: int(&["n_layer"])?,
        n_head: int(&["n_head"])?,
        dropout: cfg
            .get("resid_pdrop")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        layer_norm_eps: cfg
            .get("layer_norm_epsilon")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5),
    };
    config.check().map_err(bad)?;
    Ok(config)
}

/// Reads an HF GPT-2 directory (`config.json`, `model.safetensors`) with `tokenizer` into a
/// policy on `device`.
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
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.exists() {
        return Err(PolicyError::Checkpoint {
            path: weights,
            message:
                "not found (only safetensors checkpoints are read; convert pytorch_model.bin first)"
                    .into(),
        });
    }
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&weights)
        .map_err(|e| PolicyError::torch(format!("reading {}", weights.display()), e))?
        .into_iter()
        .map(|(k, t)| (k.strip_prefix(PREFIX).map(str::to_string).unwrap_or(k), t))
        .collect();
    let policy = Policy::new(config, tokenizer, device)?;
    tch::no_grad(|| {
        for (name, mut var) in policy.vs.variables() {
            let src = tensors.get(&name).ok_or_else(|| PolicyError::Checkpoint {
                path: weights.clone(),
                message: format!("missing tensor {name}"),
            })?;
            if src.size() != var.size() {
                return Err(PolicyError::Checkpoint {
                    path: weights.clone(),
                    message: format!(
                        "{name} has shape {:?}, expected {:?}",
                        src.size(),
                        var.size()
                    ),
                });
            }
            var.copy_(&src.to_kind(Kind::Float));
        }
        Ok(())
    })?;
    Ok(policy)
}
