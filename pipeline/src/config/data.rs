//! The `[data]` section of a run config: `kind = "synth"` (the built-in task, with `ember
//! synth`'s keys) or `kind = "ingest"` (`inputs` and `ember ingest`'s keys).
use serde::{Deserialize, Serialize};

use crate::stages;

/// The `[data]` section: which data stage makes the run's preference tables.
#[derive(Debug, Clone, PartialEq)]
pub enum DataConfig {
    /// The built-in synthetic task with a gold reward.
    Synth(stages::synth::Config),
    /// Preference data from files (`inputs`: files, directories or globs).
    Ingest {
        inputs: Vec<String>,
        config: stages::ingest::Config,
    },
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig::Synth(Default::default())
    }
}

impl DataConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            DataConfig::Synth(_) => "synth",
            DataConfig::Ingest { .. } => "ingest",
        }
    }

    /// The section as JSON, `kind` (and `inputs`) included; unset options are null.
    pub(super) fn to_json(&self) -> serde_json::Value {
        let (mut v, inputs) = match self {
            DataConfig::Synth(c) => (serde_json::to_value(c), None),
            DataConfig::Ingest { inputs, config } => (serde_json::to_value(config), Some(inputs)),
        };
        let map = v.as_mut().ok().and_then(|v| v.as_object_mut());
        let map = map.expect("stage configs serialise to objects");
        map.insert("kind".into(), self.kind().into());
        if let Some(inputs) = inputs {
            map.insert("inputs".into(), inputs.clone().into());
        }
        v.expect("checked above")
    }

    /// The keys `[data]` takes for a kind (its schema for the unknown-key check).
    pub(super) fn schema(kind: &str) -> Option<serde_json::Value> {
        match kind {
            "synth" => Some(DataConfig::Synth(Default::default()).to_json()),
            "ingest" => Some(
                DataConfig::Ingest {
                    inputs: Vec::new(),
                    config: Default::default(),
                }
                .to_json(),
            ),
            _ => None,
        }
    }
}

impl Serialize for DataConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        fn drop_nulls(v: serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Object(m) => serde_json::Value::Object(
                    m.into_iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k, drop_nulls(v)))
                        .collect(),
                ),
                other => other,
            }
        }
        drop_nulls(self.to_json()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for DataConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut t = toml::Table::deserialize(d)?;
        let kind = match t.remove("kind") {
            None => "synth".to_string(),
            Some(toml::Value::String(k)) => k,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "data.kind: expected \"synth\" or \"ingest\", found {other}"
                )))
            }
        };
        match kind.as_str() {
            "synth" => toml::Value::Table(t)
                .try_into()
                .map(DataConfig::Synth)
                .map_err(|e| D::Error::custom(format!("[data]: {}", e.message().trim()))),
            "ingest" => {
                let inputs = match t.remove("inputs") {
                    None => Vec::new(),
                    Some(v) => v.try_into::<Vec<String>>().map_err(|_| {
                        D::Error::custom("data.inputs: expected a list of file paths or globs")
                    })?,
                };
                let config = toml::Value::Table(t)
                    .try_into()
                    .map_err(|e| D::Error::custom(format!("[data]: {}", e.message().trim())))?;
                Ok(DataConfig::Ingest { inputs, config })
            }
            other => Err(D::Error::custom(format!(
                "data.kind: unknown kind `{other}` (synth or ingest)"
            ))),
        }
    }
}
