//! The energy model E(x, y) ≥ 0 (LeCun et al. 2006): the policy's GPT-2 trunk, a linear head on
//! the hidden state of the end-of-answer token (the last real token of each row, never a pad),
//! and a softplus so that the energy is non-negative. Reward = −energy ([`reward_from_energy`]).
//!
//! The trunk's parameters carry the policy's names (`wte`, `wpe`, `h.{i}.…`, `ln_f`) at the
//! root of the var store, so a policy (SFT) checkpoint initialises it directly; the head is
//! `head.weight` `[1, D]` and `head.bias` `[1]`.
use std::ops::Neg;

use policy::{Gpt, GptConfig};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Where the head reads the trunk's hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// The last real token of each row (the EOS), whatever the padding side. The correct one.
    Eos,
    /// The last column of the batch. Correct only under left padding; under right padding it
    /// reads a pad — the classic reward-model bug, kept so that `doctor` can be shown to catch it.
    LastColumn,
}

/// The energy model's shape; saved as `config.json` beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EnergyConfig {
    /// The transformer trunk (same config as a policy checkpoint).
    pub trunk: GptConfig,
    /// Longest sequence (prompt + SEP + answer + EOS) fed to the model; prompts are truncated
    /// from the left to fit. At most `trunk.n_ctx`.
    pub max_len: usize,
    /// Where the head reads the hidden states.
    pub pooling: Pooling,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        let trunk = GptConfig::default();
        Self {
            max_len: trunk.n_ctx as usize,
            trunk,
            pooling: Pooling::Eos,
        }
    }
}

impl EnergyConfig {
    /// A message for the first inconsistent field, if any.
    pub fn check(&self) -> Result<(), String> {
        self.trunk.check()?;
        if self.max_len < 3 || self.max_len as i64 > self.trunk.n_ctx {
            return Err(format!(
                "max_len {} must be in 3..={} (the trunk's n_ctx)",
                self.max_len, self.trunk.n_ctx
            ));
        }
        Ok(())
    }
}

/// Reward = −energy: the only place where the sign is decided.
pub fn reward_from_energy<T: Neg<Output = T>>(energy: T) -> T {
    -energy
}

/// Index of the last real token of each row of `mask` `[B, T]` (1 real, 0 pad), for either
/// padding side.  `[B]` i64
pub fn last_real_index(mask: &Tensor) -> Tensor {
    let t = mask.size()[1];
    let cols = Tensor::arange(t, (Kind::Int64, mask.device())).unsqueeze(0); // [1, T]
    (mask.ne(0).to_kind(Kind::Int64) * (cols + 1)).argmax(1, false) // [B]
}

/// The energy model: trunk + scalar head + softplus.
#[derive(Debug)]
pub struct EnergyModel {
    trunk: Gpt,
    head: nn::Linear,
    cfg: EnergyConfig,
}

impl EnergyModel {
    pub fn new(p: nn::Path, cfg: &EnergyConfig) -> Self {
        let trunk = Gpt::new(p.clone(), &cfg.trunk);
        let head_cfg = nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let head = nn::linear(&p / "head", cfg.trunk.d_model, 1, head_cfg);
        Self {
            trunk,
            head,
            cfg: cfg.clone(),
        }
    }

    pub fn config(&self) -> &EnergyConfig {
        &self.cfg
    }

    pub fn trunk(&self) -> &Gpt {
        &self.trunk
    }

    /// Energies `[B]` of token ids `[B, T]` with mask `[B, T]`.
    pub fn energy(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        self.energy_from_hidden(&self.trunk.hidden(ids, mask, train), mask)
    }

    /// Energies `[B]` of token embeddings `[B, T, D]` (soft answers): differentiable in them.
    pub fn energy_from_embeds(&self, embeds: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        self.energy_from_hidden(&self.trunk.hidden_from_embeds(embeds, mask, train), mask)
    }

    /// The position the head reads in each row of `mask` `[B, T]`.  `[B]` i64
    pub fn pool_index(&self, mask: &Tensor) -> Tensor {
        let (b, t) = mask.size2().expect("mask is [B, T]");
        match self.cfg.pooling {
            Pooling::Eos => last_real_index(mask),
            Pooling::LastColumn => Tensor::full([b], t - 1, (Kind::Int64, mask.device())),
        }
    }

    /// Head score s `[B]` (before the softplus) at the pooled position of hidden states `[B, T, D]`.
    pub fn score_from_hidden(&self, h: &Tensor, mask: &Tensor) -> Tensor {
        let (b, _, d) = h.size3().expect("hidden is [B, T, D]");
        let idx = self.pool_index(mask); // [B]
        let pooled = h.gather(1, &idx.view([b, 1, 1]).expand([b, 1, d], false), false); // [B, 1, D]
        self.head.forward(&pooled.view([b, d])).view([b]) // [B]
    }

    /// Energy = softplus(s) ≥ 0.  `[B]`
    pub fn energy_from_hidden(&self, h: &Tensor, mask: &Tensor) -> Tensor {
        self.score_from_hidden(h, mask).softplus()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn tiny() -> EnergyConfig {
        let trunk = GptConfig {
            vocab_size: 11,
            n_ctx: 16,
            d_model: 8,
            n_layer: 1,
            n_head: 2,
            dropout: 0.0,
            layer_norm_eps: 1e-5,
        };
        EnergyConfig {
            trunk,
            max_len: 16,
            pooling: Pooling::Eos,
        }
    }

    #[test]
    fn last_real_index_handles_both_padding_sides() {
        let mask = Tensor::from_slice(&[1i64, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1]).view([3, 4]);
        let idx = Vec::<i64>::try_from(last_real_index(&mask)).unwrap();
        assert_eq!(idx, vec![2, 2, 3]);
    }

    #[test]
    fn reward_is_negative_energy() {
        assert_eq!(reward_from_energy(2.5f32), -2.5);
        let r = reward_from_energy(Tensor::from_slice(&[1.0f32]));
        assert_eq!(r.double_value(&[0]), -1.0);
    }

    #[test]
    fn energies_are_nonnegative_and_padding_invariant() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = EnergyModel::new(vs.root(), &tiny());
        let seqs = vec![vec![4i64, 5, 1, 6, 2], vec![7i64, 1, 2]];
        let (ids_r, mask_r) = policy::batch::pad_right(&seqs, 0, Device::Cpu);
        let (ids_l, mask_l) = policy::batch::pad_left(&seqs, 0, Device::Cpu);
        let er = Vec::<f32>::try_from(m.energy(&ids_r, &mask_r, false)).unwrap();
        let el = Vec::<f32>::try_from(m.energy(&ids_l, &mask_l, false)).unwrap();
        assert!(er.iter().all(|e| *e >= 0.0));
        for (a, b) in er.iter().zip(&el) {
            assert!((a - b).abs() < 1e-5, "{er:?} vs {el:?}");
        }
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(names.contains(&"head.weight".to_string()));
        assert!(names.contains(&"wte.weight".to_string()));
    }
}
