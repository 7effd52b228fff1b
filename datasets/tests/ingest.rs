//! The ingest pipeline on hand-written files (every quarantine reason, strict mode, file
//! types, format mismatch), property tests on random inputs, and the reference counts on the
//! real data in `../shared/data` (which must be present: those tests fail without it).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use datasets::read::expand_inputs;
use datasets::table::{read_quarantine, write_pairs};
use datasets::{ingest, read_pairs, ColumnMap, DatasetError, Format, IngestOptions, PairRow};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn opts(format: Format) -> IngestOptions {
    IngestOptions {
        format,
        split: [0.8, 0.1, 0.1],
        seed: 0,
        strict: false,
        keep_ties: false,
        max_chars: None,
        drop_degenerate: None,
    }
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn hh(prompt: &str, c: &str, r: &str) -> String {
    json!({"chosen": format!("\n\nHuman: {prompt}\n\nAssistant:{c}"), "rejected": format!("\n\nHuman: {prompt}\n\nAssistant:{r}")}).to_string()
}

fn all_rows(dir: &Path) -> Vec<(String, PairRow)> {
    ["train", "val", "test"]
        .iter()
        .flat_map(|s| {
            read_pairs(dir.join(format!("{s}.parquet")))
                .unwrap()
                .into_iter()
                .map(move |r| (s.to_string(), r))
        })
        .collect()
}

#[test]
fn every_quarantine_reason_is_recorded_with_line_and_raw_text() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("hh.jsonl");
    let lines = vec![
        hh("good", " fine", " bad"),                                   // 1 kept
        "{not json".to_string(),                                       // 2 invalid_json
        json!({"chosen": "\n\nHuman: x\n\nAssistant: a"}).to_string(), // 3 missing_field
        json!({"chosen": 5, "rejected": "x"}).to_string(),             // 4 wrong_type
        hh("q", " ", " answer"),                                       // 5 empty_answer
        hh("q", " same", " same"),                                     // 6 identical_answers
        json!({"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: b"}).to_string(), // 7 no_assistant_turn
        hh(&"long ".repeat(40), " a", " b"),                                       // 8 too_long
        hh("good", " fine", " bad"),                                               // 9 duplicate
        "[1, 2]".to_string(), // 10 wrong_type (not an object)
    ];
    write_lines(&file, &lines);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut o = opts(Format::HhRlhf);
    o.max_chars = Some(100);
    let stats = ingest(std::slice::from_ref(&file), &o, &out).unwrap();
    assert_eq!((stats.rows_read, stats.kept, stats.quarantined), (10, 1, 9));
    let q = read_quarantine(out.join("quarantine.parquet")).unwrap();
    let got: Vec<(u64, &str)> = q.iter().map(|r| (r.line, r.reason.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (2, "invalid_json"),
            (3, "missing_field"),
            (4, "wrong_type"),
            (5, "empty_answer"),
            (6, "identical_answers"),
            (7, "no_assistant_turn"),
            (8, "too_long"),
            (9, "duplicate"),
            (10, "wrong_type"),
        ]
    );
    assert_eq!(q[0].raw, "{not json");
    assert_eq!(q[0].source, "hh.jsonl");
    assert_eq!(q[2].detail, "field `chosen` is a number, expected a string");
    assert_eq!(stats.reasons["duplicate"], 1);
    assert_eq!(stats.reasons["tie"], 0);
    let rows = all_rows(&out);
    assert_eq!(rows.len(), 1);
    let r = &rows[0].1;
    assert_eq!(
        (r.prompt.as_str(), r.chosen.as_str(), r.rejected.as_str()),
        ("\n\nHuman: good\n\nAssistant:", " fine", " bad")
    );
    assert_eq!((r.margin, r.tie), (None, false));
}

#[test]
fn ties_are_quarantined_unless_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("panda.json");
    let rows = json!([
        {"instruction": "i", "input": "", "response1": "a", "response2": "b", "annotator1": 1, "annotator2": 2, "annotator3": 0},
        {"instruction": "j", "input": "", "response1": "a", "response2": "b", "annotator1": 2, "annotator2": 2, "annotator3": 1}
    ]);
    std::fs::write(&file, rows.to_string()).unwrap();
    for keep in [false, true] {
        let out = tmp.path().join(format!("out{keep}"));
        std::fs::create_dir(&out).unwrap();
        let mut o = opts(Format::Pandalm);
        o.keep_ties = keep;
        let stats = ingest(std::slice::from_ref(&file), &o, &out).unwrap();
        assert_eq!(
            (stats.kept, stats.reasons["tie"], stats.ties_kept),
            if keep { (2, 0, 1) } else { (1, 1, 0) }
        );
        let q = read_quarantine(out.join("quarantine.parquet")).unwrap();
        assert_eq!(q.len(), usize::from(!keep));
    }
}

