//! A GGUF model as a Llama-family policy: hyperparameters from `{arch}.*` metadata, tensors
//! renamed from llama.cpp's names to Hugging Face's and dequantised to f32.
use tch::{Device, Kind, Tensor};

use super::{tokenizer, Gguf};
use crate::error::Result;
use crate::model::{LlamaConfig, TrunkConfig};
use crate::Policy;

/// The GGUF architectures the Llama trunk runs: Llama itself (also what llama.cpp writes for
/// SmolLM and Mistral) and Qwen2 (q/k/v biases, rotary weights not permuted).
const ARCHITECTURES: [&str; 2] = ["llama", "qwen2"];

/// The Llama trunk's shape from a GGUF header.
pub fn config(g: &Gguf) -> Result<LlamaConfig> {
    let arch = g.string("general.architecture")?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(g.err(format!(
            "architecture {arch:?} is not supported (supported: {})",
            ARCHITECTURES.join(", ")
        )));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let n_head = g.int(&key("attention.head_count"))?;
    let n_kv_head = match g.get(&key("attention.head_count_kv")) {
        Some(_) => g.int(&key("attention.head_count_kv"))?,
        None => n_head,
    };
    let vocab_size = match g.get(&key("vocab_size")) {
        Some(_) => g.int(&key("vocab_size"))?,
        None => g.strings("tokenizer.ggml.tokens")?.len() as i64,
    };
    let rope_theta = match g.get(&key("rope.freq_base")) {
        Some(_) => g.float(&key("rope.freq_base"))?,
        None => 10_000.0,
    };
    let cfg = LlamaConfig {
        vocab_size,
        n_ctx: g.int(&key("context_length"))?,
        d_model: g.int(&key("embedding_length"))?,
        n_layer: g.int(&key("block_count"))?,
        n_head,
        n_kv_head,
        d_ff: g.int(&key("feed_forward_length"))?,
        rope_theta,
        rms_norm_eps: g.float(&key("attention.layer_norm_rms_epsilon"))?,
        attention_bias: g.has_tensor("blk.0.attn_q.bias"),
        tie_word_embeddings: !g.has_tensor("output.weight"),
    };
    cfg.check()
        .map_err(|m| g.err(format!("inconsistent hyperparameters: {m}")))?;
    Ok(cfg)
}

/// llama.cpp's name of each of the trunk's parameters (Hugging Face names).
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, param) = rest.split_once('.')?;
    let mapped = match param {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{mapped}"))
}

/// Undoes llama.cpp's `permute` of a query or key projection (`[heads·Dh, in]` or a bias
/// `[heads·Dh]`): llama.cpp interleaves the two rotary halves of each head for its own RoPE
/// kernel; Hugging Face's "rotate half" wants them back in two blocks.
fn unpermute(w: &Tensor, heads: i64) -> Tensor {
    let shape = w.size();
    let rows = shape[0];
    let mut split = vec![heads, rows / heads / 2, 2];
    split.extend_from_slice(&shape[1..]);
    w.reshape(split.as_slice())
        .transpose(1, 2)
        .reshape(shape.as_slice())
}

/// Reads a GGUF file into a Llama-family policy on `device`: the trunk from its tensors, the
/// tokenizer and chat template from its `tokenizer.ggml.*` metadata.
pub fn import(path: &std::path::Path, device: Device) -> Result<Policy> {
    let mut g = Gguf::open(path)?;
    let cfg = config(&g)?;
    let tokenizer = tokenizer::from_gguf(&g)?;
    let permuted = g.string("general.architecture")? == "llama";
    let policy = Policy::new(TrunkConfig::Llama(cfg.clone()), tokenizer, device)
        .map_err(|e| g.err(e.to_string()))?;
    let mut vars: Vec<(String, Tensor)> = policy.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in vars {
        let src = gguf_name(&name).ok_or_else(|| g.err(format!("no GGUF name for {name}")))?;
        if !g.has_tensor(&src) {
            return Err(g.err(format!("missing tensor {src:?} (for {name})")));
        }
        let mut w = g.tensor(&src)?;
        if w.size() != var.size() {
            return Err(g.err(format!(
                "tensor {src:?} has shape {:?}, the config implies {:?}",
                w.size(),
                var.size()
            )));
        }
        if permuted && src.contains("attn_q.") {
            w = unpermute(&w, cfg.n_head);
        } else if permuted && src.contains("attn_k.") {
            w = unpermute(&w, cfg.n_kv_head);
        }
        tch::no_grad(|| var.copy_(&w.to_kind(Kind::Float).to_device(device)));
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trunk_parameter_has_a_gguf_name() {
        let cfg = LlamaConfig {
            vocab_size: 10,
            n_ctx: 8,
            d_model: 8,
            n_layer: 2,
            n_head: 2,
            n_kv_head: 1,
            d_ff: 12,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            attention_bias: true,
            tie_word_embeddings: false,
        };
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let _m = crate::model::Llama::new(vs.root(), &cfg);
        for name in vs.variables().keys() {
            assert!(gguf_name(name).is_some(), "{name}");
        }
        assert_eq!(
            gguf_name("model.layers.1.self_attn.k_proj.bias").as_deref(),
            Some("blk.1.attn_k.bias")
        );
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n, 2, rows/n/2, in).swapaxes(1, 2).reshape(w.shape)
        let (heads, dh, d_in) = (3i64, 4i64, 5i64);
        let w =
            Tensor::arange(heads * dh * d_in, (Kind::Float, Device::Cpu)).view([heads * dh, d_in]);
        let permuted = w
            .reshape([heads, 2, dh / 2, d_in])
            .transpose(1, 2)
            .reshape([heads * dh, d_in]);
        assert!(unpermute(&permuted, heads).equal(&w));
    }
}
