//! The two choices of what the energy head reads: where it pools the trunk ([`Pooling`]) and
//! what its score adds ([`Score`]), with their names in configs and on the command line.
use serde::{Deserialize, Serialize};

/// Where the head reads the trunk's hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// The last real token of each row (the EOS), whatever the padding side. The correct one.
    Eos,
    /// The last column of the batch. Correct only under left padding; under right padding it
    /// reads a pad — the classic reward-model bug, kept so that `doctor` can be shown to catch it.
    LastColumn,
    /// The mean of the answer tokens' hidden states (after the last separator, EOS included;
    /// see [`answer_mask`](super::answer_mask)): what linear probes of a frozen pretrained trunk read best.
    Mean,
}

/// `eos` or `mean` (`last-column` exists for `doctor`'s demonstration only).
impl std::str::FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "eos" => Ok(Self::Eos),
            "mean" => Ok(Self::Mean),
            other => Err(format!("unknown pooling {other:?}: expected eos or mean")),
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Eos => "eos",
            Self::LastColumn => "last-column",
            Self::Mean => "mean",
        })
    }
}

/// What the score s (energy = softplus(s)) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Score {
    /// A linear head on the hidden state at the end-of-answer token.
    #[default]
    #[serde(rename = "head")]
    Head,
    /// The head plus a learned mix of the answer's mean and summed negative log-likelihood
    /// under the trunk's tied LM head.
    #[serde(rename = "head+nll")]
    HeadNll,
}

/// `head` or `head+nll`.
impl std::str::FromStr for Score {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "head" => Ok(Self::Head),
            "head+nll" => Ok(Self::HeadNll),
            other => Err(format!(
                "unknown score {other:?}: expected head or head+nll"
            )),
        }
    }
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Head => "head",
            Self::HeadNll => "head+nll",
        })
    }
}
