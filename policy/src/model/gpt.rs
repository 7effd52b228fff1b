//! A GPT-2 decoder (Radford et al. 2019, "Language Models are Unsupervised Multitask
//! Learners"): token + learned position embeddings, pre-LayerNorm blocks of causal
//! self-attention and a 4× GELU(tanh) MLP, a final LayerNorm, and an LM head tied to the token
//! embedding.
//!
//! Parameter names and shapes are Hugging Face GPT-2's (`wte`, `wpe`, `h.{i}.ln_1`,
//! `h.{i}.attn.c_attn`, `h.{i}.attn.c_proj`, `h.{i}.ln_2`, `h.{i}.mlp.c_fc`,
//! `h.{i}.mlp.c_proj`, `ln_f`). The `c_*` layers are HF `Conv1D`s and are stored exactly as HF
//! stores them, weight `[in, out]` (so `y = x @ W + b`): export and import are plain copies.
//!
//! Positions come from the attention mask (`cumsum(mask) - 1`), so a left-padded sequence sees
//! the same positions as the same sequence alone. The KV cache ([`KvCache`]) is a value the
//! caller owns and passes to [`Gpt::forward`]; the model itself holds only weights.
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

use super::{attention_mask, positions, take_rows, KvCache, LayerKv};

/// The `architecture` of a GPT-2 [`super::TrunkConfig`] (also what a config without one is).
pub const ARCHITECTURE: &str = "gpt2";

/// The model shape. Saved as `config.json` beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GptConfig {
    /// Token vocabulary size (≥ the tokenizer's).
    pub vocab_size: i64,
    /// Longest sequence (prompt + answer) the position embedding covers.
    pub n_ctx: i64,
    /// Width of the residual stream.
    pub d_model: i64,
    /// Number of transformer blocks.
    pub n_layer: i64,
    /// Attention heads per block (`d_model` must be a multiple).
    pub n_head: i64,
    /// Dropout on embeddings, attention probabilities and residual branches while training.
    pub dropout: f64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for GptConfig {
    /// The reference config of `ember bench`.
    fn default() -> Self {
        Self {
            vocab_size: 8192,
            n_ctx: 256,
            d_model: 256,
            n_layer: 4,
            n_head: 4,
            dropout: 0.0,
            layer_norm_eps: 1e-5,
        }
    }
}

impl GptConfig {
    /// A message for the first inconsistent field, if any.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_ctx", self.n_ctx),
            ("d_model", self.d_model),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if v <= 0 {
                return Err(format!("{name} must be > 0, got {v}"));
            }
        }
        if self.d_model % self.n_head != 0 {
            return Err(format!(
                "d_model {} is not a multiple of n_head {}",
                self.d_model, self.n_head
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> i64 {
        self.d_model / self.n_head
    }

    /// Parameters, the tied LM head counted once.
    pub fn n_params(&self) -> i64 {
        let d = self.d_model;
        let block =
            2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d);
        self.vocab_size * d + self.n_ctx * d + self.n_layer * block + 2 * d
    }
}

const INIT_STD: f64 = 0.02;

/// HF `Conv1D`: `y = x @ W + b`, W `[in, out]`.
#[derive(Debug)]
struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    fn new(p: nn::Path, d_in: i64, d_out: i64, std: f64) -> Self {
        let weight = p.var(
            "weight",
            &[d_in, d_out],
            nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        );
        let bias = p.var("bias", &[d_out], nn::Init::Const(0.0));
        Self { weight, bias }
    }

    /// `x` `[.., d_in]` → `[.., d_out]`: one fused `addmm` over the flattened rows (as
    /// Hugging Face's `Conv1D` does; a separate bias add costs a full extra pass over the output).
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut shape = x.size();
        let d_in = *shape.last().expect("Conv1D input has a feature dimension");
        let y = self.bias.addmm(&x.reshape([-1, d_in]), &self.weight);
        *shape.last_mut().expect("non-empty shape") = self.weight.size()[1];
        y.view(shape.as_slice())
    }
}

fn layer_norm(p: nn::Path, cfg: &GptConfig) -> nn::LayerNorm {
    let ln = nn::LayerNormConfig {
        eps: cfg.layer_norm_eps,
        ..Default::default()
    };
    nn::layer_norm(p, vec![cfg.d_model], ln)
}

#[derive(Debug)]
struct Attention {
    c_attn: Conv1D,
    c_proj: Conv1D,
    n_head: i64,
    head_dim: i64,
    dropout: f64,
}

