//! When a training loop validates and checkpoints: pure functions of the steps done.

/// Whether a checkpoint is due after `done` of `total` steps, one every `every` (0 = never).
/// Never after the last step: the loop then writes its final artifact instead.
pub fn checkpoint_due(done: u64, every: u64, total: u64) -> bool {
    every > 0 && done.is_multiple_of(every) && done < total
}

/// Whether an evaluation is due after `done` of `total` steps: every `every` (0 = none) and
/// always after the last.
pub fn eval_due(done: u64, every: u64, total: u64) -> bool {
    (every > 0 && done.is_multiple_of(every)) || done == total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_every_n_but_not_at_the_end() {
        let due: Vec<u64> = (1..=10).filter(|&d| checkpoint_due(d, 3, 9)).collect();
        assert_eq!(due, vec![3, 6]);
        assert!(!checkpoint_due(4, 0, 9));
        assert!(!checkpoint_due(0, 0, 9));
    }

    #[test]
    fn evaluates_every_n_and_at_the_end() {
        let due: Vec<u64> = (1..=10).filter(|&d| eval_due(d, 4, 10)).collect();
        assert_eq!(due, vec![4, 8, 10]);
        let due: Vec<u64> = (1..=5).filter(|&d| eval_due(d, 0, 5)).collect();
        assert_eq!(due, vec![5]);
    }
}
