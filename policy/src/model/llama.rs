//! A Llama-family decoder (Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language
//! Models"), which also covers SmolLM, Mistral (without a sliding window: Ember's sequences are
//! far shorter than any window) and Qwen2 (q/k/v biases): token embeddings, pre-RMSNorm
//! blocks of grouped-query causal self-attention with rotary position embeddings and a SwiGLU
//! MLP, a final RMSNorm, and an LM head tied to the embedding or separate.
//!
//! Parameter names and layouts are Hugging Face `LlamaForCausalLM`'s (`model.embed_tokens`,
//! `model.layers.{i}.self_attn.{q,k,v,o}_proj`, `model.layers.{i}.mlp.{gate,up,down}_proj`,
//! `model.layers.{i}.{input,post_attention}_layernorm`, `model.norm`, `lm_head`), linear weights
//! `[out, in]`, so HF import and export are plain copies. The rotary embedding is HF's
//! "rotate half" form, computed in f32 from positions taken from the attention mask, so left
//! padding is exact here too.
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

use super::{attention_mask, positions, take_rows, KvCache, LayerKv};

/// The `architecture` of a Llama-family [`super::TrunkConfig`].
pub const ARCHITECTURE: &str = "llama";

const INIT_STD: f64 = 0.02;

/// The model shape (HF `LlamaConfig`'s fields under Ember's names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// Token vocabulary size (≥ the tokenizer's).
    pub vocab_size: i64,
    /// Longest sequence the model was trained for (`max_position_embeddings`).
    pub n_ctx: i64,
    /// Width of the residual stream (`hidden_size`).
    pub d_model: i64,
    /// Number of blocks.
    pub n_layer: i64,
    /// Query heads per block.
    pub n_head: i64,
    /// Key/value heads per block (grouped-query attention; `n_head` must be a multiple).
    pub n_kv_head: i64,
    /// Width of the SwiGLU MLP (`intermediate_size`).
    pub d_ff: i64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Biases on the q, k and v projections (Qwen2).
    #[serde(default)]
    pub attention_bias: bool,
    /// The LM head is the token embedding (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    /// A message for the first inconsistent field, if any.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_ctx", self.n_ctx),
            ("d_model", self.d_model),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_kv_head", self.n_kv_head),
            ("d_ff", self.d_ff),
        ] {
            if v <= 0 {
                return Err(format!("{name} must be > 0, got {v}"));
            }
        }
        if self.d_model % self.n_head != 0 || self.head_dim() % 2 != 0 {
            return Err(format!(
                "d_model {} must be n_head {} × an even head width",
                self.d_model, self.n_head
            ));
        }
        if self.n_head % self.n_kv_head != 0 {
            return Err(format!(
                "n_head {} is not a multiple of n_kv_head {}",
                self.n_head, self.n_kv_head
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("rope_theta must be > 0, got {}", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "rms_norm_eps must be > 0, got {}",
                self.rms_norm_eps
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> i64 {
        self.d_model / self.n_head
    }

    /// Parameters, a tied LM head counted once.
    pub fn n_params(&self) -> i64 {
        let (d, kv) = (self.d_model, self.n_kv_head * self.head_dim());
        let bias = if self.attention_bias { d + 2 * kv } else { 0 };
        let block = 2 * d + 2 * d * d + 2 * d * kv + bias + 3 * d * self.d_ff;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.n_layer * block + d + head
    }
}

fn linear(p: nn::Path, d_in: i64, d_out: i64, bias: bool) -> Linear {
    let init = nn::Init::Randn {
        mean: 0.0,
        stdev: INIT_STD,
    };
    Linear {
        weight: p.var("weight", &[d_out, d_in], init),
        bias: bias.then(|| p.var("bias", &[d_out], nn::Init::Const(0.0))),
    }
}

/// HF `nn.Linear`: `y = x Wᵀ + b`, W `[out, in]`.
#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// RMSNorm as HF computes it: normalise in f32, cast back, then scale.
#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: nn::Path, d: i64, eps: f64) -> Self {
        Self {
            weight: p.var("weight", &[d], nn::Init::Const(1.0)),
            eps,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let h = x.to_kind(Kind::Float);
        let var = h
            .square()
            .mean_dim(Some([-1i64].as_slice()), true, Kind::Float);
        let h = h * (var + self.eps).rsqrt();
        &self.weight * h.to_kind(kind)
    }
}

/// `cos`, `sin` `[B, 1, T, Dh]` of the rotary embedding at positions `pos` `[B, T]`.
fn rotary(inv_freq: &Tensor, pos: &Tensor, kind: Kind) -> (Tensor, Tensor) {
    let (b, t) = pos.size2().expect("positions are [B, T]");
    let freqs = pos.to_kind(Kind::Float).unsqueeze(-1) * inv_freq.view([1, 1, -1]); // [B, T, Dh/2]
    let emb = Tensor::cat(&[&freqs, &freqs], -1).view([b, 1, t, -1]); // [B, 1, T, Dh]
    (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
}

/// `x` `[.., Dh]` → `cat(-x₂, x₁)`.
fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size().last().copied().expect("a feature dimension") / 2;
    let parts = x.split(half, -1);
    Tensor::cat(&[&parts[1].neg(), &parts[0]], -1)
}

fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    x * cos + rotate_half(x) * sin
}

#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    n_head: i64,
    n_kv_head: i64,
    head_dim: i64,
}

