//! Turning (prompt, answer) text into model input: encode as prompt + SEP + answer + EOS, fit to
//! `max_len` by dropping prompt tokens from the left (so the answer and its EOS survive), and pad
//! a batch of pairs into one `[2B (+N), T]` tensor: chosen rows first, then rejected rows, then
//! any extra negatives — one forward pass per step.
use policy::Tokenizer;
use tch::{Device, Tensor};

/// How a sequence was fitted to the length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Fits as is.
    Whole,
    /// The prompt lost tokens on the left.
    PromptTruncated,
    /// SEP + answer + EOS alone exceed the limit.
    AnswerTooLong,
}

/// Fits `ids` (prompt + SEP + answer + EOS, the answer starting at `answer_start`) into
/// `max_len` tokens by dropping prompt tokens from the left. With [`Fit::AnswerTooLong`] the
/// ids are returned unchanged.
pub fn fit_left(ids: Vec<i64>, answer_start: usize, max_len: usize) -> (Vec<i64>, Fit) {
    if ids.len() <= max_len {
        return (ids, Fit::Whole);
    }
    let answer_part = ids.len() - answer_start.saturating_sub(1); // SEP + answer + EOS
    if answer_part > max_len {
        return (ids, Fit::AnswerTooLong);
    }
    let cut = ids.len() - max_len;
    (ids[cut..].to_vec(), Fit::PromptTruncated)
}

/// Encodes a (prompt, answer) and fits it into `max_len`.
pub fn encode_fit(tok: &Tokenizer, prompt: &str, answer: &str, max_len: usize) -> (Vec<i64>, Fit) {
    let enc = tok.encode_pair(prompt, answer);
    fit_left(enc.ids, enc.answer_start, max_len)
}

/// For scoring only: an answer too long for the model keeps its first tokens and its EOS
/// (SEP + head of the answer + EOS), so every row gets an energy; callers count these rows.
pub fn clip_answer(ids: &[i64], answer_start: usize, max_len: usize) -> Vec<i64> {
    let sep = answer_start.saturating_sub(1);
    let mut out = ids[sep..sep + max_len - 1].to_vec();
    out.push(*ids.last().expect("non-empty"));
    out
}

/// One encoded preference pair (both sequences fitted).
#[derive(Debug, Clone)]
pub struct EncodedPairRow {
    pub chosen: Vec<i64>,
    pub rejected: Vec<i64>,
    /// Per-pair data margin mᵢ (0 when absent).
    pub margin: f32,
    pub tie: bool,
    /// Index of the source row (for sources, lengths and gold columns).
    pub row: usize,
}

/// A padded training batch: `ids`/`mask` `[R, T]` with rows `0..B` chosen, `B..2B` rejected,
/// then `B·k` extra negatives (negative `j` of pair `i` at row `2B + i·k + j`), then the mined
/// negatives (any number per pair, their pairs in `mined_pair`).
#[derive(Debug)]
pub struct PairBatch {
    pub ids: Tensor,
    pub mask: Tensor,
    pub pairs: i64,
    pub negatives_per_pair: i64,
    /// `[B]` f32 data margins.
    pub margin: Tensor,
    /// `[B]` f32, 1 for tie rows.
    pub tie: Tensor,
    /// Real (non-pad) tokens in the batch.
    pub tokens: i64,
    /// `[M]` i64: the pair of each mined negative (rows `R − M..R`); empty when none.
    pub mined_pair: Vec<i64>,
}

impl PairBatch {
    /// Pads `pairs` (right padding) plus `negatives[i]` (k per pair, all the same k).
    pub fn new(
        pairs: &[&EncodedPairRow],
        negatives: &[Vec<Vec<i64>>],
        pad: i64,
        device: Device,
    ) -> Self {
        Self::with_mined(pairs, negatives, &[], pad, device)
    }

    /// [`PairBatch::new`] plus `mined[i]`, any number of mined negatives of pair `i` (or no
    /// `mined` at all).
    pub fn with_mined(
        pairs: &[&EncodedPairRow],
        negatives: &[Vec<Vec<i64>>],
        mined: &[Vec<Vec<i64>>],
        pad: i64,
        device: Device,
    ) -> Self {
        let k = negatives.first().map_or(0, Vec::len);
        let mut seqs: Vec<Vec<i64>> = pairs.iter().map(|p| p.chosen.clone()).collect();
        seqs.extend(pairs.iter().map(|p| p.rejected.clone()));
        for negs in negatives {
            assert_eq!(negs.len(), k, "same number of negatives per pair");
            seqs.extend(negs.iter().cloned());
        }
        let mut mined_pair = Vec::new();
        for (i, m) in mined.iter().enumerate() {
            mined_pair.extend(std::iter::repeat_n(i as i64, m.len()));
            seqs.extend(m.iter().cloned());
        }
        let tokens = seqs.iter().map(Vec::len).sum::<usize>() as i64;
        let (ids, mask) = policy::batch::pad_right(&seqs, pad, device);
        let margin: Vec<f32> = pairs.iter().map(|p| p.margin).collect();
        let tie: Vec<f32> = pairs.iter().map(|p| f32::from(u8::from(p.tie))).collect();
        Self {
            ids,
            mask,
            pairs: pairs.len() as i64,
            negatives_per_pair: k as i64,
            margin: Tensor::from_slice(&margin).to_device(device),
            tie: Tensor::from_slice(&tie).to_device(device),
            tokens,
            mined_pair,
        }
    }

