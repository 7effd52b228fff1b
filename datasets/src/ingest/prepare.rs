//! The per-record step of the ingest, run in parallel over a batch: parse a raw record, adapt it
//! to candidate pairs, apply the per-row filters, and compute everything the global steps need
//! (row id, lengths) beside the encoded texts, so that the texts can be spilled and
//! forgotten.
use std::ops::Range;

use crate::adapters::{
    parse_hh_line, split_transcripts, turn_spans, Format, Pair, Reason, Rejection,
};
use crate::read::{starts_like_object, Batch, Body};
use crate::split::pair_digest;

use super::spill::{encode_dropped, encode_pair};
use super::IngestOptions;

/// What the step needs besides the record.
pub(super) struct Settings<'a> {
    pub opts: &'a IngestOptions,
    pub drop_degenerate: bool,
}

/// One record after the step.
pub(super) struct Prepared {
    pub line: usize,
    /// Whether the record's text opens an object and parses (see [`crate::read::Sniff`]).
    pub object: bool,
    pub parsed: bool,
    pub outcomes: Vec<Outcome>,
}

/// A candidate kept by the per-row filters (so far), or quarantined.
pub(super) enum Outcome {
    /// The key (its `offset` and `len` into the chunk's texts) and whether it is degenerate.
    Kept(Key, bool),
    /// The rejection; the row is in the chunk's quarantine rows.
    Dropped(Rejection),
}

/// The records of a run of a batch, with the encoded texts of their candidates
/// ([`encode_pair`]) and their quarantine rows ([`encode_dropped`]), each in one buffer.
#[derive(Default)]
pub(super) struct Chunk {
    pub records: Vec<Prepared>,
    pub texts: Vec<u8>,
    pub dropped: Vec<u8>,
}

/// Records prepared by one task.
pub(super) const CHUNK_RECORDS: usize = 128;

/// Prepares records `range` of `batch` (of file `file`).
pub(super) fn prepare_chunk(
    batch: &Batch,
    range: Range<usize>,
    file: usize,
    s: &Settings,
) -> Chunk {
    let mut chunk = Chunk::default();
    for i in range {
        let (line, body) = batch.get(i);
        let record = prepare(line, body, file, s, &mut chunk);
        chunk.records.push(record);
    }
    chunk
}

/// What the global steps know of a candidate; its texts are in the spill at `offset`.
#[derive(Debug, Clone)]
pub(super) struct Key {
    pub id: [u8; 16],
    /// The id with the answers swapped (formats that average judgments only).
    pub swapped_id: [u8; 16],
    /// `chosen <= rejected` (formats that average judgments only).
    pub chosen_first: bool,
    pub file: u32,
    pub line: u64,
    pub offset: u64,
    pub len: u32,
    /// Characters of prompt, chosen, rejected.
    pub chars: [u32; 3],
    pub margin: Option<f32>,
    pub tie: bool,
    pub has_turns: bool,
    /// Averaging made the second answer the chosen one.
    pub swapped: bool,
    /// `n` of the `-n` suffix of a repeat kept (0: none).
    pub repeat: u32,
}

/// A candidate's fields, borrowed from a [`Pair`] or from the record's text.
pub(super) struct View<'a> {
    pub prompt: &'a str,
    pub chosen: &'a str,
    pub rejected: &'a str,
    pub margin: Option<f32>,
    pub tie: bool,
    pub turns: Option<Vec<(&'a str, &'a str)>>,
}

impl<'a> View<'a> {
    fn of(pair: &'a Pair) -> Self {
        let turns = (pair.turns.as_ref()).map(|t| {
            t.iter()
                .map(|t| (t.role.as_str(), t.text.as_str()))
                .collect()
        });
        Self {
            prompt: &pair.prompt,
            chosen: &pair.chosen,
            rejected: &pair.rejected,
            margin: pair.margin,
            tie: pair.tie,
            turns,
        }
    }
}

/// Parses, adapts and filters one record of file `file`, appending to `chunk`'s buffers.
fn prepare(line: usize, body: Body, file: usize, s: &Settings, chunk: &mut Chunk) -> Prepared {
    if let (Format::HhRlhf, Body::Text(t)) = (&s.opts.format, body) {
        if let Some(prepared) = prepare_hh(t, line, file, s, chunk) {
            return prepared;
        }
    }
    let (object, parsed, results) = match body {
        Body::Value(v) => (true, true, s.opts.format.adapt(v)),
        Body::Text(t) => match serde_json::from_str::<serde_json::Value>(t) {
            Ok(v) => (starts_like_object(t), true, s.opts.format.adapt(&v)),
            Err(e) => {
                let rejection = Rejection::new(Reason::InvalidJson, e.to_string());
                (false, false, vec![Err(rejection)])
            }
        },
        Body::NotUtf8 { .. } => {
            let e = body.not_utf8().unwrap_or_default();
            (
                false,
                false,
                vec![Err(Rejection::new(Reason::InvalidUtf8, e))],
            )
        }
    };
    let outcomes = results
        .into_iter()
        .map(|result| {
            let kept = result.and_then(|p| filter(&View::of(&p), s).map(|d| (p, d)));
            match kept {
                Ok((pair, degenerate)) => {
                    candidate(&View::of(&pair), degenerate, file, line, s, chunk)
                }
                Err(rejection) => dropped(&body.raw_text(), file, line, rejection, chunk),
            }
        })
        .collect();
    Prepared {
        line,
        object,
        parsed,
        outcomes,
    }
}

