//! What refinement needs from an energy ([`Energy`]), and the real one: a trained energy
//! model and the policy, on one prompt ([`PromptEnergy`]).
//!
//! The relaxed energy feeds the soft answer's embeddings p·W_emb (the energy trunk's token
//! embedding matrix) between the prompt's hard embeddings + SEP and a hard EOS, exactly where
//! `EnergyScorer::encode` puts the answer tokens; the prior runs the policy on the prompt, SEP
//! and the soft answer. Discrete answers are decoded to text and scored by `EnergyScorer::score`, the
//! same function as `ember reward score`.
use policy::Policy;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, RewardError};
use crate::EnergyScorer;

/// What refinement needs from an energy: a differentiable relaxed energy of a soft answer, the
/// policy's next-token distributions along it, and the one discrete scoring function.
pub trait Energy {
    fn vocab_size(&self) -> i64;
    /// The end-of-answer token: decoding cuts the answer at its first occurrence.
    fn eos_id(&self) -> i64;
    fn device(&self) -> Device;
    /// Relaxed energy E(x, p) of a soft answer `p` [L, V] (rows on the simplex): a scalar tensor,
    /// differentiable with respect to `p`. Costs one energy forward.
    fn soft_energy(&self, p: &Tensor) -> Result<Tensor>;
    /// log q [L, V]: the policy's next-token log-distributions at each answer position given the
    /// prompt and the soft answer before it; no gradient. Costs one policy forward.
    fn prior_log_probs(&self, p: &Tensor) -> Result<Tensor>;
    /// Energies of discrete answers (token ids without the end-of-answer token). Costs one energy
    /// forward per answer.
    fn score(&self, answers: &[Vec<i64>]) -> Result<Vec<f32>>;
    /// The token embeddings `[V, D]` the energy reads answers through (no gradient): the space
    /// Langevin refinement moves in. By default the one-hot space (the identity, D = V).
    fn embeddings(&self) -> Tensor {
        Tensor::eye(self.vocab_size(), (Kind::Float, self.device()))
    }
    /// Energy of an answer given as embeddings `e` `[L, D]` (rows of [`Energy::embeddings`] or
    /// between them): a scalar, differentiable in `e`. Costs one energy forward. By default, with
    /// one-hot embeddings, the relaxed energy of `e` as a soft answer.
    fn embedded_energy(&self, e: &Tensor) -> Result<Tensor> {
        self.soft_energy(e)
    }
}

/// Energy model + policy on one prompt.
pub struct PromptEnergy<'a> {
    scorer: &'a EnergyScorer,
    policy: &'a Policy,
    prompt: String,
    /// Prompt tokens + SEP as the energy model sees them (left-truncated to leave room).
    energy_prefix: Vec<i64>,
    /// Prompt tokens + SEP for the policy (left-truncated to its context).
    policy_prefix: Vec<i64>,
    vocab: i64,
    max_positions: usize,
}

/// Checks that the policy and the energy model share a vocabulary and special tokens.
pub fn check_compatible(scorer: &EnergyScorer, policy: &Policy) -> Result<()> {
    let (ve, vp) = (scorer.config.trunk.vocab_size(), policy.config.vocab_size());
    if ve != vp {
        return Err(RewardError::Incompatible(format!("the energy model's vocabulary has {ve} tokens but the policy's has {vp}: refinement needs one shared tokenizer")));
    }
    let (te, tp) = (&scorer.tokenizer, &policy.tokenizer);
    if (te.sep_id(), te.eos_id()) != (tp.sep_id(), tp.eos_id()) {
        return Err(RewardError::Incompatible(
            "the energy model's and the policy's tokenizers disagree on SEP/EOS ids".into(),
        ));
    }
    Ok(())
}

/// The longest answer (in tokens, without EOS) refinement can represent for both models.
pub fn max_answer_positions(scorer: &EnergyScorer, policy: &Policy) -> usize {
    let energy = scorer.config.max_len.saturating_sub(2); // SEP + answer + EOS
    let policy = (policy.config.n_ctx() as usize).saturating_sub(1); // SEP + answer
    energy.min(policy).max(1)
}

/// The last `keep` ids of `ids` (the whole when shorter).
fn tail(ids: &[i64], keep: usize) -> Vec<i64> {
    ids[ids.len().saturating_sub(keep)..].to_vec()
}

