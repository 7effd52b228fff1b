//! One error style for the binary: `anyhow` chains with context at each boundary. Which errors
//! are the user's to fix (exit code 2: bad flags, config or input) is decided here, in
//! [`is_usage`], for the pipeline's [`UsageError`] and the library crates' error types alike;
//! everything else is a runtime failure, exit code 1.
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

/// Whether one error of a chain is the user's to fix: a [`UsageError`], or a library error about
/// the user's input (a missing file, a bad option or config value, an unknown device).
pub fn is_usage(err: &(dyn std::error::Error + 'static)) -> bool {
    use policy::PolicyError as P;
    use reward::RewardError as R;
    if err.is::<UsageError>() {
        return true;
    }
    if let Some(e) = err.downcast_ref::<datasets::DatasetError>() {
        return e.is_usage();
    }
    if let Some(e) = err.downcast_ref::<P>() {
        return match e {
            P::Config { .. }
            | P::Device(_)
            | P::Invalid(_)
            | P::MissingSpecial { .. }
            | P::Gguf { .. } => true,
            P::Dataset(d) => d.is_usage(),
            _ => false,
        };
    }
    if let Some(e) = err.downcast_ref::<R>() {
        return match e {
            R::Config(_) | R::Input { .. } | R::Incompatible(_) => true,
            R::Policy(p) => is_usage(p),
            R::Data(d) => d.is_usage(),
            _ => false,
        };
    }
    false
}

/// 2 when the chain holds an error the user must fix ([`is_usage`]), 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(is_usage) {
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
