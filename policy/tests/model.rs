//! The GPT against an independent naive implementation, padding invariance, the KV cache,
//! and checkpoint round trips.
mod common;

use policy::batch::{pad_left, pad_right};
use policy::model::KvCache;
use policy::Policy;
use tch::{Device, Kind, Tensor};

fn var(p: &Policy, name: &str) -> Tensor {
    p.vs.variables()
        .get(name)
        .unwrap_or_else(|| panic!("no variable {name}"))
        .shallow_clone()
}

fn naive_ln(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
    let mean = x.mean_dim(-1, true, Kind::Double);
    let var = (x - &mean)
        .pow_tensor_scalar(2)
        .mean_dim(-1, true, Kind::Double);
    (x - mean) / (var + eps).sqrt() * w + b
}

/// GPT-2 written out for one unpadded sequence `[T]`, in f64, with an explicit softmax.
fn naive_logits(p: &Policy, ids: &[i64]) -> Tensor {
    let cfg = common::gpt(p);
    let t = ids.len() as i64;
    let (h, dh) = (cfg.n_head, cfg.head_dim());
    let v = |n: &str| var(p, n).to_kind(Kind::Double);
    let ids = Tensor::from_slice(ids);
    let mut x = v("wte.weight").index_select(0, &ids) + v("wpe.weight").narrow(0, 0, t); // [T, D]
    let causal = Tensor::ones([t, t], (Kind::Double, Device::Cpu)).tril(0);
    for l in 0..cfg.n_layer {
        let n = |s: &str| format!("h.{l}.{s}");
        let a = naive_ln(
            &x,
            &v(&n("ln_1.weight")),
            &v(&n("ln_1.bias")),
            cfg.layer_norm_eps,
        );
        let qkv = a.matmul(&v(&n("attn.c_attn.weight"))) + v(&n("attn.c_attn.bias")); // [T, 3D]
        let mut heads = Vec::new();
        for head in 0..h {
            let q = qkv.narrow(1, head * dh, dh);
            let k = qkv.narrow(1, cfg.d_model + head * dh, dh);
            let vv = qkv.narrow(1, 2 * cfg.d_model + head * dh, dh);
            let scores = q.matmul(&k.tr()) / (dh as f64).sqrt();
            let scores = scores.masked_fill(&causal.eq(0.0), f64::NEG_INFINITY);
            let w = scores.exp() / scores.exp().sum_dim_intlist(-1, true, Kind::Double);
            heads.push(w.matmul(&vv));
        }
        let y =
            Tensor::cat(&heads, 1).matmul(&v(&n("attn.c_proj.weight"))) + v(&n("attn.c_proj.bias"));
        x += y;
        let a = naive_ln(
            &x,
            &v(&n("ln_2.weight")),
            &v(&n("ln_2.bias")),
            cfg.layer_norm_eps,
        );
        let f = a.matmul(&v(&n("mlp.c_fc.weight"))) + v(&n("mlp.c_fc.bias"));
        let inner: Tensor =
            (&f + f.pow_tensor_scalar(3) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
        let g = &f * 0.5 * (inner.tanh() + 1.0);
        x = x + g.matmul(&v(&n("mlp.c_proj.weight"))) + v(&n("mlp.c_proj.bias"));
    }
    let x = naive_ln(&x, &v("ln_f.weight"), &v("ln_f.bias"), cfg.layer_norm_eps);
    x.matmul(&v("wte.weight").tr())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn logits_match_naive_attention_in_padded_batches() {
    let p = common::tiny_policy(1);
    let seqs = vec![
        p.tokenizer.encode("12+34=46"),
        p.tokenizer.encode("7+8=15 abc xyz"),
        p.tokenizer.encode("9"),
    ];
    for left in [false, true] {
        let (ids, mask) = if left {
            pad_left(&seqs, p.tokenizer.pad_id(), Device::Cpu)
        } else {
            pad_right(&seqs, p.tokenizer.pad_id(), Device::Cpu)
        };
        let logits = tch::no_grad(|| p.model.logits(&ids, &mask, false)); // [B, T, V]
        assert!(
            logits.isfinite().all().int64_value(&[]) == 1,
            "padding produced non-finite logits"
        );
        let t = ids.size()[1];
        for (b, seq) in seqs.iter().enumerate() {
            let n = seq.len() as i64;
            let start = if left { t - n } else { 0 };
            let ours = logits.get(b as i64).narrow(0, start, n);
            let diff = max_abs_diff(&ours, &naive_logits(&p, seq));
            assert!(diff < 1e-5, "row {b} left={left}: max diff {diff}");
        }
    }
}

#[test]
fn cached_prefill_and_steps_equal_full_forward() {
    let p = common::tiny_policy(2);
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
            parts.push(p.model.logits_from_hidden(&h));
        }
        let cached = Tensor::cat(&parts, 1);
        // Compare real positions only (padding rows attend to themselves, differently).
        let real = mask.unsqueeze(-1).to_kind(Kind::Float);
        let diff = max_abs_diff(&(cached * &real), &(&full * &real));
        assert!(diff < 1e-5, "cached vs full: {diff}");
    });
    assert_eq!(cache.len(), t);
}

#[test]
fn save_load_is_bit_exact() {
    let p = common::tiny_policy(3);
    let dir = tempfile::tempdir().unwrap();
    p.save(dir.path()).unwrap();
    let q = Policy::load(dir.path(), Device::Cpu).unwrap();
    assert_eq!(q.config, p.config);
    let (a, b) = (p.vs.variables(), q.vs.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs after save/load");
    }
    let ids = Tensor::from_slice(&p.tokenizer.encode("1+2=3")).unsqueeze(0);
    let mask = ids.ones_like();
    assert!(p
        .model
        .logits(&ids, &mask, false)
        .equal(&q.model.logits(&ids, &mask, false)));
}

#[test]
fn hf_parameter_names_and_shapes() {
    let p = common::tiny_policy(4);
    let vars = p.vs.variables();
    let cfg = common::gpt(&p);
    let d = cfg.d_model;
    let shape = |n: &str| vars[n].size();
    assert_eq!(shape("wte.weight"), vec![cfg.vocab_size, d]);
    assert_eq!(shape("wpe.weight"), vec![cfg.n_ctx, d]);
    assert_eq!(shape("h.0.attn.c_attn.weight"), vec![d, 3 * d]);
    assert_eq!(shape("h.1.mlp.c_proj.weight"), vec![4 * d, d]);
    assert_eq!(shape("ln_f.bias"), vec![d]);
    assert_eq!(vars.len(), 2 + 2 + 12 * cfg.n_layer as usize);
    let n: i64 = vars.values().map(|t| t.numel() as i64).sum();
    assert_eq!(n, p.config.n_params());
}

#[test]
fn load_names_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"n_embd": 3}"#).unwrap();
    let err = Policy::load(dir.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn hidden_at_one_position_equals_that_row_of_the_full_pass() {
    let p = common::tiny_policy(3);
    common::check_hidden_at(&p, &["12+34=46", "7+8=15 abc xyz", "9"]);
}
