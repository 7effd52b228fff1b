//! One tokenizer type over Hugging Face `tokenizers`: a character-level vocabulary for the
//! synthetic tasks (a `WordLevel` model over single characters, split by a one-character regex
//! and joined back by a `Fuse` decoder) and a byte-level BPE trained on real text. Both save as
//! a standard `tokenizer.json`, and any `tokenizer.json` loads.
//!
//! Special tokens: `<pad>` (padding), `<sep>` (ends the prompt; the answer starts right after
//! it), `<eos>` (ends the answer). A foreign tokenizer without them falls back to
//! `<|endoftext|>` (GPT-2).
//!
//! A pretrained model's tokenizer (from GGUF or Hugging Face) also has a `tokenizer_config.json`
//! beside its `tokenizer.json`, in Hugging Face's format: its `bos_token`, `eos_token`,
//! `pad_token` and `chat_template`. With a chat template, a prompt is rendered as a
//! conversation ending in the assistant's turn header (no SEP is appended), and an answer ends
//! with the template's end-of-turn token (`eos_token`, e.g. ChatML's `<|im_end|>`): that is the
//! token the energy model pools on and the one sampling stops at.
use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use serde::{Deserialize, Serialize};

use crate::chat::{messages_from_prompt, ChatTemplate};
use crate::error::{PolicyError, Result};

pub const PAD: &str = "<pad>";
pub const SEP: &str = "<sep>";
pub const EOS: &str = "<eos>";
pub const UNK: &str = "<unk>";
const FALLBACK: &str = "<|endoftext|>";
/// Hugging Face's file for the special tokens and the chat template, beside `tokenizer.json`.
pub const CONFIG_FILE: &str = "tokenizer_config.json";

/// The part of a Hugging Face `tokenizer_config.json` Ember reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerConfig {
    #[serde(default, deserialize_with = "token_name")]
    pub bos_token: Option<String>,
    #[serde(default, deserialize_with = "token_name")]
    pub eos_token: Option<String>,
    #[serde(default, deserialize_with = "token_name")]
    pub pad_token: Option<String>,
    #[serde(
        default,
        deserialize_with = "chat_template",
        skip_serializing_if = "Option::is_none"
    )]
    pub chat_template: Option<String>,
    #[serde(default)]
    pub add_bos_token: bool,
    #[serde(default = "fast_class")]
    pub tokenizer_class: String,
}

fn fast_class() -> String {
    "PreTrainedTokenizerFast".into()
}

/// A template string, or a list of named templates (the one named `default`).
fn chat_template<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Array(list)) => list.iter().find_map(|t| {
            (t.get("name")?.as_str()? == "default")
                .then(|| t.get("template")?.as_str().map(str::to_string))?
        }),
        _ => None,
    })
}

/// A special token is a string or an `AddedToken` object with a `content`.
fn token_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    })
}

/// A prompt + answer encoded as one sequence: prompt, SEP, answer, EOS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    pub ids: Vec<i64>,
    /// Index of the first answer token (right after SEP); the EOS is the last id.
    pub answer_start: usize,
}

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pad: i64,
    sep: i64,
    eos: i64,
    /// A pretrained model's `tokenizer_config.json` (specials, chat template).
    config: Option<TokenizerConfig>,
    chat: Option<ChatTemplate>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("pad", &self.pad)
            .field("sep", &self.sep)
            .field("eos", &self.eos)
            .field("chat", &self.chat.is_some())
            .finish()
    }
}

fn tok_err(context: impl Into<String>, e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Tokenizer {
        context: context.into(),
        message: e.to_string(),
    }
}

fn specials() -> Vec<AddedToken> {
    [PAD, SEP, EOS, UNK]
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect()
}

