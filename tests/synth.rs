//! `ember synth` end to end: the files it writes, byte-identical for the same seed, different
//! for another seed, and usage errors for bad options.
use std::path::Path;
use std::process::{Command, Output};

const FILES: [&str; 6] = [
    "train.parquet",
    "val.parquet",
    "test.parquet",
    "sft.parquet",
    "eval_prompts.parquet",
    "stats.json",
];

fn synth(out: &Path, seed: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "synth",
        "--task",
        "mix",
        "--out",
        out.to_str().unwrap(),
        "--seed",
        seed,
    ];
    args.extend(["--pairs", "600", "--demos", "300", "--eval-prompts", "50"]);
    args.extend(extra);
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn same_seed_gives_byte_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    for (dir, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        let o = synth(dir, seed, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for f in FILES {
        let bytes = std::fs::read(a.join(f)).unwrap();
        assert_eq!(
            bytes,
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs for the same seed"
        );
        assert_ne!(
            bytes,
            std::fs::read(c.join(f)).unwrap(),
            "{f} is the same for another seed"
        );
    }
    let sft = datasets::table::read_sft_rows(a.join("sft.parquet")).unwrap();
    assert_eq!(sft.len(), 300);
    for (prompt, answer, correct) in &sft {
        assert_eq!(
            *correct,
            datasets::synth::gold(prompt, answer) == 1.0,
            "{prompt} {answer}"
        );
    }
    let eval = datasets::read_prompts(a.join("eval_prompts.parquet")).unwrap();
    assert_eq!(eval.len(), 50);
    let train = datasets::read_pairs(a.join("train.parquet")).unwrap();
    assert!(train.len() > 450);
    for r in &train {
        assert_eq!(
            r.gold_chosen,
            Some(datasets::synth::gold(&r.prompt, &r.chosen))
        );
        assert!(
            r.prompt.len() <= 16 && r.chosen.len() <= 10 && r.rejected.len() <= 10,
            "{r:?}"
        );
    }
    assert!(a.join("manifest.json").is_file());
}

#[test]
fn bad_options_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    for extra in [["--flip-rate", "1.5"], ["--split", "1,1,1"]] {
        let o = synth(&out, "0", &extra);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.exists() && !tmp.path().join("x.partial").exists());
    }
}
