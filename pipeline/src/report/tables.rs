//! Helpers the report sections share: a Markdown table of numeric JSON rows and shared-bin
//! histograms as plot series.
use std::fmt::Write as _;

use anyhow::Result;
use serde_json::Value;

use crate::plot::Series;
use crate::status;

/// A Markdown table with one column per key of `rows` (JSON objects), numbers formatted and
/// missing values as "—".
pub(super) fn numeric_table(
    md: &mut String,
    header: &[&str],
    keys: &[&str],
    rows: &[Value],
) -> Result<()> {
    writeln!(
        md,
        "| {} |\n|{}",
        header.join(" | "),
        "---|".repeat(keys.len())
    )?;
    for r in rows {
        let cells: Vec<String> = keys
            .iter()
            .map(|k| {
                r.get(*k)
                    .and_then(Value::as_f64)
                    .map(status::fmt_num)
                    .unwrap_or_else(|| "—".into())
            })
            .collect();
        writeln!(md, "| {} |", cells.join(" | "))?;
    }
    writeln!(md)?;
    Ok(())
}

/// Shared-bin histograms of several samples as series of (bin centre, share of the sample).
pub(super) fn histogram_series(samples: &[(&str, &[f64])], bins: usize) -> Vec<Series> {
    let all = samples
        .iter()
        .flat_map(|(_, x)| x.iter().copied())
        .filter(|x| x.is_finite());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let bins = bins.max(1);
    if !lo.is_finite() {
        return Vec::new();
    }
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    samples
        .iter()
        .map(|(name, x)| {
            let mut counts = vec![0usize; bins];
            for v in x.iter().filter(|v| v.is_finite()) {
                counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
            }
            let n = x.len().max(1) as f64;
            let points = counts
                .iter()
                .enumerate()
                .map(|(i, c)| (lo + (i as f64 + 0.5) * width, *c as f64 / n, None))
                .collect();
            Series {
                name: name.to_string(),
                points,
                markers_only: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_shares_hand_case() {
        let a = [0.0, 0.0, 1.0, 2.0];
        let b = [2.0, 2.0];
        let s = histogram_series(&[("a", &a), ("b", &b)], 2);
        // Bins [0, 1) and [1, 2]; centres 0.5 and 1.5.
        assert_eq!(s[0].points, vec![(0.5, 0.5, None), (1.5, 0.5, None)]);
        assert_eq!(s[1].points, vec![(0.5, 0.0, None), (1.5, 1.0, None)]);
    }
}