impl Tokenizer {
    /// A character-level tokenizer over every character of `texts` (sorted, so the ids do not
    /// depend on text order). Ids 0..4 are `<pad> <sep> <eos> <unk>`.
    pub fn char_level<S: AsRef<str>>(texts: impl IntoIterator<Item = S>) -> Result<Self> {
        let mut chars = BTreeSet::new();
        for t in texts {
            chars.extend(t.as_ref().chars());
        }
        let mut vocab = serde_json::Map::new();
        for (i, s) in [PAD, SEP, EOS, UNK].iter().enumerate() {
            vocab.insert((*s).to_string(), i.into());
        }
        for (i, c) in chars.iter().enumerate() {
            vocab.insert(c.to_string(), (i + 4).into());
        }
        // The builder wants a hash map type the crate does not export; its serde form is public.
        let json = serde_json::json!({"type": "WordLevel", "vocab": vocab, "unk_token": UNK});
        let model: WordLevel = serde_json::from_str(&json.to_string())
            .map_err(|e| tok_err("building char vocabulary", e))?;
        let split = Split::new(
            SplitPattern::Regex(r"[\s\S]".into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err("building char splitter", e))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner
            .with_pre_tokenizer(Some(split))
            .with_decoder(Some(Fuse::new()));
        inner.add_special_tokens(&specials());
        Self::from_inner(inner, Path::new("<char-level>"))
    }

    /// Trains a byte-level BPE of `vocab_size` tokens (specials included) on `texts`.
    pub fn train_bpe<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
    ) -> Result<Self> {
        let trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut trainer = TrainerWrapper::from(trainer);
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
            .with_decoder(Some(ByteLevelDecoder::default()));
        inner
            .train(&mut trainer, texts)
            .map_err(|e| tok_err("training BPE", e))?;
        inner.add_special_tokens(&specials());
        Self::from_inner(inner, Path::new("<bpe>"))
    }