#[test]
fn strict_mode_names_file_line_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("hh.jsonl");
    write_lines(
        &file,
        &[
            hh("a", " x", " y"),
            hh("b", " x", " y"),
            hh("c", " z", " z"),
        ],
    );
    let mut o = opts(Format::HhRlhf);
    o.strict = true;
    let err = ingest(std::slice::from_ref(&file), &o, tmp.path()).unwrap_err();
    assert!(matches!(err, DatasetError::BadRow { line: 3, .. }), "{err}");
    assert!(
        err.to_string().contains("hh.jsonl:3: identical_answers"),
        "{err}"
    );
}

#[test]
fn a_file_of_another_format_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bar.json");
    std::fs::write(
        &file,
        json!([{"input": "q", "output_1": "a", "output_2": "b", "label": 1}]).to_string(),
    )
    .unwrap();
    let err = ingest(
        std::slice::from_ref(&file),
        &opts(Format::HhRlhf),
        tmp.path(),
    )
    .unwrap_err();
    assert!(matches!(err, DatasetError::FormatMismatch { .. }));
    assert!(
        err.to_string().contains("bar.json") && err.to_string().contains("missing_field"),
        "{err}"
    );
}

#[test]
fn csv_and_parquet_inputs_with_a_column_map() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("t.csv");
    std::fs::write(&csv, "q,good,bad,m\nwhat?,yes,no,2.5\n\"a, b\",c,d,\n").unwrap();
    let map: ColumnMap = "prompt=q,chosen=good,rejected=bad,margin=m"
        .parse()
        .unwrap();
    let out = tmp.path().join("o1");
    std::fs::create_dir(&out).unwrap();
    let stats = ingest(&[csv], &opts(Format::Generic(map)), &out).unwrap();
    assert_eq!(stats.kept, 2);
    let mut rows: Vec<PairRow> = all_rows(&out).into_iter().map(|r| r.1).collect();
    rows.sort_by(|a, b| a.prompt.cmp(&b.prompt));
    assert_eq!((rows[0].prompt.as_str(), rows[0].margin), ("a, b", None));
    assert_eq!(
        (rows[1].chosen.as_str(), rows[1].margin),
        ("yes", Some(2.5))
    );
    // A table written by ingest reads back through the parquet reader.
    let pq = tmp.path().join("pairs.parquet");
    write_pairs(&pq, &rows, None, false).unwrap();
    let out2 = tmp.path().join("o2");
    std::fs::create_dir(&out2).unwrap();
    let map: ColumnMap = "margin=margin".parse().unwrap();
    let stats = ingest(&[pq], &opts(Format::Generic(map)), &out2).unwrap();
    let mut again: Vec<PairRow> = all_rows(&out2).into_iter().map(|r| r.1).collect();
    again.sort_by(|a, b| a.prompt.cmp(&b.prompt));
    assert_eq!(stats.kept, 2);
    assert_eq!(
        again.iter().map(|r| (&r.id, r.margin)).collect::<Vec<_>>(),
        rows.iter().map(|r| (&r.id, r.margin)).collect::<Vec<_>>()
    );
}

/// Random hh-rlhf lines from a small vocabulary, so duplicates, identical and empty answers,
/// shared prompts and broken lines all occur.
fn random_lines(rng: &mut impl Rng, n: usize) -> Vec<String> {
    let words = ["a", "b", "c", " ", "", "dd"];
    let valid = hh("p0", " a", " b");
    std::iter::once(valid)
        .chain((1..n).map(|_| match rng.random_range(0..20) {
            0 => "{broken".to_string(),
            1 => json!({"chosen": "x"}).to_string(),
            _ => {
                let p = format!("p{}", rng.random_range(0..15));
                let c = words[rng.random_range(0..words.len())];
                let r = words[rng.random_range(0..words.len())];
                hh(&p, &format!(" {c}"), &format!(" {r}"))
            }
        }))
        .collect()
}

