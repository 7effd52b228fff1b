#!/usr/bin/env python3
"""PyTorch eager baselines for `ember bench sft|sample|reward` on the same reference trunk.

vocab 8192, n_ctx 256, d_model 256, 4 layers, 4 heads (GPT-2 blocks, tied LM head, SDPA).
  sft:    16 sequences x 256 tokens per step, loss on every position, AdamW, clip 1.0
  sample: batch 16, 32 prompt tokens, 64 new tokens, temperature 1, plain KV-cache loop
  reward: 8 pairs x 2 sequences x 256 tokens, scalar head at the last token, log loss, AdamW

Prints one JSON line per bench. Usage:
  python3 scripts/torch_reference.py [--device cpu|cuda] [--precision fp32|bf16] [--iters N]
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


def bench_sft(dev, precision, iters):
    model = Gpt().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(4, V, (16, 257), device=dev)

    def step():
        with amp(dev, precision):
            logits = model(ids[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, V).float(), ids[:, 1:].reshape(-1))
        update(loss, model, opt, dev)

    secs = timed(step, iters)
    return {"bench": "sft", "tokens_per_s": iters * 16 * 256 / secs, "step_s": secs / iters}


@torch.no_grad()
def bench_sample(dev, precision, iters):
    model = Gpt().to(dev).eval()
    g = torch.Generator(device=dev).manual_seed(0)
    prompt = torch.randint(4, V, (16, 32), device=dev, generator=g)

    def run():
        caches = [[None, None] for _ in range(L)]
        with amp(dev, precision):
            logits = model(prompt, 0, caches)[:, -1]
            pos = prompt.shape[1]
            for _ in range(64):
                probs = torch.softmax(logits.float(), -1)
                nxt = torch.multinomial(probs, 1, generator=g)
                logits = model(nxt, pos, caches)[:, -1]
                pos += 1
        sync(dev)

    secs = timed(run, iters)
    return {"bench": "sample", "tokens_per_s": iters * 16 * 64 / secs}


def bench_reward(dev, precision, iters):
    model = Gpt().to(dev)
    head = nn.Linear(D, 1).to(dev)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    ids = torch.randint(4, V, (16, 256), device=dev)

    def step():
        with amp(dev, precision):
            e = F.softplus(head(model.hidden(ids)[:, -1]).squeeze(-1).float())
            loss = F.softplus(e[:8] - e[8:]).mean()
        update(loss, model, opt, dev)

    secs = timed(step, iters)
    return {"bench": "reward", "tokens_per_s": iters * 16 * 256 / secs, "step_s": secs / iters}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--only", default="sft,sample,reward")
    a = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    for name in a.only.split(","):
        out = {"sft": bench_sft, "sample": bench_sample, "reward": bench_reward}[name](
            dev, a.precision, a.iters
        )
        out.update(device=str(dev), precision=a.precision, threads=torch.get_num_threads(),
                   torch=torch.__version__)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
