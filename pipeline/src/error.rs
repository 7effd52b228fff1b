//! One error style for the binary: `anyhow` chains with context at each boundary. A
//! [`UsageError`] anywhere in the chain makes the exit code 2 (usage or config); everything
//! else is a runtime failure, exit code 1.
use std::fmt;

/// Bad flags, bad config or bad user input that the user must fix: exit code 2.
#[derive(Debug)]
pub struct UsageError {
    pub message: String,
    pub hint: Option<String>,
}

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand: `return Err(usage("--pairs must be > 0"))`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError::new(message).into()
}

/// 2 when the chain holds a [`UsageError`], 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|e| e.downcast_ref::<UsageError>().is_some())
    {
        2
    } else {
        1
    }
}

/// A hint for errors whose fix is known.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    for e in err.chain() {
        if let Some(u) = e.downcast_ref::<UsageError>() {
            if let Some(h) = &u.hint {
                return Some(h.clone());
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return Some("check that the output directory is writable".into());
            }
        }
    }
    None
}
