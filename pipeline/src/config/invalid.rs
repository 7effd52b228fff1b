//! Config values that are wrong, named by their key. Every stage lists its problems
//! ([`crate::stage::Stage::check`]); `ember run` collects those of every section before the
//! first stage starts, and a subcommand before it writes anything. Either way they are usage
//! errors (exit code 2) that name the key.
use std::fmt;

use anyhow::Result;

use crate::error::UsageError;

/// One wrong value: its key (relative to its section) and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// `Some(Invalid)` for the first of `keys` whose value is 0.
    pub fn zero<T: PartialEq + Default>(keys: &[(&str, T)]) -> Option<Self> {
        keys.iter()
            .find(|(_, v)| *v == T::default())
            .map(|(k, _)| Self::new(*k, "must be > 0"))
    }

    /// `Some(Invalid)` unless `value` is a finite number above `min` (or at least `min` when
    /// `inclusive`).
    pub fn below(key: &str, value: f64, min: f64, inclusive: bool) -> Option<Self> {
        let ok = value.is_finite() && if inclusive { value >= min } else { value > min };
        let rel = if inclusive { "≥" } else { ">" };
        (!ok).then(|| Self::new(key, format!("must be a number {rel} {min}, got {value}")))
    }
}

impl Invalid {
    /// `section.key: message` (`section: message` for a whole-section problem, empty key).
    pub fn at(&self, section: &str) -> String {
        match self.key.as_str() {
            "" => format!("{section}: {}", self.message),
            key => format!("{section}.{key}: {}", self.message),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A usage error listing every problem of one section (`ember <stage>` before it runs).
pub fn reject(invalid: Vec<Invalid>, section: &str) -> Result<()> {
    reject_sections([(section, &invalid)])
}

/// A usage error listing every problem of every section, keys as `section.key`.
pub fn reject_sections<'a>(
    sections: impl IntoIterator<Item = (&'a str, &'a Vec<Invalid>)>,
) -> Result<()> {
    let lines: Vec<String> = sections
        .into_iter()
        .flat_map(|(section, inv)| inv.iter().map(move |i| i.at(section)))
        .collect();
    match lines.len() {
        0 => Ok(()),
        1 => Err(UsageError::new(format!("invalid config value {}", lines[0])).into()),
        n => Err(UsageError::new(format!(
            "{n} invalid config values:\n  {}",
            lines.join("\n  ")
        ))
        .into()),
    }
}
