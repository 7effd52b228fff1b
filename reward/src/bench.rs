//! The reward-model benchmark behind `ember bench reward`: training throughput of an energy model
//! on a given trunk shape (P pairs × 2 sequences × T tokens per step, every block trained, log
//! loss, AdamW, clipping) in tokens/s and model FLOP/s, and scoring throughput (pairs/s).
use std::time::Instant;

use policy::TrunkConfig;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::loss::{batch_loss, LossConfig};
use crate::model::{EnergyConfig, EnergyModel, Pooling};
use policy::train::{clip_grad_norm, AdamW, OptimConfig};

/// Throughput of the energy model; `ember bench reward` adds the MFU against the matmul peak it
/// measures.
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

/// Training FLOPs per token: 3 × forward, the forward being the trunk's
/// ([`TrunkConfig::forward_flops_per_token`], over `ctx` attended tokens on average: T/2 for
/// causal attention) without its LM head (vocab × d_model), plus the scalar head (d_model).
pub fn train_flops_per_token(cfg: &TrunkConfig, ctx: f64) -> f64 {
    let (v, d) = (cfg.vocab_size() as f64, cfg.d_model() as f64);
    3.0 * (cfg.forward_flops_per_token(ctx) - 2.0 * v * d + 2.0 * d)
}

/// Runs `steps` timed training steps (after a warm-up step) and `steps` scoring batches of
/// `pairs` pairs of random `t`-token sequences on a freshly initialised `trunk`.
pub fn run(trunk: &TrunkConfig, pairs: i64, t: i64, steps: usize, device: Device) -> BenchReport {
    tch::manual_seed(0);
    let cfg = EnergyConfig {
        max_len: t as usize,
        trunk: trunk.clone(),
        pooling: Pooling::Eos,
        ..EnergyConfig::default()
    };
    let vs = nn::VarStore::new(device);
    let model = EnergyModel::new(vs.root(), &cfg);
    let ocfg = OptimConfig::default();
    let mut opt = AdamW::new(&vs, &ocfg);
    let lcfg = LossConfig::default();
    let ids = Tensor::randint(trunk.vocab_size(), [2 * pairs, t], (Kind::Int64, device));
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
        flops_per_s: tokens * train_flops_per_token(trunk, t as f64 / 2.0) / train_s,
        score_pairs_per_s: (steps as i64 * pairs) as f64 / score_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_per_token_hand_computed() {
        let cfg = policy::GptConfig {
            vocab_size: 10,
            n_ctx: 4,
            n_layer: 1,
            d_model: 2,
            ..policy::GptConfig::default()
        };
        // Block parameters: 12·d² weights + 13·d biases and norm gains = 74, final norm 2·d = 4,
        // scalar head d = 2 → 2·80 = 160; attention 4·1·3·2 = 24; ×3 = 552.
        assert_eq!(train_flops_per_token(&cfg.into(), 3.0), 552.0);
    }
}