    /// Loads any Hugging Face `tokenizer.json`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| PolicyError::io("reading", path, e))?;
        let inner = tokenizers::Tokenizer::from_str(&text)
            .map_err(|e| tok_err(format!("parsing {}", path.display()), e))?;
        let config_path = path.with_file_name(CONFIG_FILE);
        if !config_path.exists() {
            return Self::from_inner(inner, path);
        }
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| PolicyError::io("reading", &config_path, e))?;
        let config: TokenizerConfig =
            serde_json::from_str(&text).map_err(|source| PolicyError::Json {
                path: config_path.clone(),
                source,
            })?;
        Self::with_config(inner, config, &config_path)
    }

    /// A pretrained model's tokenizer: specials and chat template from `config` (Hugging Face's
    /// `tokenizer_config.json`, read from `path`). The EOS is `eos_token`; padding is
    /// `pad_token`, else the EOS; SEP (only appended without a chat template) is `bos_token`,
    /// else the EOS.
    pub fn with_config(
        inner: tokenizers::Tokenizer,
        config: TokenizerConfig,
        path: &Path,
    ) -> Result<Self> {
        let id = |key: &str, token: &Option<String>| -> Result<Option<i64>> {
            match token {
                None => Ok(None),
                Some(t) => inner
                    .token_to_id(t)
                    .map(|i| Some(i64::from(i)))
                    .ok_or_else(|| PolicyError::Tokenizer {
                        context: format!("{} key {key}", path.display()),
                        message: format!("{t:?} is not in the vocabulary"),
                    }),
            }
        };
        let eos =
            id("eos_token", &config.eos_token)?.ok_or_else(|| PolicyError::MissingSpecial {
                path: path.to_path_buf(),
                token: "eos_token".into(),
            })?;
        let pad = id("pad_token", &config.pad_token)?.unwrap_or(eos);
        let sep = id("bos_token", &config.bos_token)?.unwrap_or(eos);
        let chat = config.chat_template.as_ref().map(|source| ChatTemplate {
            source: source.clone(),
            bos_token: config.bos_token.clone().unwrap_or_default(),
            eos_token: config.eos_token.clone().unwrap_or_default(),
        });
        if let Some(chat) = &chat {
            chat.check().map_err(|e| PolicyError::Tokenizer {
                context: format!("{} key chat_template", path.display()),
                message: e.to_string(),
            })?;
        }
        Ok(Self {
            inner,
            pad,
            sep,
            eos,
            config: Some(config),
            chat,
        })
    }

    /// Writes `path` (`tokenizer.json`) and, for a pretrained model's tokenizer, its
    /// `tokenizer_config.json` beside it.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| tok_err(format!("serialising {}", path.display()), e))?;
        std::fs::write(path, json).map_err(|e| PolicyError::io("writing", path, e))?;
        if let Some(config) = &self.config {
            crate::write_json(&path.with_file_name(CONFIG_FILE), config)?;
        }
        Ok(())
    }

    fn from_inner(inner: tokenizers::Tokenizer, path: &Path) -> Result<Self> {
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .or_else(|| inner.token_to_id(FALLBACK))
                .map(i64::from)
                .ok_or_else(|| PolicyError::MissingSpecial {
                    path: path.to_path_buf(),
                    token: token.to_string(),
                })
        };
        Ok(Self {
            pad: id(PAD)?,
            sep: id(SEP)?,
            eos: id(EOS)?,
            inner,
            config: None,
            chat: None,
        })
    }

    /// Token ids of `text`, no special tokens added. See [`Tokenizer::try_encode`].
    /// A text the model cannot encode (only possible for foreign tokenizers without an
    /// unknown token) gives an empty sequence and a warning.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        self.try_encode(text).unwrap_or_else(|e| {
            tracing::warn!("cannot encode {text:?}: {e}");
            Vec::new()
        })
    }

    pub fn try_encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| tok_err(format!("encoding {text:?}"), e))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[i64]) -> String {
        let ids: Vec<u32> = ids.iter().filter(|&&i| i >= 0).map(|&i| i as u32).collect();
        self.inner.decode(&ids, true).unwrap_or_default()
    }

    /// prompt tokens + SEP + answer tokens + EOS; with a chat template, the rendered prompt +
    /// the answer (leading whitespace dropped, as a chat turn has none) + the end-of-turn token.
    pub fn encode_pair(&self, prompt: &str, answer: &str) -> EncodedPair {
        let mut ids = self.encode_prompt(prompt);
        let answer_start = ids.len();
        let answer = if self.chat.is_some() {
            answer.trim_start()
        } else {
            answer
        };
        ids.extend(self.encode(answer));
        ids.push(self.eos);
        EncodedPair { ids, answer_start }
    }

    /// What generation starts from: prompt tokens + SEP, or with a chat template the prompt's
    /// turns ([`messages_from_prompt`]) rendered up to the assistant's turn header.
    pub fn encode_prompt(&self, prompt: &str) -> Vec<i64> {
        if let Some(chat) = &self.chat {
            match chat.render(&messages_from_prompt(prompt), true) {
                Ok(text) => return self.encode(&text),
                Err(e) => tracing::warn!("{e}; encoding the prompt as plain text"),
            }
        }
        let mut ids = self.encode(prompt);
        ids.push(self.sep);
        ids
    }

    /// The chat template, if the model has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// A pretrained model's `tokenizer_config.json`, if any.
    pub fn config(&self) -> Option<&TokenizerConfig> {
        self.config.as_ref()
    }

    pub fn pad_id(&self) -> i64 {
        self.pad
    }

    pub fn sep_id(&self) -> i64 {
        self.sep
    }

    pub fn eos_id(&self) -> i64 {
        self.eos
    }

    pub fn vocab_size(&self) -> i64 {
        self.inner.get_vocab_size(true) as i64
    }

    /// The wrapped Hugging Face tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_level_round_trip_and_pair_layout() {
        let tok = Tokenizer::char_level(["12+3=", "15", "a b\n"]).unwrap();
        // specials 0..4, then sorted chars: '\n' ' ' '+' '1' '2' '3' '5' '=' 'a' 'b'
        assert_eq!(tok.vocab_size(), 14);
        assert_eq!((tok.pad_id(), tok.sep_id(), tok.eos_id()), (0, 1, 2));
        assert_eq!(tok.encode("12+"), vec![7, 8, 6]);
        assert_eq!(tok.decode(&tok.encode("a b\n12")), "a b\n12");
        let pair = tok.encode_pair("1+2=", "3");
        assert_eq!(pair.ids, vec![7, 6, 8, 11, 1, 9, 2]);
        assert_eq!(pair.answer_start, 5);
        assert_eq!(tok.decode(&pair.ids), "1+2=3");
        assert_eq!(tok.encode("z"), vec![3]);
    }

    #[test]
    fn save_load_keeps_ids() {
        let dir = tempfile::tempdir().unwrap();
        let tok = Tokenizer::char_level(["hello world"]).unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let back = Tokenizer::load(&path).unwrap();
        assert_eq!(back.encode("hello"), tok.encode("hello"));
        assert_eq!(back.eos_id(), tok.eos_id());
        assert!(Tokenizer::load(dir.path().join("missing.json")).is_err());
    }

    #[test]
    fn bpe_trains_and_round_trips() {
        let texts: Vec<String> = (0..200)
            .map(|i| format!("the quick brown fox {i} jumps over the lazy dog"))
            .collect();
        let tok = Tokenizer::train_bpe(texts.iter(), 300).unwrap();
        assert!(tok.vocab_size() <= 300 && tok.vocab_size() > 260);
        let ids = tok.encode("the lazy fox");
        assert!(ids.len() < "the lazy fox".len());
        assert_eq!(tok.decode(&ids), "the lazy fox");
        assert_eq!(tok.encode_pair("a", "b").ids.last(), Some(&tok.eos_id()));
    }
}
