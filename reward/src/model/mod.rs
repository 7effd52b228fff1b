//! The energy model E(x, y) ≥ 0 (LeCun et al. 2006): the policy's GPT-2 trunk, a linear head on
//! the hidden state of the end-of-answer token (the last real token of each row, never a pad),
//! and a softplus so that the energy is non-negative. Reward = −energy ([`reward_from_energy`]).
//!
//! The trunk's parameters carry the policy's names (`wte`, `wpe`, `h.{i}.…`, `ln_f`) at the
//! root of the var store, so a policy (SFT) checkpoint initialises it directly; the head is
//! `head.weight` `[1, D]` and `head.bias` `[1]`.
//!
//! With `score = "head+nll"` the score also reads the answer's negative log-likelihood under the
//! trunk's own tied LM head: s = head(h_eos) + a·mean NLL + b·sum NLL, with (a, b) = `nll.weight`
//! `[1, 2]`, learned, starting at (1, 0). An SFT trunk therefore starts as a likelihood ranker,
//! which an autoregressive trunk computes token by token, and contrastive training moves both
//! parts. The energy stays softplus(s) ≥ 0; a soft answer's NLL is its cross-entropy under the
//! trunk, so it stays differentiable in the answer's embeddings.
use std::ops::Neg;

use policy::{Trunk, TrunkConfig};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

mod options;

pub use options::{Pooling, Score};

/// The energy model's shape; saved as `config.json` beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EnergyConfig {
    /// The transformer trunk (same config as a policy checkpoint).
    pub trunk: TrunkConfig,
    /// Longest sequence (prompt + SEP + answer + EOS) fed to the model; prompts are truncated
    /// from the left to fit. At most `trunk.n_ctx`.
    pub max_len: usize,
    /// Where the head reads the hidden states.
    pub pooling: Pooling,
    /// What the score reads.
    pub score: Score,
    /// The answer separator's id: `head+nll` scores the tokens after it.
    pub sep_id: i64,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        let trunk = TrunkConfig::default();
        Self {
            max_len: trunk.n_ctx() as usize,
            trunk,
            pooling: Pooling::Eos,
            score: Score::Head,
            sep_id: 1,
        }
    }
}

