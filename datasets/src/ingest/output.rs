//! The tables of the ingest, written in row groups from the scratch files: each split's rows in
//! id order (their texts read back by offset), and the quarantine in (file, line) order, the
//! rows of the streaming pass merged with those of the global steps.
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::adapters::{Reason, Turn};
use crate::error::{DatasetError, Result};
use crate::split::{split_of, Split};
use crate::table::{PairRow, PairWriter, QuarantineRow, QuarantineWriter};

use super::prepare::Key;
use super::resolve::LateDrop;
use super::spill::{decode_pair, owned_turns, read_dropped, PairTexts, Spill};
use super::IngestOptions;

/// What the writers read from.
pub(super) struct Tables<'a> {
    pub opts: &'a IngestOptions,
    pub keys: &'a [Key],
    pub texts: &'a Spill,
    pub sources: &'a [String],
}

impl Tables<'_> {
    /// The texts of candidate `i`.
    fn read<'b>(&self, i: usize, buf: &'b mut Vec<u8>) -> Result<PairTexts<'b>> {
        let k = &self.keys[i];
        self.texts.read_at(k.offset, k.len as usize, buf)?;
        decode_pair(buf).ok_or_else(|| corrupt(self.texts.path()))
    }

    /// Writes `train/val/test.parquet` and `quarantine.parquet` (at the same time); returns the
    /// split of each kept row.
    pub fn write(
        &self,
        out_dir: &Path,
        kept: &[usize],
        dropped: &Spill,
        late: &mut [LateDrop],
    ) -> Result<Vec<Split>> {
        let quarantine = out_dir.join("quarantine.parquet");
        let (splits, quarantine) = rayon::join(
            || self.write_splits(out_dir, kept),
            || self.write_quarantine(&quarantine, dropped, late),
        );
        quarantine.and(splits)
    }

    /// Writes `train/val/test.parquet` in one pass over the `kept` candidates (in id order),
    /// each to the file of its split; returns the splits.
    fn write_splits(&self, out_dir: &Path, kept: &[usize]) -> Result<Vec<Split>> {
        let with_turns = kept.iter().any(|&i| self.keys[i].has_turns);
        let mut writers = Vec::new();
        for split in Split::ALL {
            writers.push(PairWriter::create(
                &out_dir.join(split.file_name()),
                with_turns,
            )?);
        }
        let mut splits = Vec::with_capacity(kept.len());
        for chunk in kept.chunks(CHUNK) {
            let built: Vec<Result<(Split, PairRow, Vec<Turn>)>> =
                chunk.par_iter().map(|&i| self.pair_row(i)).collect();
            for row in built {
                let (split, row, turns) = row?;
                writers[split as usize].push(row, turns)?;
                splits.push(split);
            }
        }
        for w in writers {
            w.finish()?;
        }
        Ok(splits)
    }

    /// Candidate `i` as a row of its split.
    fn pair_row(&self, i: usize) -> Result<(Split, PairRow, Vec<Turn>)> {
        let k = &self.keys[i];
        let mut buf = Vec::new();
        let t = self.read(i, &mut buf)?;
        let (chosen, rejected) = match k.swapped {
            true => (t.rejected, t.chosen),
            false => (t.chosen, t.rejected),
        };
        let mut id = hex::encode(k.id);
        if k.repeat > 0 {
            id = format!("{id}-{}", k.repeat);
        }
        let split = split_of(t.prompt, self.opts.seed, &self.opts.split);
        let row = PairRow {
            id,
            source: self.sources[k.file as usize].clone(),
            prompt: t.prompt.to_string(),
            chosen: chosen.to_string(),
            rejected: rejected.to_string(),
            margin: k.margin,
            tie: k.tie,
            gold_chosen: None,
            gold_rejected: None,
        };
        let turns = t.turns.as_deref().map(owned_turns).unwrap_or_default();
        Ok((split, row, turns))
    }

    /// Writes `quarantine.parquet`: the rows of the streaming pass (`dropped`, in (file, line)
    /// order) merged with `late` (sorted here), a streaming row first at equal places, as a
    /// stable sort of the two lists one after the other would order them. The raw texts of
    /// late rows are made in parallel, a chunk at a time.
    fn write_quarantine(&self, path: &Path, dropped: &Spill, late: &mut [LateDrop]) -> Result<()> {
        late.sort_by_key(|d| (d.file, d.line));
        let mut w = QuarantineWriter::create(path)?;
        let (mut reader, mut buf) = (dropped.reader(), Vec::new());
        let mut next = || -> Result<_> {
            read_dropped(&mut reader, &mut buf).map_err(|e| DatasetError::io(dropped.path(), e))
        };
        let mut early = next()?;
        let mut late = late.iter().peekable();
        loop {
            // The next chunk in merged order: early rows as they are, late ones still to make.
            let mut chunk: Vec<Either> = Vec::with_capacity(CHUNK);
            while chunk.len() < CHUNK {
                let take_early = match (&early, late.peek()) {
                    (Some(e), Some(l)) => (e.file, e.line) <= (l.file, l.line),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                if take_early {
                    let e = early.take().expect("matched above");
                    early = next()?;
                    chunk.push(Either::Early(
                        self.row(e.file, e.line, e.reason, e.detail, e.raw),
                    ));
                } else {
                    chunk.push(Either::Late(late.next().expect("peeked above")));
                }
            }
            if chunk.is_empty() {
                break;
            }
            let rows: Vec<Result<QuarantineRow>> = chunk
                .into_par_iter()
                .map(|item| match item {
                    Either::Early(row) => Ok(row),
                    Either::Late(l) => {
                        let raw = self.pair_json(l.key, l.swap)?;
                        Ok(self.row(l.file, l.line, l.reason, l.detail.clone(), raw))
                    }
                })
                .collect();
            for row in rows {
                w.push(row?)?;
            }
        }
        w.finish()
    }

    fn row(
        &self,
        file: usize,
        line: usize,
        reason: Reason,
        detail: String,
        raw: String,
    ) -> QuarantineRow {
        QuarantineRow {
            source: self.sources[file].clone(),
            line: line as u64,
            reason: reason.as_str().into(),
            detail,
            raw,
        }
    }

    /// A pair as the `raw` text of a quarantined row that no single input line stands for.
    fn pair_json(&self, i: usize, swap: bool) -> Result<String> {
        let mut buf = Vec::new();
        let t = self.read(i, &mut buf)?;
        let (chosen, rejected) = if swap {
            (t.rejected, t.chosen)
        } else {
            (t.chosen, t.rejected)
        };
        Ok(pair_json(t.prompt, chosen, rejected))
    }
}

/// Rows made in parallel at a time.
const CHUNK: usize = 1024;

/// A quarantine row of the streaming pass, or one of a global step still to make.
enum Either<'a> {
    Early(QuarantineRow),
    Late(&'a LateDrop),
}

fn corrupt(path: &Path) -> DatasetError {
    let e = std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt scratch row");
    DatasetError::io(path, e)
}

/// `{"chosen", "prompt", "rejected"}`, keys in `serde_json::json!`'s (sorted) order.
#[derive(Serialize)]
struct PairJson<'a> {
    chosen: &'a str,
    prompt: &'a str,
    rejected: &'a str,
}

pub(super) fn pair_json(prompt: &str, chosen: &str, rejected: &str) -> String {
    serde_json::to_string(&PairJson {
        chosen,
        prompt,
        rejected,
    })
    .expect("strings serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_json_is_what_json_macro_writes() {
        let (p, c, r) = ("q \"x\"\n", "a’\u{1}", "");
        let want = serde_json::json!({"prompt": p, "chosen": c, "rejected": r}).to_string();
        assert_eq!(pair_json(p, c, r), want);
    }
}
