//! The two policy updates of fine-tuning, as losses over token batches:
//! - rejection-sampling fine-tuning (expert iteration; Anthony et al. 2017, Dong et al. 2023
//!   "RAFT"): mean negative log-likelihood of the kept answers plus `kl_coef` times the exact
//!   per-position KL(π(·|context) ‖ π_ref(·|context)) on the same answer tokens;
//! - RLOO (Ahmadian et al. 2024): −mean(advantage · log π(answer)) over sampled answers.
//!
//! Also the no-gradient log-probs of exact token sequences under any model, so that a sample's
//! log π and log π_ref are computed the same way on the same tokens.
use tch::{Device, Kind, Tensor};

use crate::batch::pad_right;
use crate::error::{PolicyError, Result};
use crate::score::{answer_mask, encode_pair_fitting, sequence_logprob, token_logprobs};
use crate::tokenizer::EncodedPair;
use crate::{Policy, Trunk};

/// Right-padded sequences with their answer spans.
pub struct TokenBatch {
    /// `[B, T]` token ids.
    pub ids: Tensor,
    /// `[B, T]` 1 on real tokens.
    pub mask: Tensor,
    /// `[B, T]` 1 on answer tokens (EOS included).
    pub answer_mask: Tensor,
}

impl TokenBatch {
    pub fn new(seqs: &[EncodedPair], pad: i64, device: Device) -> Self {
        let ids: Vec<Vec<i64>> = seqs.iter().map(|s| s.ids.clone()).collect();
        let (ids, mask) = pad_right(&ids, pad, device);
        Self {
            ids,
            mask,
            answer_mask: answer_mask(seqs, device),
        }
    }

    /// The answer tokens the losses average over (those the model predicts: EOS included).
    pub fn answer_tokens(&self) -> f64 {
        let t = self.ids.size()[1];
        self.answer_mask
            .narrow(1, 1, t - 1)
            .sum(Kind::Float)
            .double_value(&[])
    }
}

/// (prompt, answer) pairs as training sequences: prompt + SEP + answer + EOS, cut from the left
/// to fit the context.
pub fn encode_pairs(policy: &Policy, pairs: &[(String, String)]) -> Result<Vec<EncodedPair>> {
    let n_ctx = policy.config.n_ctx() as usize;
    pairs
        .iter()
        .enumerate()
        .map(|(i, (p, a))| {
            encode_pair_fitting(&policy.tokenizer, p, a, n_ctx).map_err(|e| {
                PolicyError::TrainingPair {
                    index: i,
                    source: Box::new(e),
                }
            })
        })
        .collect()
}

/// A sampled answer as a sequence: the prompt as the sampler saw it (prompt + SEP, cut from the
/// left to fit) followed by exactly the generated ids.
pub fn sampled_sequence(policy: &Policy, prompt: &str, answer_ids: &[i64]) -> EncodedPair {
    let n_ctx = policy.config.n_ctx() as usize;
    let mut ids = policy.tokenizer.encode_prompt(prompt);
    let keep = n_ctx.saturating_sub(answer_ids.len()).max(1);
    if ids.len() > keep {
        ids.drain(..ids.len() - keep);
    }
    let answer_start = ids.len();
    ids.extend_from_slice(answer_ids);
    EncodedPair { ids, answer_start }
}

/// Σ log p(answer tokens) of each sequence under `model`, no gradient, in batches of `batch`.
/// Under a process group the ranks share the batches ([`crate::dist::map_chunks`]) and every
/// rank gets every value, the same bytes as one process's.
pub fn sequence_logprobs(
    model: &Trunk,
    seqs: &[EncodedPair],
    pad: i64,
    device: Device,
    batch: usize,
) -> Result<Vec<f32>> {
    let chunks: Vec<&[EncodedPair]> = seqs.chunks(batch.max(1)).collect();
    let per_chunk = crate::dist::map_chunks(crate::dist::group(), chunks.len(), |i| {
        tch::no_grad(|| {
            let b = TokenBatch::new(chunks[i], pad, device);
            let lp = sequence_logprob(model, &b.ids, &b.mask, &b.answer_mask);
            Vec::<f32>::try_from(lp.to_device(Device::Cpu)).expect("f32 log-probs")
        })
    })?;
    Ok(per_chunk.concat())
}

/// The supervised loss of a batch and its parts.
pub struct SftLoss {
    /// nll + kl_coef · kl, differentiable.
    pub loss: Tensor,
    /// Mean negative log-likelihood per answer token.
    pub nll: f64,
    /// Mean per-position KL(π‖π_ref) over the answer positions (0 without a reference).
    pub kl: f64,
}

