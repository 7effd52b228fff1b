//! Format adapters: one JSON record in, candidate preference pairs (or the reason it has none)
//! out. Pure functions over `serde_json::Value`, whatever file type the record came from.
mod hh;
mod pairwise;
mod ratings;

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use hh::{parse_line as parse_hh_line, parse_turns, split_transcripts, turn_spans};

/// Why a row was dropped; the names are the `reason` column of `quarantine.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    InvalidJson,
    /// A line whose bytes are not UTF-8 (e.g. Latin-1): quarantined as it is, never re-decoded.
    InvalidUtf8,
    MissingField,
    WrongType,
    EmptyAnswer,
    IdenticalAnswers,
    NoAssistantTurn,
    TooLong,
    Tie,
    Duplicate,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::InvalidJson,
        Reason::InvalidUtf8,
        Reason::MissingField,
        Reason::WrongType,
        Reason::EmptyAnswer,
        Reason::IdenticalAnswers,
        Reason::NoAssistantTurn,
        Reason::TooLong,
        Reason::Tie,
        Reason::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::EmptyAnswer => "empty_answer",
            Reason::IdenticalAnswers => "identical_answers",
            Reason::NoAssistantTurn => "no_assistant_turn",
            Reason::TooLong => "too_long",
            Reason::Tie => "tie",
            Reason::Duplicate => "duplicate",
        }
    }

    /// Reasons that say the row does not have the shape of the format at all.
    pub fn is_structural(self) -> bool {
        matches!(
            self,
            Reason::InvalidJson | Reason::InvalidUtf8 | Reason::MissingField | Reason::WrongType
        )
    }
}

/// A dropped candidate: the reason and a short human-readable detail (e.g. the field name).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// One conversation turn of a prompt (`role` is `human`, `assistant` or `text` for anything
/// before the first marker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: String,
    pub text: String,
}

/// A candidate preference pair as an adapter sees it. For a tie, `chosen`/`rejected` are just
/// the first and second answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub margin: Option<f32>,
    pub tie: bool,
    /// The prompt's turns, for conversational formats.
    pub turns: Option<Vec<Turn>>,
}

impl Pair {
    fn new(prompt: String, chosen: String, rejected: String) -> Self {
        Self {
            prompt,
            chosen,
            rejected,
            margin: None,
            tie: false,
            turns: None,
        }
    }
}

/// What an adapter makes of one record: usually one candidate, several for rating formats.
pub type Adapted = Vec<Result<Pair, Rejection>>;

/// `--map prompt=COL,chosen=COL,rejected=COL[,margin=COL]` of the `generic` format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMap {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub margin: Option<String>,
}

impl Default for ColumnMap {
    fn default() -> Self {
        Self {
            prompt: "prompt".into(),
            chosen: "chosen".into(),
            rejected: "rejected".into(),
            margin: None,
        }
    }
}

impl FromStr for ColumnMap {
    type Err = String;

    /// Parses `prompt=COL,chosen=COL,rejected=COL[,margin=COL]`; omitted keys keep their names.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut map = ColumnMap::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, col) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not KEY=COLUMN"))?;
            let col = col.trim().to_string();
            match key.trim() {
                "prompt" => map.prompt = col,
                "chosen" => map.chosen = col,
                "rejected" => map.rejected = col,
                "margin" => map.margin = Some(col),
                other => {
                    return Err(format!(
                        "unknown key `{other}` (expected prompt, chosen, rejected, margin)"
                    ))
                }
            }
        }
        Ok(map)
    }
}

/// The supported record formats (`--format`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Anthropic HH-RLHF: `{chosen, rejected}` full transcripts.
    HhRlhf,
    /// LLMBar: `{input, output_1, output_2, label: 1|2}`.
    Llmbar,
    /// PandaLM: `{instruction, input, response1, response2, annotator1..3 ∈ {0,1,2}}`.
    Pandalm,
    /// UltraFeedback: `{instruction, completions: [{response, overall_score}]}`.
    Ultrafeedback,
    /// Stanford SHP: `{history, human_ref_A, human_ref_B, labels, score_A, score_B}`.
    Shp,
    /// Chatbot Arena: `{conversation_a, conversation_b | prompt, response_a, response_b, winner}`.
    Arena,
    /// AlpacaEval's judgments: `{instruction, output_1, output_2, preference ∈ [1, 2]}`, a
    /// judge model's (1: output_1 wins, 2: output_2 wins, fractions: the probability that
    /// output_2 wins, plus 1). Judgments of the same pair are averaged ([`Format::aggregates`]).
    AlpacaEval,
    /// Any pairwise table, with a column map.
    Generic(ColumnMap),
}

