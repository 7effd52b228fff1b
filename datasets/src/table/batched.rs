//! Preference pairs and quarantine rows written as they come, one Parquet row group per
//! [`ROW_GROUP_BYTES`] of text, so that a table of any size is written with bounded memory,
//! and encoded on a thread of its own.
//! Same columns as [`super::write_pairs`] and [`super::write_quarantine`]; a table smaller than
//! one row group is the same file.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use polars::frame::chunk_df_for_writing;
use polars::io::parquet::write::BatchedWriter;
use polars::prelude::*;

use super::{pairs_frame, quarantine_frame, PairRow, QuarantineRow};
use crate::adapters::Turn;
use crate::error::{DatasetError, Result};

/// Text bytes buffered before a row group is written.
pub const ROW_GROUP_BYTES: usize = 16 << 20;

/// Builds one row group's frame (run on the writer's thread).
type Frame = Box<dyn FnOnce() -> PolarsResult<DataFrame> + Send>;

/// A Parquet file written one frame (row group) at a time with Polars' default options, on a
/// thread of its own: the caller makes the next rows while the last ones are encoded and
/// compressed. At most one frame waits.
struct FrameWriter {
    path: PathBuf,
    tx: Option<SyncSender<Frame>>,
    thread: Option<JoinHandle<PolarsResult<()>>>,
    frames: usize,
}

impl FrameWriter {
    fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| DatasetError::io(path, e))?;
        let (tx, rx) = sync_channel::<Frame>(1);
        let thread = std::thread::spawn(move || write_frames(file, rx));
        Ok(Self {
            path: path.to_path_buf(),
            tx: Some(tx),
            thread: Some(thread),
            frames: 0,
        })
    }

    fn write(&mut self, frame: Frame) -> Result<()> {
        self.frames += 1;
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(frame).is_ok());
        match sent {
            true => Ok(()),
            // The thread stopped at an error: report it.
            false => self.join(),
        }
    }

    fn join(&mut self) -> Result<()> {
        self.tx = None;
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let result = thread.join().unwrap_or_else(|_| {
            Err(PolarsError::ComputeError(
                "the Parquet writer panicked".into(),
            ))
        });
        result.map_err(|e| DatasetError::table(&self.path, e))
    }

    fn finish(mut self) -> Result<()> {
        self.join()
    }
}

impl Drop for FrameWriter {
    /// A table abandoned at an error still waits for its thread (no writes after return).
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// The writer thread: each frame becomes a row group; the footer follows the last.
fn write_frames(file: File, rx: Receiver<Frame>) -> PolarsResult<()> {
    let mut file = Some(file);
    let mut writer: Option<BatchedWriter<File>> = None;
    for frame in rx {
        let mut df = frame()?;
        let df = chunk_df_for_writing(&mut df, 512 * 512)?;
        if let Some(file) = file.take() {
            writer = Some(ParquetWriter::new(file).batched(df.schema())?);
        }
        if let Some(w) = writer.as_mut() {
            w.write_batch(&df)?;
        }
    }
    match writer {
        Some(w) => w.finish().map(drop),
        None => Ok(()),
    }
}

/// `train/val/test.parquet` written row by row.
pub struct PairWriter {
    out: FrameWriter,
    with_turns: bool,
    rows: Vec<PairRow>,
    turns: Vec<Vec<Turn>>,
    bytes: usize,
}

impl PairWriter {
    /// `with_turns` adds the `prompt_turns` column (as [`super::write_pairs`] with turns).
    pub fn create(path: &Path, with_turns: bool) -> Result<Self> {
        Ok(Self {
            out: FrameWriter::create(path)?,
            with_turns,
            rows: Vec::new(),
            turns: Vec::new(),
            bytes: 0,
        })
    }

    pub fn push(&mut self, row: PairRow, turns: Vec<Turn>) -> Result<()> {
        self.bytes += row.prompt.len() + row.chosen.len() + row.rejected.len();
        self.bytes += turns.iter().map(|t| t.text.len()).sum::<usize>();
        self.rows.push(row);
        if self.with_turns {
            self.turns.push(turns);
        }
        if self.bytes >= ROW_GROUP_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let (rows, turns) = (
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.turns),
        );
        let with_turns = self.with_turns;
        self.bytes = 0;
        self.out.write(Box::new(move || {
            pairs_frame(&rows, with_turns.then_some(turns.as_slice()), false)
        }))
    }

    /// Writes what is buffered and the footer.
    pub fn finish(mut self) -> Result<()> {
        if !self.rows.is_empty() || self.out.frames == 0 {
            self.flush()?;
        }
        self.out.finish()
    }
}

/// `quarantine.parquet` written row by row.
pub struct QuarantineWriter {
    out: FrameWriter,
    rows: Vec<QuarantineRow>,
    bytes: usize,
}

impl QuarantineWriter {
    pub fn create(path: &Path) -> Result<Self> {
        Ok(Self {
            out: FrameWriter::create(path)?,
            rows: Vec::new(),
            bytes: 0,
        })
    }

    pub fn push(&mut self, row: QuarantineRow) -> Result<()> {
        self.bytes += row.raw.len() + row.detail.len();
        self.rows.push(row);
        if self.bytes >= ROW_GROUP_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        self.bytes = 0;
        self.out.write(Box::new(move || quarantine_frame(&rows)))
    }

    /// Writes what is buffered and the footer.
    pub fn finish(mut self) -> Result<()> {
        if !self.rows.is_empty() || self.out.frames == 0 {
            self.flush()?;
        }
        self.out.finish()
    }
}
