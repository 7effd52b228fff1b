//! `ember ingest` end to end: the real binary on good input and on each kind of unreadable
//! input (exit code, message naming the file, no output directory left behind).
use std::path::{Path, PathBuf};

mod common;
use common::ember_abs as ember;

fn hh_line(prompt: &str, chosen: &str, rejected: &str) -> String {
    serde_json::json!({
        "chosen": format!("\n\nHuman: {prompt}\n\nAssistant: {chosen}"),
        "rejected": format!("\n\nHuman: {prompt}\n\nAssistant: {rejected}"),
    })
    .to_string()
}

fn good_text() -> String {
    let lines: Vec<String> = (0..40)
        .map(|i| hh_line(&format!("question {i}"), "good", "bad"))
        .collect();
    lines.join("\n") + "\n"
}

fn good_input(dir: &Path) -> PathBuf {
    let path = dir.join("good.jsonl");
    std::fs::write(&path, good_text()).unwrap();
    path
}

/// The first half of a gzip member holding `text` in one stored deflate block (RFC 1951 §3.2.4):
/// a valid start that ends early.
fn truncated_gzip(text: &str) -> Vec<u8> {
    let data = text.as_bytes();
    let len = data.len() as u16;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x01];
    out.extend(len.to_le_bytes());
    out.extend((!len).to_le_bytes());
    out.extend(&data[..data.len() / 2]);
    out
}

/// Runs a failing ingest and checks the exit code, that stderr names the file, and that
/// neither OUT nor OUT.partial exists afterwards.
fn assert_fails_cleanly(input: &Path, format: &str, expect_code: i32, expect_in_msg: &str) {
    assert_fails_cleanly_with(input, format, &[], expect_code, expect_in_msg)
}

fn assert_fails_cleanly_with(
    input: &Path,
    format: &str,
    extra: &[&str],
    expect_code: i32,
    expect_in_msg: &str,
) {
    let out = input.parent().unwrap().join("out");
    let mut args = vec![
        "ingest",
        "--format",
        format,
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let o = ember(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(expect_code), "{stderr}");
    assert!(
        stderr.contains(&input.display().to_string()),
        "message must name the file: {stderr}"
    );
    assert!(
        stderr.contains(expect_in_msg),
        "expected `{expect_in_msg}` in: {stderr}"
    );
    assert!(!out.exists(), "no output directory");
    assert!(
        !input.parent().unwrap().join("out.partial").exists(),
        "no staging directory"
    );
}

#[test]
fn good_input_writes_splits_quarantine_stats_and_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let input = good_input(tmp.path());
    let out = tmp.path().join("out");
    let o = ember(&[
        "ingest",
        "--format",
        "hh-rlhf",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--split",
        "0.5,0.25,0.25",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "train.parquet",
        "val.parquet",
        "test.parquet",
        "quarantine.parquet",
        "stats.json",
        "manifest.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["rows_read"], 40);
    assert_eq!(stats["kept"], 40);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["stage"], "ingest");
    assert_eq!(manifest["inputs"][0]["path"], input.display().to_string());
    assert_eq!(
        manifest["inputs"][0]["fingerprint"].as_str().unwrap().len(),
        64,
        "sha256 of the input"
    );
    let total: usize = ["train", "val", "test"]
        .iter()
        .map(|s| {
            datasets::read_pairs(out.join(format!("{s}.parquet")))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(total, 40);
    assert!(!tmp.path().join("out.partial").exists());
}

#[test]
fn missing_file_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    assert_fails_cleanly(
        &tmp.path().join("nope.jsonl"),
        "hh-rlhf",
        2,
        "does not exist",
    );
}

#[test]
fn truncated_gzip_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.jsonl.gz");
    std::fs::write(&cut, truncated_gzip(&good_text())).unwrap();
    assert_fails_cleanly(&cut, "hh-rlhf", 2, "gzip");
}

#[test]
fn binary_garbage_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.jsonl");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&junk, bytes).unwrap();
    assert_fails_cleanly(&junk, "hh-rlhf", 2, "does not look like");
}

