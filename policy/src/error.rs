//! The policy crate's error type: every variant names the file, key or step it is about.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
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
    #[error("tokenizer {context}: {message}")]
    Tokenizer { context: String, message: String },
    #[error("tokenizer {path} has no special token {token:?} (nor a fallback)")]
    MissingSpecial { path: PathBuf, token: String },
    #[error("invalid model config{}: {message}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Config {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    /// A table read or written through `datasets::table` (its error names the file).
    #[error(transparent)]
    Dataset(#[from] datasets::DatasetError),
    #[error("non-finite loss {loss} at step {step}; the last good checkpoint is kept")]
    NonFinite { step: u64, loss: f64 },
    #[error("device: {0}")]
    Device(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = PolicyError> = std::result::Result<T, E>;

impl PolicyError {
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
