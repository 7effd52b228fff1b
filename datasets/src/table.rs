//! Every Polars call of the crate, behind small functions (Polars' API moves between
//! releases): table rows as JSON for the adapters, and the Parquet tables Ember writes and
//! reads (preference pairs, quarantine, SFT demonstrations, prompts), and the two generic
//! `read_parquet` / `write_parquet` every other crate uses for its own tables.
use std::fs::File;
use std::path::Path;

use polars::prelude::*;
use serde_json::Value;

use crate::adapters::Turn;
use crate::error::{DatasetError, Result};

mod batched;
pub use batched::{PairWriter, QuarantineWriter, ROW_GROUP_BYTES};

/// One preference pair as stored in `train/val/test.parquet`. `gold_*` are set by `synth` only.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRow {
    pub id: String,
    pub source: String,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub margin: Option<f32>,
    pub tie: bool,
    pub gold_chosen: Option<f32>,
    pub gold_rejected: Option<f32>,
}

/// One dropped row of `quarantine.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineRow {
    pub source: String,
    pub line: u64,
    pub reason: String,
    pub detail: String,
    pub raw: String,
}

/// A whole Parquet file as a `DataFrame`. Every Parquet read in Ember goes through here.
pub fn read_parquet(path: impl AsRef<Path>) -> Result<DataFrame> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| DatasetError::table(path, e))
}

/// Writes `df` to `path` (created or truncated) with Polars' default Parquet options
/// (zstd, statistics). Every Parquet write in Ember goes through here, so files stay
/// byte-identical across writers.
pub fn write_parquet(path: impl AsRef<Path>, df: &mut DataFrame) -> Result<()> {
    let path = path.as_ref();
    let file = File::create(path).map_err(|e| DatasetError::io(path, e))?;
    ParquetWriter::new(file)
        .finish(df)
        .map_err(|e| DatasetError::table(path, e))?;
    Ok(())
}

/// The rows of a Parquet file as JSON objects.
pub fn read_parquet_rows(path: &Path) -> Result<Vec<Value>> {
    let df = read_parquet(path).map_err(|e| DatasetError::FormatMismatch {
        path: path.to_path_buf(),
        expected: "a Parquet file".into(),
        reason: e.to_string(),
    })?;
    df_to_rows(&df, path)
}

/// The rows of a CSV file (header row required) as JSON objects; all cells are strings.
pub fn read_csv_rows(path: &Path) -> Result<Vec<Value>> {
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(|e| DatasetError::FormatMismatch {
            path: path.to_path_buf(),
            expected: "a CSV file with a header row".into(),
            reason: csv_reason(&e.to_string()),
        })?;
    df_to_rows(&df, path)
}

/// Polars' CSV error in Ember's terms: its first line only (the rest suggests Polars options
/// that `ember` does not have), and a ragged row said plainly. Such a file is refused whole,
/// as pandas' `read_csv` refuses it: cutting the extra fields would alter rows silently.
fn csv_reason(polars: &str) -> String {
    if polars.contains("found more fields than defined") {
        return "a row has more fields than the header (unquoted commas?); rows are never cut to fit".into();
    }
    polars.lines().next().unwrap_or(polars).trim().to_string()
}

fn df_to_rows(df: &DataFrame, path: &Path) -> Result<Vec<Value>> {
    let columns = df.columns();
    let mut rows = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let mut obj = serde_json::Map::with_capacity(columns.len());
        for col in columns {
            let av = col.get(i).map_err(|e| DatasetError::table(path, e))?;
            obj.insert(col.name().to_string(), any_to_json(&av));
        }
        rows.push(Value::Object(obj));
    }
    Ok(rows)
}

