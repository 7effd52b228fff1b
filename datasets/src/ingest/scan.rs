//! The streaming pass of the ingest. A reader thread decompresses and splits the input files into
//! bounded batches of records; each batch is prepared in parallel (rayon, record order kept);
//! then, in order, the texts of kept candidates are appended to one scratch file and quarantined
//! rows to another, and only the candidates' keys stay in memory. The per-file checks (a file of
//! another format, an empty file) run as each file ends, in file order.
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use rayon::prelude::*;

use crate::adapters::Reason;
use crate::error::{DatasetError, Result};
use crate::read::{Batch, Batches, Sniff};

use super::prepare::{prepare_chunk, Chunk, Key, Outcome, Settings, CHUNK_RECORDS};
use super::spill::{Spill, SpillWriter};
use super::IngestOptions;

/// What the streaming pass leaves for the global steps.
pub(super) struct Scanned {
    /// Every kept candidate, in (file, line) order.
    pub keys: Vec<Key>,
    pub texts: Spill,
    /// Quarantined rows, in (file, line) order.
    pub dropped: Spill,
    pub counts: DropCounts,
    pub records_read: usize,
    pub degenerate_kept: usize,
}

/// Counts of the quarantined rows, and the first one (for `--strict`).
#[derive(Default)]
pub(super) struct DropCounts {
    pub per_file: Vec<usize>,
    pub per_reason: Vec<usize>,
    pub first: Option<FirstDrop>,
}

/// A quarantined row as `--strict` names it.
#[derive(Debug, Clone)]
pub(super) struct FirstDrop {
    pub file: usize,
    pub line: usize,
    pub reason: Reason,
    pub detail: String,
}

impl DropCounts {
    pub fn new(files: usize) -> Self {
        Self {
            per_file: vec![0; files],
            per_reason: vec![0; Reason::ALL.len()],
            first: None,
        }
    }

    pub fn add(&mut self, file: usize, line: usize, reason: Reason, detail: &str) {
        self.per_file[file] += 1;
        self.per_reason[reason_index(reason)] += 1;
        self.first.get_or_insert_with(|| FirstDrop {
            file,
            line,
            reason,
            detail: detail.to_string(),
        });
    }
}

pub(super) fn reason_index(reason: Reason) -> usize {
    Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0)
}

/// What the reader thread sends.
enum Msg {
    Batch(usize, Batch),
    /// The end of a file, and whether it was JSON Lines.
    End(usize, bool),
    Failed(DatasetError),
}

/// Reads `files` in order into `tx`, reusing the batches that come back on `used`; stops at
/// the first error or when the receiver hangs up.
fn read_all(files: &[PathBuf], tx: SyncSender<Msg>, used: Receiver<Batch>) {
    for (fi, path) in files.iter().enumerate() {
        match read_one(fi, path, &tx, &used) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return drop(tx.send(Msg::Failed(e))),
        }
    }
}

/// Sends the batches of one file; `false` when the receiver has hung up.
fn read_one(fi: usize, path: &Path, tx: &SyncSender<Msg>, used: &Receiver<Batch>) -> Result<bool> {
    let mut batches = Batches::open(path)?;
    while let Some(batch) = batches.next_batch_into(used.try_recv().unwrap_or_default())? {
        if tx.send(Msg::Batch(fi, batch)).is_err() {
            return Ok(false);
        }
    }
    Ok(tx.send(Msg::End(fi, batches.is_json_lines())).is_ok())
}

/// Runs the streaming pass over `files`, with scratch files in `dir`.
pub(super) fn scan(files: &[PathBuf], opts: &IngestOptions, dir: &Path) -> Result<Scanned> {
    let settings = Settings {
        opts,
        drop_degenerate: opts
            .drop_degenerate
            .unwrap_or_else(|| opts.format.drops_degenerate()),
    };
    let mut state = State::new(files.len(), dir)?;
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(2);
        let (used_tx, used_rx) = sync_channel(4);
        scope.spawn(move || read_all(files, tx, used_rx));
        consume(rx, used_tx, files, &settings, &mut state)
    })?;
    state.finish()
}

