//! A GGUF file's tokenizer (`tokenizer.ggml.*`) rebuilt as a Hugging Face `tokenizer.json`,
//! with its special tokens and chat template as a `tokenizer_config.json`.
//!
//! Byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`: GPT-2, SmolLM, Llama 3,
//! Qwen2) are supported. Tokens are respelled in GPT-2's byte alphabet where llama.cpp stored raw
//! text; tokens marked control (type 3) become special added tokens and user-defined ones (type
//! 4) plain added tokens, as `transformers` does. The text is split before BPE the way the
//! vocabulary was trained, which llama.cpp records as `tokenizer.ggml.pre`:
//! - `smollm`: single digits, then GPT-2's byte-level regex (SmolLM's own `tokenizer.json`;
//!   `transformers`' GGUF loader does not know this name and splits digit runs GPT-2's way, so
//!   the two differ on numbers of two or more digits);
//! - `llama-bpe`, `llama3`, `qwen2`, ...: their split regex, then byte-level without a regex;
//! - `gpt2`, `default` or none: GPT-2's byte-level regex.
//!
//! Sentencepiece vocabularies (`tokenizer.ggml.model = "llama"`, Llama 1/2, Mistral v0.1) and
//! unknown split names are refused with the name found.
use std::str::FromStr;

use serde_json::{json, Value};

use super::Gguf;
use crate::error::Result;
use crate::tokenizer::{Tokenizer, TokenizerConfig};

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-2's map from bytes to printable characters (`bytes_to_unicode`).
fn byte_alphabet() -> [char; 256] {
    let mut map = ['\0'; 256];
    let printable = |b: u32| {
        (u32::from(b'!')..=u32::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        map[b as usize] = char::from_u32(c).expect("a valid code point");
    }
    map
}

/// The pre-tokenizer of split name `pre` (`tokenizer.ggml.pre`), if known.
fn pre_tokenizer(pre: Option<&str>) -> Option<Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |regex: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]})
    };
    Some(match pre {
        None | Some("gpt2" | "default" | "gpt-2") => byte_level(true),
        Some("smollm") => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level(true),
        ]}),
        Some("llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx") => {
            split(LLAMA3_SPLIT)
        }
        Some("qwen2" | "deepseek-r1-qwen" | "megrez") => split(QWEN2_SPLIT),
        Some(_) => return None,
    })
}

/// The tokenizer of an open GGUF file.
pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
    let model = g.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(g.err(format!(
            "tokenizer.ggml.model {model:?} is not supported (only byte-level BPE, \"gpt2\")"
        )));
    }
    let pre = match g.get("tokenizer.ggml.pre") {
        Some(_) => Some(g.string("tokenizer.ggml.pre")?),
        None => None,
    };
    let pre_tokenizer = pre_tokenizer(pre)
        .ok_or_else(|| g.err(format!("tokenizer.ggml.pre {pre:?} is not a known split")))?;
    let tokens = g.strings("tokenizer.ggml.tokens")?;
    let types = match g.get("tokenizer.ggml.token_type") {
        Some(_) => g.ints("tokenizer.ggml.token_type")?,
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(g.err(format!(
            "{} token types for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let merges = g.strings("tokenizer.ggml.merges")?;
    let json = bpe_json(&tokens, &types, &merges, pre_tokenizer);
    let inner = tokenizers::Tokenizer::from_str(&json.to_string())
        .map_err(|e| g.err(format!("building the tokenizer: {e}")))?;
    Tokenizer::with_config(inner, tokenizer_config(g, &tokens)?, g.path())
}

/// The `tokenizer.json` of a byte-level BPE: GGUF spells a token as its text, `tokenizer.json`
/// in GPT-2's byte alphabet, so tokens outside that alphabet are respelled; control tokens
/// (type 3) and user-defined ones (type 4) are added tokens.
fn bpe_json(
    tokens: &[&str],
    types: &[i64],
    merges: &[&str],
    pre_tokenizer: serde_json::Value,
) -> serde_json::Value {
    let alphabet = byte_alphabet();
    let spelled: std::collections::HashSet<char> = alphabet.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| spelled.contains(&c));
    let respell = |t: &str| -> String {
        if in_alphabet(t) {
            t.to_string()
        } else {
            t.bytes().map(|b| alphabet[b as usize]).collect()
        }
    };
    let mut vocab = serde_json::Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(respell(t), i.into());
    }
    let mut added = Vec::new();
    for (i, (t, ty)) in tokens.iter().zip(types).enumerate() {
        // 3 = control (special), 4 = user-defined (matched whole, not special).
        if (*ty == 3 && in_alphabet(t)) || *ty == 4 {
            added.push(json!({
                "id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": *ty == 3,
            }));
        }
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    })
}

/// The special tokens, BOS rule and chat template of the GGUF's metadata.
fn tokenizer_config(g: &Gguf, tokens: &[&str]) -> Result<TokenizerConfig> {
    let special = |key: &str| -> Result<Option<String>> {
        let key = format!("tokenizer.ggml.{key}");
        match g.get(&key) {
            None => Ok(None),
            Some(_) => {
                let id = g.int(&key)?;
                let token = usize::try_from(id).ok().and_then(|i| tokens.get(i));
                token
                    .map(|t| Some(t.to_string()))
                    .ok_or_else(|| g.err(format!("{key} = {id} is not a token id")))
            }
        }
    };
    let add_bos_token = match g.get("tokenizer.ggml.add_bos_token") {
        Some(_) => g.bool("tokenizer.ggml.add_bos_token")?,
        None => false,
    };
    Ok(TokenizerConfig {
        bos_token: special("bos_token_id")?,
        eos_token: special("eos_token_id")?,
        pad_token: special("padding_token_id")?,
        chat_template: match g.get("tokenizer.chat_template") {
            Some(_) => Some(g.string("tokenizer.chat_template")?.to_string()),
            None => None,
        },
        add_bos_token,
        tokenizer_class: "PreTrainedTokenizerFast".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[b'A' as usize], 'A');
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        let distinct: std::collections::HashSet<char> = a.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn unknown_split_names_are_refused() {
        assert!(pre_tokenizer(Some("smollm")).is_some());
        assert!(pre_tokenizer(None).is_some());
        assert!(pre_tokenizer(Some("tekken-9")).is_none());
    }
}