/// Mean NLL of the answer tokens plus `kl_coef` × the mean exact KL(π(·|ctx) ‖ π_ref(·|ctx)) at
/// the positions that predict them. `reference` is evaluated without gradient.
pub fn sft_kl_loss(
    model: &Trunk,
    reference: Option<&Trunk>,
    batch: &TokenBatch,
    kl_coef: f64,
    train: bool,
) -> SftLoss {
    let t = batch.ids.size()[1];
    let logp = model
        .logits(&batch.ids, &batch.mask, train)
        .narrow(1, 0, t - 1)
        .log_softmax(-1, Kind::Float); // [B, T-1, V]
    let targets = batch.ids.narrow(1, 1, t - 1).unsqueeze(-1); // [B, T-1, 1]
    let token_lp = logp.gather(2, &targets, false).squeeze_dim(-1); // [B, T-1]
    let m = batch.answer_mask.narrow(1, 1, t - 1).to_kind(Kind::Float); // [B, T-1]
    let count = m.sum(Kind::Float).clamp_min(1.0);
    let nll = -(&token_lp * &m).sum(Kind::Float) / &count;
    let (loss, kl) = match reference {
        Some(reference) if kl_coef > 0.0 => {
            let ref_logp = tch::no_grad(|| {
                reference
                    .logits(&batch.ids, &batch.mask, false)
                    .narrow(1, 0, t - 1)
                    .log_softmax(-1, Kind::Float)
            }); // [B, T-1, V]
            let per_pos = (logp.exp() * (&logp - ref_logp)).sum_dim_intlist(-1, false, Kind::Float); // [B, T-1]
            let kl = (per_pos * &m).sum(Kind::Float) / &count;
            (&nll + &kl * kl_coef, kl.double_value(&[]))
        }
        _ => (nll.shallow_clone(), 0.0),
    };
    SftLoss {
        loss,
        nll: nll.double_value(&[]),
        kl,
    }
}

/// The REINFORCE loss with given per-sequence advantages `[B]`: −mean(A · log π(answer)).
pub fn policy_gradient_loss(model: &Trunk, batch: &TokenBatch, advantages: &Tensor) -> Tensor {
    let lp = sequence_logprob(model, &batch.ids, &batch.mask, &batch.answer_mask); // [B]
    -(lp * advantages).mean(Kind::Float)
}

/// Mean log π per answer token of each sequence under `model` (no gradient): for tests and logs.
pub fn mean_token_logprob(model: &Trunk, batch: &TokenBatch) -> f64 {
    tch::no_grad(|| {
        let t = batch.ids.size()[1];
        let lp = token_logprobs(model, &batch.ids, &batch.mask, false);
        let m = batch.answer_mask.narrow(1, 1, t - 1).to_kind(Kind::Float);
        ((lp * &m).sum(Kind::Float) / m.sum(Kind::Float).clamp_min(1.0)).double_value(&[])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GptConfig, Tokenizer};
    use tch::nn::OptimizerConfig;

    fn tiny(seed: i64) -> Policy {
        tch::manual_seed(seed);
        let tok = Tokenizer::char_level(["0123456789+-= sort>"]).unwrap();
        let cfg = GptConfig {
            vocab_size: tok.vocab_size(),
            n_ctx: 32,
            d_model: 16,
            n_layer: 1,
            n_head: 2,
            ..GptConfig::default()
        };
        Policy::new(cfg, tok, Device::Cpu).unwrap()
    }

    fn batch(p: &Policy) -> TokenBatch {
        let pairs = vec![
            ("12+5=".to_string(), "17".to_string()),
            ("3+4=".into(), "7".into()),
        ];
        TokenBatch::new(
            &encode_pairs(p, &pairs).unwrap(),
            p.tokenizer.pad_id(),
            Device::Cpu,
        )
    }

    #[test]
    fn nll_is_minus_the_mean_token_logprob_and_kl_to_itself_is_zero() {
        let p = tiny(1);
        let b = batch(&p);
        let out = sft_kl_loss(&p.model, Some(&p.model), &b, 0.5, false);
        assert!((out.nll + mean_token_logprob(&p.model, &b)).abs() < 1e-5);
        assert!(out.kl.abs() < 1e-6);
        assert!((out.loss.double_value(&[]) - out.nll).abs() < 1e-5);
        let other = tiny(2);
        let out = sft_kl_loss(&p.model, Some(&other.model), &b, 0.5, false);
        assert!(out.kl > 1e-4, "kl {}", out.kl);
        assert!((out.loss.double_value(&[]) - (out.nll + 0.5 * out.kl)).abs() < 1e-5);
    }

    #[test]
    fn sft_steps_raise_the_answer_likelihood() {
        let p = tiny(3);
        let b = batch(&p);
        let before = mean_token_logprob(&p.model, &b);
        let mut opt = tch::nn::Adam::default().build(&p.vs, 1e-2).unwrap();
        for _ in 0..20 {
            opt.backward_step(&sft_kl_loss(&p.model, None, &b, 0.0, true).loss);
        }
        assert!(mean_token_logprob(&p.model, &b) > before + 0.5);
    }

    #[test]
    fn positive_advantage_raises_and_negative_lowers_the_logprob() {
        let p = tiny(4);
        let seqs = vec![
            sampled_sequence(&p, "12+5=", &p.tokenizer.encode("17")),
            sampled_sequence(&p, "12+5=", &p.tokenizer.encode("99")),
        ];
        let pad = p.tokenizer.pad_id();
        let before = sequence_logprobs(&p.model, &seqs, pad, Device::Cpu, 8).unwrap();
        let b = TokenBatch::new(&seqs, pad, Device::Cpu);
        let adv = Tensor::from_slice(&[1.0f32, -1.0]);
        let mut opt = tch::nn::Sgd::default().build(&p.vs, 0.05).unwrap();
        for _ in 0..5 {
            opt.backward_step(&policy_gradient_loss(&p.model, &b, &adv));
        }
        let after = sequence_logprobs(&p.model, &seqs, pad, Device::Cpu, 1).unwrap();
        assert!(
            after[0] > before[0] && after[1] < before[1],
            "{before:?} → {after:?}"
        );
        // The sampled sequence is the prompt + SEP followed by exactly the given ids.
        assert_eq!(
            seqs[0].ids[seqs[0].answer_start..],
            p.tokenizer.encode("17")[..]
        );
    }
}