fn any_to_json(av: &AnyValue) -> Value {
    match av {
        AnyValue::Null => Value::Null,
        AnyValue::Boolean(b) => Value::Bool(*b),
        AnyValue::String(s) => Value::String(s.to_string()),
        AnyValue::StringOwned(s) => Value::String(s.to_string()),
        AnyValue::Float32(f) => serde_json::json!(f),
        AnyValue::Float64(f) => serde_json::json!(f),
        AnyValue::List(s) => Value::Array(
            (0..s.len())
                .map(|i| s.get(i).map(|v| any_to_json(&v)).unwrap_or(Value::Null))
                .collect(),
        ),
        AnyValue::Struct(_, _, fields) => Value::Object(
            fields
                .iter()
                .zip(av._iter_struct_av())
                .map(|(f, v)| (f.name().to_string(), any_to_json(&v)))
                .collect(),
        ),
        AnyValue::StructOwned(payload) => Value::Object(
            payload
                .1
                .iter()
                .zip(payload.0.iter())
                .map(|(f, v)| (f.name().to_string(), any_to_json(v)))
                .collect(),
        ),
        other if other.is_integer() => match other.extract::<i64>() {
            Some(i) => serde_json::json!(i),
            None => serde_json::json!(other.extract::<f64>()),
        },
        other => Value::String(other.to_string()),
    }
}

fn str_col<'a>(name: &str, values: impl Iterator<Item = &'a str>) -> Column {
    Column::new(name.into(), values.collect::<Vec<&str>>())
}

/// Writes preference pairs. `turns` (one list per row) adds a `prompt_turns` column of
/// `{role, text}` structs; `gold` adds `gold_chosen` / `gold_rejected`.
pub fn write_pairs(
    path: &Path,
    rows: &[PairRow],
    turns: Option<&[Vec<Turn>]>,
    gold: bool,
) -> Result<()> {
    let mut df = pairs_frame(rows, turns, gold).map_err(|e| DatasetError::table(path, e))?;
    write_parquet(path, &mut df)
}

/// The frame [`write_pairs`] writes.
fn pairs_frame(
    rows: &[PairRow],
    turns: Option<&[Vec<Turn>]>,
    gold: bool,
) -> PolarsResult<DataFrame> {
    let mut cols = vec![
        str_col("id", rows.iter().map(|r| r.id.as_str())),
        str_col("source", rows.iter().map(|r| r.source.as_str())),
        str_col("prompt", rows.iter().map(|r| r.prompt.as_str())),
        str_col("chosen", rows.iter().map(|r| r.chosen.as_str())),
        str_col("rejected", rows.iter().map(|r| r.rejected.as_str())),
        Column::new(
            "margin".into(),
            rows.iter().map(|r| r.margin).collect::<Vec<_>>(),
        ),
        Column::new("tie".into(), rows.iter().map(|r| r.tie).collect::<Vec<_>>()),
    ];
    if gold {
        cols.push(Column::new(
            "gold_chosen".into(),
            rows.iter().map(|r| r.gold_chosen).collect::<Vec<_>>(),
        ));
        cols.push(Column::new(
            "gold_rejected".into(),
            rows.iter().map(|r| r.gold_rejected).collect::<Vec<_>>(),
        ));
    }
    if let Some(turns) = turns {
        cols.push(turns_column(turns)?);
    }
    DataFrame::new(rows.len(), cols)
}

/// `List(Struct{role, text})`, one list per row.
fn turns_column(turns: &[Vec<Turn>]) -> PolarsResult<Column> {
    // One struct series of every turn; each row's list is a slice of it (no per-row copy).
    let all = || turns.iter().flatten();
    let role = Series::new(
        "role".into(),
        all().map(|t| t.role.as_str()).collect::<Vec<_>>(),
    );
    let text = Series::new(
        "text".into(),
        all().map(|t| t.text.as_str()).collect::<Vec<_>>(),
    );
    let flat = StructChunked::from_series("turn".into(), role.len(), [role, text].iter())?;
    let flat = flat.into_series();
    let mut lists = Vec::with_capacity(turns.len());
    let mut offset = 0;
    for row in turns {
        lists.push(flat.slice(offset as i64, row.len()));
        offset += row.len();
    }
    let mut col = Series::new("prompt_turns".into(), lists);
    if turns.is_empty() {
        let dtype = DataType::List(Box::new(DataType::Struct(vec![
            Field::new("role".into(), DataType::String),
            Field::new("text".into(), DataType::String),
        ])));
        col = Series::new_empty("prompt_turns".into(), &dtype);
    }
    Ok(col.into())
}