#[test]
fn property_rows_read_is_kept_plus_quarantined_and_splits_are_disjoint_and_order_free() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    for case in 0..12 {
        let tmp = tempfile::tempdir().unwrap();
        let n = rng.random_range(1..120);
        let mut lines = random_lines(&mut rng, n);
        let a = tmp.path().join("a.jsonl");
        write_lines(&a, &lines);
        lines.shuffle(&mut rng);
        let b_dir = tmp.path().join("shuffled");
        std::fs::create_dir(&b_dir).unwrap();
        let b = b_dir.join("a.jsonl");
        write_lines(&b, &lines);
        let mut o = opts(Format::HhRlhf);
        o.seed = case;
        let (out_a, out_b) = (tmp.path().join("oa"), tmp.path().join("ob"));
        std::fs::create_dir(&out_a).unwrap();
        std::fs::create_dir(&out_b).unwrap();
        let sa = ingest(&[a], &o, &out_a).unwrap();
        let sb = ingest(&[b], &o, &out_b).unwrap();
        assert_eq!(sa.rows_read, n);
        assert_eq!(sa.rows_read, sa.kept + sa.quarantined, "case {case}");
        assert_eq!(sa.kept, sa.splits.values().sum::<usize>());
        assert_eq!(sa.quarantined, sa.reasons.values().sum::<usize>());
        let mut split_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (split, row) in all_rows(&out_a) {
            split_of.entry(row.prompt).or_default().insert(split);
        }
        assert!(
            split_of.values().all(|s| s.len() == 1),
            "a prompt in two splits (case {case})"
        );
        for split in ["train", "val", "test"] {
            let f = format!("{split}.parquet");
            assert_eq!(
                std::fs::read(out_a.join(&f)).unwrap(),
                std::fs::read(out_b.join(&f)).unwrap(),
                "case {case} {split}"
            );
        }
        assert_eq!(sa.reasons, sb.reasons);
    }
}

fn judged(instruction: &str, o1: &str, o2: &str, preference: f64, annotator: &str) -> String {
    json!({"instruction": instruction, "output_1": o1, "output_2": o2,
        "preference": preference, "annotator": annotator})
    .to_string()
}

#[test]
fn alpaca_eval_judgments_of_one_pair_are_averaged_into_one_row() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("pairs.jsonl");
    let lines = vec![
        judged("q1", "ref", "cand", 2.0, "a"), // 1 carries q1: votes +1, +1, −0.5 for cand
        judged("q1", "ref", "cand", 1.25, "b"), // 2 averaged into line 1
        judged("q2", "x", "y", 1.0, "a"),      // 3 carries q2: +1 for x, −1 … cancel out
        judged("q1", "cand", "ref", 1.0, "c"), // 4 the same pair in the other order
        judged("q2", "x", "y", 2.0, "b"),      // 5 averaged into line 3 → a tie
        judged("q3", "p", "r", 1.83, "w"),     // 6 one weighted judgment: r, margin 0.66
        judged("q4", "p", "r", 0.0, "w"),      // 7 no decision
    ];
    write_lines(&file, &lines);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let stats = ingest(std::slice::from_ref(&file), &opts(Format::AlpacaEval), &out).unwrap();
    assert_eq!((stats.rows_read, stats.kept, stats.quarantined), (7, 2, 5));
    let q = read_quarantine(out.join("quarantine.parquet")).unwrap();
    let got: Vec<(u64, &str, &str)> = q
        .iter()
        .map(|r| (r.line, r.reason.as_str(), r.detail.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                2,
                "duplicate",
                "another judgment of the pair at pairs.jsonl:1, averaged into it"
            ),
            (3, "tie", "the 2 judgments cancel out"),
            (
                4,
                "duplicate",
                "another judgment of the pair at pairs.jsonl:1, averaged into it"
            ),
            (
                5,
                "duplicate",
                "another judgment of the pair at pairs.jsonl:3, averaged into it"
            ),
            (7, "tie", "preference 0: the judge gave no decision"),
        ]
    );
    let mut rows: Vec<PairRow> = all_rows(&out).into_iter().map(|(_, r)| r).collect();
    rows.sort_by(|a, b| a.prompt.cmp(&b.prompt));
    let got: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.prompt.as_str(), r.chosen.as_str(), r.rejected.as_str()))
        .collect();
    assert_eq!(got, vec![("q1", "cand", "ref"), ("q3", "r", "p")]);
    assert!(
        (rows[0].margin.unwrap() - 0.5).abs() < 1e-6,
        "(1 + 1 − 0.5) / 3"
    );
    assert!((rows[1].margin.unwrap() - 0.66).abs() < 1e-6);
    // With --keep-ties the cancelled pair stays, as a tie.
    let out2 = tmp.path().join("out2");
    std::fs::create_dir(&out2).unwrap();
    let mut o = opts(Format::AlpacaEval);
    o.keep_ties = true;
    let stats = ingest(std::slice::from_ref(&file), &o, &out2).unwrap();
    assert_eq!((stats.kept, stats.ties_kept), (3, 1));
}

