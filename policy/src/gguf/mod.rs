//! `ember import --format gguf`: llama.cpp's GGUF files as Ember policies.
//!
//! The container and the ggml quantisations are read by Hugging Face candle's `candle-core`
//! (`quantized::gguf_file`: header, metadata, tensor infos, alignment, bounds-checked reads; and
//! its CPU dequantisers for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants).
//! What is Ember's own: the mapping of llama.cpp's tensor names and hyperparameter keys onto the
//! Llama trunk ([`import`]), undoing llama.cpp's row permutation of the query and key weights,
//! and rebuilding the tokenizer from `tokenizer.ggml.*` ([`tokenizer`]).
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use tch::Tensor;

use crate::error::{PolicyError, Result};

mod import;
pub mod tokenizer;

pub use import::{config, import};

/// Where `scripts/setup-pretrained.sh` (`make smollm2-gguf`, run by `make test`) installs
/// SmolLM2-135M-Instruct's GGUF: `$EMBER_SMOLLM2_GGUF` if set, else
/// `${XDG_CACHE_HOME:-~/.cache}/ember/models/SmolLM2-135M-Instruct.Q4_1.gguf`. The file may be
/// absent; the caller decides what that means.
pub fn smollm2_gguf_path() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_SMOLLM2_GGUF") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("ember/models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// An open GGUF file: its parsed header, and the file to read tensors from.
pub struct Gguf {
    path: PathBuf,
    content: Content,
    file: BufReader<File>,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("path", &self.path)
            .field("tensors", &self.content.tensor_infos.len())
            .field("metadata", &self.content.metadata.len())
            .finish()
    }
}

impl Gguf {
    /// Opens `path` and reads its header (metadata and tensor infos; no tensor data).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| PolicyError::io("opening", &path, e))?;
        let mut file = BufReader::new(file);
        let content = Content::read(&mut file).map_err(|e| PolicyError::Gguf {
            path: path.clone(),
            message: format!("not a readable GGUF file: {e}"),
        })?;
        Ok(Self {
            path,
            content,
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, message: impl Into<String>) -> PolicyError {
        PolicyError::Gguf {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// The raw metadata value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// Metadata keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.content.metadata.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| self.err(format!("missing metadata key {key:?}")))
    }

    /// An integer of any width and signedness.
    pub fn int(&self, key: &str) -> Result<i64> {
        let v = self.require(key)?;
        as_int(v).ok_or_else(|| self.err(format!("{key:?} is {v:?}, expected an integer")))
    }

    /// An unsigned integer of any width (u64 values above `i64::MAX` included).
    pub fn uint(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        match v {
            Value::U64(x) => Some(*x),
            other => as_int(other).and_then(|i| u64::try_from(i).ok()),
        }
        .ok_or_else(|| self.err(format!("{key:?} is {v:?}, expected an unsigned integer")))
    }

    /// A float (or an integer, read as a float).
    pub fn float(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        match v {
            Value::F32(x) => Some(f64::from(*x)),
            Value::F64(x) => Some(*x),
            other => as_int(other).map(|i| i as f64),
        }
        .ok_or_else(|| self.err(format!("{key:?} is {v:?}, expected a number")))
    }

    pub fn string(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            v => Err(self.err(format!("{key:?} is {v:?}, expected a string"))),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(self.err(format!("{key:?} is {v:?}, expected a bool"))),
        }
    }

    fn array(&self, key: &str) -> Result<&[Value]> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            v => Err(self.err(format!(
                "{key:?} is a {:?}, expected an array",
                v.value_type()
            ))),
        }
    }

    /// An array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.err(format!("{key:?}[{i}] is {other:?}, expected a string"))),
            })
            .collect()
    }

    /// An array of integers.
    pub fn ints(&self, key: &str) -> Result<Vec<i64>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                as_int(v)
                    .ok_or_else(|| self.err(format!("{key:?}[{i}] is {v:?}, expected an integer")))
            })
            .collect()
    }

    /// An array of floats.
    pub fn floats(&self, key: &str) -> Result<Vec<f64>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::F32(x) => Ok(f64::from(*x)),
                Value::F64(x) => Ok(*x),
                other => Err(self.err(format!("{key:?}[{i}] is {other:?}, expected a float"))),
            })
            .collect()
    }

    /// Tensor names, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The ggml type of tensor `name` (`Q4_1`, `Q8_0`, `F32`, ...).
    pub fn tensor_type(&self, name: &str) -> Option<String> {
        self.content.tensor_infos.get(name).map(|t| {
            format!("{:?}", t.ggml_dtype)
                .to_uppercase()
                .replace("K", "_K")
        })
    }

    /// Tensor `name` dequantised to f32, in PyTorch's dimension order (GGUF lists dimensions
    /// fastest first; this is the reverse).
    pub fn tensor(&mut self, name: &str) -> Result<Tensor> {
        let q = self
            .content
            .tensor(&mut self.file, name, &candle_core::Device::Cpu)
            .map_err(|e| self.err(format!("tensor {name:?}: {e}")))?;
        let dims: Vec<i64> = q.shape().dims().iter().map(|&d| d as i64).collect();
        let values = q
            .dequantize(&candle_core::Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| self.err(format!("dequantising {name:?}: {e}")))?;
        Ok(Tensor::from_slice(&values).view(dims.as_slice()))
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::U8(x) => Some(i64::from(*x)),
        Value::I8(x) => Some(i64::from(*x)),
        Value::U16(x) => Some(i64::from(*x)),
        Value::I16(x) => Some(i64::from(*x)),
        Value::U32(x) => Some(i64::from(*x)),
        Value::I32(x) => Some(i64::from(*x)),
        Value::U64(x) => i64::try_from(*x).ok(),
        Value::I64(x) => Some(*x),
        _ => None,
    }
}