impl Attention {
    fn new(p: nn::Path, cfg: &GptConfig) -> Self {
        let d = cfg.d_model;
        // GPT-2 scales residual projections by 1/sqrt(2 * n_layer).
        let proj_std = INIT_STD / (2.0 * cfg.n_layer as f64).sqrt();
        Self {
            c_attn: Conv1D::new(&p / "c_attn", d, 3 * d, INIT_STD),
            c_proj: Conv1D::new(&p / "c_proj", d, d, proj_std),
            n_head: cfg.n_head,
            head_dim: cfg.head_dim(),
            dropout: cfg.dropout,
        }
    }

    /// `x` `[B, T, D]`, `mask` `[B, 1, T, S]` (true = may attend); with `kv`, the new keys and
    /// values are written at positions `past..past+T` and attention covers `0..past+T`. With
    /// `at` `[B]`, only the query at position `at[b]` of each row is computed: `[B, 1, D]`.
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        kv: Option<(&mut LayerKv, i64)>,
        at: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let (b, t, d) = x.size3().expect("attention input is [B, T, D]");
        let qkv = self.c_attn.forward(x); // [B, T, 3D]
        let heads = |z: &Tensor| z.view([b, t, self.n_head, self.head_dim]).transpose(1, 2); // [B, H, T, Dh]
        let parts = qkv.split(d, 2);
        let (q, k, v) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
        let (k, v) = match kv {
            Some((cache, past)) => cache.append(past, &k, &v), // [B, H, past + T, Dh]
            None => (k, v),
        };
        let (q, mask) = match at {
            Some(at) => (take_rows(&q, at, 2), take_rows(mask, at, 2)), // [B, H, 1, Dh], [B, 1, 1, S]
            None => (q, mask.shallow_clone()),
        };
        let tq = q.size()[2];
        let p = if train { self.dropout } else { 0.0 };
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), p, false, None, false); // [B, H, Tq, Dh]
        let y = y.transpose(1, 2).contiguous().view([b, tq, d]); // [B, Tq, D]
        self.c_proj.forward(&y).dropout(self.dropout, train)
    }
}

#[derive(Debug)]
struct Mlp {
    c_fc: Conv1D,
    c_proj: Conv1D,
    dropout: f64,
}