fn consume(
    rx: Receiver<Msg>,
    used: SyncSender<Batch>,
    files: &[PathBuf],
    s: &Settings,
    state: &mut State,
) -> Result<()> {
    for msg in rx {
        match msg {
            Msg::Batch(fi, batch) => {
                let ranges: Vec<Range<usize>> = (0..batch.len())
                    .step_by(CHUNK_RECORDS)
                    .map(|i| i..(i + CHUNK_RECORDS).min(batch.len()))
                    .collect();
                let chunks: Vec<Chunk> = ranges
                    .into_par_iter()
                    .map(|r| prepare_chunk(&batch, r, fi, s))
                    .collect();
                let _ = used.try_send(batch);
                for chunk in chunks {
                    state.absorb(fi, chunk)?;
                }
            }
            Msg::End(fi, json_lines) => state.end_file(&files[fi], json_lines, s.opts)?,
            Msg::Failed(e) => return Err(e),
        }
    }
    Ok(())
}

/// The streaming pass's state.
struct State {
    keys: Vec<Key>,
    texts: SpillWriter,
    dropped: SpillWriter,
    counts: DropCounts,
    records_read: usize,
    degenerate_kept: usize,
    file: FileState,
}

/// What the per-file checks need, reset at each file.
#[derive(Default)]
struct FileState {
    records: usize,
    sniff: Sniff,
    /// The first candidate's rejection (`None` if it was kept), and whether all were structural.
    first: Option<Option<(Reason, String)>>,
    all_structural: bool,
}

impl State {
    fn new(files: usize, dir: &Path) -> Result<Self> {
        Ok(Self {
            keys: Vec::new(),
            texts: SpillWriter::create(dir, ".ingest-texts.scratch")?,
            dropped: SpillWriter::create(dir, ".ingest-quarantine.scratch")?,
            counts: DropCounts::new(files),
            records_read: 0,
            degenerate_kept: 0,
            file: FileState {
                all_structural: true,
                ..FileState::default()
            },
        })
    }

    fn absorb(&mut self, fi: usize, chunk: Chunk) -> Result<()> {
        self.records_read += chunk.records.len();
        self.file.records += chunk.records.len();
        let base = self.texts.append(&chunk.texts)?;
        self.dropped.append(&chunk.dropped)?;
        for rec in chunk.records {
            let first_detail = match rec.outcomes.first() {
                Some(Outcome::Dropped(r)) if !rec.parsed => Err(r.detail.clone()),
                _ => Ok(()),
            };
            self.file.sniff.observe(rec.line, rec.object, first_detail);
            for outcome in rec.outcomes {
                self.absorb_outcome(fi, rec.line, base, outcome);
            }
        }
        Ok(())
    }

    fn absorb_outcome(&mut self, fi: usize, line: usize, base: u64, outcome: Outcome) {
        let f = &mut self.file;
        match outcome {
            Outcome::Kept(mut key, degenerate) => {
                f.first.get_or_insert(None);
                f.all_structural = false;
                self.degenerate_kept += usize::from(degenerate);
                key.offset += base;
                self.keys.push(key);
            }
            Outcome::Dropped(r) => {
                f.first
                    .get_or_insert_with(|| Some((r.reason, r.detail.clone())));
                f.all_structural &= r.reason.is_structural();
                self.counts.add(fi, line, r.reason, &r.detail);
            }
        }
    }

    /// The checks of a file once read whole, in the order the whole-file reader made them.
    fn end_file(&mut self, path: &Path, json_lines: bool, opts: &IngestOptions) -> Result<()> {
        let file = std::mem::replace(
            &mut self.file,
            FileState {
                all_structural: true,
                ..FileState::default()
            },
        );
        if json_lines {
            file.sniff.finish(path)?;
        }
        if file.records == 0 {
            if opts.strict {
                return Err(DatasetError::Empty {
                    what: path.display().to_string(),
                });
            }
            tracing::warn!(path = %path.display(), "the file has no records (--strict makes this an error)");
        }
        match file.first {
            Some(Some((reason, detail))) if file.all_structural => {
                Err(DatasetError::FormatMismatch {
                    path: path.to_path_buf(),
                    expected: format!("--format {} records", opts.format.name()),
                    reason: format!("no row matches; first row: {}: {detail}", reason.as_str()),
                })
            }
            _ => Ok(()),
        }
    }

    fn finish(self) -> Result<Scanned> {
        Ok(Scanned {
            keys: self.keys,
            texts: self.texts.finish()?,
            dropped: self.dropped.finish()?,
            counts: self.counts,
            records_read: self.records_read,
            degenerate_kept: self.degenerate_kept,
        })
    }
}