/// The fast path of HH-RLHF lines: no `serde_json::Value`, no owned copies of the texts. `None`
/// sends the record down the general path (which judges it exactly as before).
fn prepare_hh(
    text: &str,
    line: usize,
    file: usize,
    s: &Settings,
    chunk: &mut Chunk,
) -> Option<Prepared> {
    let (chosen, rejected) = parse_hh_line(text)?;
    let (prompt, c, r) = split_transcripts(&chosen, &rejected)?;
    let view = View {
        prompt,
        chosen: c,
        rejected: r,
        margin: None,
        tie: false,
        turns: Some(turn_spans(prompt)),
    };
    let outcome = match filter(&view, s) {
        Ok(degenerate) => candidate(&view, degenerate, file, line, s, chunk),
        Err(rejection) => dropped(text, file, line, rejection, chunk),
    };
    Some(Prepared {
        line,
        object: true,
        parsed: true,
        outcomes: vec![outcome],
    })
}

fn dropped(
    raw: &str,
    file: usize,
    line: usize,
    rejection: Rejection,
    chunk: &mut Chunk,
) -> Outcome {
    encode_dropped(
        &mut chunk.dropped,
        file,
        line,
        rejection.reason,
        &rejection.detail,
        raw,
    );
    Outcome::Dropped(rejection)
}

fn candidate(
    v: &View,
    degenerate: bool,
    file: usize,
    line: usize,
    s: &Settings,
    chunk: &mut Chunk,
) -> Outcome {
    let aggregates = s.opts.format.aggregates();
    let count = |t: &str| t.chars().count() as u32;
    let offset = chunk.texts.len();
    encode_pair(
        &mut chunk.texts,
        v.prompt,
        v.chosen,
        v.rejected,
        v.turns.as_deref(),
    );
    let key = Key {
        id: pair_digest(v.prompt, v.chosen, v.rejected),
        swapped_id: match aggregates {
            true => pair_digest(v.prompt, v.rejected, v.chosen),
            false => [0; 16],
        },
        chosen_first: v.chosen <= v.rejected,
        file: file as u32,
        line: line as u64,
        offset: offset as u64,
        len: (chunk.texts.len() - offset) as u32,
        chars: [count(v.prompt), count(v.chosen), count(v.rejected)],
        margin: v.margin,
        tie: v.tie,
        has_turns: v.turns.is_some(),
        swapped: false,
        repeat: 0,
    };
    Outcome::Kept(key, degenerate)
}

/// The per-row quality filters, in order: identical, empty, too long, tie. Returns whether the
/// pair is degenerate but kept.
fn filter(pair: &View, s: &Settings) -> Result<bool, Rejection> {
    let (opts, drop_degenerate) = (s.opts, s.drop_degenerate);
    let identical = pair.chosen == pair.rejected;
    let empty = pair.chosen.trim().is_empty() || pair.rejected.trim().is_empty();
    if drop_degenerate && identical {
        return Err(Rejection::new(
            Reason::IdenticalAnswers,
            "chosen and rejected are identical",
        ));
    }
    if drop_degenerate && empty {
        let which = if pair.chosen.trim().is_empty() {
            "chosen"
        } else {
            "rejected"
        };
        return Err(Rejection::new(
            Reason::EmptyAnswer,
            format!("{which} is empty after trimming"),
        ));
    }
    if let Some(max) = opts.max_chars {
        let len = pair.prompt.chars().count()
            + pair
                .chosen
                .chars()
                .count()
                .max(pair.rejected.chars().count());
        if len > max {
            return Err(Rejection::new(
                Reason::TooLong,
                format!("{len} characters > --max-chars {max}"),
            ));
        }
    }
    // A format that averages judgments decides ties after averaging (`aggregate`).
    if pair.tie && !opts.keep_ties && !opts.format.aggregates() {
        return Err(Rejection::new(
            Reason::Tie,
            "the annotators tied (use --keep-ties to keep)",
        ));
    }
    Ok(identical || empty)
}
