//! Records of one file in bounded batches, in file order. JSON Lines stream: a few MB of lines
//! at a time, held in one text buffer per batch (no allocation per line), so memory stays flat
//! as files grow. The other readers parse the whole file and hand it out in batches.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde_json::Value;

use super::{json_array, not_utf8, strip_bom, FileKind, RawBody, RawRecord};
use crate::error::{DatasetError, Result};

/// A batch holds at most this many records or bytes of lines (whichever comes first).
const BATCH_RECORDS: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;

/// The batches of one file.
pub struct Batches {
    path: PathBuf,
    source: Source,
}

enum Source {
    Lines {
        reader: Box<dyn BufRead + Send>,
        gzip: bool,
        next_line: usize,
    },
    Rows(std::vec::IntoIter<Value>, usize),
}

/// Up to [`BATCH_RECORDS`] records of one file.
#[derive(Debug, Default)]
pub struct Batch {
    /// The text of the batch's UTF-8 lines, one after the other.
    text: String,
    items: Vec<(usize, Item)>,
}

#[derive(Debug)]
enum Item {
    /// A line of `text`.
    Text(usize, usize),
    Other(RawBody),
}

/// One record of a batch, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Text(&'a str),
    Value(&'a Value),
    NotUtf8 { lossy: &'a str, at: usize },
}

impl Body<'_> {
    /// Why the record cannot be parsed, for a line that is not UTF-8.
    pub fn not_utf8(&self) -> Option<String> {
        match self {
            Body::NotUtf8 { at, .. } => Some(not_utf8(*at)),
            _ => None,
        }
    }

    /// The text kept in quarantine (as [`RawRecord::raw_text`]).
    pub fn raw_text(&self) -> String {
        match self {
            Body::Text(t) => t.to_string(),
            Body::Value(v) => v.to_string(),
            Body::NotUtf8 { lossy, .. } => lossy.to_string(),
        }
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The line (or row) number and body of record `i`.
    pub fn get(&self, i: usize) -> (usize, Body<'_>) {
        let (line, item) = &self.items[i];
        let body = match item {
            Item::Text(start, end) => Body::Text(&self.text[*start..*end]),
            Item::Other(RawBody::Text(t)) => Body::Text(t),
            Item::Other(RawBody::Value(v)) => Body::Value(v),
            Item::Other(RawBody::NotUtf8 { lossy, at }) => Body::NotUtf8 { lossy, at: *at },
        };
        (*line, body)
    }

    pub fn into_records(self) -> Vec<RawRecord> {
        let text = self.text;
        (self.items.into_iter())
            .map(|(line, item)| RawRecord {
                line,
                body: match item {
                    Item::Text(start, end) => RawBody::Text(text[start..end].to_string()),
                    Item::Other(body) => body,
                },
            })
            .collect()
    }
}

impl Batches {
    /// Opens `path` with the reader its extension picks.
    pub fn open(path: &Path) -> Result<Self> {
        let open = || std::fs::File::open(path).map_err(|e| DatasetError::io(path, e));
        let lines = |reader: Box<dyn BufRead + Send>, gzip| Source::Lines {
            reader,
            gzip,
            next_line: 1,
        };
        let source = match FileKind::of(path)? {
            FileKind::JsonLines => {
                lines(Box::new(BufReader::with_capacity(1 << 20, open()?)), false)
            }
            FileKind::JsonLinesGz => {
                let gz = MultiGzDecoder::new(BufReader::with_capacity(1 << 20, open()?));
                lines(Box::new(BufReader::with_capacity(1 << 20, gz)), true)
            }
            FileKind::JsonArray => Source::Rows(json_array(path)?.into_iter(), 1),
            FileKind::Parquet => {
                Source::Rows(crate::table::read_parquet_rows(path)?.into_iter(), 1)
            }
            FileKind::Csv => Source::Rows(crate::table::read_csv_rows(path)?.into_iter(), 1),
        };
        Ok(Self {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether the records are JSON Lines text (checked with [`Sniff`]) rather than values.
    pub fn is_json_lines(&self) -> bool {
        matches!(self.source, Source::Lines { .. })
    }

    /// The next batch, or `None` at the end of the file. A read error (a truncated gzip
    /// stream) is an error naming the file.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        self.next_batch_into(Batch::default())
    }

    /// [`Batches::next_batch`] into the buffers of a used batch.
    pub fn next_batch_into(&mut self, mut batch: Batch) -> Result<Option<Batch>> {
        batch.text.clear();
        batch.items.clear();
        let batch = match &mut self.source {
            Source::Lines {
                reader,
                gzip,
                next_line,
            } => read_lines(reader, next_line, batch).map_err(|e| match gzip {
                true => DatasetError::Gzip {
                    path: self.path.clone(),
                    reason: e.to_string(),
                },
                false => DatasetError::io(&self.path, e),
            })?,
            Source::Rows(rows, next) => Batch {
                text: String::new(),
                items: (rows.by_ref().take(BATCH_RECORDS))
                    .map(|v| {
                        *next += 1;
                        (*next - 1, Item::Other(RawBody::Value(v)))
                    })
                    .collect(),
            },
        };
        Ok((!batch.is_empty()).then_some(batch))
    }
}

/// Up to a batch of JSON Lines records. Lines split on `\n` only (`\r\n` ends are JSON
/// whitespace); blank lines are not rows but count as lines; a line that is not UTF-8 is kept
/// whole, to be quarantined.
fn read_lines(
    reader: &mut dyn BufRead,
    next_line: &mut usize,
    mut batch: Batch,
) -> std::io::Result<Batch> {
    let mut line = Vec::new();
    while batch.items.len() < BATCH_RECORDS && batch.text.len() < BATCH_BYTES {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let number = *next_line;
        *next_line += 1;
        let mut text: &[u8] = line.strip_suffix(b"\n").unwrap_or(&line);
        if number == 1 {
            text = strip_bom(text);
        }
        let item = match std::str::from_utf8(text) {
            Ok(t) if t.trim().is_empty() => continue,
            Ok(t) => {
                let start = batch.text.len();
                batch.text.push_str(t);
                Item::Text(start, batch.text.len())
            }
            Err(e) => Item::Other(RawBody::NotUtf8 {
                lossy: String::from_utf8_lossy(text).into_owned(),
                at: e.valid_up_to(),
            }),
        };
        batch.items.push((number, item));
    }
    Ok(batch)
}

/// Whether a JSON Lines record opens an object (what [`Sniff`] looks for).
pub fn starts_like_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// How many leading records decide whether a JSON Lines file holds objects.
pub const SNIFF_RECORDS: usize = 1000;

/// Whether a JSON Lines file holds objects: one of its first [`SNIFF_RECORDS`] records must be
/// an object. A file in which none is (binary garbage, a gzip file without `.gz`, a JSON
/// array) is rejected as a whole, naming its first record.
#[derive(Debug, Default)]
pub struct Sniff {
    seen: usize,
    objects: bool,
    first: Option<(usize, std::result::Result<(), String>)>,
}

impl Sniff {
    /// Notes one record in file order: whether its text [`starts_like_object`] and whether it
    /// parses (or why not).
    pub fn observe(&mut self, line: usize, object: bool, parsed: std::result::Result<(), String>) {
        if self.seen < SNIFF_RECORDS {
            self.objects |= object && parsed.is_ok();
            self.seen += 1;
        }
        if self.first.is_none() {
            self.first = Some((line, parsed));
        }
    }

    /// The verdict, once the file (or its first [`SNIFF_RECORDS`] records) has been seen.
    pub fn finish(self, path: &Path) -> Result<()> {
        let Some((line, parsed)) = self.first else {
            return Ok(());
        };
        if self.objects {
            return Ok(());
        }
        let reason = match parsed {
            Err(e) => format!("line {line}: {e}"),
            Ok(()) => format!("line {line}: not a JSON object"),
        };
        Err(DatasetError::FormatMismatch {
            path: path.to_path_buf(),
            expected: "JSON Lines (one object per line)".into(),
            reason,
        })
    }
}