impl Attention {
    fn new(p: nn::Path, cfg: &LlamaConfig) -> Self {
        let (d, kv) = (cfg.d_model, cfg.n_kv_head * cfg.head_dim());
        let bias = cfg.attention_bias;
        Self {
            q_proj: linear(&p / "q_proj", d, d, bias),
            k_proj: linear(&p / "k_proj", d, kv, bias),
            v_proj: linear(&p / "v_proj", d, kv, bias),
            o_proj: linear(&p / "o_proj", d, d, false),
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            head_dim: cfg.head_dim(),
        }
    }

    /// `x` `[B, T, D]`, rotary `cos`/`sin` `[B, 1, T, Dh]`, `mask` `[B, 1, T, S]`; with `kv`,
    /// the new keys and values are cached at `past..past+T` and attention covers `0..past+T`.
    /// With `at` `[B]`, only the query at position `at[b]` of each row is computed: `[B, 1, D]`.
    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: &Tensor,
        kv: Option<(&mut LayerKv, i64)>,
        at: Option<&Tensor>,
    ) -> Tensor {
        let (b, t, d) = x.size3().expect("attention input is [B, T, D]");
        let heads = |z: Tensor, h: i64| z.view([b, -1, h, self.head_dim]).transpose(1, 2);
        let k = heads(self.k_proj.forward(x), self.n_kv_head); // [B, Hkv, T, Dh]
        let v = heads(self.v_proj.forward(x), self.n_kv_head);
        let k = apply_rotary(&k, &rope.0, &rope.1);
        let (q, mask) = match at {
            Some(at) => {
                let q = heads(self.q_proj.forward(&take_rows(x, at, 1)), self.n_head); // [B, H, 1, Dh]
                let (cos, sin) = (take_rows(&rope.0, at, 2), take_rows(&rope.1, at, 2));
                (apply_rotary(&q, &cos, &sin), take_rows(mask, at, 2))
            }
            None => {
                let q = heads(self.q_proj.forward(x), self.n_head); // [B, H, T, Dh]
                (apply_rotary(&q, &rope.0, &rope.1), mask.shallow_clone())
            }
        };
        let (k, v) = match kv {
            Some((cache, past)) => cache.append(past, &k, &v), // [B, Hkv, past + T, Dh]
            None => (k, v),
        };
        let gqa = self.n_kv_head != self.n_head;
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, gqa); // [B, H, Tq, Dh]
        let tq = if at.is_some() { 1 } else { t };
        let y = y.transpose(1, 2).contiguous().view([b, tq, d]);
        self.o_proj.forward(&y)
    }
}

#[derive(Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(p: nn::Path, cfg: &LlamaConfig) -> Self {
        let (d, f) = (cfg.d_model, cfg.d_ff);
        Self {
            gate_proj: linear(&p / "gate_proj", d, f, false),
            up_proj: linear(&p / "up_proj", d, f, false),
            down_proj: linear(&p / "down_proj", f, d, false),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.gate_proj.forward(x).silu() * self.up_proj.forward(x); // [B, T, F]
        self.down_proj.forward(&h)
    }
}

#[derive(Debug)]
struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn new(p: nn::Path, cfg: &LlamaConfig) -> Self {
        let (d, eps) = (cfg.d_model, cfg.rms_norm_eps);
        Self {
            input_layernorm: RmsNorm::new(&p / "input_layernorm", d, eps),
            self_attn: Attention::new(&p / "self_attn", cfg),
            post_attention_layernorm: RmsNorm::new(&p / "post_attention_layernorm", d, eps),
            mlp: Mlp::new(&p / "mlp", cfg),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: &Tensor,
        kv: Option<(&mut LayerKv, i64)>,
    ) -> Tensor {
        let x = x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x), rope, mask, kv, None);
        &x + self.mlp.forward(&self.post_attention_layernorm.forward(&x))
    }

    /// The block's output `[B, 1, D]` at position `at[b]` of each row only (see
    /// [`super::Trunk::upper`]).
    fn forward_at(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: &Tensor,
        at: &Tensor,
    ) -> Tensor {
        let y =
            self.self_attn
                .forward(&self.input_layernorm.forward(x), rope, mask, None, Some(at));
        let x = take_rows(x, at, 1) + y; // [B, 1, D]
        &x + self.mlp.forward(&self.post_attention_layernorm.forward(&x))
    }
}

