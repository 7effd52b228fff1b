//! Input files → raw records. Paths and globs are expanded in a fixed (sorted) order; each file
//! is read by the reader its extension picks: `.jsonl` / `.jsonl.gz` streamed line by line in
//! bounded [`Batches`] (a line that is not JSON is kept as a record so that it can be
//! quarantined), `.json` as one array, `.parquet` and `.csv` through Polars (see
//! [`crate::table`]), the last three whole. Unreadable files are errors naming the file; bad
//! rows are not.
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{DatasetError, Result};

mod stream;
pub use stream::{starts_like_object, Batch, Batches, Body, Sniff, SNIFF_RECORDS};

/// One input row before parsing. `line` is the 1-based line for JSON Lines and the 1-based row
/// (array element, table row) otherwise.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub line: usize,
    pub body: RawBody,
}

/// A JSON Lines line is parsed later (in parallel); other readers yield parsed values.
#[derive(Debug, Clone)]
pub enum RawBody {
    Text(String),
    Value(Value),
    /// A line that is not UTF-8: the lossy text (for the quarantine) and the byte offset of
    /// the first invalid byte. It is never parsed, so no record is silently re-decoded.
    NotUtf8 {
        lossy: String,
        at: usize,
    },
}

impl RawRecord {
    /// The record as JSON, or why it is not JSON.
    pub fn parse(&self) -> std::result::Result<Value, String> {
        match &self.body {
            RawBody::Text(t) => serde_json::from_str(t).map_err(|e| e.to_string()),
            RawBody::Value(v) => Ok(v.clone()),
            RawBody::NotUtf8 { at, .. } => Err(not_utf8(*at)),
        }
    }

    /// The text kept in quarantine.
    pub fn raw_text(&self) -> String {
        match &self.body {
            RawBody::Text(t) => t.clone(),
            RawBody::Value(v) => v.to_string(),
            RawBody::NotUtf8 { lossy, .. } => lossy.clone(),
        }
    }
}

/// Why a line that is not UTF-8 is not read.
pub fn not_utf8(at: usize) -> String {
    format!("not UTF-8 (invalid byte at offset {at})")
}

/// The readers, picked by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    JsonLines,
    JsonLinesGz,
    JsonArray,
    Parquet,
    Csv,
}

impl FileKind {
    pub fn of(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let kind = if name.ends_with(".jsonl.gz") || name.ends_with(".ndjson.gz") {
            Self::JsonLinesGz
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            Self::JsonLines
        } else if name.ends_with(".json") {
            Self::JsonArray
        } else if name.ends_with(".parquet") {
            Self::Parquet
        } else if name.ends_with(".csv") {
            Self::Csv
        } else {
            return Err(DatasetError::UnsupportedExtension {
                path: path.to_path_buf(),
            });
        };
        Ok(kind)
    }
}

/// Expands files, directories (every supported file below, recursively) and globs into a
/// sorted, de-duplicated list. A path or glob that matches nothing is an error.
pub fn expand_inputs(inputs: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let path = Path::new(input);
        if path.is_dir() {
            let before = out.len();
            collect_dir(path, &mut out)?;
            if out.len() == before {
                return Err(DatasetError::MissingInput {
                    path: format!("{input}/*"),
                });
            }
        } else if path.exists() {
            out.push(path.to_path_buf());
        } else if input.contains(['*', '?', '[']) {
            let paths = glob::glob(input).map_err(|e| DatasetError::BadGlob {
                pattern: input.clone(),
                reason: e.to_string(),
            })?;
            let before = out.len();
            for p in paths {
                let p = p.map_err(|e| DatasetError::io(e.path().to_path_buf(), e.into()))?;
                if p.is_file() {
                    out.push(p);
                }
            }
            if out.len() == before {
                return Err(DatasetError::MissingInput {
                    path: input.clone(),
                });
            }
        } else {
            return Err(DatasetError::MissingInput {
                path: input.clone(),
            });
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| DatasetError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| DatasetError::io(dir, e))?.path();
        if path.is_dir() {
            collect_dir(&path, out)?;
        } else if FileKind::of(&path).is_ok() {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads every record of one file.
pub fn read_file(path: &Path) -> Result<Vec<RawRecord>> {
    let mut records = Vec::new();
    let mut batches = Batches::open(path)?;
    while let Some(batch) = batches.next_batch()? {
        records.extend(batch.into_records());
    }
    if batches.is_json_lines() {
        let mut sniff = Sniff::default();
        for r in records.iter().take(SNIFF_RECORDS) {
            let object = matches!(&r.body, RawBody::Text(t) if starts_like_object(t));
            sniff.observe(r.line, object, r.parse().map(drop));
        }
        sniff.finish(path)?;
    }
    Ok(records)
}

pub(crate) fn json_array(path: &Path) -> Result<Vec<Value>> {
    let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
    let mismatch = |reason: String| DatasetError::FormatMismatch {
        path: path.to_path_buf(),
        expected: "a JSON array of objects".into(),
        reason,
    };
    let value: Value =
        serde_json::from_slice(strip_bom(&bytes)).map_err(|e| mismatch(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(mismatch("the top-level value is not an array".into()));
    };
    Ok(items)
}

/// The bytes after a UTF-8 byte-order mark at the start of a file (as Python's `utf-8-sig`,
/// pandas and Polars read it), or all of them.
pub(crate) fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}
