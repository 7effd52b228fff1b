//! Config values that are wrong, named by their key. Every stage lists its problems
//! ([`crate::stage::Stage::check`]); `ember run` collects those of every section before the
//! first stage starts, and a subcommand before it writes anything. Either way they are usage
//! errors (exit code 2) that name the key.
use std::collections::BTreeMap;
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
    reject_sections([(section, &invalid)], &KeyLines::default())
}

/// The line of each key path (`reward.optim.lr`) of a config file, for messages. Not part of
/// a config's value: two configs with the same values are equal wherever their keys stand.
#[derive(Debug, Clone, Default)]
pub struct KeyLines(BTreeMap<String, usize>);

impl PartialEq for KeyLines {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl KeyLines {
    /// The 1-based line of every value of `text` (TOML), by key path; empty if it does not parse.
    pub fn of(text: &str) -> Self {
        fn walk(
            t: &toml::de::DeTable,
            prefix: &str,
            text: &str,
            out: &mut BTreeMap<String, usize>,
        ) {
            for (k, v) in t {
                let path = format!("{prefix}{}", k.get_ref());
                if let toml::de::DeValue::Table(inner) = v.get_ref() {
                    walk(inner, &format!("{path}."), text, out);
                } else {
                    let at = v.span().start.min(text.len());
                    out.insert(path, text[..at].matches('\n').count() + 1);
                }
            }
        }
        let mut out = BTreeMap::new();
        if let Ok(table) = toml::de::DeTable::parse(text) {
            walk(table.get_ref(), "", text, &mut out);
        }
        Self(out)
    }

    /// Forgets `path` (a value set by `--set`, not by the file).
    pub fn forget(&mut self, path: &str) {
        self.0.remove(path);
    }

    pub fn line(&self, path: &str) -> Option<usize> {
        self.0.get(path).copied()
    }
}

/// A usage error listing every problem of every section, keys as `section.key`.
pub fn reject_sections<'a>(
    sections: impl IntoIterator<Item = (&'a str, &'a Vec<Invalid>)>,
    at: &KeyLines,
) -> Result<()> {
    let lines: Vec<String> = sections
        .into_iter()
        .flat_map(|(section, inv)| inv.iter().map(move |i| i.at(section)))
        .map(|problem| {
            // `section.key: message` → `line N: section.key: message` when the file set it.
            let key = problem.split(": ").next().unwrap_or_default();
            match at.line(key) {
                Some(n) => format!("line {n}: {problem}"),
                None => problem,
            }
        })
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
