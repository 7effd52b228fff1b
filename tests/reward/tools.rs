//! The checks of `reward score`, `reward doctor` and `reward eval` that the tests share.
use super::*;

/// `ember reward score --model MODEL --input INPUT --out OUT`.
pub fn score(model: &str, input: &Path, out: &Path) {
    ok(&ember(&[
        "reward",
        "score",
        "--model",
        model,
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
}

/// `reward score` on two validation answers, JSONL in, JSONL and Parquet out: order and extra
/// fields kept, and each energy the one training wrote for that answer.
pub fn score_matches_training(model: &str, dir: &Path, val: &ValEnergies) {
    let input = dir.join("rows.jsonl");
    let rows = [
        (&val.pairs[0].prompt, &val.pairs[0].chosen, 1),
        (&val.pairs[1].prompt, &val.pairs[1].rejected, 2),
    ];
    let jsonl: String = rows
        .iter()
        .map(|(p, a, k)| {
            format!(
                "{}\n",
                serde_json::json!({"prompt": p, "answer": a, "k": k})
            )
        })
        .collect();
    std::fs::write(&input, jsonl).unwrap();
    let scored = dir.join("scored.jsonl");
    score(model, &input, &scored);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&scored)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["k"], 2);
    let energies: Vec<f64> = lines
        .iter()
        .map(|l| l["energy"].as_f64().unwrap())
        .collect();
    let want = [val.e_chosen[0], val.e_rejected[1]];
    for (e, w) in energies.iter().zip(want) {
        assert!((e - w).abs() < 1e-4, "reward score {e} vs training's {w}");
    }
    // The same f32 energies in Parquet (JSON writes the shortest decimal that rounds back).
    let scored_pq = dir.join("scored.parquet");
    score(model, &input, &scored_pq);
    let pq_energies: Vec<f32> = datasets::table::read_parquet_rows(&scored_pq)
        .unwrap()
        .iter()
        .map(|r| r["energy"].as_f64().unwrap() as f32)
        .collect();
    let jsonl_energies: Vec<f32> = energies.iter().map(|&e| e as f32).collect();
    assert_eq!(pq_energies, jsonl_energies);
}

/// Runs `ember reward doctor` and asserts that its model checks pass; returns its stdout.
pub fn doctor_passes(model: &str, data: &Path) -> String {
    let o = ember(&[
        "reward",
        "doctor",
        "--model",
        model,
        "--data",
        data.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    for check in [
        "batch/padding invariance",
        "pooling reads EOS",
        "save/reload",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(check)),
            "{check}: {stdout}"
        );
    }
    stdout
}

/// The model against the longer answer: CIs that hold their means, the difference the two
/// accuracies' difference, the same numbers in the printed line.
pub fn eval_compares_with_the_longer_answer(table: &serde_json::Value, stdout: &str) {
    let a = &table["against_length"];
    let f = |ci: &str, k: &str| a[ci][k].as_f64().unwrap();
    for ci in ["model", "longer", "difference"] {
        assert!(
            f(ci, "lo") <= f(ci, "mean") && f(ci, "mean") <= f(ci, "hi"),
            "{a}"
        );
    }
    assert_eq!(
        f("model", "mean"),
        table["labels"]["accuracy"].as_f64().unwrap()
    );
    let longer = table["labels"]["length_heuristic_accuracy"]
        .as_f64()
        .unwrap();
    assert!((f("longer", "mean") - longer).abs() < 1e-12, "{a}");
    let diff = f("model", "mean") - f("longer", "mean");
    assert!((f("difference", "mean") - diff).abs() < 1e-12, "{a}");
    assert_eq!(a["pairs"], table["labels"]["pairs"]);
    let line = format!(
        "model {:.4} [{:.4}, {:.4}]",
        f("model", "mean"),
        f("model", "lo"),
        f("model", "hi")
    );
    assert!(stdout.contains(&line), "{line} not in:\n{stdout}");
}

/// `--out DIR`: a stage directory with the reports, every pair's energies and a manifest.
pub fn eval_dir_holds_the_energies(model: &str, data: &Path, tmp: &Path) {
    let out = tmp.join("eval");
    let test = data.join("test.parquet");
    ok(&ember(&[
        "reward",
        "eval",
        "--model",
        model,
        "--data",
        test.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["stage"], "eval");
    let energies = datasets::table::read_parquet(out.join("energies.parquet")).unwrap();
    let pairs = manifest["metrics"]["tables"][0]["labels"]["pairs"]
        .as_u64()
        .unwrap();
    assert_eq!(energies.height() as u64, pairs);
    let acc = manifest["metrics"]["accuracy"].as_f64().unwrap();
    let col = |n: &str| -> Vec<f32> {
        let c = energies.column(n).unwrap();
        c.f32().unwrap().into_no_null_iter().collect()
    };
    let right = col("e_chosen")
        .iter()
        .zip(col("e_rejected"))
        .filter(|(c, r)| **c < *r)
        .count();
    assert_eq!(right as f64 / pairs as f64, acc);
}
