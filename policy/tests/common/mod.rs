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

/// Checks [`policy::Trunk::upper`] with `at` against the rows of the full pass, left- and
/// right-padded, from every `k` (the frozen blocks below it): equal hidden states, and equal
/// gradients in the input embeddings and in every parameter.
pub fn check_hidden_at(p: &Policy, texts: &[&str]) {
    use tch::{Kind, Tensor};
    let seqs: Vec<Vec<i64>> = texts.iter().map(|t| p.tokenizer.encode(t)).collect();
    let trunk = &p.model;
    let n_layer = p.config.n_layer() as usize;
    for left in [false, true] {
        let pad = p.tokenizer.pad_id();
        let (ids, mask) = if left {
            policy::batch::pad_left(&seqs, pad, Device::Cpu)
        } else {
            policy::batch::pad_right(&seqs, pad, Device::Cpu)
        };
        let t = ids.size()[1];
        // Each row's last real token, and an earlier one.
        let last: Vec<i64> = seqs
            .iter()
            .map(|s| if left { t - 1 } else { s.len() as i64 - 1 })
            .collect();
        for at in [last.clone(), last.iter().map(|&i| (i - 1).max(0)).collect()] {
            let at = Tensor::from_slice(&at);
            for k in 0..=n_layer {
                let embeds = trunk.embed(&ids).detach().set_requires_grad(true);
                let x = trunk.lower(&embeds, &mask, k, false);
                let weights = Tensor::randn(
                    [seqs.len() as i64, p.config.d_model()],
                    (Kind::Float, Device::Cpu),
                );
                let rows = |h: Tensor| (h * &weights).sum(Kind::Float);
                let grads = |y: &Tensor| {
                    let mut inputs: Vec<Tensor> = vec![embeds.shallow_clone()];
                    inputs.extend(p.vs.trainable_variables());
                    Tensor::run_backward(&[y], &inputs, true, false)
                };
                let full = trunk.upper(&x, &mask, k, None, false); // [B, T, D]
                let (b, d) = (seqs.len() as i64, p.config.d_model());
                let picked = full
                    .gather(1, &at.view([b, 1, 1]).expand([b, 1, d], false), false)
                    .squeeze_dim(1);
                let fast = trunk.upper(&x, &mask, k, Some(&at), false); // [B, D]
                assert_eq!(fast.size(), [b, d]);
                let diff = (&fast - &picked).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "left={left} k={k}: hidden differs by {diff}");
                let (slow_g, fast_g) = (grads(&rows(picked)), grads(&rows(fast)));
                for (i, (s, f)) in slow_g.iter().zip(&fast_g).enumerate() {
                    assert_eq!(s.defined(), f.defined(), "left={left} k={k}: gradient {i}");
                    if !s.defined() {
                        continue; // a weight the hidden states do not use (the token embedding)
                    }
                    let diff = (s - f).abs().max().double_value(&[]);
                    let scale = s.abs().max().double_value(&[]).max(1.0);
                    assert!(
                        diff < 1e-5 * scale,
                        "left={left} k={k}: gradient {i} differs by {diff} (largest {scale})"
                    );
                }
            }
        }
    }
}
