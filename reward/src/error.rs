//! The reward crate's error type: every variant names the file, key, row or step it is about.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{context}: {source}")]
    Torch {
        context: String,
        source: tch::TchError,
    },
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Data(#[from] datasets::DatasetError),
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("invalid reward config: {0}")]
    Config(String),
    #[error(transparent)]
    NonFinite(#[from] policy::train::NonFinite),
    #[error(transparent)]
    Interrupted(#[from] policy::interrupt::Interrupted),
    #[error(transparent)]
    Dist(#[from] policy::dist::DistError),
    #[error("{context}: {source}")]
    Polars {
        context: &'static str,
        source: polars::prelude::PolarsError,
    },
    /// A policy and an energy model that cannot work together (user error: pick matching ones).
    #[error("{0}")]
    Incompatible(String),
    /// A refinement longer than the models' context.
    #[error("{positions} answer positions do not fit the models (at most {max})")]
    TooLong { positions: usize, max: usize },
}

pub type Result<T, E = RewardError> = std::result::Result<T, E>;

impl RewardError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn torch(context: impl Into<String>, source: tch::TchError) -> Self {
        Self::Torch {
            context: context.into(),
            source,
        }
    }
}
