//! Pure helpers of the output tables: stable row ids, the deterministic split (a function of
//! the prompt and the seed alone, so a prompt never lands in two splits and input order does
//! not matter) and nearest-rank length percentiles.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The three output splits, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// `train.parquet`, `val.parquet`, `test.parquet`.
    pub fn file_name(self) -> &'static str {
        match self {
            Split::Train => "train.parquet",
            Split::Val => "val.parquet",
            Split::Test => "test.parquet",
        }
    }
}

/// `id`: the first 16 bytes (hex) of sha256 over the length-prefixed prompt, chosen, rejected.
pub fn pair_id(prompt: &str, chosen: &str, rejected: &str) -> String {
    hex::encode(pair_digest(prompt, chosen, rejected))
}

/// The 16 bytes [`pair_id`] writes in hex (hex keeps their order, so ids sort as digests do).
pub fn pair_digest(prompt: &str, chosen: &str, rejected: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    for part in [prompt, chosen, rejected] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let mut out = [0; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

/// A uniform number in [0, 1) from sha256(seed, prompt).
pub fn prompt_unit(prompt: &str, seed: u64) -> f64 {
    let mut h = Sha256::new();
    h.update(b"ember-split");
    h.update(seed.to_le_bytes());
    h.update(prompt.as_bytes());
    let d = h.finalize();
    let x = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The split of a prompt for fractions `[train, val, test]`.
pub fn split_of(prompt: &str, seed: u64, fractions: &[f64; 3]) -> Split {
    let u = prompt_unit(prompt, seed);
    if u < fractions[0] {
        Split::Train
    } else if u < fractions[0] + fractions[1] {
        Split::Val
    } else {
        Split::Test
    }
}

/// Parses `--split 0.9,0.05,0.05`: three non-negative fractions summing to 1.
pub fn parse_fractions(s: &str) -> Result<[f64; 3], String> {
    let parts: Vec<f64> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .map_err(|_| format!("`{p}` is not a number"))
        })
        .collect::<Result<_, _>>()?;
    let [a, b, c] = parts[..] else {
        return Err(format!(
            "expected three fractions train,val,test, got {}",
            parts.len()
        ));
    };
    if [a, b, c].iter().any(|x| !(0.0..=1.0).contains(x)) || ((a + b + c) - 1.0).abs() > 1e-6 {
        return Err(format!(
            "fractions must be in [0, 1] and sum to 1 (got {a},{b},{c})"
        ));
    }
    Ok([a, b, c])
}

/// p50 / p95 / max of character lengths, nearest rank (`sorted[round((n-1)p)]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LengthStats {
    pub p50: usize,
    pub p95: usize,
    pub max: usize,
}

pub fn length_stats(mut lengths: Vec<usize>) -> LengthStats {
    if lengths.is_empty() {
        return LengthStats::default();
    }
    lengths.sort_unstable();
    let at = |p: f64| lengths[((lengths.len() - 1) as f64 * p).round() as usize];
    LengthStats {
        p50: at(0.5),
        p95: at(0.95),
        max: lengths[lengths.len() - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_by_hand() {
        // n = 5: p50 → index round(2.0) = 2, p95 → round(3.8) = 4.
        assert_eq!(
            length_stats(vec![5, 1, 4, 2, 3]),
            LengthStats {
                p50: 3,
                p95: 5,
                max: 5
            }
        );
        // n = 4: p50 → round(1.5) = 2 (half away from zero), p95 → round(2.85) = 3.
        assert_eq!(
            length_stats(vec![10, 20, 30, 40]),
            LengthStats {
                p50: 30,
                p95: 40,
                max: 40
            }
        );
        assert_eq!(length_stats(vec![]), LengthStats::default());
    }

    #[test]
    fn ids_are_stable_and_length_prefixed() {
        assert_eq!(pair_id("a", "b", "c"), pair_id("a", "b", "c"));
        assert_ne!(pair_id("ab", "c", "d"), pair_id("a", "bc", "d"));
        assert_eq!(pair_id("a", "b", "c").len(), 32);
    }

    #[test]
    fn split_depends_on_prompt_and_seed_and_follows_fractions() {
        let f = [0.8, 0.1, 0.1];
        let n = 20_000;
        let train = (0..n)
            .filter(|i| split_of(&format!("p{i}"), 7, &f) == Split::Train)
            .count();
        assert!(
            (train as f64 / n as f64 - 0.8).abs() < 0.015,
            "train share {train}"
        );
        assert_eq!(split_of("x", 1, &f), split_of("x", 1, &f));
        assert_eq!(split_of("x", 1, &[0.0, 0.0, 1.0]), Split::Test);
        let differs = (0..200)
            .any(|i| split_of(&format!("p{i}"), 1, &f) != split_of(&format!("p{i}"), 2, &f));
        assert!(differs, "the seed moves prompts between splits");
    }

    #[test]
    fn fractions_are_checked() {
        assert_eq!(parse_fractions("0.9,0.05,0.05").unwrap(), [0.9, 0.05, 0.05]);
        assert!(parse_fractions("0.9,0.05").is_err());
        assert!(parse_fractions("0.9,0.2,0.05").is_err());
        assert!(parse_fractions("a,b,c").is_err());
    }
}
