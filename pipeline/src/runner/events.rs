//! The run directory's bookkeeping: `RUN/events.jsonl` (every start, skip, finish and failure)
//! and the exclusive lock on `RUN/.lock` that keeps two `ember run`s out of one directory.
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{EVENTS, LOCK};
use crate::stage::Lock;

/// One line of `RUN/events.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub stage: String,
    pub event: String,
    pub fingerprint: String,
    pub seconds: f64,
    pub unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn log_event(
    run: &Path,
    stage: &str,
    event: &str,
    fp: &str,
    secs: f64,
    error: Option<&str>,
) -> Result<()> {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let e = Event {
        stage: stage.into(),
        event: event.into(),
        fingerprint: fp.into(),
        seconds: secs,
        unix,
        error: error.map(str::to_string),
    };
    let path = run.join(EVENTS);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(&e)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads `RUN/events.jsonl` (missing → empty; unreadable lines skipped).
pub fn read_events(run: &Path) -> Vec<Event> {
    fs::read_to_string(run.join(EVENTS))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// An exclusive advisory lock on `RUN/.lock`, held until dropped (or the process dies), and
/// the lock file removed with it.
pub struct RunLock {
    _lock: Lock,
}

impl RunLock {
    pub fn acquire(run: &Path) -> Result<Self> {
        let lock = Lock::acquire(&run.join(LOCK), |pid| {
            format!(
                "run directory {} is in use by another `ember run` (pid {pid}); refusing to run concurrently",
                run.display()
            )
        })?;
        Ok(Self { _lock: lock })
    }
}
