//! A training loop's JSONL metrics file. A resumed run first cuts it back to the lines of the
//! work its checkpoint holds, then appends, so the file never has duplicate or orphan lines.
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{PolicyError, Result};

/// `metrics.jsonl` (or `rounds.jsonl`) open for appending.
#[derive(Debug)]
pub struct MetricsLog {
    file: File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens `path` (created if absent) keeping only the lines whose integer field `key`
    /// (`step`, `round`) is at most `upto`; `None` keeps none, a fresh run.
    pub fn open(path: &Path, key: &str, upto: Option<u64>) -> Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => return Err(PolicyError::io("reading", path, e)),
        };
        fs::write(path, kept_lines(&text, key, upto))
            .map_err(|e| PolicyError::io("writing", path, e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| PolicyError::io("opening", path, e))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends `line` as one line of JSON.
    pub fn write(&mut self, line: &impl Serialize) -> Result<()> {
        let text = serde_json::to_string(line).map_err(|source| PolicyError::Json {
            path: self.path.clone(),
            source,
        })?;
        writeln!(self.file, "{text}").map_err(|e| PolicyError::io("writing", &self.path, e))
    }
}

/// The lines of `text` whose `key` is at most `upto`, each ending in a newline.
fn kept_lines(text: &str, key: &str, upto: Option<u64>) -> String {
    text.lines()
        .filter(|l| {
            let value = serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get(key).and_then(serde_json::Value::as_u64));
            matches!((value, upto), (Some(v), Some(u)) if v <= u)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_up_to_the_resumed_step() {
        let text =
            "{\"step\":1,\"loss\":2.0}\n{\"step\":2}\nnot json\n{\"loss\":1}\n{\"step\":3}\n";
        assert_eq!(
            kept_lines(text, "step", Some(2)),
            "{\"step\":1,\"loss\":2.0}\n{\"step\":2}\n"
        );
        assert_eq!(kept_lines(text, "step", None), "");
        assert_eq!(
            kept_lines("{\"round\":0}\n{\"round\":1}\n", "round", Some(0)),
            "{\"round\":0}\n"
        );
    }

    #[test]
    fn reopening_truncates_then_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, "step", Some(0)).unwrap();
        for step in 1..=4u64 {
            log.write(&serde_json::json!({"step": step})).unwrap();
        }
        drop(log);
        let mut log = MetricsLog::open(&path, "step", Some(2)).unwrap();
        log.write(&serde_json::json!({"step": 3})).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n"
        );
    }
}
