//! Log-probabilities of given answers under a policy: the scoring API later stages use for KL
//! estimates, the differentiable sequence log-prob used by training losses, and the [`Scorer`]
//! trait through which the policy's search and fine-tuning loops see an energy model.
use tch::{Kind, Tensor};
use tracing::instrument;

use crate::batch::pad_right;
use crate::error::{PolicyError, Result};
use crate::model::Trunk;
use crate::tokenizer::{EncodedPair, Tokenizer};
use crate::Policy;

/// `log p(ids[t] | ids[..t])` for t ≥ 1: `[B, T-1]`, entry `t-1` scores token `t`.
pub fn token_logprobs(model: &Trunk, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
    let t = ids.size()[1];
    let h = model.hidden(ids, mask, train).narrow(1, 0, t - 1); // [B, T-1, D]
    let logp = model.logits_from_hidden(&h).log_softmax(-1, Kind::Float); // [B, T-1, V]
    logp.gather(2, &ids.narrow(1, 1, t - 1).unsqueeze(-1), false)
        .squeeze_dim(-1) // [B, T-1]
}

/// Differentiable `Σ_t answer_mask[t] · log p(ids[t] | ids[..t])`: `[B]`. `answer_mask`
/// `[B, T]` is 1 on answer tokens (EOS included); position 0 is never an answer token.
pub fn sequence_logprob(
    model: &Trunk,
    ids: &Tensor,
    mask: &Tensor,
    answer_mask: &Tensor,
) -> Tensor {
    let t = ids.size()[1];
    let lp = token_logprobs(model, ids, mask, false); // [B, T-1]
    (lp * answer_mask.narrow(1, 1, t - 1).to_kind(Kind::Float)).sum_dim_intlist(
        1,
        false,
        Kind::Float,
    )
}

/// `[B, T]` mask (1 on `answer_start..len`) of right-padded pairs.
pub fn answer_mask(pairs: &[EncodedPair], device: tch::Device) -> Tensor {
    let spans: Vec<Vec<i64>> = pairs
        .iter()
        .map(|p| {
            (0..p.ids.len())
                .map(|i| i64::from(i >= p.answer_start))
                .collect()
        })
        .collect();
    pad_right(&spans, 0, device).0
}

/// Encodes a pair that fits `n_ctx` tokens, dropping prompt tokens from the left if needed.
/// Errors when even the answer (+ SEP + EOS) does not fit.
pub fn encode_pair_fitting(
    tok: &Tokenizer,
    prompt: &str,
    answer: &str,
    n_ctx: usize,
) -> Result<EncodedPair> {
    let pair = tok.encode_pair(prompt, answer);
    if pair.ids.len() <= n_ctx {
        return Ok(pair);
    }
    let answer_len = pair.ids.len() - pair.answer_start;
    if answer_len + 1 > n_ctx {
        return Err(PolicyError::Invalid(format!(
            "answer of {answer_len} tokens (with EOS) does not fit n_ctx {n_ctx}"
        )));
    }
    let cut = pair.ids.len() - n_ctx;
    Ok(EncodedPair {
        ids: pair.ids[cut..].to_vec(),
        answer_start: pair.answer_start - cut,
    })
}

/// Per-token log-probs of each answer (its tokens then EOS) given its prompt, and their sum,
/// at temperature 1. Batches sequences of similar length together; no gradient.
#[instrument(skip_all, fields(n = prompts.len()))]
pub fn answer_logprobs(
    policy: &Policy,
    prompts: &[String],
    answers: &[String],
    batch: usize,
) -> Result<Vec<(Vec<f32>, f32)>> {
    if prompts.len() != answers.len() {
        return Err(PolicyError::Invalid(format!(
            "{} prompts but {} answers",
            prompts.len(),
            answers.len()
        )));
    }
    let n_ctx = policy.config.n_ctx() as usize;
    let pairs = prompts
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(i, (p, a))| {
            encode_pair_fitting(&policy.tokenizer, p, a, n_ctx)
                .map_err(|e| PolicyError::Invalid(format!("row {i}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&i| pairs[i].ids.len());
    // Under a process group the ranks share the batches (crate::dist::map_chunks), each the
    // batch one process forms, so the log-probs are the same bits.
    let chunks: Vec<&[usize]> = order.chunks(batch.max(1)).collect();
    let scored = tch::no_grad(|| {
        crate::dist::map_chunks(crate::dist::group(), chunks.len(), |c| {
            if crate::interrupt::requested().is_some() {
                return Vec::new(); // reported below, once out of no_grad
            }
            let rows: Vec<&EncodedPair> = chunks[c].iter().map(|&i| &pairs[i]).collect();
            answer_token_logprobs(policy, &rows)
        })
    })?;
    crate::interrupt::check(None)?;
    let mut out = vec![(Vec::new(), 0f32); pairs.len()];
    for (chunk, lps) in chunks.iter().zip(scored) {
        let mut lps = lps.into_iter();
        for &i in *chunk {
            let n = pairs[i].ids.len() - pairs[i].answer_start;
            let lp: Vec<f32> = lps.by_ref().take(n).collect();
            let sum = lp.iter().sum();
            out[i] = (lp, sum);
        }
    }
    Ok(out)
}

/// The log-probs of the answer tokens of `pairs` (one batch), row after row. The LM head and
/// softmax run only at the positions that predict an answer token: prompts are usually the
/// longer part, and the logits of every position (`[B, T, vocab]`) would dominate memory.
fn answer_token_logprobs(policy: &Policy, pairs: &[&EncodedPair]) -> Vec<f32> {
    let seqs: Vec<Vec<i64>> = pairs.iter().map(|p| p.ids.clone()).collect();
    let (ids, mask) = pad_right(&seqs, policy.tokenizer.pad_id(), policy.device);
    let (t, h) = (ids.size()[1], policy.model.hidden(&ids, &mask, false)); // [B, T, D]
    let (mut at, mut next) = (Vec::new(), Vec::new());
    for (row, p) in pairs.iter().enumerate() {
        for pos in p.answer_start..p.ids.len() {
            at.push(row as i64 * t + pos as i64 - 1); // the position that predicts token `pos`
            next.push(p.ids[pos]);
        }
    }
    let d = h.size()[2];
    let at = Tensor::from_slice(&at).to_device(policy.device);
    let next = Tensor::from_slice(&next).to_device(policy.device);
    let hs = h.view([-1, d]).index_select(0, &at); // [N, D]
    let logp = policy
        .model
        .logits_from_hidden(&hs)
        .log_softmax(-1, Kind::Float); // [N, V]
    let lp = logp.gather(1, &next.unsqueeze(1), false).view([-1]);
    Vec::<f32>::try_from(lp.to_device(tch::Device::Cpu)).expect("f32 log-probs")
}

/// The energy of answers to prompts (lower is better), as the search and fine-tuning loops
/// need it: implemented by the reward crate's energy scorer, so that `policy` does not depend
/// on `reward`. The one discrete scoring function of a run.
pub trait Scorer {
    /// One energy per (prompt, answer) pair, scored `batch` pairs at a time.
    fn energies(&self, prompts: &[String], answers: &[String], batch: usize) -> Result<Vec<f32>>;
    /// The reward of an energy (the energy model decides the sign convention).
    fn reward(&self, energy: f64) -> f64;
}
