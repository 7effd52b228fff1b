//! An analytic energy for testing the optimiser: the squared distance of the soft answer to a
//! fixed target token sequence, E(p) = Σ_t ‖p_t − onehot(target_t)‖², whose discrete version is
//! the number of wrong positions. The policy prior is a fixed distribution per position. It
//! counts every call so tests can check the compute ledger against what was really run.
use std::cell::Cell;

use tch::{Device, Kind, Tensor};

use super::energy::Energy;
use crate::error::Result;

/// Distance to `target` (padded with end-of-answer), with call counters.
pub struct TargetEnergy {
    pub target: Vec<i64>,
    pub vocab: i64,
    pub eos: i64,
    /// log q for every position [V]; uniform by default.
    pub prior: Vec<f32>,
    pub soft_calls: Cell<usize>,
    pub prior_calls: Cell<usize>,
    pub scored: Cell<usize>,
}

impl TargetEnergy {
    pub fn new(target: Vec<i64>, vocab: i64, eos: i64) -> Self {
        let prior = vec![-(vocab as f32).ln(); vocab as usize];
        let zero = || Cell::new(0);
        Self {
            target,
            vocab,
            eos,
            prior,
            soft_calls: zero(),
            prior_calls: zero(),
            scored: zero(),
        }
    }

    /// The target padded (with end-of-answer) or cut to `len` positions.
    fn target_rows(&self, len: usize) -> Vec<i64> {
        (0..len)
            .map(|t| self.target.get(t).copied().unwrap_or(self.eos))
            .collect()
    }

    /// Discrete distance: wrong positions over the longer of answer and target, counting the
    /// answer's end-of-answer token as a position.
    pub fn distance(&self, answer: &[i64]) -> f32 {
        let mut a = answer.to_vec();
        a.push(self.eos);
        let mut t = self.target.clone();
        t.push(self.eos);
        let len = a.len().max(t.len());
        (0..len).filter(|&i| a.get(i) != t.get(i)).count() as f32
    }
}

impl Energy for TargetEnergy {
    fn vocab_size(&self) -> i64 {
        self.vocab
    }

    fn eos_id(&self) -> i64 {
        self.eos
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn soft_energy(&self, p: &Tensor) -> Result<Tensor> {
        self.soft_calls.set(self.soft_calls.get() + 1);
        let rows = self.target_rows(p.size()[0] as usize);
        let target = Tensor::from_slice(&rows)
            .one_hot(self.vocab)
            .to_kind(Kind::Float); // [L, V]
        Ok((p - target).square().sum(Kind::Float))
    }

    fn prior_log_probs(&self, p: &Tensor) -> Result<Tensor> {
        self.prior_calls.set(self.prior_calls.get() + 1);
        let row = Tensor::from_slice(&self.prior); // [V]
        Ok(row
            .unsqueeze(0)
            .expand([p.size()[0], self.vocab], false)
            .contiguous()) // [L, V]
    }

    fn score(&self, answers: &[Vec<i64>]) -> Result<Vec<f32>> {
        self.scored.set(self.scored.get() + answers.len());
        Ok(answers.iter().map(|a| self.distance(a)).collect())
    }
}