#[test]
fn a_file_that_does_not_match_the_format_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bar = tmp.path().join("bar.json");
    std::fs::write(
        &bar,
        r#"[{"input": "q", "output_1": "a", "output_2": "b", "label": 1}]"#,
    )
    .unwrap();
    assert_fails_cleanly(&bar, "hh-rlhf", 2, "missing_field");
    let panda = tmp.path().join("pairs.jsonl");
    std::fs::write(&panda, hh_line("q", "a", "b") + "\n").unwrap();
    assert_fails_cleanly(&panda, "llmbar", 2, "field `input` is missing");
}

#[test]
fn strict_mode_fails_at_the_first_bad_row() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("rows.jsonl");
    let text = [
        hh_line("a", "x", "y"),
        "{oops".to_string(),
        hh_line("b", "x", "x"),
    ]
    .join("\n");
    std::fs::write(&input, text).unwrap();
    assert_fails_cleanly_with(
        &input,
        "hh-rlhf",
        &["--strict"],
        2,
        "rows.jsonl:2: invalid_json",
    );
    let out = tmp.path().join("out");
    let o = ember(&[
        "ingest",
        "--format",
        "hh-rlhf",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "without --strict bad rows are quarantined"
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let input = good_input(tmp.path());
    let out = tmp.path().join("out");
    for extra in [["--split", "0.5,0.6,0.1"], ["--map", "prompt=q"]] {
        let mut args = vec![
            "ingest",
            "--format",
            "hh-rlhf",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = ember(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.exists());
    }
}

/// More lines than one read batch and more text than one Parquet row group: 4,000 distinct
/// pairs, a broken line, then the 4,000 pairs again in reverse order (each repeat in another
/// batch than its first). Every row lands where a whole-file pass puts it, and the scratch files
/// are gone.
#[test]
fn an_input_of_many_batches_streams_with_every_row_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.jsonl");
    let filler = "x".repeat(2500);
    let pair = |i: usize| {
        hh_line(
            &format!("q{i}"),
            &format!("good {i} {filler}"),
            &format!("bad {i} {filler}"),
        )
    };
    let mut lines: Vec<String> = (0..4000).map(pair).collect();
    lines.push("{broken".to_string());
    lines.extend((0..4000).rev().map(pair));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = tmp.path().join("out");
    let o = ember(&[
        "ingest",
        "--format",
        "hh-rlhf",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(
        (stats["rows_read"].as_u64(), stats["kept"].as_u64()),
        (Some(8001), Some(4000))
    );
    assert_eq!(stats["reasons"]["duplicate"], 4000);
    assert_eq!(stats["reasons"]["invalid_json"], 1);
    let q = datasets::table::read_quarantine(out.join("quarantine.parquet")).unwrap();
    assert_eq!(q.len(), 4001);
    assert_eq!((q[0].line, q[0].reason.as_str()), (4001, "invalid_json"));
    for (r, line) in q[1..].iter().zip(4002u64..) {
        assert_eq!(r.line, line);
        assert_eq!(r.detail, format!("duplicate of big.jsonl:{}", 8002 - line));
        let raw: serde_json::Value = serde_json::from_str(&r.raw).unwrap();
        assert_eq!(
            raw["prompt"],
            format!("\n\nHuman: q{}\n\nAssistant:", 8001 - line)
        );
    }
    let mut kept = 0;
    for split in ["train", "val", "test"] {
        let rows = datasets::read_pairs(out.join(format!("{split}.parquet"))).unwrap();
        assert!(
            rows.windows(2).all(|w| w[0].id < w[1].id),
            "{split} in id order"
        );
        kept += rows.len();
    }
    assert_eq!(kept, 4000);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let expected = [
        "manifest.json",
        "quarantine.parquet",
        "stats.json",
        "test.parquet",
        "train.parquet",
        "val.parquet",
    ];
    assert_eq!(names, expected, "no scratch file is left");
}
