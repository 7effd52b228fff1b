//! The reward-model benchmark behind `ember bench reward`: training throughput of the reference
//! config (vocab 8192, n_ctx 256, d_model 256, 4 layers, 4 heads; 8 pairs × 2 sequences × 256
//! tokens per step, log loss, AdamW) in tokens/s and model FLOP/s, and scoring throughput
//! (pairs/s).
use std::time::Instant;

use policy::GptConfig;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::loss::{batch_loss, LossConfig};
use crate::model::{EnergyConfig, EnergyModel, Pooling};
use policy::train::{clip_grad_norm, AdamW, OptimConfig};

/// Throughput of the energy model on the reference config; `ember bench reward` adds the MFU
/// against the matmul peak it measures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub steps: usize,
    pub pairs_per_step: i64,
    pub seq_len: i64,
    pub tokens_per_s: f64,
    pub step_s: f64,
    /// Model FLOPs per second of training (see [`train_flops_per_token`]).
    pub flops_per_s: f64,
    /// Scoring (no-grad forward) throughput on the same batches.
    pub score_pairs_per_s: f64,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Training FLOPs per token: 3 × forward, the forward being 2 × matmul parameters (blocks and
/// head; the energy model has no LM head, and embedding lookups cost nothing) plus attention
/// scores and mixing over `ctx` attended tokens on average (T/2 for causal attention).
pub fn train_flops_per_token(cfg: &GptConfig, ctx: f64) -> f64 {
    let (l, d) = (cfg.n_layer as f64, cfg.d_model as f64);
    let matmul_params = 12.0 * l * d * d + d;
    3.0 * (2.0 * matmul_params + 4.0 * l * ctx * d)
}

/// Runs `steps` timed training steps (after a warm-up step) and `steps` scoring batches.
pub fn run(steps: usize, device: Device) -> BenchReport {
    tch::manual_seed(0);
    let trunk = GptConfig::default(); // the reference config
    let (pairs, t) = (8i64, trunk.n_ctx);
    let cfg = EnergyConfig {
        max_len: t as usize,
        trunk: trunk.clone().into(),
        pooling: Pooling::Eos,
        ..EnergyConfig::default()
    };
    let vs = nn::VarStore::new(device);
    let model = EnergyModel::new(vs.root(), &cfg);
    let ocfg = OptimConfig::default();
    let mut opt = AdamW::new(&vs, &ocfg);
    let lcfg = LossConfig::default();
    let ids = Tensor::randint(trunk.vocab_size, [2 * pairs, t], (Kind::Int64, device));
    let mask = Tensor::ones([2 * pairs, t], (Kind::Int64, device));
    let zeros = Tensor::zeros([pairs], (Kind::Float, device));
    let step = |opt: &mut AdamW| {
        let e = model.energy(&ids, &mask, true);
        let (p, n) = (e.narrow(0, 0, pairs), e.narrow(0, pairs, pairs));
        let loss = batch_loss(&lcfg, &p, &n, &zeros, &zeros, None);
        opt.zero_grad();
        loss.backward();
        clip_grad_norm(opt.params(), ocfg.grad_clip);
        opt.step(1e-4);
        let _ = loss.double_value(&[]); // completes the step
    };
    step(&mut opt);
    sync(device);
    let t0 = Instant::now();
    for _ in 0..steps {
        step(&mut opt);
    }
    sync(device);
    let train_s = t0.elapsed().as_secs_f64();
    let score = || {
        let _ = model
            .energy(&ids, &mask, false)
            .sum(Kind::Float)
            .double_value(&[]);
    };
    // A no-grad forward may pick other kernels than training did (loaded on first use on
    // CUDA): one warm-up call first, as for the training steps.
    tch::no_grad(score);
    let t1 = Instant::now();
    tch::no_grad(|| (0..steps).for_each(|_| score()));
    let score_s = t1.elapsed().as_secs_f64();
    let tokens = (steps as i64 * 2 * pairs * t) as f64;
    BenchReport {
        steps,
        pairs_per_step: pairs,
        seq_len: t,
        tokens_per_s: tokens / train_s,
        step_s: train_s / steps as f64,
        flops_per_s: tokens * train_flops_per_token(&trunk, t as f64 / 2.0) / train_s,
        score_pairs_per_s: (steps as i64 * pairs) as f64 / score_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_per_token_hand_computed() {
        let cfg = GptConfig {
            n_layer: 1,
            d_model: 2,
            ..GptConfig::default()
        };
        // matmul params 12·1·4 + 2 = 50 → 100; attention 4·1·3·2 = 24; ×3 = 372
        assert_eq!(train_flops_per_token(&cfg, 3.0), 372.0);
    }
}
