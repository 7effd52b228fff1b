//! The trunks a policy (and an energy model) is built on, one file per architecture: GPT-2
//! ([`gpt`], trained from scratch on the synthetic task) and the Llama family ([`llama`]: Llama,
//! SmolLM, Qwen2, Mistral; the pretrained models people start from). [`Trunk`] is the one
//! interface the rest of Ember uses: hidden states for the energy head, a forward from input
//! embeddings for refinement, the LM head, and KV-cached decoding.
//!
//! The architecture is a field of the checkpoint's `config.json` ([`TrunkConfig`]):
//! `"architecture": "llama"` for the Llama family; a config without the field is GPT-2, so every
//! existing checkpoint, run directory and fingerprint is unchanged.
//!
//! Positions come from the attention mask ([`positions`]) and the attention mask is causal over
//! real keys ([`attention_mask`]), so a left-padded row computes exactly what it computes alone,
//! in both architectures.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};

pub mod gpt;
pub mod llama;

pub use gpt::{Gpt, GptConfig};
pub use llama::{Llama, LlamaConfig};

/// Keys and values of one layer: `[B, H_kv, capacity, Dh]` buffers.
#[derive(Debug)]
pub(crate) struct LayerKv {
    k: Tensor,
    v: Tensor,
}

impl LayerKv {
    /// Writes `k`, `v` `[B, H_kv, T, Dh]` at positions `past..past+T` and returns everything
    /// cached so far, `[B, H_kv, past + T, Dh]` each.
    pub(crate) fn append(&mut self, past: i64, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        self.k.narrow(2, past, t).copy_(k);
        self.v.narrow(2, past, t).copy_(v);
        (self.k.narrow(2, 0, past + t), self.v.narrow(2, 0, past + t))
    }
}

/// The KV cache of a batch being generated; owned by the caller.
#[derive(Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    len: i64,
    capacity: i64,
}

impl KvCache {
    /// Room for `capacity` positions of `batch` sequences of a model shaped `cfg`.
    pub fn new(cfg: &TrunkConfig, batch: i64, capacity: i64, device: Device, kind: Kind) -> Self {
        let shape = [batch, cfg.n_kv_head(), capacity, cfg.head_dim()];
        let layers = (0..cfg.n_layer())
            .map(|_| LayerKv {
                k: Tensor::zeros(shape, (kind, device)),
                v: Tensor::zeros(shape, (kind, device)),
            })
            .collect();
        Self {
            layers,
            len: 0,
            capacity,
        }
    }

    /// Positions filled so far.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// Checks a step of `t` new tokens whose `mask` `[B, past + t]` covers the cache and them;
    /// returns `past`.
    pub(crate) fn begin(&self, mask: &Tensor, t: i64) -> i64 {
        assert_eq!(
            mask.size()[1],
            self.len + t,
            "mask must cover cache + new tokens"
        );
        assert!(self.len + t <= self.capacity, "KV cache overflow");
        self.len
    }

    /// Marks `t` more positions as filled (after every layer has appended them).
    pub(crate) fn commit(&mut self, t: i64) {
        self.len += t;
    }
}

/// Positions of the last `t` columns of `mask` `[B, S]`: the number of real tokens before
/// each one (`cumsum - 1`, 0 for padding before the first real token). `[B, t]`.
pub fn positions(mask: &Tensor, t: i64) -> Tensor {
    let s = mask.size()[1];
    (mask.cumsum(1, Kind::Int64) - 1)
        .clamp_min(0)
        .narrow(1, s - t, t)
}

/// The slice of `x` at index `at[b]` of dimension `dim` in each row `b`: `x` `[B, .., T, ..]`,
/// `at` `[B]` (i64) → `[B, .., 1, ..]`. Differentiable in `x`.
pub(crate) fn take_rows(x: &Tensor, at: &Tensor, dim: i64) -> Tensor {
    let mut shape = x.size();
    shape[dim as usize] = 1;
    let mut view = vec![1; shape.len()];
    view[0] = shape[0];
    let index = at.view(view.as_slice()).expand(shape.as_slice(), false);
    x.gather(dim, &index, false)
}

/// `[B, 1, T, S]` boolean attention mask for the last `t` of `S` positions: causal, real keys
/// only, and always the query's own position (so padding rows never see an empty row → NaN).
pub fn attention_mask(mask: &Tensor, t: i64) -> Tensor {
    let (b, s) = mask.size2().expect("mask is [B, S]");
    let device = mask.device();
    let q = Tensor::arange_start(s - t, s, (Kind::Int64, device)).view([t, 1]);
    let k = Tensor::arange(s, (Kind::Int64, device)).view([1, s]);
    let causal = k.le_tensor(&q); // [T, S]
    let own = k.eq_tensor(&q); // [T, S]
    let real = mask.ne(0).view([b, 1, 1, s]);
    real.logical_and(&causal).logical_or(&own) // [B, 1, T, S]
}

