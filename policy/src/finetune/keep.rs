//! Keep rules of a rejection-sampling fine-tuning round: after the lowest-energy answer of each
//! prompt is chosen, which (prompt, answer) pairs are trained on.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `best` keeps every prompt's lowest-energy answer; `below:E` only those with energy < E;
/// `above-median` only those whose reward is at or above the median of the round's selected
/// answers (energy ≤ median), so ties at the median are kept and a round is never emptied by
/// identical energies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeepRule {
    Best,
    Below(f32),
    AboveMedian,
}

impl KeepRule {
    /// Which of the selected answers (given their energies) are kept.
    pub fn apply(&self, selected_energies: &[f32]) -> Vec<bool> {
        match *self {
            KeepRule::Best => vec![true; selected_energies.len()],
            KeepRule::Below(limit) => selected_energies.iter().map(|&e| e < limit).collect(),
            KeepRule::AboveMedian => match median(selected_energies) {
                Some(m) => selected_energies.iter().map(|&e| e <= m).collect(),
                None => Vec::new(),
            },
        }
    }
}

/// Median (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f32]) -> Option<f32> {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// A keep rule that does not parse: a user error in a flag or a config file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeepRuleError {
    #[error(
        "unknown keep rule `{rule}`: expected `best`, `below:E` (e.g. below:0.5) or `above-median`"
    )]
    Unknown { rule: String },
    #[error("keep rule `{rule}`: `{limit}` is not a finite energy (e.g. below:0.5)")]
    NotFinite { rule: String, limit: String },
}

impl FromStr for KeepRule {
    type Err = KeepRuleError;

    fn from_str(s: &str) -> Result<Self, KeepRuleError> {
        let s = s.trim();
        match s {
            "best" => Ok(KeepRule::Best),
            "above-median" => Ok(KeepRule::AboveMedian),
            _ => {
                let Some(limit) = s.strip_prefix("below:") else {
                    return Err(KeepRuleError::Unknown { rule: s.into() });
                };
                match limit.trim().parse::<f32>() {
                    Ok(e) if e.is_finite() => Ok(KeepRule::Below(e)),
                    _ => Err(KeepRuleError::NotFinite {
                        rule: s.into(),
                        limit: limit.into(),
                    }),
                }
            }
        }
    }
}

impl fmt::Display for KeepRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepRule::Best => f.write_str("best"),
            KeepRule::Below(e) => write!(f, "below:{e}"),
            KeepRule::AboveMedian => f.write_str("above-median"),
        }
    }
}

impl TryFrom<String> for KeepRule {
    type Error = KeepRuleError;
    fn try_from(s: String) -> Result<Self, KeepRuleError> {
        s.parse()
    }
}

impl From<KeepRule> for String {
    fn from(rule: KeepRule) -> String {
        rule.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_rules_and_round_trips() {
        assert_eq!("best".parse::<KeepRule>(), Ok(KeepRule::Best));
        assert_eq!(
            "above-median".parse::<KeepRule>(),
            Ok(KeepRule::AboveMedian)
        );
        assert_eq!("below:0.25".parse::<KeepRule>(), Ok(KeepRule::Below(0.25)));
        assert_eq!(" below: 2 ".parse::<KeepRule>(), Ok(KeepRule::Below(2.0)));
        for rule in [KeepRule::Best, KeepRule::Below(0.5), KeepRule::AboveMedian] {
            assert_eq!(rule.to_string().parse::<KeepRule>(), Ok(rule));
        }
        let json = serde_json::to_string(&KeepRule::Below(1.5)).unwrap();
        assert_eq!(json, "\"below:1.5\"");
        assert_eq!(
            serde_json::from_str::<KeepRule>(&json).unwrap(),
            KeepRule::Below(1.5)
        );
    }

    #[test]
    fn bad_rules_get_clear_errors() {
        let err = "top3".parse::<KeepRule>().unwrap_err().to_string();
        assert!(
            err.contains("unknown keep rule `top3`") && err.contains("above-median"),
            "{err}"
        );
        let err = "below:abc".parse::<KeepRule>().unwrap_err().to_string();
        assert!(err.contains("`abc` is not a finite energy"), "{err}");
        assert!("below:".parse::<KeepRule>().is_err());
        assert!("below:NaN".parse::<KeepRule>().is_err());
        assert!(serde_json::from_str::<KeepRule>("\"median\"").is_err());
    }

    #[test]
    fn rules_keep_the_right_answers() {
        let e = [0.1f32, 0.9, 0.4, 0.4, 2.0];
        assert_eq!(KeepRule::Best.apply(&e), vec![true; 5]);
        assert_eq!(
            KeepRule::Below(0.4).apply(&e),
            vec![true, false, false, false, false]
        );
        assert_eq!(
            KeepRule::Below(0.5).apply(&e),
            vec![true, false, true, true, false]
        );
        // Median 0.4: keep energies ≤ 0.4.
        assert_eq!(
            KeepRule::AboveMedian.apply(&e),
            vec![true, false, true, true, false]
        );
        // Even count: median (0.2 + 0.6)/2 = 0.4.
        assert_eq!(median(&[0.6, 0.2, 1.0, 0.0]), Some(0.4));
        assert_eq!(
            KeepRule::AboveMedian.apply(&[0.6, 0.2, 1.0, 0.0]),
            vec![false, true, false, true]
        );
        // Identical energies: all kept, nothing from an empty round.
        assert_eq!(KeepRule::AboveMedian.apply(&[1.0, 1.0]), vec![true, true]);
        assert!(KeepRule::AboveMedian.apply(&[]).is_empty());
    }
}
