//! Ctrl-C and `kill` (SIGINT, SIGTERM) as a request, not a crash: [`install`] makes the first
//! signal set a flag that long loops read at their step boundaries ([`check`]); a training loop
//! then writes its checkpoint and returns [`Interrupted`], so the command can release its locks,
//! say how to resume, and exit 130 (SIGINT) or 143 (SIGTERM). A second signal exits at once.
use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received, 0 when none.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// A loop stopped at a step boundary because the process was asked to stop.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("interrupted by {}; {}", signal_name(*.signal), match .checkpoint {
    Some(at) => format!("the checkpoint of {at} is kept"),
    None => "no checkpoint was written".to_string(),
})]
pub struct Interrupted {
    pub signal: i32,
    /// What the kept checkpoint holds (`step 40`, `round 2`), if the loop wrote or resumed
    /// from one.
    pub checkpoint: Option<String>,
}

impl Interrupted {
    /// The exit code of a process stopped by this signal: 128 + its number.
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal).clamp(0, 255) as u8
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

extern "C" fn on_signal(signal: libc::c_int) {
    if SIGNAL
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // The second signal: the user means it. `_exit` is async-signal-safe.
        // SAFETY: terminates the process without running Rust code.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Routes SIGINT and SIGTERM to the flag (once per process; the binary calls it at start).
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only does an atomic compare-exchange and `_exit`, both
        // async-signal-safe; `sigaction` is given a zeroed, then filled, struct.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The signal received, if the process was asked to stop.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `Err(Interrupted)` when the process was asked to stop; `checkpoint` says what the loop's
/// kept checkpoint holds (`step 40`).
/// [`requested`] on any rank of the job ([`crate::dist::group`]), so that the ranks, which all
/// ask at the same step, stop together; alone, this process's own. The first signalled rank's
/// signal.
pub fn requested_in_job() -> Result<Option<i32>, crate::dist::DistError> {
    let own = requested();
    let Some(pg) = crate::dist::group() else {
        return Ok(own);
    };
    let all = pg.all_gather(&tch::Tensor::from_slice(&[own.unwrap_or(0) as i64]))?;
    Ok(all
        .iter()
        .map(|t| t.int64_value(&[0]) as i32)
        .find(|&s| s != 0))
}

pub fn check(checkpoint: Option<String>) -> Result<(), Interrupted> {
    match requested() {
        None => Ok(()),
        Some(signal) => Err(Interrupted { signal, checkpoint }),
    }
}

/// [`check`] for the whole job: `Err(Interrupted)` when any rank was asked to stop
/// ([`requested_in_job`]), so that every rank stops at the same point; alone, [`check`].
pub fn check_in_job(checkpoint: Option<String>) -> Result<(), crate::PolicyError> {
    match requested_in_job()? {
        None => Ok(()),
        Some(signal) => Err(Interrupted { signal, checkpoint }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_what_is_kept_and_the_exit_code_is_128_plus_the_signal() {
        let i = Interrupted {
            signal: libc::SIGTERM,
            checkpoint: Some("step 40".into()),
        };
        assert_eq!(i.exit_code(), 143);
        assert!(
            i.to_string().contains("checkpoint of step 40 is kept"),
            "{i}"
        );
        let i = Interrupted {
            signal: libc::SIGINT,
            checkpoint: None,
        };
        assert_eq!(i.exit_code(), 130);
        assert!(i.to_string().contains("no checkpoint was written"), "{i}");
    }
}
