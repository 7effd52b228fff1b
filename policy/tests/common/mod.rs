//! Shared helpers for the policy crate's tests: a tiny char-level policy.
#![allow(dead_code)]
use policy::{GptConfig, Policy, Tokenizer, TrunkConfig};
use tch::Device;

pub fn tiny_config(vocab_size: i64) -> GptConfig {
    GptConfig {
        vocab_size,
        n_ctx: 48,
        d_model: 32,
        n_layer: 2,
        n_head: 4,
        dropout: 0.0,
        layer_norm_eps: 1e-5,
    }
}

/// The GPT-2 shape of a policy built by [`tiny_policy`].
pub fn gpt(p: &Policy) -> &GptConfig {
    match &p.config {
        TrunkConfig::Gpt2(c) => c,
        other => panic!("expected a GPT-2 policy, got {}", other.architecture()),
    }
}

pub fn tiny_policy(seed: i64) -> Policy {
    tch::manual_seed(seed);
    let tok = Tokenizer::char_level(["0123456789+=, abcdefghijklmnopqrstuvwxyz"]).unwrap();
    let cfg = tiny_config(tok.vocab_size());
    Policy::new(cfg, tok, Device::Cpu).unwrap()
}
