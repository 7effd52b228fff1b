//! What a training loop does with a non-finite loss or gradient norm: it skips the step (the
//! gradients are cleared, the weights and optimizer moments stay as they were, the step still
//! counts towards the schedule) with a warning, and stops with [`NonFinite`] after
//! [`NONFINITE_LIMIT`] such steps in a row, or once more than half of its steps were skipped
//! (at least half the limit of them): a run that diverges with finite steps in between does not
//! limp on to ship a broken model. The error says truthfully whether a checkpoint of the run
//! exists to resume from. A run whose losses are all finite never meets the guard.

use tracing::warn;

/// Non-finite steps in a row after which a loop stops.
pub const NONFINITE_LIMIT: u64 = 10;

/// A loop stopped on non-finite losses or gradients.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("non-finite loss or gradient in {count} {}, the last at step {step}; {}", span(*.of), resume_hint(*.checkpoint))]
pub struct NonFinite {
    /// The 1-based step at which the loop stopped (as `metrics.jsonl` numbers steps).
    pub step: u64,
    /// Non-finite steps: in a row, or of the `of` steps this process ran.
    pub count: u64,
    /// `None` when the steps were in a row; else how many steps they were among.
    pub of: Option<u64>,
    /// Steps done by the last checkpoint written or resumed from, if any.
    pub checkpoint: Option<u64>,
}

fn span(of: Option<u64>) -> String {
    match of {
        None => "steps in a row".into(),
        Some(n) => format!("of {n} steps (more than half)"),
    }
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
    /// Non-finite steps, and steps, since the guard was made.
    skipped: u64,
    seen: u64,
    checkpoint: Option<u64>,
}

impl NonFiniteGuard {
    /// A guard that stops after `limit` non-finite steps in a row; `checkpoint` is the step of
    /// the checkpoint the run resumed from.
    pub fn new(limit: u64, checkpoint: Option<u64>) -> Self {
        Self {
            limit,
            streak: 0,
            skipped: 0,
            seen: 0,
            checkpoint,
        }
    }

    /// Records that a checkpoint of `step` steps was written.
    pub fn saved(&mut self, step: u64) {
        self.checkpoint = Some(step);
    }

    /// Records whether (1-based) `step` was finite. A finite step ends a streak; a non-finite
    /// one is warned about (the caller skips it) and is an error as the `limit`-th in a row, or
    /// when it makes the skipped steps more than half of those seen (and at least `limit / 2`).
    pub fn record(&mut self, step: u64, finite: bool) -> Result<(), NonFinite> {
        self.seen += 1;
        if finite {
            self.streak = 0;
            return Ok(());
        }
        self.streak += 1;
        self.skipped += 1;
        warn!(
            step,
            streak = self.streak,
            "non-finite loss or gradient; step skipped"
        );
        if self.streak >= self.limit {
            return Err(NonFinite {
                step,
                count: self.streak,
                of: None,
                checkpoint: self.checkpoint,
            });
        }
        if self.skipped >= (self.limit / 2).max(2) && 2 * self.skipped > self.seen {
            return Err(NonFinite {
                step,
                count: self.skipped,
                of: Some(self.seen),
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
    fn stops_after_the_limit_in_a_row() {
        let mut guard = NonFiniteGuard::new(3, None);
        let finite = [true, true, true, false, false, true, false, false];
        for (i, &f) in finite.iter().enumerate() {
            assert_eq!(guard.record(i as u64 + 1, f), Ok(()));
        }
        guard.saved(8);
        let err = guard.record(9, false).unwrap_err();
        assert_eq!(
            err,
            NonFinite {
                step: 9,
                count: 3,
                of: None,
                checkpoint: Some(8)
            }
        );
        assert!(err.to_string().contains("checkpoint of step 8 is kept"));
    }

    #[test]
    fn stops_when_more_than_half_the_steps_were_skipped_with_finite_ones_between() {
        // `reward train --lr 1e6` skipped 10 of 12 steps, never 10 in a row, and shipped.
        let mut guard = NonFiniteGuard::new(10, None);
        let finite = [true, false, true, false, false, true, false];
        for (i, &f) in finite.iter().enumerate() {
            assert_eq!(guard.record(i as u64 + 1, f), Ok(()), "step {}", i + 1);
        }
        let err = guard.record(8, false).unwrap_err();
        assert_eq!((err.count, err.of), (5, Some(8)));
        assert!(
            err.to_string().contains("in 5 of 8 steps (more than half)"),
            "{err}"
        );
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
