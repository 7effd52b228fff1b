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
    /// A GGUF file that cannot be read or imported (bad header, unknown architecture or quant
    /// type, a tensor missing or of the wrong size).
    #[error("GGUF {path}: {message}")]
    Gguf { path: PathBuf, message: String },
    /// Weights that do not fit their model, or are not finite.
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    /// An output table about to hold NaN or infinite numbers: nothing is written.
    #[error("{path}: {message}; the model produced non-finite numbers, so nothing was written")]
    NonFiniteOutput { path: PathBuf, message: String },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error(transparent)]
    NonFinite(#[from] crate::train::NonFinite),
    #[error(transparent)]
    Interrupted(#[from] crate::interrupt::Interrupted),
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
    #[error("device: {0}")]
    Device(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Dataset(#[from] datasets::DatasetError),
    /// The energy model behind a [`crate::score::Scorer`] failed.
    #[error("{context}: {source}")]
    Scorer {
        context: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// One training pair that cannot be encoded (e.g. an answer longer than the context).
    #[error("training pair {index}: {source}")]
    TrainingPair {
        index: usize,
        source: Box<PolicyError>,
    },
    /// A fine-tuning loss that is NaN or infinite.
    #[error("round {round} step {step}: loss is {loss}")]
    RoundNonFinite { round: usize, step: u64, loss: f64 },
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

    /// Wraps a [`crate::score::Scorer`]'s error with what was being scored.
    pub fn scorer(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Scorer {
            context: context.into(),
            source: Box::new(source),
        }
    }
}
