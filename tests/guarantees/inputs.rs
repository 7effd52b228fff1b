//! Input hygiene: ingest files, run configs and score inputs, case by case (case 6).
use super::*;

/// Writes `files` (name, bytes) into `d`.
fn write_files(d: &Path, files: &[(&str, &[u8])]) {
    for (name, bytes) in files {
        fs::write(d.join(name), bytes).unwrap();
    }
}

#[test]
fn ingest_inputs_that_cannot_be_read_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_files(
        d,
        &[
            ("empty.jsonl", b""),
            ("ragged.csv", b"prompt,chosen,rejected\np,a,b\np,a,b,c\n"),
            ("garbage.jsonl", b"\x00\x01\x02 not json\n\xff\xfe\n"),
            ("notes.txt", b"hello"),
            ("object.json", b"{\"prompt\": \"p\"}"),
            (
                "cut.jsonl.gz",
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x01\x10",
            ),
            (
                "pairs.jsonl",
                b"{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n",
            ),
        ],
    );
    let cases: [(&[&str], &str); 12] = [
        (&["empty.jsonl", "--strict"], "empty.jsonl: no rows to ingest"),
        (&["ragged.csv"], "ragged.csv: does not look like a CSV file with a header row: a row has more fields than the header"),
        (&["garbage.jsonl"], "garbage.jsonl: does not look like JSON Lines"),
        (&["notes.txt"], "notes.txt: unsupported file type"),
        (&["object.json"], "object.json: does not look like a JSON array"),
        (&["cut.jsonl.gz"], "cut.jsonl.gz: corrupt or truncated gzip"),
        (&["missing.jsonl"], "input missing.jsonl does not exist"),
        (&["nothing/*.jsonl"], "does not exist (no file matches)"),
        (&["pairs.jsonl", "--split", "0.5,0.5"], "split"),
        (&["pairs.jsonl", "--split", "0.9,0.9,0.9"], "split"),
        (&["pairs.jsonl", "--map", "prompt=q"], "--map only applies to --format generic"),
        (&["pairs.jsonl", "--strict", "--max-chars", "1"], "pairs.jsonl:1: too_long"),
    ];
    for (args, words) in cases {
        let mut a = vec!["ingest", "--format", "hh-rlhf", "--out", "out"];
        if args.contains(&"pairs.jsonl") && !args.contains(&"--map") {
            a[2] = "generic";
        }
        a.extend(args);
        refused(d, &a, 2, &[words]);
    }
}

#[test]
fn ingest_reads_bom_crlf_and_quarantines_what_it_cannot_read_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let row = |p: &str| format!("{{\"prompt\": \"{p}\", \"chosen\": \"a\", \"rejected\": \"b\"}}");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(format!("{}\r\n{}\r\n\r\n", row("p1"), row("p2")).bytes());
    bytes.extend(b"{\"prompt\": \"caf\xe9\", \"chosen\": \"a\", \"rejected\": \"b\"}\n");
    bytes.extend(b"{\"prompt\": \"p4\", \"chosen\": null, \"rejected\": \"b\"}\n");
    bytes.extend(b"{\"prompt\": \"p5\", \"rejected\": \"b\"}\n");
    fs::write(d.join("odd.jsonl"), bytes).unwrap();
    let args = ["ingest", "--format", "generic", "odd.jsonl", "--out", "out"].map(String::from);
    let o = ember_in(d, &args);
    assert!(o.status.success(), "{}", text(&o));
    let stats: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(d.join("out/stats.json")).unwrap()).unwrap();
    assert_eq!(stats["rows_read"], 5, "{stats}");
    assert_eq!(stats["kept"], 2, "BOM and CRLF rows are read: {stats}");
    assert_eq!(stats["reasons"]["invalid_utf8"], 1, "{stats}");
    assert_eq!(stats["reasons"]["missing_field"], 2, "{stats}");
    fs::write(d.join("empty.jsonl"), b"").unwrap();
    let args = ["ingest", "--format", "generic", "empty.jsonl", "--out", "e"].map(String::from);
    let o = ember_in(d, &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no row was kept"), "{}", text(&o));
}

#[test]
fn run_config_mistakes_are_refused_before_any_stage_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&str, &[&str], &str); 12] = [
        ("seed = [", &[], "is not valid TOML"),
        ("sed = 1", &[], "unknown key `sed`"),
        ("[sfft]\nsteps = 1", &[], "sfft"),
        ("device = \"tpu\"", &[], "line 1: `device`"),
        ("seed = -1", &[], "line 1: `seed`"),
        (
            "[reward]\nmax_len = 0",
            &[],
            "line 2: reward.max_len: must be at least 3",
        ),
        (
            "[reward.optim]\nlr = nan",
            &[],
            "line 2: reward.optim.lr: must be a positive number",
        ),
        (
            "[sft]\nsteps = \"three hundred\"",
            &[],
            "line 2: `sft.steps`",
        ),
        (
            "",
            &["--set", "garbage"],
            "--set garbage: expected KEY=VALUE",
        ),
        (
            "[data]\nkind = \"ingest\"\ninputs = [\"nowhere/*.jsonl\"]\nformat = \"hh-rlhf\"",
            &[],
            "data.inputs",
        ),
        (
            "base = \"no-such-model\"\n[sft]\nsteps = 0",
            &[],
            "base: no-such-model is not a policy directory",
        ),
        (
            "[sft]\nsteps = 0",
            &[],
            "sft.steps: 0 (no SFT) needs a top-level `base`",
        ),
    ];
    for (toml, extra, words) in cases {
        fs::write(d.join("c.toml"), toml).unwrap();
        let mut a = vec!["run", "c.toml", "--run-dir", "r"];
        a.extend(extra);
        refused(d, &a, 2, &[words]);
        fs::remove_file(d.join("c.toml")).unwrap();
        assert!(!d.join("r").exists(), "{toml}: nothing may be written");
    }
    refused(
        d,
        &["run", "missing.toml"],
        2,
        &["config missing.toml does not exist"],
    );
    refused(
        d,
        &["config", "print", "missing.toml"],
        2,
        &["does not exist"],
    );
}

#[test]
fn score_inputs_with_bad_rows_are_refused_naming_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_files(
        d,
        &[
            ("noanswer.jsonl", b"{\"prompt\": \"1+1=\"}\n"),
            ("number.jsonl", b"{\"prompt\": \"1+1=\", \"answer\": 2}\n"),
            (
                "broken.jsonl",
                b"{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n{oops\n",
            ),
            ("good.jsonl", b"{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n"),
        ],
    );
    let cases: [(&str, &str); 4] = [
        ("noanswer.jsonl", "row 1: no string field `answer`"),
        ("number.jsonl", "row 1: no string field `answer`"),
        ("broken.jsonl", "broken.jsonl line 2"),
        ("absent.jsonl", "absent.jsonl"),
    ];
    for (input, words) in cases {
        let a = [
            "reward",
            "score",
            "--model",
            &fx("04-reward"),
            "--input",
            input,
            "--out",
            "s.jsonl",
        ];
        refused(d, &a, 2, &[words]);
    }
    let a = [
        "reward",
        "score",
        "--model",
        "no-model",
        "--input",
        "good.jsonl",
        "--out",
        "s.jsonl",
    ];
    refused(d, &a, 2, &["no-model"]);
}
