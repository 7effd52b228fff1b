//! The one error type of the `datasets` crate. Every variant names the file (and the line or
//! column where there is one) so that the binary can print an actionable message.
use std::path::PathBuf;

/// Everything that can go wrong reading or writing preference data.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// An input path or glob that matches no file.
    #[error("input {path} does not exist (no file matches)")]
    MissingInput { path: String },
    /// A glob pattern that does not parse.
    #[error("bad glob pattern {pattern}: {reason}")]
    BadGlob { pattern: String, reason: String },
    /// A file extension none of the readers knows.
    #[error("{path}: unsupported file type (expected .jsonl, .jsonl.gz, .json, .parquet or .csv)")]
    UnsupportedExtension { path: PathBuf },
    /// The OS refused to read or write a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A gzip stream that ends early or is corrupt.
    #[error("{path}: corrupt or truncated gzip stream: {reason}")]
    Gzip { path: PathBuf, reason: String },
    /// A file whose content is not what its extension or the chosen `--format` promises.
    #[error("{path}: does not look like {expected}: {reason}")]
    FormatMismatch {
        path: PathBuf,
        expected: String,
        reason: String,
    },
    /// `--strict`: the first bad row.
    #[error("{path}:{line}: {reason} ({detail})")]
    BadRow {
        path: String,
        line: usize,
        reason: String,
        detail: String,
    },
    /// A table without a required column.
    /// `--strict` and an input that yields no rows at all.
    #[error("{what}: no rows to ingest")]
    Empty { what: String },
    #[error("{path}: missing column `{column}`")]
    MissingColumn { path: PathBuf, column: String },
    /// A table column with an unexpected type.
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        path: PathBuf,
        column: String,
        found: String,
        expected: String,
    },
    /// A Polars failure reading or writing a table.
    #[error("{path}: {reason}")]
    Table { path: PathBuf, reason: String },
    /// An option that cannot work (e.g. split fractions that do not sum to 1).
    #[error("invalid option {option}: {reason}")]
    InvalidOption { option: String, reason: String },
}

impl DatasetError {
    /// Wraps an I/O error with the file it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a Polars error with the file it concerns.
    pub fn table(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Self::Table {
            path: path.into(),
            reason: err.to_string(),
        }
    }

    /// True for errors the user fixes by changing flags or paths (exit code 2 in the binary).
    /// Errors about the user's input (flags, paths, or files that cannot be read as the format
    /// they claim to be): exit code 2. Failures to write are not.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::MissingInput { .. }
                | Self::BadGlob { .. }
                | Self::UnsupportedExtension { .. }
                | Self::InvalidOption { .. }
                | Self::Empty { .. }
                | Self::Gzip { .. }
                | Self::FormatMismatch { .. }
                | Self::BadRow { .. }
                | Self::MissingColumn { .. }
                | Self::ColumnType { .. }
        ) || matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

pub type Result<T, E = DatasetError> = std::result::Result<T, E>;
