//! `GPT2LMHeadModel`: our parameter names and shapes already are HF's (Conv1D weights
//! `[in, out]`, see [`crate::model::gpt`]), under the `transformer.` prefix (the LM head is tied
//! to `wte`, as in HF); the activation is `gelu_new`, i.e. tanh GELU.
use std::path::Path;

use serde_json::{json, Value};

use super::int;
use crate::error::{PolicyError, Result};
use crate::model::GptConfig;
use crate::Tokenizer;

/// The prefix of every parameter's name in `GPT2LMHeadModel`.
pub const PREFIX: &str = "transformer.";

/// The HF `config.json` of a GPT-2 policy.
pub fn hf_config(c: &GptConfig, t: &Tokenizer) -> Value {
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

/// Our [`GptConfig`] from an HF GPT-2 `config.json`.
pub fn config_from_hf(cfg: &Value, path: &Path) -> Result<GptConfig> {
    let bad = |message: String| PolicyError::Config {
        path: Some(path.to_path_buf()),
        message,
    };
    let int = |keys: &[&str]| int(cfg, keys, path);
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
