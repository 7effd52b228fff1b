//! Preference pairs from disk to encoded, length-fitted rows, with every row that cannot be used
//! counted by reason (never dropped silently).
use std::path::Path;

use datasets::table::{read_pairs, PairRow};
use policy::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::batch::{encode_fit, EncodedPairRow, Fit};
use crate::error::{Result, RewardError};
use crate::loss::TieMode;

/// What happened to the rows of a table on their way to the model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitCounts {
    /// Rows read.
    pub rows: usize,
    /// Rows kept.
    pub kept: usize,
    /// Kept rows whose prompt lost tokens on the left (either answer).
    pub prompt_truncated: usize,
    /// Rows skipped because an answer alone (with SEP and EOS) exceeds `max_len`.
    pub answer_too_long: usize,
    /// Tie rows skipped (`--ties skip`).
    pub ties_skipped: usize,
    /// Rows whose chosen and rejected texts are identical (no preference signal), skipped.
    pub identical: usize,
}

/// Reads a preference table, requiring at least one row.
pub fn load_pairs(path: &Path) -> Result<Vec<PairRow>> {
    if !path.exists() {
        return Err(RewardError::Input {
            path: path.to_path_buf(),
            message:
                "no such file (expected a preference table from `ember ingest` or `ember synth`)"
                    .into(),
        });
    }
    let rows = read_pairs(path)?;
    if rows.is_empty() {
        return Err(RewardError::Input {
            path: path.to_path_buf(),
            message: "no rows".into(),
        });
    }
    Ok(rows)
}

/// Encodes `rows` into fitted pairs (row index kept), counting what was skipped and why.
pub fn encode_rows(
    tok: &Tokenizer,
    rows: &[PairRow],
    max_len: usize,
    ties: TieMode,
) -> (Vec<EncodedPairRow>, FitCounts) {
    let mut counts = FitCounts {
        rows: rows.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        if r.tie && ties == TieMode::Skip {
            counts.ties_skipped += 1;
            continue;
        }
        if r.chosen == r.rejected && !r.tie {
            counts.identical += 1;
            continue;
        }
        let (chosen, fc) = encode_fit(tok, &r.prompt, &r.chosen, max_len);
        let (rejected, fr) = encode_fit(tok, &r.prompt, &r.rejected, max_len);
        if fc == Fit::AnswerTooLong || fr == Fit::AnswerTooLong {
            counts.answer_too_long += 1;
            continue;
        }
        if fc == Fit::PromptTruncated || fr == Fit::PromptTruncated {
            counts.prompt_truncated += 1;
        }
        let margin = r.margin.filter(|m| m.is_finite()).unwrap_or(0.0);
        out.push(EncodedPairRow {
            chosen,
            rejected,
            margin,
            tie: r.tie,
            row: i,
        });
    }
    counts.kept = out.len();
    (out, counts)
}

/// Rows ordered by the noise-free gold reward when the table has one (synth): chosen/rejected
/// swapped where `gold_rejected > gold_chosen`, rows with equal gold dropped, and each row's
/// `source` suffixed with its [`gold_kind`] so that per-source accuracy shows where the model
/// fails. `None` when the table has no gold columns.
pub fn gold_ordered(rows: &[PairRow]) -> Option<Vec<PairRow>> {
    if rows
        .iter()
        .any(|r| r.gold_chosen.is_none() || r.gold_rejected.is_none())
    {
        return None;
    }
    let out = rows
        .iter()
        .filter(|r| r.gold_chosen != r.gold_rejected)
        .map(|r| {
            let mut r = r.clone();
            if r.gold_rejected > r.gold_chosen {
                std::mem::swap(&mut r.chosen, &mut r.rejected);
                std::mem::swap(&mut r.gold_chosen, &mut r.gold_rejected);
            }
            let kind = gold_kind(r.gold_chosen.unwrap_or(0.0), r.gold_rejected.unwrap_or(0.0));
            r.source = format!("{} · {kind}", r.source);
            r
        })
        .collect();
    Some(out)
}

/// What a gold-ordered pair asks of the model, from its gold scores (better first): telling a
/// right answer (gold 1) from a wrong one, a near miss (partial credit) from a worthless answer
/// (gold 0), or grading two near misses.
pub fn gold_kind(better: f32, worse: f32) -> &'static str {
    if better >= 1.0 {
        "right vs wrong"
    } else if worse <= 0.0 {
        "near miss vs worthless"
    } else {
        "near miss vs near miss"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A character-level `tokenizer.json` written by hand (`<pad> <sep> <eos> <unk>` then the
    /// sorted characters), loaded through the public `Tokenizer::load`.
    pub(crate) fn char_tokenizer(chars: &str) -> Tokenizer {
        let mut sorted: Vec<char> = chars.chars().collect();
        sorted.sort();
        sorted.dedup();
        let specials = ["<pad>", "<sep>", "<eos>", "<unk>"];
        let mut vocab = serde_json::Map::new();
        for (i, s) in specials
            .iter()
            .map(|s| s.to_string())
            .chain(sorted.iter().map(|c| c.to_string()))
            .enumerate()
        {
            vocab.insert(s, i.into());
        }
        let added: Vec<serde_json::Value> = specials
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"}, "behavior": "Isolated", "invert": false},
            "post_processor": null, "decoder": {"type": "Fuse"},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, json.to_string()).unwrap();
        Tokenizer::load(&path).unwrap()
    }

    fn row(chosen: &str, rejected: &str, tie: bool, gold: Option<(f32, f32)>) -> PairRow {
        PairRow {
            id: "x".into(),
            source: "s".into(),
            prompt: "1+1=".into(),
            chosen: chosen.into(),
            rejected: rejected.into(),
            margin: None,
            tie,
            gold_chosen: gold.map(|g| g.0),
            gold_rejected: gold.map(|g| g.1),
        }
    }

    #[test]
    fn encode_rows_counts_every_skip() {
        let tok = char_tokenizer("1+=234567890abc");
        let rows = vec![
            row("2", "3", false, None),
            row("2", "2", true, None),
            row("2", "2", false, None),
            row("2222222222", "3", false, None),
        ];
        // max_len 8: "1+1=" + SEP + "2" + EOS = 7 fits; 10-char answer + SEP + EOS = 12 does not
        let (enc, c) = encode_rows(&tok, &rows, 8, TieMode::Skip);
        assert_eq!(enc.len(), 1);
        assert_eq!(
            (
                c.rows,
                c.kept,
                c.ties_skipped,
                c.identical,
                c.answer_too_long
            ),
            (4, 1, 1, 1, 1)
        );
        let (enc, c) = encode_rows(&tok, &rows, 6, TieMode::Equal);
        assert_eq!((c.kept, c.prompt_truncated), (2, 2));
        assert_eq!(enc[0].chosen.len(), 6);
        assert!(enc[1].tie);
    }

    #[test]
    fn gold_order_swaps_and_drops_equal() {
        let rows = vec![
            row("a", "b", false, Some((1.0, 0.0))),
            row("a", "b", false, Some((0.2, 0.9))),
            row("a", "b", false, Some((0.5, 0.5))),
        ];
        let g = gold_ordered(&rows).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!((g[1].chosen.as_str(), g[1].gold_chosen), ("b", Some(0.9)));
        assert_eq!(g[0].source, format!("{} · right vs wrong", rows[0].source));
        assert!(
            g[1].source.ends_with("near miss vs near miss"),
            "{}",
            g[1].source
        );
        assert_eq!(gold_kind(0.6, 0.0), "near miss vs worthless");
        assert!(gold_ordered(&[row("a", "b", false, None)]).is_none());
    }
}