/// The shape of a trunk, by architecture. Serialised as the architecture's own config; a
/// Llama-family one carries `"architecture": "llama"`, a GPT-2 one no tag (so GPT-2 configs
/// written before the Llama trunk existed read back, and write, byte for byte the same).
#[derive(Debug, Clone, PartialEq)]
pub enum TrunkConfig {
    Gpt2(GptConfig),
    Llama(LlamaConfig),
}

impl Default for TrunkConfig {
    fn default() -> Self {
        Self::Gpt2(GptConfig::default())
    }
}

impl From<GptConfig> for TrunkConfig {
    fn from(c: GptConfig) -> Self {
        Self::Gpt2(c)
    }
}

impl From<LlamaConfig> for TrunkConfig {
    fn from(c: LlamaConfig) -> Self {
        Self::Llama(c)
    }
}

/// The config key naming the architecture.
pub const ARCHITECTURE_KEY: &str = "architecture";

impl Serialize for TrunkConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Gpt2(c) => c.serialize(s),
            Self::Llama(c) => {
                let mut v = serde_json::to_value(c).map_err(serde::ser::Error::custom)?;
                let mut tagged = serde_json::Map::new();
                tagged.insert(ARCHITECTURE_KEY.into(), Value::from(llama::ARCHITECTURE));
                if let Value::Object(fields) = &mut v {
                    tagged.append(fields);
                }
                Value::Object(tagged).serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for TrunkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let mut v = Value::deserialize(d)?;
        let arch = match v.as_object_mut() {
            Some(fields) => fields.remove(ARCHITECTURE_KEY),
            None => return Err(D::Error::custom("a trunk config must be a JSON object")),
        };
        match arch.as_ref().map(|a| a.as_str()) {
            None | Some(Some(gpt::ARCHITECTURE)) => serde_json::from_value(v)
                .map(Self::Gpt2)
                .map_err(D::Error::custom),
            Some(Some(llama::ARCHITECTURE)) => serde_json::from_value(v)
                .map(Self::Llama)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(format!(
                "unknown architecture {}: expected {:?} or {:?}",
                arch.unwrap_or_default(),
                gpt::ARCHITECTURE,
                llama::ARCHITECTURE
            ))),
        }
    }
}

/// Accessors of the fields every architecture's config has under the same name and type.
macro_rules! shared_fields {
    ($($(#[$doc:meta])* $name:ident: $ty:ty,)*) => {$(
        $(#[$doc])*
        pub fn $name(&self) -> $ty {
            match self {
                Self::Gpt2(c) => c.$name,
                Self::Llama(c) => c.$name,
            }
        }
    )*};
}

impl TrunkConfig {
    /// A message for the first inconsistent field, if any.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Gpt2(c) => c.check(),
            Self::Llama(c) => c.check(),
        }
    }

    pub fn architecture(&self) -> &'static str {
        match self {
            Self::Gpt2(_) => gpt::ARCHITECTURE,
            Self::Llama(_) => llama::ARCHITECTURE,
        }
    }

    shared_fields! {
        vocab_size: i64,
        /// Longest sequence the model is meant for (GPT-2: what its position table covers).
        n_ctx: i64,
        d_model: i64,
        n_layer: i64,
        n_head: i64,
    }

    /// Whether the LM head is the token embedding.
    pub fn tied(&self) -> bool {
        match self {
            Self::Gpt2(_) => true,
            Self::Llama(c) => c.tie_word_embeddings,
        }
    }

    /// The name prefix of block `i`'s parameters (`h.3.`, `model.layers.3.`).
    pub fn block_prefix(&self, i: i64) -> String {
        match self {
            Self::Gpt2(_) => format!("h.{i}."),
            Self::Llama(_) => format!("model.layers.{i}."),
        }
    }

    /// The name prefix of the final norm's parameters (`ln_f.`, `model.norm.`).
    pub fn final_norm_prefix(&self) -> &'static str {
        match self {
            Self::Gpt2(_) => "ln_f.",
            Self::Llama(_) => "model.norm.",
        }
    }

    /// Key/value heads (= query heads without grouped-query attention).
    pub fn n_kv_head(&self) -> i64 {
        match self {
            Self::Gpt2(c) => c.n_head,
            Self::Llama(c) => c.n_kv_head,
        }
    }

    pub fn head_dim(&self) -> i64 {
        self.d_model() / self.n_head()
    }

    /// Parameters, a tied LM head counted once.
    pub fn n_params(&self) -> i64 {
        match self {
            Self::Gpt2(c) => c.n_params(),
            Self::Llama(c) => c.n_params(),
        }
    }

    /// Forward FLOPs per token with `ctx` tokens attended on average: 2 × the parameters that
    /// multiply (blocks and LM head; not a position table, nor an untied input embedding,
    /// which are lookups) + attention scores and mixing (4 · layers · ctx · width).
    pub fn forward_flops_per_token(&self, ctx: f64) -> f64 {
        let lookups = match self {
            Self::Gpt2(c) => c.n_ctx * c.d_model,
            Self::Llama(c) if !c.tie_word_embeddings => c.vocab_size * c.d_model,
            Self::Llama(_) => 0,
        };
        let matmul_params = (self.n_params() - lookups) as f64;
        2.0 * matmul_params + 4.0 * self.n_layer() as f64 * ctx * self.d_model() as f64
    }
}

