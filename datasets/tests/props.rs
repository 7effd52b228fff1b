//! Property tests of the ingest record parsers: whatever the bytes or JSON values, ingest never
//! panics, and every candidate row is either kept or quarantined (`rows_read == kept +
//! quarantined`, per file and in total).
use std::path::PathBuf;

use datasets::{ingest, Format, IngestOptions};
use proptest::prelude::*;
use serde_json::Value;

const FORMATS: [&str; 7] = [
    "hh-rlhf",
    "llmbar",
    "pandalm",
    "ultrafeedback",
    "shp",
    "arena",
    "generic",
];

/// A well-formed record of each format the file property covers.
const VALID: [(&str, &str); 3] = [
    (
        "hh-rlhf",
        r#"{"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}"#,
    ),
    (
        "generic",
        r#"{"prompt": "q", "chosen": "a", "rejected": "b"}"#,
    ),
    (
        "llmbar",
        r#"{"input": "q", "output_1": "a", "output_2": "b", "label": 1}"#,
    ),
];

/// The field names the adapters look for, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("prompt".to_string()),
        Just("chosen".to_string()),
        Just("rejected".to_string()),
        Just("input".to_string()),
        Just("output_1".to_string()),
        Just("output_2".to_string()),
        Just("label".to_string()),
        Just("instruction".to_string()),
        Just("completions".to_string()),
        Just("history".to_string()),
        Just("winner".to_string()),
        "[a-z_]{1,8}",
    ]
}

/// Any JSON value, nested a few levels, with the field names the adapters look for.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        Just(Value::String("\n\nHuman: hi\n\nAssistant: yo".into())),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A file's bytes: JSON records, raw bytes, blank lines and CRLF ends, mixed.
fn lines() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        6 => prop::collection::btree_map(key(), json(), 0..8)
            .prop_map(|m| Value::Object(m.into_iter().collect()).to_string().into_bytes()),
        1 => json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
        1 => Just(Vec::new()),
    ];
    (
        prop::collection::vec(line, 0..12),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(lines, crlf, bom)| {
            let mut out = if bom {
                b"\xEF\xBB\xBF".to_vec()
            } else {
                Vec::new()
            };
            for l in lines {
                out.extend(l);
                out.extend(if crlf { &b"\r\n"[..] } else { &b"\n"[..] });
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn adapting_any_json_value_never_panics(v in json(), f in 0..FORMATS.len()) {
        let format = Format::parse(FORMATS[f], None).unwrap();
        prop_assert!(!format.adapt(&v).is_empty(), "every record yields a pair or a reason");
    }

    #[test]
    fn ingesting_any_bytes_never_panics_and_every_row_is_counted(
        bytes in lines(),
        f in 0..VALID.len(),
        at in any::<prop::sample::Index>(),
        strict in any::<bool>(),
    ) {
        // One well-formed record somewhere, so that the file is of the format and its other
        // lines are rows to keep or quarantine (not a wrong file refused whole).
        let mut bytes = bytes;
        let cut = at.index(bytes.len() + 1);
        let cut = bytes[..cut].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let valid = format!("{}\n", VALID[f].1);
        bytes.splice(cut..cut, valid.bytes());
        let dir = tempfile::tempdir().unwrap();
        let input: PathBuf = dir.path().join("in.jsonl");
        std::fs::write(&input, &bytes).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let opts = IngestOptions {
            format: Format::parse(VALID[f].0, None).unwrap(),
            split: [0.8, 0.1, 0.1],
            seed: 0,
            strict,
            keep_ties: false,
            max_chars: None,
            drop_degenerate: None,
        };
        let result = ingest(&[input], &opts, &out);
        prop_assert!(strict || result.is_ok(), "{:?}", result.err());
        if let Ok(stats) = result {
            prop_assert_eq!(stats.rows_read, stats.kept + stats.quarantined);
            for file in &stats.files {
                prop_assert_eq!(file.rows_read, file.kept + file.quarantined);
            }
            prop_assert_eq!(stats.splits.values().sum::<usize>(), stats.kept);
        }
    }
}
