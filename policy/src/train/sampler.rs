//! The seeded batch sampler of the training loops: batch `i` is positions `i·B .. (i+1)·B` of an
//! endless sequence of per-epoch permutations, each drawn from its own ChaCha8 stream (`key`,
//! epoch). Any batch is a pure function of (key, n, B, i), so a resumed run draws the batches
//! of an uninterrupted one without replaying the steps before it.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Batches of indices into `0..n` taken from per-epoch shuffles.
#[derive(Debug, Clone)]
pub struct EpochSampler {
    key: u64,
    n: usize,
    batch: usize,
    /// The last permutation drawn, with its epoch.
    cached: Option<(u64, Vec<usize>)>,
}

impl EpochSampler {
    /// Batches of exactly `batch` indices; a batch larger than `n` runs on into the next epochs
    /// (SFT).
    pub fn wrapping(key: u64, n: usize, batch: usize) -> Self {
        Self {
            key,
            n,
            batch,
            cached: None,
        }
    }

    /// Batches of `min(batch, n)` indices, so no index repeats within a batch (reward training).
    pub fn clamped(key: u64, n: usize, batch: usize) -> Self {
        Self::wrapping(key, n, batch.min(n))
    }

    /// The indices of batch `index` (empty when `n` is 0).
    pub fn indices(&mut self, index: u64) -> Vec<usize> {
        if self.n == 0 {
            return Vec::new();
        }
        let (n, batch) = (self.n as u64, self.batch as u64);
        (index * batch..(index + 1) * batch)
            .map(|g| self.permutation(g / n)[(g % n) as usize])
            .collect()
    }

    fn permutation(&mut self, epoch: u64) -> &[usize] {
        if self.cached.as_ref().map(|c| c.0) != Some(epoch) {
            let mut rng = ChaCha8Rng::seed_from_u64(self.key);
            rng.set_stream(epoch);
            let mut perm: Vec<usize> = (0..self.n).collect();
            perm.shuffle(&mut rng);
            self.cached = Some((epoch, perm));
        }
        &self.cached.as_ref().expect("drawn above").1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    fn batches(mut s: EpochSampler, count: u64) -> Vec<Vec<usize>> {
        (0..count).map(|i| s.indices(i)).collect()
    }

    /// The batches the SFT and reward loops drew before they shared this sampler (computed with
    /// `policy::sft::batch_indices` and `reward::train::batch_indices`).
    #[test]
    fn reproduces_the_sft_and_reward_batch_orders() {
        let sft = |seed, n, batch| EpochSampler::wrapping(rng::key(seed, "sft-shuffle"), n, batch);
        let sft_expected: Vec<Vec<usize>> = vec![
            vec![8, 7, 0, 4],
            vec![1, 2, 6, 9],
            vec![3, 5, 3, 7],
            vec![9, 6, 1, 4],
        ];
        assert_eq!(batches(sft(3, 10, 4), 4), sft_expected);
        // a batch larger than the data runs on into the next epochs
        let wrapped: Vec<Vec<usize>> =
            vec![vec![0, 2, 1, 1, 0, 2, 0, 1], vec![2, 1, 2, 0, 1, 0, 2, 1]];
        assert_eq!(batches(sft(5, 3, 8), 2), wrapped);
        let reward = |seed: u64, n, batch| EpochSampler::clamped(seed ^ 0x7265_7761_7264, n, batch);
        let reward_expected: Vec<Vec<usize>> = vec![
            vec![0, 1, 3, 8],
            vec![6, 4, 7, 2],
            vec![9, 5, 5, 4],
            vec![2, 1, 7, 9],
        ];
        assert_eq!(batches(reward(7, 10, 4), 4), reward_expected);
        // clamped: one whole epoch per batch
        assert_eq!(
            batches(reward(1, 3, 8), 2),
            vec![vec![2, 1, 0], vec![1, 2, 0]]
        );
    }

    #[test]
    fn any_batch_is_known_without_replay() {
        let all = batches(EpochSampler::wrapping(9, 10, 4), 6);
        assert_eq!(EpochSampler::wrapping(9, 10, 4).indices(4), all[4]);
        // each epoch is a permutation
        let mut epoch0 = all.concat()[..10].to_vec();
        epoch0.sort_unstable();
        assert_eq!(epoch0, (0..10).collect::<Vec<_>>());
        assert!(EpochSampler::wrapping(9, 0, 4).indices(0).is_empty());
    }
}
