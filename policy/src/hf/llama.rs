//! `LlamaForCausalLM`, `MistralForCausalLM` and `Qwen2ForCausalLM`: the Llama trunk's parameter
//! names are HF's (see [`crate::model::llama`]), so only the config is translated.
use std::path::Path;

use serde_json::{json, Value};

use super::int;
use crate::error::{PolicyError, Result};
use crate::model::LlamaConfig;
use crate::Tokenizer;

/// `model_type`s read as a Llama trunk.
pub const MODEL_TYPES: [&str; 3] = ["llama", "mistral", "qwen2"];

/// Our [`LlamaConfig`] from an HF Llama, Mistral or Qwen2 `config.json`.
pub fn config_from_hf(cfg: &Value, path: &Path) -> Result<LlamaConfig> {
    let bad = |message: String| PolicyError::Config {
        path: Some(path.to_path_buf()),
        message,
    };
    let int = |keys: &[&str]| int(cfg, keys, path);
    let model_type = cfg.get("model_type").and_then(Value::as_str).unwrap_or("");
    let act = cfg
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    if act != "silu" {
        return Err(bad(format!(
            "hidden_act {act:?}: only silu (SwiGLU) is supported"
        )));
    }
    // transformers 4 writes `rope_theta` (+ `rope_scaling`), 5 writes `rope_parameters`.
    let rope = cfg.get("rope_parameters").filter(|v| !v.is_null());
    let rope_type = rope
        .and_then(|r| r.get("rope_type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if let Some(scaling) = cfg.get("rope_scaling").filter(|v| !v.is_null()) {
        return Err(bad(format!(
            "rope_scaling {scaling} is not supported (plain RoPE only)"
        )));
    }
    if rope_type != "default" {
        return Err(bad(format!(
            "rope_parameters.rope_type {rope_type:?} is not supported (plain RoPE only)"
        )));
    }
    let rope_theta = rope
        .and_then(|r| r.get("rope_theta"))
        .or_else(|| cfg.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(10_000.0);
    let n_head = int(&["num_attention_heads"])?;
    let d_model = int(&["hidden_size"])?;
    if let Some(dh) = cfg.get("head_dim").and_then(Value::as_i64) {
        if dh * n_head != d_model {
            return Err(bad(format!(
                "head_dim {dh} × num_attention_heads {n_head} ≠ hidden_size {d_model}"
            )));
        }
    }
    let float = |key: &str, default: f64| cfg.get(key).and_then(Value::as_f64).unwrap_or(default);
    let config = LlamaConfig {
        vocab_size: int(&["vocab_size"])?,
        n_ctx: int(&["max_position_embeddings"])?,
        d_model,
        n_layer: int(&["num_hidden_layers"])?,
        n_head,
        n_kv_head: cfg
            .get("num_key_value_heads")
            .and_then(Value::as_i64)
            .unwrap_or(n_head),
        d_ff: int(&["intermediate_size"])?,
        rope_theta,
        rms_norm_eps: float("rms_norm_eps", 1e-6),
        // Qwen2 always has q/k/v biases; Llama has them only with `attention_bias`.
        attention_bias: model_type == "qwen2"
            || cfg
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        tie_word_embeddings: cfg
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    config.check().map_err(bad)?;
    Ok(config)
}

/// The HF `config.json` of a Llama-family policy: `Qwen2ForCausalLM` when it has q/k/v biases,
/// else `LlamaForCausalLM`.
pub fn hf_config(c: &LlamaConfig, t: &Tokenizer) -> Value {
    let (arch, model_type) = if c.attention_bias {
        ("Qwen2ForCausalLM", "qwen2")
    } else {
        ("LlamaForCausalLM", "llama")
    };
    json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.n_ctx,
        "hidden_size": c.d_model,
        "intermediate_size": c.d_ff,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim(),
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": null,
        "attention_bias": c.attention_bias,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "initializer_range": 0.02,
        "use_cache": true,
        "bos_token_id": t.sep_id(),
        "eos_token_id": t.eos_id(),
        "pad_token_id": t.pad_id(),
        "tie_word_embeddings": c.tie_word_embeddings,
        "torch_dtype": "float32"
    })
}