    /// Rows whose frozen-trunk output may be cached: all but the mined negatives (new every
    /// few steps).
    pub fn cacheable_rows(&self) -> i64 {
        self.pairs * (2 + self.negatives_per_pair)
    }

    /// The chosen energy of each mined negative's pair and the mined energies (`[M]` each), from
    /// energies `e` `[R]`; `None` without mined negatives.
    pub fn split_mined(&self, e: &Tensor) -> Option<(Tensor, Tensor)> {
        let m = self.mined_pair.len() as i64;
        (m > 0).then(|| {
            let idx = Tensor::from_slice(&self.mined_pair).to_device(e.device());
            let pos = e.narrow(0, 0, self.pairs).index_select(0, &idx);
            (pos, e.narrow(0, e.size()[0] - m, m))
        })
    }

    /// Splits energies `[R]` into (E⁺ `[B]`, E⁻ `[B]`, extra negatives `[B, k]` if any).
    pub fn split(&self, e: &Tensor) -> (Tensor, Tensor, Option<Tensor>) {
        let b = self.pairs;
        let pos = e.narrow(0, 0, b);
        let neg = e.narrow(0, b, b);
        let extra = (self.negatives_per_pair > 0).then(|| {
            e.narrow(0, 2 * b, b * self.negatives_per_pair)
                .view([b, self.negatives_per_pair])
        });
        (pos, neg, extra)
    }
}

/// `prompt` + SEP + `answer` + EOS as an extra negative: the prompt truncated from the left to
/// fit `max_len`, and an answer too long even so clipped by [`clip_answer`].
pub fn encode_negative(tok: &Tokenizer, prompt: &str, answer: &str, max_len: usize) -> Vec<i64> {
    let enc = tok.encode_pair(prompt, answer);
    match fit_left(enc.ids, enc.answer_start, max_len) {
        (ids, Fit::AnswerTooLong) => clip_answer(&ids, enc.answer_start, max_len),
        (ids, _) => ids,
    }
}

/// The in-batch negatives of pair `i`: its prompt with the chosen answers of the next `k` pairs
/// of the batch (cyclically), re-encoded and fitted. `prompts[i]` and `answers[i]` are the
/// texts of the batch's pairs.
pub fn in_batch_negatives(
    tok: &Tokenizer,
    prompts: &[&str],
    answers: &[&str],
    k: usize,
    max_len: usize,
) -> Vec<Vec<Vec<i64>>> {
    let b = prompts.len();
    (0..b)
        .map(|i| {
            (1..=k)
                .map(|s| encode_negative(tok, prompts[i], answers[(i + s) % b], max_len))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_left_truncates_the_prompt_only() {
        // prompt 10 11 12, SEP 1, answer 20 21, EOS 2; answer_start = 4
        let ids = vec![10, 11, 12, 1, 20, 21, 2];
        assert_eq!(fit_left(ids.clone(), 4, 7), (ids.clone(), Fit::Whole));
        assert_eq!(
            fit_left(ids.clone(), 4, 5),
            (vec![12, 1, 20, 21, 2], Fit::PromptTruncated)
        );
        assert_eq!(
            fit_left(ids.clone(), 4, 4),
            (vec![1, 20, 21, 2], Fit::PromptTruncated)
        );
        assert_eq!(fit_left(ids.clone(), 4, 3).1, Fit::AnswerTooLong);
    }

    #[test]
    fn clip_answer_keeps_sep_head_and_eos() {
        let ids = vec![10, 1, 20, 21, 22, 23, 2];
        assert_eq!(clip_answer(&ids, 2, 4), vec![1, 20, 21, 2]);
    }

    #[test]
    fn batch_puts_chosen_then_rejected_then_negatives() {
        let p = |c: Vec<i64>, r: Vec<i64>, row| EncodedPairRow {
            chosen: c,
            rejected: r,
            margin: 0.5,
            tie: false,
            row,
        };
        let a = p(vec![5, 1, 6, 2], vec![5, 1, 2], 0);
        let b = p(vec![7, 1, 2], vec![7, 1, 8, 8, 2], 1);
        let negs = vec![vec![vec![5, 1, 9, 2]], vec![vec![7, 1, 9, 9, 9, 2]]];
        let batch = PairBatch::new(&[&a, &b], &negs, 0, Device::Cpu);
        assert_eq!(batch.ids.size(), vec![6, 6]);
        assert_eq!(batch.tokens, 4 + 3 + 3 + 5 + 4 + 6);
        let e = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let (pos, neg, extra) = batch.split(&e);
        assert_eq!(Vec::<f32>::try_from(pos).unwrap(), vec![0.0, 1.0]);
        assert_eq!(Vec::<f32>::try_from(neg).unwrap(), vec![2.0, 3.0]);
        assert_eq!(extra.unwrap().size(), vec![2, 1]);
        let row3: Vec<i64> = Vec::try_from(batch.ids.get(3)).unwrap();
        assert_eq!(row3, vec![7, 1, 8, 8, 2, 0]);
    }
}