impl Format {
    /// Parses a `--format` name; `generic` takes the column map.
    pub fn parse(name: &str, map: Option<ColumnMap>) -> Result<Self, String> {
        let f = match name {
            "hh-rlhf" => Format::HhRlhf,
            "llmbar" => Format::Llmbar,
            "pandalm" => Format::Pandalm,
            "ultrafeedback" => Format::Ultrafeedback,
            "shp" => Format::Shp,
            "arena" => Format::Arena,
            "alpaca-eval" => Format::AlpacaEval,
            "generic" => return Ok(Format::Generic(map.unwrap_or_default())),
            other => {
                return Err(format!(
                    "unknown format `{other}` (expected hh-rlhf, llmbar, pandalm, \
                     ultrafeedback, shp, arena, alpaca-eval, generic)"
                ))
            }
        };
        if map.is_some() {
            return Err("--map only applies to --format generic".into());
        }
        Ok(f)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Format::HhRlhf => "hh-rlhf",
            Format::Llmbar => "llmbar",
            Format::Pandalm => "pandalm",
            Format::Ultrafeedback => "ultrafeedback",
            Format::Shp => "shp",
            Format::Arena => "arena",
            Format::AlpacaEval => "alpaca-eval",
            Format::Generic(_) => "generic",
        }
    }

    /// Whether empty answers, identical answers and repeated pairs are dropped by default.
    /// LLMBar is a curated benchmark kept as published: its one identical pair, one
    /// whitespace-only answer and five MT-Bench pairs judged twice (each a separate human
    /// vote) stay, counted as `degenerate_kept` in `stats.json`.
    pub fn drops_degenerate(&self) -> bool {
        !matches!(self, Format::Llmbar)
    }

    /// Whether several records judge the same pair and ingest averages them into one row
    /// (AlpacaEval: up to six judge models per pair). The margin of the row is then the mean
    /// signed confidence, and the other judgments are quarantined as `duplicate`, naming it.
    pub fn aggregates(&self) -> bool {
        matches!(self, Format::AlpacaEval)
    }

    /// Candidate pairs of one parsed record.
    pub fn adapt(&self, record: &Value) -> Adapted {
        let Some(obj) = record.as_object() else {
            return vec![Err(Rejection::new(
                Reason::WrongType,
                "row is not a JSON object",
            ))];
        };
        match self {
            Format::HhRlhf => vec![hh::adapt(obj)],
            Format::Llmbar => vec![pairwise::llmbar(obj)],
            Format::Pandalm => vec![pairwise::pandalm(obj)],
            Format::Generic(map) => vec![pairwise::generic(obj, map)],
            Format::Ultrafeedback => ratings::ultrafeedback(obj),
            Format::Shp => vec![ratings::shp(obj)],
            Format::Arena => vec![ratings::arena(obj)],
            Format::AlpacaEval => vec![pairwise::alpaca_eval(obj)],
        }
    }
}

type Object = serde_json::Map<String, Value>;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A required field (a JSON null counts as missing).
fn field<'a>(obj: &'a Object, key: &str) -> Result<&'a Value, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(Rejection::new(
            Reason::MissingField,
            format!("field `{key}` is missing"),
        )),
        Some(v) => Ok(v),
    }
}

fn wrong_type(key: &str, v: &Value, expected: &str) -> Rejection {
    Rejection::new(
        Reason::WrongType,
        format!("field `{key}` is {}, expected {expected}", type_name(v)),
    )
}

/// A required string field.
fn str_field<'a>(obj: &'a Object, key: &str) -> Result<&'a str, Rejection> {
    let v = field(obj, key)?;
    v.as_str().ok_or_else(|| wrong_type(key, v, "a string"))
}

/// A required number field; numeric strings (as CSV cells may be) are accepted.
fn num_field(obj: &Object, key: &str) -> Result<f64, Rejection> {
    let v = field(obj, key)?;
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| wrong_type(key, v, "a number"))
}

/// An optional number field: absent or null → `None`.
fn opt_num_field(obj: &Object, key: &str) -> Result<Option<f64>, Rejection> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => num_field(obj, key).map(Some),
    }
}
