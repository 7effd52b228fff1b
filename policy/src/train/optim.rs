//! The optimiser: the warmup + cosine schedule as a pure function, AdamW written over the
//! VarStore tensors (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"; weight
//! decay only on ≥ 2-D weights) and global-norm gradient clipping.
//!
//! AdamW is our own so that its moments are plain tensors saved beside the weights
//! ([`super::checkpoint`]): a resumed run continues bit-exactly (tch's `COptimizer` state cannot
//! be exported).
//!
//! On CUDA the update is libtorch's fused AdamW kernel and clipping uses multi-tensor (foreach)
//! kernels ([`crate::ext`]), one launch for all parameters where the plain path launches a few per
//! tensor: what `torch.optim.AdamW(fused=True)` and `clip_grad_norm_` do. On the CPU the plain path
//! stays the default, as in PyTorch, so results on the CPU are those of every earlier release;
//! [`AdamW::set_fused`] picks either path, and tests hold them to the same update.
use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::error::{PolicyError, Result};

/// Optimiser and schedule settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Linear warmup steps from lr/warmup to lr.
    pub warmup_steps: u64,
    /// Decoupled weight decay on ≥ 2-D weights.
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 20,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
        }
    }
}

/// Learning rate at 0-based `step` of `total` steps: linear warmup to `lr`, then cosine down to
/// `min_lr` at the last step.
pub fn lr_at(step: u64, total: u64, cfg: &OptimConfig) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let span = total
        .saturating_sub(cfg.warmup_steps)
        .saturating_sub(1)
        .max(1);
    let progress = ((step - cfg.warmup_steps) as f64 / span as f64).min(1.0);
    cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Scales all gradients so their global L2 norm is at most `max_norm` (if > 0); returns the
/// norm before clipping.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    let foreach = params.first().is_some_and(|p| p.device().is_cuda());
    clip_grad_norm_with(params, max_norm, foreach)
}

/// [`clip_grad_norm`] with the multi-tensor kernels (`foreach`) or one kernel per tensor.
pub fn clip_grad_norm_with(params: &[Tensor], max_norm: f64, foreach: bool) -> f64 {
    let grads: Vec<Tensor> = params
        .iter()
        .map(Tensor::grad)
        .filter(Tensor::defined)
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    let total = if foreach {
        crate::ext::global_norm(&grads).unwrap_or_else(|e| panic!("gradient norm: {e}"))
    } else {
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        Tensor::stack(&norms, 0).norm()
    }
    .double_value(&[]);
    if max_norm > 0.0 && total > max_norm {
        let scale = max_norm / (total + 1e-6);
        tch::no_grad(|| {
            if foreach {
                let s = Tensor::from(scale as f32).to_device(grads[0].device());
                crate::ext::mul_(&grads, &s).unwrap_or_else(|e| panic!("gradient clipping: {e}"));
            } else {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            }
        });
    }
    total
}

/// AdamW over the trainable variables of a VarStore, in name order.
#[derive(Debug)]
pub struct AdamW {
    names: Vec<String>,
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    decay: Vec<bool>,
    /// Updates taken so far (bias correction).
    pub t: u64,
    cfg: OptimConfig,
    /// Whether [`Self::step`] runs the fused kernel.
    fused: bool,
}