/// Writes `quarantine.parquet`.
pub fn write_quarantine(path: &Path, rows: &[QuarantineRow]) -> Result<()> {
    let mut df = quarantine_frame(rows).map_err(|e| DatasetError::table(path, e))?;
    write_parquet(path, &mut df)
}

/// The frame [`write_quarantine`] writes.
fn quarantine_frame(rows: &[QuarantineRow]) -> PolarsResult<DataFrame> {
    let cols = vec![
        str_col("source", rows.iter().map(|r| r.source.as_str())),
        Column::new(
            "line".into(),
            rows.iter().map(|r| r.line).collect::<Vec<_>>(),
        ),
        str_col("reason", rows.iter().map(|r| r.reason.as_str())),
        str_col("detail", rows.iter().map(|r| r.detail.as_str())),
        str_col("raw", rows.iter().map(|r| r.raw.as_str())),
    ];
    DataFrame::new(rows.len(), cols)
}

/// Writes `sft.parquet`: `prompt`, `answer`, `correct`.
pub fn write_sft(path: &Path, rows: &[(String, String, bool)]) -> Result<()> {
    let cols = vec![
        str_col("prompt", rows.iter().map(|r| r.0.as_str())),
        str_col("answer", rows.iter().map(|r| r.1.as_str())),
        Column::new(
            "correct".into(),
            rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        ),
    ];
    let mut df = DataFrame::new(rows.len(), cols).map_err(|e| DatasetError::table(path, e))?;
    write_parquet(path, &mut df)
}

/// Writes a one-column `prompt` table.
pub fn write_prompts(path: &Path, prompts: &[String]) -> Result<()> {
    let cols = vec![str_col("prompt", prompts.iter().map(String::as_str))];
    let mut df = DataFrame::new(prompts.len(), cols).map_err(|e| DatasetError::table(path, e))?;
    write_parquet(path, &mut df)
}

fn column<'a>(df: &'a DataFrame, path: &Path, name: &str) -> Result<&'a Column> {
    df.column(name).map_err(|_| DatasetError::MissingColumn {
        path: path.to_path_buf(),
        column: name.into(),
    })
}

