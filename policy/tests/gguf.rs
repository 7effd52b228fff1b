//! GGUF reading: metadata of every value type, dequantisation of every supported tensor type
//! against `gguf-py`'s (the fixture `tests/fixtures/gguf/quants.gguf` and its dequantised
//! values, made by `scripts/llama_reference.py`), and bad files refused with the path named.
use std::path::{Path, PathBuf};

use policy::gguf::Gguf;
use policy::PolicyError;
use serde_json::Value;
use tch::Tensor;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

fn quants() -> Vec<u8> {
    std::fs::read(fixture("quants.gguf")).unwrap()
}

#[test]
fn every_tensor_type_dequantises_as_gguf_py_does() {
    let mut g = Gguf::open(fixture("quants.gguf")).unwrap();
    let expected = Tensor::read_safetensors(fixture("quants.safetensors")).unwrap();
    let listed: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("quants.json")).unwrap()).unwrap();
    let mut types = Vec::new();
    for (name, want) in &expected {
        let ty = listed["tensors"][name]["type"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(g.tensor_type(name).as_deref(), Some(ty.as_str()), "{name}");
        let ours = g.tensor(name).unwrap();
        assert_eq!(ours.size(), want.size(), "{name}");
        let diff = (&ours - want).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0, "{name} ({ty}): max |Δ| {diff}");
        types.push(ty);
    }
    types.sort();
    for ty in [
        "BF16", "F16", "F32", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K", "Q8_0",
    ] {
        assert!(types.iter().any(|t| t == ty), "{ty} is not in the fixture");
    }
}

#[test]
fn metadata_of_every_value_type_reads_back() {
    let g = Gguf::open(fixture("quants.gguf")).unwrap();
    let listed: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("quants.json")).unwrap()).unwrap();
    let metadata = listed["metadata"].as_object().unwrap();
    assert!(metadata.len() >= 14);
    for (key, entry) in metadata {
        let value = &entry["value"];
        let element = entry.get("element_type").and_then(Value::as_str);
        match value {
            Value::Number(n) if entry["type"] == "UINT64" => {
                assert_eq!(g.uint(key).unwrap(), n.as_u64().unwrap(), "{key}")
            }
            Value::Bool(b) => assert_eq!(g.bool(key).unwrap(), *b, "{key}"),
            Value::String(s) => assert_eq!(g.string(key).unwrap(), s, "{key}"),
            Value::Number(n) if n.is_f64() => {
                let ours = g.float(key).unwrap();
                assert!((ours - n.as_f64().unwrap()).abs() < 1e-6, "{key}: {ours}");
            }
            Value::Number(n) => assert_eq!(g.int(key).unwrap(), n.as_i64().unwrap(), "{key}"),
            Value::Array(items) if items.first().is_some_and(Value::is_string) => {
                let want: Vec<&str> = items.iter().map(|v| v.as_str().unwrap()).collect();
                assert_eq!(g.strings(key).unwrap(), want, "{key}");
            }
            Value::Array(items) if element == Some("FLOAT32") || element == Some("FLOAT64") => {
                let want: Vec<f64> = items.iter().map(|v| v.as_f64().unwrap()).collect();
                assert_eq!(g.floats(key).unwrap(), want, "{key}");
            }
            Value::Array(items) => {
                let want: Vec<i64> = items.iter().map(|v| v.as_i64().unwrap()).collect();
                assert_eq!(g.ints(key).unwrap(), want, "{key}");
            }
            other => panic!("{key}: unexpected reference value {other}"),
        }
    }
    let e = g.int("no.such.key").unwrap_err().to_string();
    assert!(
        e.contains("no.such.key") && e.contains("quants.gguf"),
        "{e}"
    );
}

