//! `ember import --format gguf`: the installed SmolLM2 backbone imported from the command line
//! and asked the Paris question greedily in its chat format; bad files exit 2 naming the file.
mod common;

use std::path::PathBuf;

use common::{assert_exit_2, ember_abs, ok};

/// The installed GGUF ([`policy::gguf::smollm2_gguf_path`]); absent is a failure.
fn smollm2_gguf() -> PathBuf {
    let path = policy::gguf::smollm2_gguf_path();
    assert!(
        path.exists(),
        "{} is missing: run `make smollm2-gguf` (make test does) or set EMBER_SMOLLM2_GGUF",
        path.display()
    );
    path
}

#[test]
fn smollm2_imports_and_answers_the_paris_question() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2");
    let gguf = smollm2_gguf();
    let t = ok(&ember_abs(&[
        "import",
        "--format",
        "gguf",
        gguf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(t.contains("parameters"), "{t}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "manifest.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"prompt\": \"What is the capital of France?\"}\n",
    )
    .unwrap();
    let samples = dir.path().join("samples.parquet");
    ok(&ember_abs(&[
        "sample",
        "--policy",
        out.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "-n",
        "1",
        "--temperature",
        "0",
        "--max-new-tokens",
        "24",
        "--out",
        samples.to_str().unwrap(),
    ]));
    let df = datasets::table::read_parquet(&samples).unwrap();
    let answer = df
        .column("answer")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .unwrap()
        .to_string();
    assert_eq!(answer.trim(), "The capital of France is Paris.");
}

#[test]
fn bad_gguf_files_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        ember_abs(&[
            "import",
            "--format",
            "gguf",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    assert_exit_2(&run("magic.gguf", b"GGML\x03\x00\x00\x00"), "magic.gguf");
    let good = std::fs::read(smollm2_gguf()).unwrap();
    assert_exit_2(&run("truncated.gguf", &good[..4096]), "truncated.gguf");
    let o = ember_abs(&[
        "import",
        "--format",
        "gguf",
        "/nonexistent/model.gguf",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_exit_2(&o, "/nonexistent/model.gguf");
    assert!(!out.exists(), "a failed import leaves nothing behind");
}