impl Mlp {
    fn new(p: nn::Path, cfg: &GptConfig) -> Self {
        let d = cfg.d_model;
        let proj_std = INIT_STD / (2.0 * cfg.n_layer as f64).sqrt();
        Self {
            c_fc: Conv1D::new(&p / "c_fc", d, 4 * d, INIT_STD),
            c_proj: Conv1D::new(&p / "c_proj", 4 * d, d, proj_std),
            dropout: cfg.dropout,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.c_fc.forward(x).gelu("tanh"); // [B, T, 4D]
        self.c_proj.forward(&h).dropout(self.dropout, train) // [B, T, D]
    }
}

#[derive(Debug)]
struct Block {
    ln_1: nn::LayerNorm,
    attn: Attention,
    ln_2: nn::LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn new(p: nn::Path, cfg: &GptConfig) -> Self {
        Self {
            ln_1: layer_norm(&p / "ln_1", cfg),
            attn: Attention::new(&p / "attn", cfg),
            ln_2: layer_norm(&p / "ln_2", cfg),
            mlp: Mlp::new(&p / "mlp", cfg),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        kv: Option<(&mut LayerKv, i64)>,
        train: bool,
    ) -> Tensor {
        let x = x + self
            .attn
            .forward(&self.ln_1.forward(x), mask, kv, None, train);
        &x + self.mlp.forward(&self.ln_2.forward(&x), train)
    }

    /// The block's output `[B, 1, D]` at position `at[b]` of each row only: keys and values
    /// from every position, the query, the projection and the MLP at that one.
    fn forward_at(&self, x: &Tensor, mask: &Tensor, at: &Tensor, train: bool) -> Tensor {
        let y = self
            .attn
            .forward(&self.ln_1.forward(x), mask, None, Some(at), train);
        let x = take_rows(x, at, 1) + y; // [B, 1, D]
        &x + self.mlp.forward(&self.ln_2.forward(&x), train)
    }
}

/// The GPT-2 model: weights only.
#[derive(Debug)]
pub struct Gpt {
    wte: Tensor,
    wpe: Tensor,
    h: Vec<Block>,
    ln_f: nn::LayerNorm,
    cfg: GptConfig,
}

impl Gpt {
    pub fn new(p: nn::Path, cfg: &GptConfig) -> Self {
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        };
        let wte = (&p / "wte").var("weight", &[cfg.vocab_size, cfg.d_model], init);
        let wpe = (&p / "wpe").var("weight", &[cfg.n_ctx, cfg.d_model], init);
        let h = (0..cfg.n_layer)
            .map(|i| Block::new(&p / "h" / i, cfg))
            .collect();
        let ln_f = layer_norm(&p / "ln_f", cfg);
        Self {
            wte,
            wpe,
            h,
            ln_f,
            cfg: cfg.clone(),
        }
    }

    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// Token embeddings `[B, T, D]` of ids `[B, T]`.
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.wte, ids, -1, false, false)
    }

    /// The token embedding matrix `[V, D]` (also the LM head).
    pub fn wte(&self) -> &Tensor {
        &self.wte
    }

    /// The trunk: hidden states `[B, T, D]` after `ln_f` for ids `[B, T]`, mask `[B, T]`.
    pub fn hidden(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        self.hidden_from_embeds(&self.embed(ids), mask, train)
    }

    /// The trunk on token embeddings `[B, T, D]` (soft tokens); positions are added here.
    pub fn hidden_from_embeds(&self, embeds: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        self.upper(&self.lower(embeds, mask, 0, train), mask, 0, None, train)
    }

    /// The residual stream `[B, T, D]` after the position embedding and the first `k` blocks.
    pub fn lower(&self, embeds: &Tensor, mask: &Tensor, k: usize, train: bool) -> Tensor {
        let t = embeds.size()[1];
        let pos = positions(mask, t); // [B, T]
        let x = (embeds + Tensor::embedding(&self.wpe, &pos, -1, false, false))
            .dropout(self.cfg.dropout, train); // [B, T, D]
        let amask = attention_mask(mask, t); // [B, 1, T, T]
        self.h[..k]
            .iter()
            .fold(x, |x, block| block.forward(&x, &amask, None, train))
    }

    /// Blocks `k..` and the final LayerNorm on [`Gpt::lower`]'s output: `[B, T, D]`, or with
    /// `at` `[B]` the hidden state at position `at[b]` of each row, `[B, D]` (see
    /// [`super::Trunk::upper`]).
    pub fn upper(
        &self,
        x: &Tensor,
        mask: &Tensor,
        k: usize,
        at: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let amask = attention_mask(mask, x.size()[1]); // [B, 1, T, T]
        let fold = |x: &Tensor, blocks: &[Block]| {
            blocks.iter().fold(x.shallow_clone(), |x, block| {
                block.forward(&x, &amask, None, train)
            })
        };
        let Some(at) = at else {
            return self.ln_f.forward(&fold(x, &self.h[k..]));
        };
        let x = match self.h[k..].split_last() {
            Some((last, full)) => last.forward_at(&fold(x, full), &amask, at, train),
            None => take_rows(x, at, 1),
        };
        self.ln_f.forward(&x).squeeze_dim(1)
    }

    /// One cached step: ids `[B, T]` are the next `T` tokens, `mask` `[B, past + T]` covers
    /// everything in the cache plus them. Writes their keys/values into `cache` and returns
    /// their hidden states `[B, T, D]`. Inference only (no dropout).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Tensor {
        let t = ids.size()[1];
        let past = cache.begin(mask, t);
        let pos = positions(mask, t); // [B, T]
        let x = self.embed(ids) + Tensor::embedding(&self.wpe, &pos, -1, false, false); // [B, T, D]
        let amask = attention_mask(mask, t); // [B, 1, T, past + T]
        let mut x = x;
        for (block, kv) in self.h.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(&x, &amask, Some((kv, past)), false);
        }
        cache.commit(t);
        self.ln_f.forward(&x)
    }

    /// Logits `[B, T, V]` over all positions.
    pub fn logits(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        self.logits_from_hidden(&self.hidden(ids, mask, train))
    }

    /// The tied LM head: `[.., D]` → `[.., V]`.
    pub fn logits_from_hidden(&self, h: &Tensor) -> Tensor {
        h.matmul(&self.wte.tr())
    }

    /// The LM head for one generation step, `h` `[B, D]` → `[B, V]`, computed as `(wte · hᵀ)ᵀ`.
    /// Same values as [`Gpt::logits_from_hidden`] up to float rounding; with a handful of rows
    /// MKL's GEMM repacks the `[D, V]` operand on every call, and this orientation takes about
    /// half the time (the head is 40 % of the reference model's weights).
    pub fn step_logits(&self, h: &Tensor) -> Tensor {
        self.wte.matmul(&h.tr()).tr().contiguous()
    }
}