/// The text column `name` of `df` (read from `path`); nulls become empty strings.
pub fn strings(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<String>> {
    let col = column(df, path, name)?;
    let ca = col.str().map_err(|_| DatasetError::ColumnType {
        path: path.to_path_buf(),
        column: name.into(),
        found: col.dtype().to_string(),
        expected: "str".into(),
    })?;
    Ok(ca
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect())
}

/// An optional numeric column as `f32` (absent column → all `None`).
fn opt_f32s(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<Option<f32>>> {
    let Ok(col) = df.column(name) else {
        return Ok(vec![None; df.height()]);
    };
    let cast = col
        .cast(&DataType::Float32)
        .map_err(|_| DatasetError::ColumnType {
            path: path.to_path_buf(),
            column: name.into(),
            found: col.dtype().to_string(),
            expected: "a number".into(),
        })?;
    let ca = cast.f32().map_err(|e| DatasetError::table(path, e))?;
    Ok(ca.iter().collect())
}

fn bools(df: &DataFrame, path: &Path, name: &str) -> Result<Vec<bool>> {
    let col = column(df, path, name)?;
    let ca = col.bool().map_err(|_| DatasetError::ColumnType {
        path: path.to_path_buf(),
        column: name.into(),
        found: col.dtype().to_string(),
        expected: "bool".into(),
    })?;
    Ok(ca.iter().map(|v| v.unwrap_or(false)).collect())
}

/// Reads a preference table written by `ingest` or `synth`.
pub fn read_pairs(path: impl AsRef<Path>) -> Result<Vec<PairRow>> {
    let path = path.as_ref();
    let df = read_parquet(path)?;
    let [id, source, prompt, chosen, rejected] =
        ["id", "source", "prompt", "chosen", "rejected"].map(|c| strings(&df, path, c));
    let (margin, tie) = (opt_f32s(&df, path, "margin")?, bools(&df, path, "tie")?);
    let (gc, gr) = (
        opt_f32s(&df, path, "gold_chosen")?,
        opt_f32s(&df, path, "gold_rejected")?,
    );
    let rows = itertools_zip(id?, source?, prompt?, chosen?, rejected?)
        .zip(margin.into_iter().zip(tie))
        .zip(gc.into_iter().zip(gr))
        .map(
            |(
                ((id, source, prompt, chosen, rejected), (margin, tie)),
                (gold_chosen, gold_rejected),
            )| PairRow {
                id,
                source,
                prompt,
                chosen,
                rejected,
                margin,
                tie,
                gold_chosen,
                gold_rejected,
            },
        )
        .collect();
    Ok(rows)
}

fn itertools_zip(
    a: Vec<String>,
    b: Vec<String>,
    c: Vec<String>,
    d: Vec<String>,
    e: Vec<String>,
) -> impl Iterator<Item = (String, String, String, String, String)> {
    a.into_iter()
        .zip(b)
        .zip(c)
        .zip(d)
        .zip(e)
        .map(|((((a, b), c), d), e)| (a, b, c, d, e))
}

/// The `prompt` column of a Parquet table, or the `prompt` field of each JSON Lines record.
pub fn read_prompts(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let name = path.to_string_lossy().to_lowercase();
    if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
        let records = crate::read::read_file(path)?;
        return records
            .iter()
            .map(|r| {
                let bad = |detail: String| DatasetError::BadRow {
                    path: path.display().to_string(),
                    line: r.line,
                    reason: "missing_field".into(),
                    detail,
                };
                let v = r.parse().map_err(bad)?;
                v.get("prompt")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad("no string field `prompt`".into()))
            })
            .collect();
    }
    strings(&read_parquet(path)?, path, "prompt")
}

/// Reads `quarantine.parquet`.
pub fn read_quarantine(path: impl AsRef<Path>) -> Result<Vec<QuarantineRow>> {
    let path = path.as_ref();
    let df = read_parquet(path)?;
    let lines = column(&df, path, "line")?
        .cast(&DataType::UInt64)
        .map_err(|e| DatasetError::table(path, e))?;
    let lines: Vec<u64> = lines
        .u64()
        .map_err(|e| DatasetError::table(path, e))?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect();
    let [source, reason, detail, raw] =
        ["source", "reason", "detail", "raw"].map(|c| strings(&df, path, c));
    Ok(source?
        .into_iter()
        .zip(lines)
        .zip(reason?.into_iter().zip(detail?).zip(raw?))
        .map(|((source, line), ((reason, detail), raw))| QuarantineRow {
            source,
            line,
            reason,
            detail,
            raw,
        })
        .collect())
}

/// `(prompt, answer, correct)` of `sft.parquet`.
pub fn read_sft_rows(path: impl AsRef<Path>) -> Result<Vec<(String, String, bool)>> {
    let path = path.as_ref();
    let df = read_parquet(path)?;
    let (p, a, c) = (
        strings(&df, path, "prompt")?,
        strings(&df, path, "answer")?,
        bools(&df, path, "correct")?,
    );
    Ok(p.into_iter()
        .zip(a)
        .zip(c)
        .map(|((p, a), c)| (p, a, c))
        .collect())
}

/// `(prompt, answer)` of an SFT table (`sft.parquet`).
pub fn read_sft(path: impl AsRef<Path>) -> Result<Vec<(String, String)>> {
    let path = path.as_ref();
    let df = read_parquet(path)?;
    let prompts = strings(&df, path, "prompt")?;
    let answers = strings(&df, path, "answer")?;
    Ok(prompts.into_iter().zip(answers).collect())
}