/// The Llama-family model: weights only (the rotary frequencies are derived, not stored).
#[derive(Debug)]
pub struct Llama {
    embed_tokens: Tensor,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Tensor>,
    inv_freq: Tensor,
    cfg: LlamaConfig,
}

impl Llama {
    pub fn new(p: nn::Path, cfg: &LlamaConfig) -> Self {
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        };
        let m = &p / "model";
        let embed_tokens =
            (&m / "embed_tokens").var("weight", &[cfg.vocab_size, cfg.d_model], init);
        let layers = (0..cfg.n_layer)
            .map(|i| Block::new(&m / "layers" / i, cfg))
            .collect();
        let norm = RmsNorm::new(&m / "norm", cfg.d_model, cfg.rms_norm_eps);
        let lm_head = (!cfg.tie_word_embeddings)
            .then(|| (&p / "lm_head").var("weight", &[cfg.vocab_size, cfg.d_model], init));
        // HF: 1 / theta^(2i / Dh), in f32.
        let dh = cfg.head_dim();
        let exponents = Tensor::arange_start_step(0, dh, 2, (Kind::Int64, p.device()))
            .to_kind(Kind::Float)
            / dh as f64;
        let inv_freq = Tensor::pow_scalar(cfg.rope_theta, &exponents).reciprocal();
        Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq,
            cfg: cfg.clone(),
        }
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Token embeddings `[B, T, D]` of ids `[B, T]`.
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, ids, -1, false, false)
    }

    /// The token embedding matrix `[V, D]`.
    pub fn wte(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// The trunk on token embeddings `[B, T, D]`: hidden states after the final norm.
    /// `train` is accepted for symmetry with GPT-2; Llama models train without dropout.
    pub fn hidden_from_embeds(&self, embeds: &Tensor, mask: &Tensor, _train: bool) -> Tensor {
        self.upper(&self.lower(embeds, mask, 0), mask, 0, None)
    }

    /// The residual stream `[B, T, D]` after the first `k` blocks.
    pub fn lower(&self, embeds: &Tensor, mask: &Tensor, k: usize) -> Tensor {
        self.blocks(embeds, mask, &self.layers[..k], None)
    }

    /// Blocks `k..` and the final norm on [`Llama::lower`]'s output: `[B, T, D]`, or with `at`
    /// `[B]` the hidden state at position `at[b]` of each row, `[B, D]` (see
    /// [`super::Trunk::upper`]).
    pub fn upper(&self, x: &Tensor, mask: &Tensor, k: usize, at: Option<&Tensor>) -> Tensor {
        let h = self
            .norm
            .forward(&self.blocks(x, mask, &self.layers[k..], at));
        match at {
            Some(_) => h.squeeze_dim(1),
            None => h,
        }
    }

    /// `blocks` on `x` `[B, T, D]`; with `at`, the last of them at position `at[b]` of each row
    /// only, `[B, 1, D]`.
    fn blocks(&self, x: &Tensor, mask: &Tensor, blocks: &[Block], at: Option<&Tensor>) -> Tensor {
        let t = x.size()[1];
        let rope = rotary(&self.inv_freq, &positions(mask, t), x.kind());
        let amask = attention_mask(mask, t); // [B, 1, T, T]
        let fold = |blocks: &[Block]| {
            blocks.iter().fold(x.shallow_clone(), |x, block| {
                block.forward(&x, &rope, &amask, None)
            })
        };
        let Some(at) = at else {
            return fold(blocks);
        };
        match blocks.split_last() {
            Some((last, full)) => last.forward_at(&fold(full), &rope, &amask, at),
            None => take_rows(x, at, 1),
        }
    }

    /// One cached step (see [`super::Trunk::forward`]). Inference only.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Tensor {
        let t = ids.size()[1];
        let past = cache.begin(mask, t);
        let mut x = self.embed(ids); // [B, T, D]
        let rope = rotary(&self.inv_freq, &positions(mask, t), x.kind());
        let amask = attention_mask(mask, t); // [B, 1, T, past + T]
        for (block, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(&x, &rope, &amask, Some((kv, past)));
        }
        cache.commit(t);
        self.norm.forward(&x)
    }

    /// The LM head's weight `[V, D]` (the token embedding when tied).
    pub fn head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// The LM head: `[.., D]` → `[.., V]`.
    pub fn logits_from_hidden(&self, h: &Tensor) -> Tensor {
        h.matmul(&self.head().tr())
    }

    /// The LM head for one generation step, `h` `[B, D]` → `[B, V]` (see
    /// [`super::Gpt::step_logits`] for the orientation).
    pub fn step_logits(&self, h: &Tensor) -> Tensor {
        self.head().matmul(&h.tr()).tr().contiguous()
    }
}