impl AdamW {
    pub fn new(vs: &nn::VarStore, cfg: &OptimConfig) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let decay = vars.iter().map(|(_, t)| t.dim() >= 2).collect();
        let m = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let v = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let fused = vars.first().is_some_and(|(_, t)| t.device().is_cuda());
        let (names, params) = vars.into_iter().unzip();
        Self {
            names,
            params,
            m,
            v,
            decay,
            t: 0,
            cfg: cfg.clone(),
            fused,
        }
    }

    /// Chooses libtorch's fused kernel (the default on CUDA) or the plain per-tensor update (the
    /// default on the CPU, whose results every CPU run so far has).
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused;
    }

    pub fn fused(&self) -> bool {
        self.fused
    }

    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Makes every rank's moments and step count rank 0's (the parameters travel with their
    /// VarStore: [`crate::train::replicate`]).
    pub fn broadcast_from_root(
        &mut self,
        pg: &crate::dist::ProcessGroup,
    ) -> Result<(), crate::dist::DistError> {
        let moments: Vec<Tensor> = (self.m.iter().chain(&self.v))
            .map(Tensor::shallow_clone)
            .collect();
        pg.broadcast_parameters(&moments)?;
        let t = Tensor::from_slice(&[self.t as i64]);
        pg.broadcast(&t, 0)?;
        self.t = t.int64_value(&[0]) as u64;
        Ok(())
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update at learning rate `lr` from the accumulated gradients.
    pub fn step(&mut self, lr: f64) {
        self.t += 1;
        if self.fused {
            return self.fused_step(lr);
        }
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        tch::no_grad(|| {
            for i in 0..self.params.len() {
                let g = self.params[i].grad();
                if !g.defined() {
                    continue;
                }
                let _ = self.m[i].lerp_(&g, 1.0 - c.beta1);
                let _ = self.v[i].g_mul_scalar_(c.beta2);
                let _ = self.v[i].g_add_(&(&g * &g * (1.0 - c.beta2)));
                let p = &mut self.params[i];
                if self.decay[i] && c.weight_decay > 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let denom = (&self.v[i] / bc2).sqrt() + c.eps;
                let _ = p.g_sub_(&(&self.m[i] / &denom * (lr / bc1)));
            }
        });
    }

    /// [`Self::step`] with libtorch's fused kernel: one call for the weights that decay and one
    /// for those that do not. The step count goes in as a scalar tensor on the parameters'
    /// device (every parameter shares it).
    fn fused_step(&mut self, lr: f64) {
        let c = &self.cfg;
        let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).collect();
        let Some(first) = self.params.first() else {
            return;
        };
        let step = Tensor::from(self.t as f32).to_device(first.device());
        for decay in [true, false] {
            let mut group = crate::ext::AdamwGroup {
                params: vec![],
                grads: vec![],
                exp_avg: vec![],
                exp_avg_sq: vec![],
                steps: vec![],
            };
            for (i, g) in grads.iter().enumerate() {
                if self.decay[i] == decay && g.defined() {
                    group.params.push(&self.params[i]);
                    group.grads.push(g);
                    group.exp_avg.push(&self.m[i]);
                    group.exp_avg_sq.push(&self.v[i]);
                    group.steps.push(&step);
                }
            }
            let wd = if decay { c.weight_decay } else { 0.0 };
            tch::no_grad(|| crate::ext::fused_adamw(&group, lr, (c.beta1, c.beta2), wd, c.eps))
                .unwrap_or_else(|e| panic!("fused AdamW: {e}"));
        }
    }

    /// The moments as named tensors (`m.NAME`, `v.NAME`), for a checkpoint.
    pub(super) fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, name) in self.names.iter().enumerate() {
            out.push((format!("m.{name}"), self.m[i].shallow_clone()));
            out.push((format!("v.{name}"), self.v[i].shallow_clone()));
        }
        out
    }

    /// Restores the moments written by [`Self::state`]; `path` names the file in errors.
    pub(super) fn load_state(
        &mut self,
        mut tensors: HashMap<String, Tensor>,
        path: &Path,
    ) -> Result<()> {
        for (i, name) in self.names.iter().enumerate() {
            for (prefix, buf) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{name}");
                let src = tensors
                    .remove(&key)
                    .ok_or_else(|| PolicyError::Checkpoint {
                        path: path.to_path_buf(),
                        message: format!("missing optimizer tensor {key}"),
                    })?;
                tch::no_grad(|| buf.copy_(&src));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let cfg = OptimConfig {
            lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 4,
            ..Default::default()
        };
        assert!((lr_at(0, 14, &cfg) - 0.25).abs() < 1e-12);
        assert!((lr_at(3, 14, &cfg) - 1.0).abs() < 1e-12);
        // the last step reaches min_lr
        assert!((lr_at(13, 14, &cfg) - 0.1).abs() < 1e-12);
        assert!((lr_at(4, 14, &cfg) - 1.0).abs() < 1e-12);
        // no warmup, 11 steps: step 5 is halfway, cos(pi/2) = 0 → (lr + min_lr) / 2
        let flat = OptimConfig {
            lr: 1.0,
            min_lr: 0.2,
            warmup_steps: 0,
            ..cfg.clone()
        };
        assert!((lr_at(5, 11, &flat) - 0.6).abs() < 1e-12);
        assert!(lr_at(100, 14, &cfg) >= 0.1);
    }

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let a = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let b = Tensor::from_slice(&[4.0f32]).set_requires_grad(true);
        (&a * &a * 0.5 + &b * &b * 0.5)
            .sum(tch::Kind::Float)
            .backward(); // grads 3, 4 → norm 5
        let norm = clip_grad_norm(&[a.shallow_clone(), b.shallow_clone()], 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-5);
        assert!((b.grad().double_value(&[0]) - 0.8).abs() < 1e-5);
    }

    #[test]
    fn adamw_first_step_moves_by_lr_and_decays_matrices_only() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[1, 1], nn::Init::Const(1.0));
        let b = vs.root().var("b", &[1], nn::Init::Const(1.0));
        let cfg = OptimConfig {
            weight_decay: 0.5,
            ..Default::default()
        };
        let mut opt = AdamW::new(&vs, &cfg);
        (w.sum(tch::Kind::Float) + b.sum(tch::Kind::Float)).backward();
        opt.step(0.1);
        // first Adam step: m̂ = g, v̂ = g² → update lr·sign(g); decay multiplies w by 1 − 0.05
        assert!((w.double_value(&[0, 0]) - (0.95 - 0.1)).abs() < 1e-6);
        assert!((b.double_value(&[0]) - 0.9).abs() < 1e-6);
    }

    /// Two copies of the same parameters (a matrix that decays, a vector that does not) with
    /// the same gradients.
    fn twin_params() -> [(nn::VarStore, Tensor, Tensor); 2] {
        [0, 1].map(|_| {
            tch::manual_seed(7);
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let w = vs.root().randn("w", &[5, 3], 0.0, 1.0);
            let b = vs.root().randn("b", &[3], 0.0, 1.0);
            (vs, w, b)
        })
    }

    fn backward(w: &Tensor, b: &Tensor, step: i64) {
        let x = Tensor::arange(15, (tch::Kind::Float, tch::Device::Cpu)).view([5, 3]) - step;
        ((w * &x).sum(tch::Kind::Float) * 3.0 + (b * b).sum(tch::Kind::Float)).backward();
    }

    #[test]
    fn the_fused_kernel_takes_the_plain_steps() {
        let cfg = OptimConfig {
            weight_decay: 0.3,
            ..Default::default()
        };
        let [(vs_a, wa, ba), (vs_b, wb, bb)] = twin_params();
        let (mut plain, mut fused) = (AdamW::new(&vs_a, &cfg), AdamW::new(&vs_b, &cfg));
        assert!(!plain.fused(), "the CPU default is the plain path");
        fused.set_fused(true);
        for step in 0..5 {
            for (opt, w, b) in [(&mut plain, &wa, &ba), (&mut fused, &wb, &bb)] {
                opt.zero_grad();
                backward(w, b, step);
                opt.step(0.05 * (step + 1) as f64);
            }
        }
        let max_diff = |x: &Tensor, y: &Tensor| (x - y).abs().max().double_value(&[]);
        assert!(max_diff(&wa, &wb) < 1e-6, "{wa} vs {wb}");
        assert!(max_diff(&ba, &bb) < 1e-6, "{ba} vs {bb}");
        // The weights moved (a kernel that did nothing would leave them equal to each other too).
        let [(_, w0, _), _] = twin_params();
        assert!(max_diff(&wa, &w0) > 0.1);
        for ((name, a), (_, b)) in plain.state().iter().zip(&fused.state()) {
            let scale = a.abs().max().double_value(&[]).max(1.0);
            assert!(max_diff(a, b) < 1e-6 * scale, "{name}: {a} vs {b}");
        }
    }

    #[test]
    fn foreach_clipping_equals_per_tensor_clipping() {
        let [(_, wa, ba), (_, wb, bb)] = twin_params();
        backward(&wa, &ba, 0);
        backward(&wb, &bb, 0);
        for max_norm in [1.0, 1e6] {
            let plain =
                clip_grad_norm_with(&[wa.shallow_clone(), ba.shallow_clone()], max_norm, false);
            let fused =
                clip_grad_norm_with(&[wb.shallow_clone(), bb.shallow_clone()], max_norm, true);
            assert!((plain - fused).abs() < 1e-5 * plain, "{plain} vs {fused}");
            assert!((&wa.grad() - &wb.grad()).abs().max().double_value(&[]) < 1e-6);
            assert!((&ba.grad() - &bb.grad()).abs().max().double_value(&[]) < 1e-6);
        }
        let clipped =
            wa.grad().square().sum(tch::Kind::Float) + ba.grad().square().sum(tch::Kind::Float);
        assert!((clipped.sqrt().double_value(&[]) - 1.0).abs() < 1e-4);
    }
}
