#!/usr/bin/env python3
"""PyTorch eager baselines for `ember bench forward|sft|sample|reward`, same shapes and workloads.

--shape reference: vocab 8192, n_ctx 256, d_model 256, 4 layers, 4 heads (GPT-2 blocks, tied LM
  head, SDPA), written here in plain PyTorch.
--shape smollm2: SmolLM2-135M's shape as `transformers`' LlamaForCausalLM (SDPA attention, eager;
  vocab 49152, d_model 576, 30 layers, 9/3 heads, SwiGLU 1536, tied), randomly initialised.

  workload  reference                      smollm2
  forward   16 x 256 tokens                8 x 256       no grad, logits at every position
  sft       16 x 256                       4 x 256       loss on every position, AdamW, clip 1.0
  sample    16 x (32 prompt + 64 new)      8 x (32 + 32) temperature 1, plain KV-cache loop
  reward    8 pairs x 2 x 256              4 pairs x 2 x 256  scalar head at the last token,
                                                         log loss, AdamW, clip 1.0

Prints one JSON line per bench. Usage:
  python3 scripts/torch_reference.py [--shape reference|smollm2] [--device cpu|cuda]
                                     [--precision fp32|bf16] [--iters N] [--only forward,sft,...]
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

V, CTX, D, L, H = 8192, 256, 256, 4, 4


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.c_attn, self.c_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.c_fc, self.mlp_proj = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

    def forward(self, x, cache=None):
        b, t, _ = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(D, dim=2)
        q, k, v = (z.view(b, t, H, D // H).transpose(1, 2) for z in (q, k, v))
        if cache is not None:
            if cache[0] is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[0], cache[1] = k, v
        causal = t > 1
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, D))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, D), nn.Embedding(CTX, D)
        self.h = nn.ModuleList(Block() for _ in range(L))
        self.ln_f = nn.LayerNorm(D)

    def hidden(self, ids, pos0=0, caches=None):
        pos = torch.arange(pos0, pos0 + ids.shape[1], device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for i, blk in enumerate(self.h):
            x = blk(x, None if caches is None else caches[i])
        return self.ln_f(x)

    def forward(self, ids, pos0=0, caches=None):
        return self.hidden(ids, pos0, caches) @ self.wte.weight.T


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(step, iters):
    """Seconds for `iters` calls of `step` after one warm-up call."""
    step()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    return time.perf_counter() - t


def update(loss, model, opt, dev):
    """Backward, global-norm clipping at 1.0, one AdamW step (ember's training step)."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync(dev)


def amp(dev, precision):
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class Reference:
    """The reference GPT-2 trunk in plain PyTorch."""
    vocab, d_model = V, D
    forward, sft, sample, reward = (16, 256), (16, 256), (16, 32, 64), (8, 256)

    @staticmethod
    def build():
        return Gpt()

    @staticmethod
    def logits(model, ids):
        return model(ids)

    @staticmethod
    def hidden(model, ids):
        return model.hidden(ids)

    @staticmethod
    def sample_loop(model, prompt, new, g):
        caches = [[None, None] for _ in range(L)]
        logits = model(prompt, 0, caches)[:, -1]
        pos = prompt.shape[1]
        for _ in range(new):
            nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=g)
            logits = model(nxt, pos, caches)[:, -1]
            pos += 1


class Smollm2:
    """SmolLM2-135M's shape as transformers' LlamaForCausalLM (random weights)."""
    vocab, d_model = 49152, 576
    forward, sft, sample, reward = (8, 256), (4, 256), (8, 32, 32), (4, 256)

    @staticmethod
    def build():
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                          num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                          max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=True, attn_implementation="sdpa")
        return LlamaForCausalLM(cfg)

    @staticmethod
    def logits(model, ids):
        return model(input_ids=ids).logits

    @staticmethod
    def hidden(model, ids):
        return model.model(input_ids=ids).last_hidden_state

    @staticmethod
    def sample_loop(model, prompt, new, g):
        from transformers import DynamicCache
        cache = DynamicCache()
        logits = model(input_ids=prompt, past_key_values=cache, use_cache=True).logits[:, -1]
        for _ in range(new):
            nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=g)
            logits = model(input_ids=nxt, past_key_values=cache, use_cache=True).logits[:, -1]


@torch.no_grad()
def bench_forward(shape, dev, precision, iters):
    model = shape.build().to(dev).eval()
    b, t = shape.forward
    ids = torch.randint(4, shape.vocab, (b, t), device=dev)

    def run():
        with amp(dev, precision):
            shape.logits(model, ids)
        sync(dev)

    secs = timed(run, iters)
    return {"bench": "forward", "tokens_per_s": iters * b * t / secs, "step_s": secs / iters}


def bench_sft(shape, dev, precision, iters):
    model = shape.build().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, t = shape.sft
    ids = torch.randint(4, shape.vocab, (b, t + 1), device=dev)

    def step():
        with amp(dev, precision):
            logits = shape.logits(model, ids[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, shape.vocab).float(), ids[:, 1:].reshape(-1))
        update(loss, model, opt, dev)

    secs = timed(step, iters)
    return {"bench": "sft", "tokens_per_s": iters * b * t / secs, "step_s": secs / iters}


@torch.no_grad()
def bench_sample(shape, dev, precision, iters):
    model = shape.build().to(dev).eval()
    g = torch.Generator(device=dev).manual_seed(0)
    b, p, new = shape.sample
    prompt = torch.randint(4, shape.vocab, (b, p), device=dev, generator=g)

    def run():
        with amp(dev, precision):
            shape.sample_loop(model, prompt, new, g)
        sync(dev)

    secs = timed(run, iters)
    return {"bench": "sample", "tokens_per_s": iters * b * new / secs}


def bench_reward(shape, dev, precision, iters):
    model = shape.build().to(dev)
    head = nn.Linear(shape.d_model, 1).to(dev)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    pairs, t = shape.reward
    ids = torch.randint(4, shape.vocab, (2 * pairs, t), device=dev)

    def step():
        with amp(dev, precision):
            e = F.softplus(head(shape.hidden(model, ids)[:, -1]).squeeze(-1).float())
            loss = F.softplus(e[:pairs] - e[pairs:]).mean()
        update(loss, model, opt, dev)

    secs = timed(step, iters)
    return {"bench": "reward", "tokens_per_s": iters * 2 * pairs * t / secs,
            "step_s": secs / iters}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--shape", default="reference", choices=["reference", "smollm2"])
    ap.add_argument("--only", default="forward,sft,sample,reward")
    a = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    shape = {"reference": Reference, "smollm2": Smollm2}[a.shape]
    benches = {"forward": bench_forward, "sft": bench_sft, "sample": bench_sample,
               "reward": bench_reward}
    for name in a.only.split(","):
        out = benches[name](shape, dev, a.precision, a.iters)
        out.update(shape=a.shape, device=str(dev), precision=a.precision,
                   threads=torch.get_num_threads(), torch=torch.__version__)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