impl<'a> PromptEnergy<'a> {
    /// Sets up refinement of answers up to `positions` tokens long (the start answer plus the
    /// extra positions) for `prompt`.
    pub fn new(
        scorer: &'a EnergyScorer,
        policy: &'a Policy,
        prompt: &str,
        positions: usize,
    ) -> Result<Self> {
        let max_positions = max_answer_positions(scorer, policy);
        if positions > max_positions {
            return Err(RewardError::TooLong {
                positions,
                max: max_positions,
            });
        }
        let prefix = scorer.tokenizer.encode_prompt(prompt);
        let energy_keep = scorer.config.max_len - positions - 1;
        let policy_keep = policy.config.n_ctx() as usize - positions;
        Ok(Self {
            scorer,
            policy,
            prompt: prompt.to_string(),
            energy_prefix: tail(&prefix, energy_keep),
            policy_prefix: tail(&prefix, policy_keep),
            vocab: scorer.config.trunk.vocab_size(),
            max_positions,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn ids(&self, ids: &[i64]) -> Tensor {
        Tensor::from_slice(ids)
            .to_device(self.scorer.device)
            .unsqueeze(0) // [1, T]
    }
}

impl Energy for PromptEnergy<'_> {
    fn vocab_size(&self) -> i64 {
        self.vocab
    }

    fn eos_id(&self) -> i64 {
        self.scorer.tokenizer.eos_id()
    }

    fn device(&self) -> Device {
        self.scorer.device
    }

    fn soft_energy(&self, p: &Tensor) -> Result<Tensor> {
        self.embedded_energy(&p.matmul(self.scorer.model.trunk().wte()))
    }

    fn embeddings(&self) -> Tensor {
        (self.scorer.model.trunk().wte())
            .detach()
            .narrow(0, 0, self.vocab)
    }

    fn embedded_energy(&self, e: &Tensor) -> Result<Tensor> {
        let trunk = self.scorer.model.trunk();
        let prefix = trunk.embed(&self.ids(&self.energy_prefix)); // [1, P, D]
        let answer = e.unsqueeze(0); // [1, L, D]
        let eos = trunk.embed(&self.ids(&[self.eos_id()])); // [1, 1, D]
        let embeds = Tensor::cat(&[prefix, answer, eos], 1); // [1, T, D]
        let t = embeds.size()[1];
        // `answer` marks the answer and its EOS: everything after the prefix (which ends with SEP).
        let mask = Tensor::ones([1, t], (Kind::Int64, self.device())); // [1, T]
        let answer = Tensor::arange(t, (Kind::Int64, self.device()))
            .ge(self.energy_prefix.len() as i64)
            .unsqueeze(0); // [1, T]
        Ok(self
            .scorer
            .model
            .energy_from_embeds(&embeds, &mask, Some(&answer), false)
            .squeeze()) // []
    }

    fn prior_log_probs(&self, p: &Tensor) -> Result<Tensor> {
        let model = &self.policy.model;
        let l = p.size()[0];
        Ok(tch::no_grad(|| {
            let prefix = model.embed(&self.ids(&self.policy_prefix)); // [1, P, D]
            let answer = p
                .to_device(self.policy.device)
                .matmul(model.wte())
                .unsqueeze(0); // [1, L, D]
            let embeds = Tensor::cat(&[prefix, answer], 1); // [1, P + L, D]
            let mask = Tensor::ones([1, embeds.size()[1]], (Kind::Int64, self.policy.device));
            let h = model.hidden_from_embeds(&embeds, &mask, false); // [1, P + L, D]
            let start = self.policy_prefix.len() as i64 - 1; // SEP predicts the first token
            let h = h.narrow(1, start, l).squeeze_dim(0); // [L, D]
            model
                .logits_from_hidden(&h)
                .log_softmax(-1, Kind::Float)
                .to_device(self.device())
        }))
    }

    fn score(&self, answers: &[Vec<i64>]) -> Result<Vec<f32>> {
        let texts: Vec<String> = answers
            .iter()
            .map(|a| self.scorer.tokenizer.decode(a))
            .collect();
        let prompts = vec![self.prompt.clone(); texts.len()];
        self.scorer.score(&prompts, &texts, 16)
    }
}
