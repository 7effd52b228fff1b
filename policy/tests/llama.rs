//! The Llama-family trunk: KV-cached decoding equals full recomputation, left padding changes
//! nothing, save/load and HF export/import round-trip, and tiny `transformers` checkpoints
//! (Llama tied, Qwen2 untied with q/k/v biases, bf16 and sharded) give `transformers`' logits.
//! The fixtures are made by `scripts/llama_reference.py`.
mod common;

use std::path::{Path, PathBuf};

use policy::batch::pad_left;
use policy::{KvCache, LlamaConfig, Policy, Tokenizer, TrunkConfig};
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn tiny_config(vocab_size: i64, bias: bool, tied: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size,
        n_ctx: 64,
        d_model: 32,
        n_layer: 2,
        n_head: 4,
        n_kv_head: 2,
        d_ff: 48,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        attention_bias: bias,
        tie_word_embeddings: tied,
    }
}

/// A random tiny Llama over a char-level vocabulary; biases and norms made non-trivial.
fn tiny_policy(seed: i64, bias: bool, tied: bool) -> Policy {
    tch::manual_seed(seed);
    let tok = Tokenizer::char_level(["0123456789+=, abcdefghijklmnopqrstuvwxyz"]).unwrap();
    let p = Policy::new(tiny_config(tok.vocab_size(), bias, tied), tok, Device::Cpu).unwrap();
    tch::no_grad(|| {
        for (name, mut t) in p.vs.variables() {
            if name.ends_with("norm.weight") || name.ends_with(".bias") {
                t.copy_(
                    &(Tensor::randn_like(&t) * 0.3
                        + if name.ends_with("norm.weight") {
                            1.0
                        } else {
                            0.0
                        }),
                );
            }
        }
    });
    p
}

#[test]
fn parameter_names_are_hugging_faces() {
    let p = tiny_policy(0, true, false);
    let vars = p.vs.variables();
    let TrunkConfig::Llama(c) = &p.config else {
        panic!("a llama config")
    };
    let shape = |n: &str| vars[n].size();
    assert_eq!(shape("model.embed_tokens.weight"), vec![c.vocab_size, 32]);
    assert_eq!(
        shape("model.layers.0.self_attn.q_proj.weight"),
        vec![32, 32]
    );
    assert_eq!(
        shape("model.layers.0.self_attn.k_proj.weight"),
        vec![16, 32]
    );
    assert_eq!(shape("model.layers.1.self_attn.v_proj.bias"), vec![16]);
    assert_eq!(shape("model.layers.1.mlp.down_proj.weight"), vec![32, 48]);
    assert_eq!(shape("lm_head.weight"), vec![c.vocab_size, 32]);
    let n: i64 = vars.values().map(|t| t.numel() as i64).sum();
    assert_eq!(n, p.config.n_params());
    let tied = tiny_policy(0, false, true);
    assert!(!tied.vs.variables().contains_key("lm_head.weight"));
    let n: i64 = tied.vs.variables().values().map(|t| t.numel() as i64).sum();
    assert_eq!(n, tied.config.n_params());
}

#[test]
fn left_padding_changes_nothing() {
    let p = tiny_policy(1, true, false);
    let seqs = vec![
        p.tokenizer.encode("12+34=46, and more text"),
        p.tokenizer.encode("5+5"),
    ];
    let (ids, mask) = pad_left(&seqs, p.tokenizer.pad_id(), Device::Cpu);
    let batch = tch::no_grad(|| p.model.logits(&ids, &mask, false));
    let t = ids.size()[1];
    for (b, seq) in seqs.iter().enumerate() {
        let alone_ids = Tensor::from_slice(seq).unsqueeze(0);
        let alone = tch::no_grad(|| p.model.logits(&alone_ids, &alone_ids.ones_like(), false));
        let n = seq.len() as i64;
        let ours = batch.get(b as i64).narrow(0, t - n, n);
        let diff = max_abs_diff(&ours, &alone.get(0));
        assert!(diff < 1e-5, "row {b}: padded vs alone {diff}");
    }
}

#[test]
fn cached_decoding_equals_full_recomputation() {
    let p = tiny_policy(2, false, true);
    let seqs = vec![
        p.tokenizer.encode("12+34=46,"),
        p.tokenizer.encode("5+5=10"),
    ];
    let (ids, mask) = pad_left(&seqs, p.tokenizer.pad_id(), Device::Cpu);
    let full = tch::no_grad(|| p.model.logits(&ids, &mask, false));
    let t = ids.size()[1];
    let mut cache = KvCache::new(&p.config, 2, t, Device::Cpu, Kind::Float);
    tch::no_grad(|| {
        let prefill = 4;
        let h = p.model.forward(
            &ids.narrow(1, 0, prefill),
            &mask.narrow(1, 0, prefill),
            &mut cache,
        );
        let mut parts = vec![p.model.logits_from_hidden(&h)];
        for s in prefill..t {
            let h = p
                .model
                .forward(&ids.narrow(1, s, 1), &mask.narrow(1, 0, s + 1), &mut cache);
            parts.push(p.model.step_logits(&h.squeeze_dim(1)).unsqueeze(1));
        }
        let cached = Tensor::cat(&parts, 1);
        let real = mask.unsqueeze(-1).to_kind(Kind::Float);
        let diff = max_abs_diff(&(cached * &real), &(&full * &real));
        assert!(diff < 1e-5, "cached vs full: {diff}");
    });
    assert_eq!(cache.len(), t);
}