/// `../shared/data/SUB` beside the repository. The reference-count tests need it and fail when
/// it is absent: the data is present wherever the tests run (here and in CI), so a missing
/// directory is a broken checkout, not a reason to pass.
fn shared_data(sub: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(sub);
    assert!(
        dir.is_dir(),
        "{} is missing: the reference counts need the shared data that sits next to the \
         repository (see shared/data/README.md)",
        dir.display()
    );
    dir
}

#[test]
fn reference_counts_on_hh_rlhf() {
    let dir = shared_data("hh-rlhf");
    let files = expand_inputs(&[dir.display().to_string()]).unwrap();
    assert_eq!(files.len(), 3);
    let tmp = tempfile::tempdir().unwrap();
    let stats = ingest(&files, &opts(Format::HhRlhf), tmp.path()).unwrap();
    assert_eq!(stats.rows_read, 6198);
    assert_eq!(stats.reasons["identical_answers"], 34);
    assert_eq!(stats.reasons["empty_answer"], 7);
    assert_eq!(stats.reasons["duplicate"], 0);
    assert_eq!(stats.kept, 6157);
    assert_eq!(stats.quarantined, 41);
    let rows = all_rows(tmp.path());
    assert_eq!(rows.len(), 6157);
    assert!(rows
        .iter()
        .all(|(_, r)| r.prompt.ends_with("\n\nAssistant:")));
    let per_file: Vec<(String, usize)> = stats
        .files
        .iter()
        .map(|f| (f.source.clone(), f.rows_read))
        .collect();
    assert_eq!(
        per_file,
        vec![
            ("harmless-base/test.jsonl.gz".to_string(), 2312),
            ("helpful-online/test.jsonl.gz".to_string(), 1137),
            ("helpful-rejection-sampled/test.jsonl.gz".to_string(), 2749)
        ]
    );
}

#[test]
fn reference_counts_on_llmbar() {
    let dir = shared_data("llmbar");
    let files =
        expand_inputs(&[dir.join("Dataset/**/dataset.json").display().to_string()]).unwrap();
    assert_eq!(files.len(), 8);
    let tmp = tempfile::tempdir().unwrap();
    let stats = ingest(&files, &opts(Format::Llmbar), tmp.path()).unwrap();
    assert_eq!(
        (stats.rows_read, stats.kept, stats.quarantined),
        (885, 885, 0)
    );
    // One identical pair, one whitespace-only answer, five MT-Bench pairs judged twice.
    assert_eq!(stats.degenerate_kept, 7);
    let rows = all_rows(tmp.path());
    let ids: BTreeSet<&String> = rows.iter().map(|(_, r)| &r.id).collect();
    assert_eq!(ids.len(), 885, "repeats get distinct ids");
    assert_eq!(rows.iter().filter(|(_, r)| r.id.ends_with("-2")).count(), 5);
}

#[test]
fn reference_counts_on_alpaca_eval() {
    let file = shared_data("alpaca-eval").join("pairs.jsonl.gz");
    let tmp = tempfile::tempdir().unwrap();
    let stats = ingest(&[file], &opts(Format::AlpacaEval), tmp.path()).unwrap();
    assert_eq!(stats.records_read, 91_192);
    // Independently counted by grouping the judgments in Python: 80,476 distinct non-degenerate
    // pairs, 266 of whose judgments cancel out. The 181 judgments with preference 0 (no
    // decision) are quarantined as ties before the identical-answer check (all 181 compare two
    // identical answers, which the Python count filed as identical).
    assert_eq!(stats.kept, 80_210);
    assert_eq!(stats.reasons["duplicate"], 8_836);
    assert_eq!(stats.reasons["tie"], 266 + 181);
    assert_eq!(stats.reasons["identical_answers"], 1_543);
    assert_eq!(stats.reasons["empty_answer"], 156);
    assert_eq!(stats.rows_read, stats.kept + stats.quarantined);
}