impl EnergyConfig {
    /// A message for the first inconsistent field, if any.
    pub fn check(&self) -> Result<(), String> {
        self.trunk.check()?;
        if self.score == Score::HeadNll && !self.trunk.tied() {
            return Err(
                "score head+nll reads the LM head through the token embedding: \
                        it needs a trunk with tied embeddings"
                    .into(),
            );
        }
        if self.max_len < 3 || self.max_len as i64 > self.trunk.n_ctx() {
            return Err(format!(
                "max_len {} must be in 3..={} (the trunk's n_ctx)",
                self.max_len,
                self.trunk.n_ctx()
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

/// The answer tokens of `ids` `[B, T]`: real positions after the last separator.  `[B, T]` bool
///
/// A plain pair has one separator, between prompt and answer. With a chat template the
/// separator is the turn-start token (`<|im_start|>`), which opens every turn, so the last one
/// opens the assistant's answer (its role header, a few tokens the two answers of a pair
/// share, counts as answer).
pub fn answer_mask(ids: &Tensor, mask: &Tensor, sep_id: i64) -> Tensor {
    let real = mask.ne(0);
    let sep = ids.eq(sep_id).logical_and(&real);
    let seps_from_here = sep.flip([1]).cumsum(1, Kind::Int64).flip([1]); // seps at or after t
    let seen = sep.cumsum(1, Kind::Int64).gt(0);
    seps_from_here.eq(0).logical_and(&seen).logical_and(&real)
}

/// Negative log-likelihood of the answer tokens under the tied LM head: `[B, 2]` = (mean, sum)
/// over the positions where `answer` `[B, T]` is set. `h` `[B, T, D]` are the trunk's outputs,
/// `x` `[B, T, D]` its input token embeddings, `wte` `[V, D]`. Position t − 1 predicts token
/// t: log p(x_t) = h_{t−1}·x_t − logsumexp(h_{t−1}·wteᵀ), which for a soft token (x_t a mix of
/// rows of wte) is its expected log-probability.
pub fn answer_nll(h: &Tensor, x: &Tensor, answer: &Tensor, wte: &Tensor) -> Tensor {
    let (b, t, d) = h.size3().expect("hidden is [B, T, D]");
    let target = answer.narrow(1, 1, t - 1).reshape([-1]); // [B·(T−1)]
    let idx = target.nonzero().squeeze_dim(1); // [N] positions that predict an answer token
    let prev = h.narrow(1, 0, t - 1).reshape([-1, d]).index_select(0, &idx); // [N, D]
    let next = x.narrow(1, 1, t - 1).reshape([-1, d]).index_select(0, &idx); // [N, D]
    let nll = prev.matmul(&wte.tr()).logsumexp([-1], false)
        - (&prev * &next).sum_dim_intlist(-1, false, Kind::Float); // [N]
    let rows = idx.divide_scalar_mode(t - 1, "floor"); // [N]
    let sum = Tensor::zeros([b], (Kind::Float, h.device())).index_add(
        0,
        &rows,
        &nll.to_kind(Kind::Float),
    ); // [B]
    let count = target
        .view([b, t - 1])
        .sum_dim_intlist(1, false, Kind::Float)
        .clamp_min(1.0); // [B]
    Tensor::stack(&[&sum / count, sum], 1) // [B, 2]
}

/// Name prefixes of the variables that are the model's own, not the trunk's: an SFT checkpoint
/// initialises everything else.
pub const HEAD_PREFIXES: [&str; 2] = ["head.", "nll."];

/// The energy model: trunk + scalar head (+ the answer's NLL) + softplus.
#[derive(Debug)]
pub struct EnergyModel {
    trunk: Trunk,
    head: nn::Linear,
    /// `head+nll`: the weights of (mean, sum) NLL in the score.
    nll: Option<nn::Linear>,
    cfg: EnergyConfig,
}

impl EnergyModel {
    pub fn new(p: nn::Path, cfg: &EnergyConfig) -> Self {
        let trunk = Trunk::new(p.clone(), &cfg.trunk);
        let head_cfg = nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let head = nn::linear(&p / "head", cfg.trunk.d_model(), 1, head_cfg);
        let nll = (cfg.score == Score::HeadNll).then(|| {
            let mut lin = nn::linear(
                &p / "nll",
                2,
                1,
                nn::LinearConfig {
                    bias: false,
                    ..Default::default()
                },
            );
            tch::no_grad(|| {
                lin.ws
                    .copy_(&Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]))
            });
            lin
        });
        Self {
            trunk,
            head,
            nll,
            cfg: cfg.clone(),
        }
    }

    pub fn config(&self) -> &EnergyConfig {
        &self.cfg
    }

    pub fn trunk(&self) -> &Trunk {
        &self.trunk
    }

    /// Whether the score reads the answer's positions (`head+nll`, or mean pooling).
    fn reads_answer(&self) -> bool {
        self.nll.is_some() || self.cfg.pooling == Pooling::Mean
    }

    /// Energies `[B]` of token ids `[B, T]` with mask `[B, T]`.
    pub fn energy(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let answer = self
            .reads_answer()
            .then(|| answer_mask(ids, mask, self.cfg.sep_id));
        self.energy_from_embeds(&self.trunk.embed(ids), mask, answer.as_ref(), train)
    }

    /// Energies `[B]` of token embeddings `[B, T, D]` (soft answers): differentiable in them.
    /// `answer` `[B, T]` marks the answer tokens (EOS included) that `head+nll` scores and mean
    /// pooling averages; the `head` score with EOS pooling ignores it.
    pub fn energy_from_embeds(
        &self,
        embeds: &Tensor,
        mask: &Tensor,
        answer: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        if !self.reads_answer() {
            let at = self.pool_index(mask);
            return self.pooled_energy(&self.trunk.hidden_at(embeds, mask, &at, train));
        }
        let h = self.trunk.hidden_from_embeds(embeds, mask, train);
        self.energy_from_hidden(&h, embeds, mask, answer)
    }

    /// Energies `[B]` of ids `[B, T]` whose first `k` trunk blocks already ran: `x` `[B, T, D]`
    /// is [`policy::Trunk::lower`]'s output (the frozen part of the trunk, computed once and
    /// cached while the top blocks train).
    pub fn energy_from_lower(
        &self,
        x: &Tensor,
        ids: &Tensor,
        mask: &Tensor,
        k: usize,
        train: bool,
    ) -> Tensor {
        if !self.reads_answer() {
            let at = self.pool_index(mask);
            return self.pooled_energy(&self.trunk.upper(x, mask, k, Some(&at), train));
        }
        let h = self.trunk.upper(x, mask, k, None, train);
        let answer = self
            .reads_answer()
            .then(|| answer_mask(ids, mask, self.cfg.sep_id));
        match &self.nll {
            Some(_) => self.energy_from_hidden(&h, &self.trunk.embed(ids), mask, answer.as_ref()),
            None => self.energy_from_hidden(&h, x, mask, answer.as_ref()),
        }
    }

    /// The energy from the trunk's hidden states `h` and its input embeddings `embeds` (read
    /// by `head+nll` only).
    fn energy_from_hidden(
        &self,
        h: &Tensor,
        embeds: &Tensor,
        mask: &Tensor,
        answer: Option<&Tensor>,
    ) -> Tensor {
        let s = match (self.cfg.pooling, answer) {
            (Pooling::Mean, Some(answer)) => self.score_from_mean(h, answer),
            (Pooling::Mean, None) => panic!("a mean-pooled energy needs the answer positions"),
            _ => self.score_from_hidden(h, mask),
        };
        let s = match (&self.nll, answer) {
            (Some(lin), Some(answer)) => {
                let nll = answer_nll(h, embeds, answer, self.trunk.wte());
                s + lin.forward(&nll).view([-1])
            }
            (Some(_), None) => panic!("a head+nll energy needs the answer positions"),
            (None, _) => s,
        };
        s.softplus()
    }

    /// The energy `[B]` of the `head` score from the hidden states `[B, D]` at the pooled
    /// positions. [`Self::energy_from_hidden`] on the whole `[B, T, D]` gives the same values; the
    /// trunk computes these rows alone at a fraction of the cost ([`Trunk::upper`]).
    fn pooled_energy(&self, pooled: &Tensor) -> Tensor {
        self.head.forward(pooled).view([-1]).softplus()
    }

    /// Head score s `[B]` (before the softplus) on the mean of hidden states `h` `[B, T, D]`
    /// over the `answer` `[B, T]` positions.
    fn score_from_mean(&self, h: &Tensor, answer: &Tensor) -> Tensor {
        let w = answer.to_kind(h.kind()).unsqueeze(-1); // [B, T, 1]
        let n = w.sum_dim_intlist(1, false, h.kind()).clamp_min(1.0); // [B, 1]
        let pooled = (h * &w).sum_dim_intlist(1, false, h.kind()) / n; // [B, D]
        self.head.forward(&pooled).view([-1]) // [B]
    }

    /// The position the head reads in each row of `mask` `[B, T]` (for mean pooling: the EOS,
    /// where the mean ends).  `[B]` i64
    pub fn pool_index(&self, mask: &Tensor) -> Tensor {
        let (b, t) = mask.size2().expect("mask is [B, T]");
        match self.cfg.pooling {
            Pooling::Eos | Pooling::Mean => last_real_index(mask),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn tiny() -> EnergyConfig {
        let trunk = policy::GptConfig {
            vocab_size: 11,
            n_ctx: 16,
            d_model: 8,
            n_layer: 1,
            n_head: 2,
            dropout: 0.0,
            layer_norm_eps: 1e-5,
        };
        EnergyConfig {
            trunk: trunk.into(),
            max_len: 16,
            pooling: Pooling::Eos,
            ..EnergyConfig::default()
        }
    }

    #[test]
    fn last_real_index_handles_both_padding_sides() {
        let mask = Tensor::from_slice(&[1i64, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1]).view([3, 4]);
        let idx = Vec::<i64>::try_from(last_real_index(&mask)).unwrap();
        assert_eq!(idx, vec![2, 2, 3]);
    }

    #[test]
    fn answer_mask_marks_the_tokens_after_the_separator() {
        // SEP = 1, pad = 0; the second row is left-padded.
        let ids = Tensor::from_slice(&[4i64, 5, 1, 6, 2, 0, 0, 7, 1, 8, 9, 2]).view([2, 6]);
        let mask = ids.ne(0).to_kind(Kind::Int64);
        let a = Vec::<i64>::try_from(answer_mask(&ids, &mask, 1).to_kind(Kind::Int64).view(-1));
        assert_eq!(a.unwrap(), vec![0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1]);
        // Chat layout: the separator opens every turn; the answer follows the last one. A pad
        // that shares the separator's id (masked out) is not a turn.
        let ids = Tensor::from_slice(&[1i64, 4, 2, 1, 5, 2, 1, 6, 7, 2, 1, 1]).view([1, 12]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]).view([1, 12]);
        let a = Vec::<i64>::try_from(answer_mask(&ids, &mask, 1).to_kind(Kind::Int64).view(-1));
        assert_eq!(a.unwrap(), vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn answer_nll_is_the_lm_heads_negative_log_likelihood() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = EnergyModel::new(
            vs.root(),
            &EnergyConfig {
                score: Score::HeadNll,
                ..tiny()
            },
        );
        let seqs = vec![vec![4i64, 5, 1, 6, 7, 2], vec![8i64, 1, 9, 2]];
        for (ids, mask) in [
            policy::batch::pad_right(&seqs, 0, Device::Cpu),
            policy::batch::pad_left(&seqs, 0, Device::Cpu),
        ] {
            let trunk = m.trunk();
            let h = trunk.hidden(&ids, &mask, false);
            let answer = answer_mask(&ids, &mask, 1);
            let got = answer_nll(&h, &trunk.embed(&ids), &answer, trunk.wte());
            let logp = trunk.logits_from_hidden(&h).log_softmax(-1, Kind::Float);
            for (row, seq) in seqs.iter().enumerate() {
                let pad = ids.size()[1] - seq.len() as i64;
                let offset = if ids.int64_value(&[row as i64, 0]) == 0 {
                    pad
                } else {
                    0
                };
                let sep = seq.iter().position(|&t| t == 1).unwrap();
                let nll: Vec<f64> = (sep + 1..seq.len())
                    .map(|t| -logp.double_value(&[row as i64, offset + t as i64 - 1, seq[t]]))
                    .collect();
                let sum: f64 = nll.iter().sum();
                assert!((got.double_value(&[row as i64, 1]) - sum).abs() < 1e-4);
                let mean = sum / nll.len() as f64;
                assert!((got.double_value(&[row as i64, 0]) - mean).abs() < 1e-4);
            }
        }
        // At initialisation the score adds the mean NLL: energies differ from the head alone.
        let (ids, mask) = policy::batch::pad_right(&seqs, 0, Device::Cpu);
        let e = m.energy(&ids, &mask, false);
        assert!(e.min().double_value(&[]) > 0.0);
    }

    #[test]
    fn reward_is_negative_energy() {
        assert_eq!(reward_from_energy(2.5f32), -2.5);
        let r = reward_from_energy(Tensor::from_slice(&[1.0f32]));
        assert_eq!(r.double_value(&[0]), -1.0);
    }

    #[test]
    fn energy_is_softplus_of_the_score_and_padding_invariant() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = EnergyModel::new(vs.root(), &tiny());
        let seqs = vec![vec![4i64, 5, 1, 6, 2], vec![7i64, 1, 2]];
        let (ids_r, mask_r) = policy::batch::pad_right(&seqs, 0, Device::Cpu);
        let (ids_l, mask_l) = policy::batch::pad_left(&seqs, 0, Device::Cpu);
        let er = Vec::<f32>::try_from(m.energy(&ids_r, &mask_r, false)).unwrap();
        let el = Vec::<f32>::try_from(m.energy(&ids_l, &mask_l, false)).unwrap();
        // Non-negative because it is the softplus of the head's score at the pooled position.
        let h = m
            .trunk()
            .hidden_from_embeds(&m.trunk().embed(&ids_r), &mask_r, false);
        let scores = Vec::<f32>::try_from(m.score_from_hidden(&h, &mask_r)).unwrap();
        for (e, s) in er.iter().zip(&scores) {
            assert!(
                (e - s.exp().ln_1p()).abs() < 1e-6,
                "{er:?} vs softplus({scores:?})"
            );
        }
        for (a, b) in er.iter().zip(&el) {
            assert!((a - b).abs() < 1e-5, "{er:?} vs {el:?}");
        }
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(names.contains(&"head.weight".to_string()));
        assert!(names.contains(&"wte.weight".to_string()));
    }

    #[test]
    fn mean_pooling_averages_the_answer_and_ignores_padding() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = EnergyConfig {
            pooling: Pooling::Mean,
            ..tiny()
        };
        let m = EnergyModel::new(vs.root(), &cfg);
        let seqs = vec![vec![4i64, 5, 1, 6, 7, 2], vec![8i64, 1, 2]];
        let (ids_r, mask_r) = policy::batch::pad_right(&seqs, 0, Device::Cpu);
        let (ids_l, mask_l) = policy::batch::pad_left(&seqs, 0, Device::Cpu);
        let er = Vec::<f32>::try_from(m.energy(&ids_r, &mask_r, false)).unwrap();
        let el = Vec::<f32>::try_from(m.energy(&ids_l, &mask_l, false)).unwrap();
        for (a, b) in er.iter().zip(&el) {
            assert!((a - b).abs() < 1e-5, "{er:?} vs {el:?}");
        }
        // By hand: softplus(head(mean of the hidden states after the separator)).
        let h = m.trunk().hidden(&ids_r, &mask_r, false);
        let (w, b) = (&m.head.ws, m.head.bs.as_ref().unwrap());
        for (row, seq) in seqs.iter().enumerate() {
            let sep = seq.iter().position(|&t| t == 1).unwrap() as i64;
            let n = seq.len() as i64 - sep - 1;
            let mean = h
                .get(row as i64)
                .narrow(0, sep + 1, n)
                .mean_dim(0, false, Kind::Float);
            let s = (mean.dot(&w.view([-1])) + b.view([])).double_value(&[]);
            let want = s.exp().ln_1p() as f32;
            assert!(
                (er[row] - want).abs() < 1e-5,
                "row {row}: {} vs {want}",
                er[row]
            );
        }
    }
}