/// A trunk of either architecture, with the same methods.
#[derive(Debug)]
pub enum Trunk {
    Gpt2(Gpt),
    Llama(Llama),
}

/// Calls the same method on whichever architecture `self` is.
macro_rules! each {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            Trunk::Gpt2($m) => $e,
            Trunk::Llama($m) => $e,
        }
    };
}

impl Trunk {
    /// A freshly initialised trunk under `p` (seed the torch generator first).
    pub fn new(p: nn::Path, cfg: &TrunkConfig) -> Self {
        match cfg {
            TrunkConfig::Gpt2(c) => Self::Gpt2(Gpt::new(p, c)),
            TrunkConfig::Llama(c) => Self::Llama(Llama::new(p, c)),
        }
    }

    /// Token embeddings `[B, T, D]` of ids `[B, T]`.
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        each!(self, m => m.embed(ids))
    }

    /// The input embedding matrix `[V, D]`.
    pub fn wte(&self) -> &Tensor {
        each!(self, m => m.wte())
    }

    /// Hidden states `[B, T, D]` after the final norm, for ids `[B, T]`, mask `[B, T]`.
    pub fn hidden(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        self.hidden_from_embeds(&self.embed(ids), mask, train)
    }

    /// The trunk on input embeddings `[B, T, D]` (soft tokens).
    pub fn hidden_from_embeds(&self, embeds: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        each!(self, m => m.hidden_from_embeds(embeds, mask, train))
    }

    /// The residual stream `[B, T, D]` after the input embeddings `embeds` went through the
    /// first `k` blocks: the frozen part of a trunk whose top blocks alone train, computed once
    /// and cached. Left padding changes no real position's value.
    pub fn lower(&self, embeds: &Tensor, mask: &Tensor, k: usize, train: bool) -> Tensor {
        match self {
            Trunk::Gpt2(m) => m.lower(embeds, mask, k, train),
            Trunk::Llama(m) => m.lower(embeds, mask, k),
        }
    }

    /// Blocks `k..` and the final norm on [`Trunk::lower`]'s output: hidden states `[B, T, D]`.
    /// `upper(lower(e, m, k), m, k, None)` is [`Trunk::hidden_from_embeds`] for every `k`.
    ///
    /// With `at` `[B]` (i64), only the hidden state at position `at[b]` of each row, `[B, D]`:
    /// what a score read at one position (a reward head at the EOS) needs. The last block then
    /// computes its keys and values at every position but its query, attention output and MLP
    /// at that one only, which saves most of a block's work forward and backward.
    pub fn upper(
        &self,
        x: &Tensor,
        mask: &Tensor,
        k: usize,
        at: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        match self {
            Trunk::Gpt2(m) => m.upper(x, mask, k, at, train),
            Trunk::Llama(m) => m.upper(x, mask, k, at),
        }
    }

    /// The hidden state `[B, D]` at position `at[b]` of each row of input embeddings `embeds`
    /// `[B, T, D]`: the row `at[b]` of [`Trunk::hidden_from_embeds`], computed with
    /// [`Trunk::upper`]'s saving.
    pub fn hidden_at(&self, embeds: &Tensor, mask: &Tensor, at: &Tensor, train: bool) -> Tensor {
        self.upper(
            &self.lower(embeds, mask, 0, train),
            mask,
            0,
            Some(at),
            train,
        )
    }

    /// One cached step: ids `[B, T]` are the next `T` tokens, `mask` `[B, past + T]` covers
    /// the cache plus them. Returns their hidden states `[B, T, D]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Tensor {
        each!(self, m => m.forward(ids, mask, cache))
    }

    /// Logits `[B, T, V]` over all positions.
    pub fn logits(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        self.logits_from_hidden(&self.hidden(ids, mask, train))
    }

    /// The LM head's weight `[V, D]`: logits are `h · headᵀ` (GPT-2 and tied Llama: the token
    /// embedding).
    pub fn head(&self) -> &Tensor {
        match self {
            Trunk::Gpt2(m) => m.wte(),
            Trunk::Llama(m) => m.head(),
        }
    }

    /// The LM head: `[.., D]` → `[.., V]`.
    pub fn logits_from_hidden(&self, h: &Tensor) -> Tensor {
        each!(self, m => m.logits_from_hidden(h))
    }

    /// The LM head for one generation step, `h` `[B, D]` → `[B, V]`.
    pub fn step_logits(&self, h: &Tensor) -> Tensor {
        each!(self, m => m.step_logits(h))
    }
}