#[test]
fn save_load_and_hf_export_import_round_trip() {
    let p = tiny_policy(3, true, false);
    let ids = Tensor::from_slice(&p.tokenizer.encode("1+2=3, abc")).unsqueeze(0);
    let mask = ids.ones_like();
    let before = tch::no_grad(|| p.model.logits(&ids, &mask, false));
    let dir = tempfile::tempdir().unwrap();
    p.save(dir.path().join("ember")).unwrap();
    let config = std::fs::read_to_string(dir.path().join("ember/config.json")).unwrap();
    assert!(config.contains("\"architecture\": \"llama\""), "{config}");
    let q = Policy::load(dir.path().join("ember"), Device::Cpu).unwrap();
    assert_eq!(q.config, p.config);
    assert!(before.equal(&tch::no_grad(|| q.model.logits(&ids, &mask, false))));

    policy::hf::export(&p, &dir.path().join("hf")).unwrap();
    let hf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("hf/config.json")).unwrap())
            .unwrap();
    assert_eq!(hf["architectures"][0], "Qwen2ForCausalLM");
    assert_eq!(hf["num_key_value_heads"], 2);
    let r = policy::hf::import(&dir.path().join("hf"), None, Device::Cpu).unwrap();
    assert_eq!(r.config, p.config);
    assert!(before.equal(&tch::no_grad(|| r.model.logits(&ids, &mask, false))));
}

/// `transformers`' logits for a tiny checkpoint: ids `[2, 10]` unpadded, and a left-padded
/// batch with positions from the mask.
fn check_against_transformers(name: &str) {
    let dir = fixtures().join(name);
    let p = policy::hf::import(&dir, None, Device::Cpu)
        .unwrap_or_else(|e| panic!("importing {}: {e}", dir.display()));
    let reference = Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap();
    let get = |n: &str| {
        reference
            .iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("{n} in reference.safetensors"))
            .1
            .shallow_clone()
    };
    tch::no_grad(|| {
        let ids = get("input_ids");
        let ours = p.model.logits(&ids, &ids.ones_like(), false);
        let diff = max_abs_diff(&ours, &get("logits"));
        assert!(diff < 1e-4, "{name}: max |Δ| vs transformers {diff}");
        let (ids, mask) = (get("padded_ids"), get("padded_mask"));
        let ours = p.model.logits(&ids, &mask, false);
        let real = mask.unsqueeze(-1).to_kind(Kind::Float);
        let diff = max_abs_diff(&(ours * &real), &(get("padded_logits") * &real));
        assert!(
            diff < 1e-4,
            "{name} left-padded: max |Δ| vs transformers {diff}"
        );
    });
    // Export → import gives the same model back.
    let out = tempfile::tempdir().unwrap();
    policy::hf::export(&p, out.path()).unwrap();
    let q = policy::hf::import(out.path(), None, Device::Cpu).unwrap();
    assert_eq!(q.config, p.config);
    for (n, t) in p.vs.variables() {
        assert!(
            t.equal(&q.vs.variables()[&n]),
            "{name}: {n} after export/import"
        );
    }
}

#[test]
fn tiny_llama_matches_transformers() {
    check_against_transformers("tiny-llama");
}

#[test]
fn tiny_qwen2_bf16_sharded_matches_transformers() {
    check_against_transformers("tiny-qwen2");
}

#[test]
fn unsupported_hf_configs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let write = |cfg: serde_json::Value| {
        std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
        policy::hf::import(dir.path(), None, Device::Cpu)
            .unwrap_err()
            .to_string()
    };
    let e = write(serde_json::json!({"model_type": "falcon"}));
    assert!(e.contains("falcon") && e.contains("config.json"), "{e}");
    let e = write(serde_json::json!({"model_type": "llama", "hidden_act": "gelu"}));
    assert!(e.contains("hidden_act"), "{e}");
    let e = write(serde_json::json!({"model_type": "llama", "hidden_size": 8}));
    assert!(e.contains("num_attention_heads"), "{e}");
}

#[test]
fn hidden_at_one_position_equals_that_row_of_the_full_pass() {
    let p = tiny_policy(3, true, true);
    common::check_hidden_at(&p, &["12+34=46", "7+8=15 abc xyz", "9"]);
}
