//! What a training loop does with a non-finite loss or gradient norm: it skips the step (the
//! gradients are cleared, the weights and optimizer moments stay as they were, the step still
//! counts towards the schedule) with a warning, and stops with [`NonFinite`] after
//! [`NONFINITE_LIMIT`] such steps in a row. The error says truthfully whether a checkpoint of
//! the run exists to resume from. A run whose losses are all finite never meets the guard.

use tracing::warn;

/// Non-finite steps in a row after which a loop stops.
pub const NONFINITE_LIMIT: u64 = 10;

/// A loop stopped on non-finite losses or gradients.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("non-finite loss or gradient in {count} steps in a row, the last at step {step}; {}", resume_hint(*.checkpoint))]
pub struct NonFinite {
    /// The 1-based step at which the loop stopped (as `metrics.jsonl` numbers steps).
    pub step: u64,
    /// Non-finite steps in a row.
    pub count: u64,
    /// Steps done by the last checkpoint written or resumed from, if any.
    pub checkpoint: Option<u64>,
}

fn resume_hint(checkpoint: Option<u64>) -> String {
    match checkpoint {
        Some(step) => format!("the checkpoint of step {step} is kept and a rerun resumes from it"),
        None => "no checkpoint was written, so a rerun starts over".into(),
    }
}

/// Counts non-finite steps in a row and remembers the last checkpoint.
#[derive(Debug, Clone)]
pub struct NonFiniteGuard {
    limit: u64,
    streak: u64,
    checkpoint: Option<u64>,
}

impl NonFiniteGuard {
    /// A guard that stops after `limit` non-finite steps in a row; `checkpoint` is the step of
    /// the checkpoint the run resumed from.
    pub fn new(limit: u64, checkpoint: Option<u64>) -> Self {
        Self {
            limit,
            streak: 0,
            checkpoint,
        }
    }

    /// Records that a checkpoint of `step` steps was written.
    pub fn saved(&mut self, step: u64) {
        self.checkpoint = Some(step);
    }

    /// Records whether (1-based) `step` was finite. A finite step ends a streak; a non-finite
    /// one is warned about (the caller skips it) and, as the `limit`-th in a row, is an error.
    pub fn record(&mut self, step: u64, finite: bool) -> Result<(), NonFinite> {
        if finite {
            self.streak = 0;
            return Ok(());
        }
        self.streak += 1;
        warn!(
            step,
            streak = self.streak,
            "non-finite loss or gradient; step skipped"
        );
        if self.streak >= self.limit {
            return Err(NonFinite {
                step,
                count: self.streak,
                checkpoint: self.checkpoint,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_the_limit_in_a_row_only() {
        let mut guard = NonFiniteGuard::new(3, None);
        let finite = [false, false, true, false, false];
        for (i, &f) in finite.iter().enumerate() {
            assert_eq!(guard.record(i as u64 + 1, f), Ok(()));
        }
        guard.saved(5);
        let err = guard.record(6, false).unwrap_err();
        assert_eq!(
            err,
            NonFinite {
                step: 6,
                count: 3,
                checkpoint: Some(5)
            }
        );
        assert!(err.to_string().contains("checkpoint of step 5 is kept"));
    }

    #[test]
    fn says_when_there_is_no_checkpoint() {
        let mut guard = NonFiniteGuard::new(1, None);
        let err = guard.record(1, false).unwrap_err();
        assert!(
            err.to_string().contains("no checkpoint was written"),
            "{err}"
        );
        let mut resumed = NonFiniteGuard::new(1, Some(40));
        assert_eq!(resumed.record(41, false).unwrap_err().checkpoint, Some(40));
    }
}
