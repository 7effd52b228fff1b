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
            | P::Gguf { .. }
            | P::Weights { .. } => true,
            // A file of a model directory that is not there: the user's input is incomplete.
            P::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            P::Dataset(d) => d.is_usage(),
            P::Dist(d) => is_usage(d),
            _ => false,
        };
    }
    if let Some(e) = err.downcast_ref::<policy::dist::DistError>() {
        use policy::dist::DistError as D;
        return matches!(
            e,
            D::Missing { .. } | D::Invalid { .. } | D::Mismatch { .. }
        );
    }
    if let Some(e) = err.downcast_ref::<R>() {
        return match e {
            R::Config(_) | R::Input { .. } | R::Incompatible(_) => true,
            R::Policy(p) => is_usage(p),
            R::Data(d) => d.is_usage(),
            R::Dist(d) => is_usage(d),
            _ => false,
        };
    }
    false
}

/// The interruption (SIGINT, SIGTERM) that stopped the command, wherever in the chain.
pub fn interrupted(err: &anyhow::Error) -> Option<policy::interrupt::Interrupted> {
    use policy::PolicyError as P;
    use reward::RewardError as R;
    err.chain().find_map(|e| {
        if let Some(i) = e.downcast_ref::<policy::interrupt::Interrupted>() {
            return Some(i.clone());
        }
        match (e.downcast_ref::<P>(), e.downcast_ref::<R>()) {
            (Some(P::Interrupted(i)), _)
            | (_, Some(R::Interrupted(i)))
            | (_, Some(R::Policy(P::Interrupted(i)))) => Some(i.clone()),
            _ => None,
        }
    })
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

/// The lines `ember` prints for `err`: the outermost message, then one `caused by:` line per
/// cause. A message that repeats its cause's text (`"{context}: {source}"` errors that also
/// report the source) is cut to its own part, repeated causes are dropped, and libtorch's C++
/// backtrace is kept only when `verbose`.
pub fn render(err: &anyhow::Error, verbose: bool) -> Vec<String> {
    let messages: Vec<String> = err
        .chain()
        .map(|e| {
            let text = e.to_string();
            match text.find("Exception raised from") {
                Some(at) if !verbose => text[..at].trim_end().to_string(),
                _ => text,
            }
        })
        .collect();
    let mut lines: Vec<String> = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let own = match messages.get(i + 1) {
            Some(next) if msg != next => msg
                .strip_suffix(next.as_str())
                .map(|head| head.trim_end().trim_end_matches(':').trim_end())
                .filter(|head| !head.is_empty())
                .unwrap_or(msg),
            _ => msg,
        };
        if lines.last().is_some_and(|l| l == own) || own.is_empty() {
            continue;
        }
        lines.push(own.to_string());
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("error: {l}")
            } else {
                format!("  caused by: {l}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `"{context}: {source}"` error that also reports its source, as thiserror makes them.
    #[derive(Debug)]
    struct Wrapped {
        source: std::io::Error,
    }

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "reading weights: {}", self.source)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn render_gives_one_line_per_cause_without_repeats_or_backtraces() {
        let io = std::io::Error::other("disk on fire");
        let err = anyhow::Error::new(Wrapped { source: io })
            .context("loading model m")
            .context("ember sft failed");
        assert_eq!(
            render(&err, false),
            [
                "error: ember sft failed",
                "  caused by: loading model m",
                "  caused by: reading weights",
                "  caused by: disk on fire",
            ]
        );
        let torch = anyhow::anyhow!(
            "shape mismatch [2] vs [3]\nException raised from foo at bar.cpp:1\nframe #0: baz"
        )
        .context("loading weights");
        assert_eq!(
            render(&torch, false),
            [
                "error: loading weights",
                "  caused by: shape mismatch [2] vs [3]"
            ]
        );
        assert!(render(&torch, true)[1].contains("frame #0"));
    }
}