/// `bytes` written to a temporary `.gguf`; the error of opening it and reading every tensor.
fn open_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, bytes).unwrap();
    let result = Gguf::open(&path).and_then(|mut g| {
        let names: Vec<String> = g.tensor_names().iter().map(|s| s.to_string()).collect();
        for n in names {
            let _ = g.tensor(&n)?;
        }
        Ok(())
    });
    let e = result.expect_err("a bad file must be refused");
    assert!(matches!(e, PolicyError::Gguf { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("bad.gguf"), "the path is named: {text}");
    text
}

#[test]
fn bad_files_are_refused_naming_the_file() {
    let good = quants();
    // Wrong magic.
    let mut b = good.clone();
    b[..4].copy_from_slice(b"GGML");
    let e = open_error(&b);
    assert!(e.contains("magic"), "{e}");
    // Truncated in the header, and in the tensor data.
    open_error(&good[..40]);
    let e = open_error(&good[..good.len() - 100]);
    assert!(e.contains("bytes"), "{e}");
    // An unknown ggml type id where the first tensor's type is.
    let g = Gguf::open(fixture("quants.gguf")).unwrap();
    let first = g.tensor_names()[0].to_string();
    let at = type_offset(&good, &first);
    let mut b = good.clone();
    b[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = open_error(&b);
    assert!(e.contains("99"), "{e}");
    // Not a GGUF at all.
    open_error(b"{\"not\": \"gguf\"}");
}

/// Byte offset of the ggml type field of tensor `name` in a GGUF v3 file: after its name
/// (u64 length + bytes), its dimension count (u32) and dimensions (u64 each).
fn type_offset(bytes: &[u8], name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let start = bytes
        .windows(key.len())
        .rposition(|w| w == key.as_slice())
        .expect("the tensor info");
    let dims_at = start + key.len();
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    dims_at + 4 + 8 * n_dims
}

#[test]
fn a_file_without_a_model_or_tokenizer_is_refused_by_import() {
    // quants.gguf holds tensors and metadata but no model: import names what is missing.
    let e = policy::gguf::import(&fixture("quants.gguf"), tch::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("quants.gguf") && e.contains("missing"), "{e}");
}

/// A tiny Llama GGUF written with candle's writer: f32 tensors named as llama.cpp names them,
/// `token_embd` with `vocab` rows, and a tokenizer only when `tokenizer` is set.
fn tiny_llama_gguf(path: &Path, vocab: usize, tokenizer: bool) {
    use candle_core::quantized::gguf_file::{self, Value as V};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{DType, Device as CDevice, Tensor as CTensor};
    let (d, f, layers) = (8usize, 12usize, 1usize);
    let q = |shape: &[usize]| {
        let t = CTensor::zeros(shape, DType::F32, &CDevice::Cpu).unwrap();
        QTensor::quantize(&t, GgmlDType::F32).unwrap()
    };
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), q(&[vocab, d])),
        ("output_norm.weight".into(), q(&[d])),
    ];
    for l in 0..layers {
        for (n, shape) in [
            ("attn_norm.weight", vec![d]),
            ("ffn_norm.weight", vec![d]),
            ("attn_q.weight", vec![d, d]),
            ("attn_k.weight", vec![d / 2, d]),
            ("attn_v.weight", vec![d / 2, d]),
            ("attn_output.weight", vec![d, d]),
            ("ffn_gate.weight", vec![f, d]),
            ("ffn_up.weight", vec![f, d]),
            ("ffn_down.weight", vec![d, f]),
        ] {
            tensors.push((format!("blk.{l}.{n}"), q(&shape)));
        }
    }
    let mut meta: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("llama".into())),
        ("llama.context_length", V::U32(32)),
        ("llama.embedding_length", V::U32(d as u32)),
        ("llama.block_count", V::U32(layers as u32)),
        ("llama.feed_forward_length", V::U32(f as u32)),
        ("llama.attention.head_count", V::U32(2)),
        ("llama.attention.head_count_kv", V::U32(1)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("llama.vocab_size", V::U32(4)),
    ];
    if tokenizer {
        let tokens = ["a", "b", "ab", "<|im_end|>"];
        meta.push(("tokenizer.ggml.model", V::String("gpt2".into())));
        meta.push((
            "tokenizer.ggml.tokens",
            V::Array(tokens.iter().map(|t| V::String(t.to_string())).collect()),
        ));
        meta.push((
            "tokenizer.ggml.token_type",
            V::Array([1, 1, 1, 3].iter().map(|&t| V::I32(t)).collect()),
        ));
        meta.push((
            "tokenizer.ggml.merges",
            V::Array(vec![V::String("a b".into())]),
        ));
        meta.push(("tokenizer.ggml.eos_token_id", V::U32(3)));
    }
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

#[test]
fn import_names_a_missing_tokenizer_and_a_tensor_of_the_wrong_size() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.gguf");
    tiny_llama_gguf(&ok, 4, true);
    let p = policy::gguf::import(&ok, tch::Device::Cpu).unwrap();
    assert_eq!(p.tokenizer.encode("abab"), vec![2, 2]);
    assert_eq!(p.tokenizer.eos_id(), 3);

    let no_tok = dir.path().join("no-tokenizer.gguf");
    tiny_llama_gguf(&no_tok, 4, false);
    let e = policy::gguf::import(&no_tok, tch::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-tokenizer.gguf") && e.contains("tokenizer.ggml.model"),
        "{e}"
    );

    let wrong = dir.path().join("wrong-size.gguf");
    tiny_llama_gguf(&wrong, 5, true);
    let e = policy::gguf::import(&wrong, tch::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("wrong-size.gguf") && e.contains("token_embd.weight"),
        "{e}"
    );
}
