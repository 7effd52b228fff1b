#!/usr/bin/env python3
"""Regenerates the reference fixtures that the Rust tests of the Llama-family trunk and the GGUF
importer compare against, so that CI needs no Python ML stack. Deterministic: fixed seeds, no
network (the SmolLM2 GGUF comes from scripts/setup-pretrained.sh).

Usage (a venv with the versions below; nothing here is needed to build or test Ember):
  GGUF="$(scripts/setup-pretrained.sh)"
  nice -n 10 /path/to/venv/bin/python scripts/llama_reference.py --gguf "$GGUF" [--only PART ...]
PART is gguf, tiny or smollm2 (default: all three).

Generated with: torch 2.11.0 (PyPI wheel, run on CPU), transformers 5.24.0 (+ accelerate 1.15.0, which
its GGUF loading needs), gguf 0.19.0, tokenizers 0.23.3,
safetensors 0.8.0, numpy 2.4.6, Python 3.11.

What it writes (paths relative to the repository root):

policy/tests/fixtures/gguf/   (part "gguf": GGUF parsing and dequantisation)
  quants.gguf         GGUF v3, arch "llama", written by gguf.GGUFWriter. One tensor per type, all of
                      logical (numpy, row-major) shape [2, 512], i.e. GGUF ne = [512, 2]:
                      t.f32 t.f16 t.bf16 t.q8_0 t.q4_0 t.q4_1 t.q4_k t.q5_k t.q6_k. The first six
                      quantise N(0,1) data with gguf.quants.quantize; gguf-py cannot quantise
                      K-quants, so t.q4_k/t.q5_k/t.q6_k are random block bytes whose f16 scale
                      fields (d, dmin) are overwritten with small finite values. Plus one metadata
                      key per GGUF value type (test.u8 ... test.arr_str, see METADATA below).
  quants.safetensors  float32 [2, 512] per tensor name: gguf.quants.dequantize of the tensor read
                      back from quants.gguf with gguf.GGUFReader.
  quants.json         {"tensors": {name: {"type", "shape"}}, "metadata": {key: {"type", "value"}}};
                      shapes are logical [rows, cols]; float values are the stored f32/f64 values.

policy/tests/fixtures/tiny-llama/, policy/tests/fixtures/tiny-qwen2/   (part "tiny")
  tokenizer.json (+ tokenizer_config.json)  a byte-level BPE trained with `tokenizers` on a few
                      hundred template English sentences; vocab 160 with special tokens
                      <|endoftext|>=0, <|im_start|>=1, <|im_end|>=2. Its base alphabet is the 98
                      ASCII bytes \t \n \r and 0x20..0x7e (a 160 vocab cannot hold all 256 bytes):
                      non-ASCII bytes have no token and are dropped. Same file in both directories.
  config.json, generation_config.json, model weights from save_pretrained:
    tiny-llama: LlamaForCausalLM, hidden 32, intermediate 64, 2 layers, 4 heads, 2 kv heads,
                rope_theta 1e4, rms_norm_eps 1e-5, max_position_embeddings 64, tied embeddings,
                float32, one file model.safetensors (no lm_head.weight: it is tied).
    tiny-qwen2: Qwen2ForCausalLM, same sizes, untied lm_head, q/k/v biases, bfloat16, sharded
                (model-0000X-of-0000N.safetensors + model.safetensors.index.json).
                tiny-llama's config.json is in transformers 5's layout (rope_parameters, dtype);
                tiny-qwen2's is rewritten in the 4.x layout most published checkpoints have
                (top-level rope_theta, rope_scaling null, torch_dtype).
                Every weight is re-drawn at a scale that gives O(1..10) logits; RMSNorm weights
                are U(0.5, 1.5) and biases N(0, 0.5), so a wrong norm or a missing bias shows.
  reference.safetensors
    input_ids      int64 [2, 10]   random ids, no padding
    logits         float32 [2, 10, V]   model(input_ids).logits, float32 (qwen2: the saved bf16
                   checkpoint loaded with dtype=float32), eager attention, torch.no_grad
    padded_ids     int64 [2, 12]   row 0: 3 pad ids (<|endoftext|>) then input_ids[0, :9];
                                   row 1: 12 fresh random ids
    padded_mask    int64 [2, 12]   0 on the pads, else 1
    padded_logits  float32 [2, 12, V]   model(padded_ids, attention_mask=padded_mask,
                   position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits. Only positions with
                   mask 1 are meaningful (pad queries see no key; HF gives garbage there).
                   padded_logits[0, 3:] equals logits[0, :9] up to float error (checked here).

tests/fixtures/smollm2/   (part "smollm2": SmolLM2-135M-Instruct Q4_1 GGUF via transformers,
                           dequantised to float32 on load)
  model.json     GGUF metadata as gguf-py reads it, the config transformers builds from it, and
                 the tokenizer's special tokens / chat template as transformers exposes them.
  tokens.json    [{"text", "ids"(, "ids_smollm")}] with ids = tokenizer(text, add_special_tokens=False).input_ids
                 and ids_smollm (only where it differs) the ids under the file's own "smollm" split:
                 HH-RLHF helpful test-split turns and transcripts (from shared/data, read in place),
                 unicode, whitespace runs, numbers/code/punctuation, and special-token strings.
  logits.safetensors  next-token logits at the last position of 8 prompts (1 to ~300 tokens, run
                 one at a time, no padding), compact (49k-vocab rows in full would be 1.5 MB):
                 top_idx/top_val [8, 256] the 256 largest logits, tail_idx/tail_val [8, 256]
                 256 other positions drawn with seed 0, lse float32 [8] the logsumexp over the
                 whole vocabulary; and ids_{i} int64 [n_i], the exact ids of prompt i.
  chat.json      [{"messages", "add_generation_prompt", "rendered"}]: apply_chat_template(...,
                 tokenize=False) for 7 conversations.
  greedy.json    greedy decode (do_sample=False, max_new_tokens=24) of the Paris question:
                 messages, rendered prompt, prompt_ids, new_ids, text (skip_special_tokens=True).
"""
import argparse
import gzip
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
GGUF_DIR = ROOT / "policy/tests/fixtures/gguf"
TINY_LLAMA = ROOT / "policy/tests/fixtures/tiny-llama"
TINY_QWEN2 = ROOT / "policy/tests/fixtures/tiny-qwen2"
SMOL_DIR = ROOT / "tests/fixtures/smollm2"
HH_DIRS = [ROOT / "shared/data/hh-rlhf", ROOT.parent / "shared/data/hh-rlhf"]

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def to_json(obj, indent=0):
    """Indented JSON, except that lists of scalars and the entries of a list of objects that
    hold such lists (tokens.json) stay on one line, which keeps diffs and files small."""
    pad, inner = " " * indent, " " * (indent + 1)
    flat = lambda x: json.dumps(x, ensure_ascii=False)
    scalar = lambda x: not isinstance(x, (dict, list))
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{flat(k)}: {to_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and not all(scalar(x) for x in obj):
        if all(isinstance(x, dict) and all(scalar(v) or (isinstance(v, list) and all(map(scalar, v)))
                                           for v in x.values()) for x in obj):
            return "[\n" + ",\n".join(inner + flat(x) for x in obj) + "\n" + pad + "]"
        return "[\n" + ",\n".join(inner + to_json(x, indent + 1) for x in obj) + "\n" + pad + "]"
    return flat(obj)


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = to_json(obj) + "\n"
    assert json.loads(text) == obj
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# Part "gguf": quants.gguf, quants.safetensors, quants.json
# ---------------------------------------------------------------------------------------------

# key -> (GGUF value type name, value, sub-type name for arrays)
METADATA = {
    "test.u8": ("UINT8", 200, None),
    "test.i8": ("INT8", -100, None),
    "test.u16": ("UINT16", 60000, None),
    "test.i16": ("INT16", -30000, None),
    "test.u32": ("UINT32", 4_000_000_000, None),
    "test.i32": ("INT32", -2_000_000_000, None),
    "test.u64": ("UINT64", 2**63 + 12345, None),
    "test.i64": ("INT64", -(2**62) - 7, None),
    "test.f32": ("FLOAT32", 3.14159, None),
    "test.f64": ("FLOAT64", 2.718281828459045, None),
    "test.bool_true": ("BOOL", True, None),
    "test.bool_false": ("BOOL", False, None),
    "test.string": ("STRING", "héllo wörld ✓ 日本語 🦙", None),
    "test.arr_i32": ("ARRAY", [1, -2, 3, 2_147_483_647, -2_147_483_648], "INT32"),
    "test.arr_f32": ("ARRAY", [0.5, -1.25, 1e-3], "FLOAT32"),
    "test.arr_str": ("ARRAY", ["a", "", "βγ", "<|im_end|>", "two words"], "STRING"),
}

# K-quant block layouts (QK_K = 256): byte offsets of the f16 scale fields.
KQUANT_F16_FIELDS = {
    "Q4_K": (144, [0, 2]),  # d, dmin, scales[12], qs[128]
    "Q5_K": (176, [0, 2]),  # d, dmin, scales[12], qh[32], qs[128]
    "Q6_K": (210, [208]),  # ql[128], qh[64], scales[16] (int8), d
}


def make_gguf():
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFValueType as VT
    from safetensors.numpy import save_file

    GGUF_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    shape = (2, 512)
    path = GGUF_DIR / "quants.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for key, (vtype, value, sub) in METADATA.items():
        w.add_key_value(key, value, VT[vtype], sub_type=VT[sub] if sub else None)

    names = []
    for name, qtype in [("t.f32", T.F32), ("t.f16", T.F16), ("t.bf16", T.BF16),
                        ("t.q8_0", T.Q8_0), ("t.q4_0", T.Q4_0), ("t.q4_1", T.Q4_1)]:
        data = rng.standard_normal(shape).astype(np.float32)
        if qtype == T.F32:
            w.add_tensor(name, data)
        elif qtype == T.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        names.append((name, qtype))
    for name, qtype in [("t.q4_k", T.Q4_K), ("t.q5_k", T.Q5_K), ("t.q6_k", T.Q6_K)]:
        block, f16_offsets = KQUANT_F16_FIELDS[qtype.name]
        assert gguf.GGML_QUANT_SIZES[qtype] == (256, block)
        nblocks = shape[1] // 256
        raw = rng.integers(0, 256, size=(shape[0], nblocks, block), dtype=np.uint8)
        for off in f16_offsets:
            scale = rng.uniform(0.002, 0.05, size=(shape[0], nblocks)).astype(np.float16)
            raw[:, :, off:off + 2] = scale.view(np.uint8).reshape(shape[0], nblocks, 2)
        w.add_tensor(name, raw.reshape(shape[0], nblocks * block), raw_dtype=qtype)
        names.append((name, qtype))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Read everything back: the fixture describes the file, not what we meant to write.
    r = gguf.GGUFReader(str(path))
    assert r.fields["GGUF.version"].contents() == 3
    deq, tensors = {}, {}
    by_name = {t.name: t for t in r.tensors}
    for name, qtype in names:
        t = by_name[name]
        assert t.tensor_type == qtype, (name, t.tensor_type)
        assert list(t.shape) == [512, 2], (name, t.shape)  # GGUF ne order
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        values = values.reshape(shape)
        assert np.isfinite(values).all(), name
        deq[name] = np.ascontiguousarray(values)
        tensors[name] = {"type": qtype.name, "shape": list(shape)}
    save_file(deq, str(GGUF_DIR / "quants.safetensors"))

    metadata = {}
    for key, (vtype, _value, sub) in METADATA.items():
        field = r.fields[key]
        got = field.contents()
        types = [VT(x).name for x in field.types]
        if vtype == "ARRAY":
            assert types == ["ARRAY", sub], (key, types)
            metadata[key] = {"type": "ARRAY", "element_type": sub, "value": got}
        else:
            assert types == [vtype], (key, types)
            if vtype == "FLOAT32":
                got = float(np.float32(got))
            metadata[key] = {"type": vtype, "value": got}
    # general.architecture is added by the writer itself.
    metadata["general.architecture"] = {"type": "STRING",
                                        "value": r.fields["general.architecture"].contents()}
    write_json(GGUF_DIR / "quants.json", {"tensors": tensors, "metadata": metadata})
    print(f"gguf: wrote {path} ({path.stat().st_size} bytes) and its references", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Part "tiny": tiny-llama and tiny-qwen2 checkpoints and logits
# ---------------------------------------------------------------------------------------------

def training_sentences(n=400, seed=7):
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "my friend", "the teacher", "our team", "she", "he", "they",
                "the old man", "a small bird", "the farmer", "your sister", "we", "I"]
    verbs = ["likes", "sees", "wants", "reads", "writes", "finds", "takes", "makes", "helps",
             "opens", "carries", "paints", "follows", "needs"]
    objects = ["the red book", "a green apple", "some water", "the blue door", "a long letter",
               "the big house", "a new song", "the old car", "three stones", "the river",
               "a warm coat", "the garden", "two cups of tea", "the morning paper"]
    tails = ["today.", "every day.", "in the morning.", "at night.", "with care.", "again.",
             "near the park.", "before lunch.", "after school.", "quickly.", "?", "!"]
    out = []
    for _ in range(n):
        s = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}"
        s = s.replace(" ?", "?").replace(" !", "!")
        out.append(s[0].upper() + s[1:])
    return out


def byte_level_char(b):
    """The character GPT-2's byte-level mapping gives byte b (printable bytes map to themselves)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    if b in keep:
        return chr(b)
    return chr(256 + [x for x in range(256) if x not in keep].index(b))


def make_tokenizer(vocab_size=160):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # Base alphabet: every ASCII byte from \t to ~ (as byte-level characters), so any ASCII text,
    # newlines included, encodes; other bytes (non-ASCII) have no token and are dropped.
    alphabet = [byte_level_char(b) for b in [9, 10, 13] + list(range(32, 127))]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(training_sentences(), trainer=trainer)
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i
    return tok


def reinit_(model, seed, lm_head_std=None):
    """Re-draws every parameter so that logits are far from uniform and norms are not ones."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif name == "lm_head.weight":
                p.copy_(torch.randn(p.shape, generator=g) * (lm_head_std or 1.0))
            else:  # Linear weight [out, in]
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def tiny_reference(model, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab, (2, 10), generator=g)
    row1 = torch.randint(3, vocab, (12,), generator=g)
    padded_ids = torch.stack([torch.cat([torch.zeros(3, dtype=torch.long), input_ids[0, :9]]), row1])
    padded_mask = torch.ones(2, 12, dtype=torch.long)
    padded_mask[0, :3] = 0
    position_ids = (padded_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids).logits.float()
        padded_logits = model(input_ids=padded_ids, attention_mask=padded_mask,
                              position_ids=position_ids).logits.float()
    err = (padded_logits[0, 3:] - logits[0, :9]).abs().max().item()
    assert err < 1e-4, err
    return {
        "input_ids": input_ids.contiguous(),
        "logits": logits.contiguous(),
        "padded_ids": padded_ids.contiguous(),
        "padded_mask": padded_mask.contiguous(),
        "padded_logits": padded_logits.contiguous(),
    }


def make_tiny():
    from safetensors.torch import save_file
    from transformers import (LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config,
                              Qwen2ForCausalLM)

    tok = make_tokenizer()
    vocab = tok.get_vocab_size()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token=None,
                                   additional_special_tokens=SPECIALS[1:])
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
                  rms_norm_eps=1e-5, max_position_embeddings=64, bos_token_id=None,
                  eos_token_id=0, pad_token_id=0)

    # tiny-llama: float32, tied, one file.
    torch.manual_seed(0)
    cfg = LlamaConfig(tie_word_embeddings=True, **common)
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).eval()
    reinit_(model, seed=1)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    TINY_LLAMA.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(TINY_LLAMA)
    fast.save_pretrained(TINY_LLAMA)
    model = LlamaForCausalLM.from_pretrained(TINY_LLAMA, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    save_file(tiny_reference(model, vocab, seed=2), str(TINY_LLAMA / "reference.safetensors"))

    # tiny-qwen2: bfloat16, untied, q/k/v biases, sharded.
    torch.manual_seed(0)
    cfg = Qwen2Config(tie_word_embeddings=False, use_sliding_window=False, **common)
    cfg._attn_implementation = "eager"
    model = Qwen2ForCausalLM(cfg).eval()
    reinit_(model, seed=3, lm_head_std=0.5)
    for layer in model.model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            assert proj.bias is not None and proj.bias.abs().min() > 0
    TINY_QWEN2.mkdir(parents=True, exist_ok=True)
    for f in TINY_QWEN2.glob("model*.safetensors*"):
        f.unlink()
    model.to(torch.bfloat16).save_pretrained(TINY_QWEN2, max_shard_size=40_000)
    fast.save_pretrained(TINY_QWEN2)
    assert (TINY_QWEN2 / "model.safetensors.index.json").exists()
    # transformers 5 writes rope_parameters/dtype; most published checkpoints (Qwen2.5, SmolLM2)
    # still carry the 4.x layout. Rewrite this one in that layout so both are covered; the
    # reference below is computed after reloading from the rewritten file.
    cfg_path = TINY_QWEN2 / "config.json"
    c = json.loads(cfg_path.read_text())
    c["rope_theta"] = c.pop("rope_parameters")["rope_theta"]
    c["rope_scaling"] = None
    c["torch_dtype"] = c.pop("dtype")
    c = dict(sorted(c.items()))
    cfg_path.write_text(json.dumps(c, indent=2) + "\n")
    assert len(list(TINY_QWEN2.glob("model-*-of-*.safetensors"))) >= 2
    model = Qwen2ForCausalLM.from_pretrained(TINY_QWEN2, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    save_file(tiny_reference(model, vocab, seed=4), str(TINY_QWEN2 / "reference.safetensors"))
    print(f"tiny: vocab {vocab}, wrote {TINY_LLAMA} and {TINY_QWEN2}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Part "smollm2": the real model from its GGUF
# ---------------------------------------------------------------------------------------------

def hh_dir():
    for d in HH_DIRS:
        if d.is_dir():
            return d
    sys.exit("llama_reference: shared/data/hh-rlhf not found next to or inside the repository")


def hh_transcripts(split, n, seed):
    path = hh_dir() / split / "test.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line)["chosen"] for line in f]
    rng = random.Random(seed)
    return rng.sample(rows, n)


def split_turns(transcript):
    """'\\n\\nHuman: a\\n\\nAssistant: b...' -> [('user', 'a'), ('assistant', 'b'), ...]."""
    turns = []
    rest = transcript
    markers = {"\n\nHuman:": "user", "\n\nAssistant:": "assistant"}
    while rest:
        for m, role in markers.items():
            if rest.startswith(m):
                rest = rest[len(m):]
                nxt = [i for i in (rest.find("\n\nHuman:"), rest.find("\n\nAssistant:")) if i >= 0]
                end = min(nxt) if nxt else len(rest)
                turns.append((role, rest[:end].strip()))
                rest = rest[end:]
                break
        else:
            break
    return turns


def token_texts():
    texts = []
    # ~150 real strings from HH-RLHF (helpful splits only: the harmless split is red-teaming).
    rows = hh_transcripts("helpful-online", 40, seed=11) + \
        hh_transcripts("helpful-rejection-sampled", 40, seed=12)
    for i, t in enumerate(rows):
        turns = split_turns(t)
        if i < 10:
            texts.append(t[:400])  # raw transcript, starting with "\n\nHuman: "
        user = [c for r, c in turns if r == "user"]
        asst = [c for r, c in turns if r == "assistant"]
        if user:
            texts.append(user[0] if len(user[0]) <= 400 or i % 2 else user[0][:400])
        if asst:
            a = asst[-1]
            texts.append(a[:400] if i % 3 else a)
    texts = [t for t in texts if t][:150]
    texts += [
        # unicode
        "café naïve résumé Ångström façade", "Straße Größe Übermaß", "ŻÓŁĆ zażółć gęślą jaźń",
        "日本語のテキストです。", "中文分词测试：你好，世界！", "한국어 문장입니다", "Привет, мир!",
        "Γειά σου Κόσμε", "שלום עולם", "مرحبا بالعالم", "हिन्दी पाठ", "ภาษาไทย",
        "emoji 🦙🔥👍🏽 and 👨‍👩‍👧‍👦 family", "🙂", "e\u0301 vs \u00e9 (combining acute)",
        "a\u0308o\u0308u\u0308 combining diaeresis", "zero\u200bwidth\u200bspace", "non\u00a0breaking",
        "\ufeffBOM at start", "mixed: naïve 日本 🦙 שלום ok", "°C ± µm × ÷ ≠ ≤ ≥ ∞ √ ∑ π",
        "“curly quotes” and ‘single’ — em dash – en dash …",
        # whitespace
        " ", "  ", "\t", "\n", "\n\n\n", " leading space", "trailing space ", "  two leading",
        "multiple    spaces   inside", "tab\tseparated\tvalues", "line one\nline two\n\nline four",
        "\n\nHuman: hi\n\nAssistant:", "ends with newlines\n\n\n", "   \n\t  mixed  \t\n ",
        "a" + " " * 17 + "b", "\r\nwindows\r\nnewlines\r\n",
        # numbers / code / punctuation
        "0", "7", "42", "123", "1234", "12345678901234567890", "3.14159", "-273.15", "1,000,000",
        "2026-12-01T12:34:56Z", "v1.2.3-rc.4", "0x1F 0b1010 1e-5 6.02e23",
        "def f(x):\n    return x ** 2  # square\n", "fn main() { println!(\"hi {}\", 1 + 2); }",
        "if (a && b || !c) { x[i++] = y->z; }", "SELECT * FROM t WHERE id = 'x';",
        "{\"key\": [1, 2, {\"nested\": null}], \"ok\": true}", "<div class=\"a\">&amp;</div>",
        "https://example.com/path?q=1&r=two#frag", "user@example.org", "C:\\Users\\name\\file.txt",
        "!!!???...,,,;;;:::", "(((nested)))", "--- *** ___ ===", "#hashtag @mention $100 50% ^_^",
        "I'm you're it's we'll they'd can't won't", "HELLO World hELLO", "camelCaseWord snake_case_word",
        "don't stop—believing", "a.b.c.d", "\"quoted\" 'single'",
        # special tokens
        "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "text before<|endoftext|>text after",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n",
        "<|im_start|><|im_end|><|endoftext|>", "<|im_start|>assistant\n", "not special: <|im_start",
        "<|unknown|> lookalike", "<im_start> also not special",
    ]
    return texts


def smollm2_prompts(tok, hh_rows):
    chat = lambda msgs: tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    long_hh = next(t for t in hh_rows if len(tok(t, add_special_tokens=False).input_ids) >= 300)
    ids = tok(long_hh, add_special_tokens=False).input_ids[:300]
    long_text = tok.decode(ids)
    prompts = [
        "The",
        "The capital of France is",
        chat([{"role": "user", "content": "What is the capital of France?"}]),
        hh_rows[0][:600],
        chat([{"role": "system", "content": "You answer in one word."},
              {"role": "user", "content": "Name a primary colour."}]),
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
        chat([{"role": r, "content": c} for r, c in split_turns(hh_rows[1])][:5]),
        long_text,
    ]
    return prompts


def make_smollm2(gguf_path):
    import gguf
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    d, name = str(gguf_path.parent), gguf_path.name
    SMOL_DIR.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    cfg = model.config

    # model.json
    r = gguf.GGUFReader(str(gguf_path))
    f = lambda k: r.fields[k].contents() if k in r.fields else None
    arch = f("general.architecture")
    probe = "Hello"
    meta = {
        "gguf": {
            "file": name,
            "architecture": arch,
            "n_layer": f(f"{arch}.block_count"),
            "hidden": f(f"{arch}.embedding_length"),
            "intermediate": f(f"{arch}.feed_forward_length"),
            "heads": f(f"{arch}.attention.head_count"),
            "kv_heads": f(f"{arch}.attention.head_count_kv"),
            "rope_theta": f(f"{arch}.rope.freq_base"),
            "rope_dimension_count": f(f"{arch}.rope.dimension_count"),
            "rms_eps": f(f"{arch}.attention.layer_norm_rms_epsilon"),
            "vocab_size": f(f"{arch}.vocab_size"),
            "context_length": f(f"{arch}.context_length"),
            "file_type": f("general.file_type"),
            "tokenizer_model": f("tokenizer.ggml.model"),
            "tokenizer_pre": f("tokenizer.ggml.pre"),
            "n_tokens": len(r.fields["tokenizer.ggml.tokens"].data),
            "n_merges": len(r.fields["tokenizer.ggml.merges"].data),
            "bos_token_id": f("tokenizer.ggml.bos_token_id"),
            "eos_token_id": f("tokenizer.ggml.eos_token_id"),
            "pad_token_id": f("tokenizer.ggml.padding_token_id"),
            "unk_token_id": f("tokenizer.ggml.unknown_token_id"),
            "add_bos_token": f("tokenizer.ggml.add_bos_token"),
            "add_space_prefix": f("tokenizer.ggml.add_space_prefix"),
            "has_output_weight": any(t.name == "output.weight" for t in r.tensors),
            "tensor_types": sorted({t.tensor_type.name for t in r.tensors}),
            "chat_template": f("tokenizer.chat_template"),
        },
        "transformers_config": {
            k: getattr(cfg, k, None) for k in
            ["model_type", "num_hidden_layers", "hidden_size", "intermediate_size",
             "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
             "vocab_size", "max_position_embeddings", "tie_word_embeddings", "bos_token_id",
             "eos_token_id", "pad_token_id", "hidden_act", "attention_bias", "mlp_bias"]
        },
        "transformers_rope": getattr(cfg, "rope_parameters", None)
        or {"rope_theta": getattr(cfg, "rope_theta", None)},
        "tokenizer": {
            "class": type(tok).__name__,
            "vocab_size": len(tok),
            "bos_token": tok.bos_token, "bos_token_id": tok.bos_token_id,
            "eos_token": tok.eos_token, "eos_token_id": tok.eos_token_id,
            "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id,
            "unk_token": tok.unk_token, "unk_token_id": tok.unk_token_id,
            "all_special_tokens": {t: tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens},
            "added_tokens": {t.content: i for i, t in sorted(tok.added_tokens_decoder.items())},
            "default_call_probe": {"text": probe, "ids": tok(probe).input_ids,
                                   "ids_no_specials": tok(probe, add_special_tokens=False).input_ids},
            "chat_template": tok.chat_template,
        },
        "generation_config": {
            k: getattr(model.generation_config, k, None)
            for k in ["bos_token_id", "eos_token_id", "pad_token_id"]
        },
    }
    write_json(SMOL_DIR / "model.json", meta)

    # tokens.json
    # `ids_smollm`: the same vocabulary with the split the file names (tokenizer.ggml.pre =
    # "smollm"): single digits first, then GPT-2's byte-level regex. That is llama.cpp's
    # LLAMA_VOCAB_PRE_TYPE_SMOLLM (regexes "\p{N}" then GPT-2's) and SmolLM's own tokenizer.json
    # (Digits(individual_digits) + ByteLevel). transformers' GGUF loader does not know the name
    # and applies GPT-2's regex to the whole text, which groups whitespace before a digit
    # differently (":\n\n2" -> ":", "\n", "\n", "2" instead of ":", "\n\n", "2"). The entry is
    # written only where the two differ.
    from tokenizers import Tokenizer as RawTokenizer, pre_tokenizers
    smollm = RawTokenizer.from_str(tok.backend_tokenizer.to_str())
    smollm.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    entries = []
    for t in token_texts():
        entry = {"text": t, "ids": tok(t, add_special_tokens=False).input_ids}
        split = smollm.encode(t, add_special_tokens=False).ids
        if split != entry["ids"]:
            entry["ids_smollm"] = split
        entries.append(entry)
    write_json(SMOL_DIR / "tokens.json", entries)

    # chat.json
    hh_rows = hh_transcripts("helpful-online", 30, seed=21)
    multi = next(t for t in hh_rows if 4 <= len(split_turns(t)) <= 6)
    multi_msgs = [{"role": r_, "content": c} for r_, c in split_turns(multi)]
    if multi_msgs[-1]["role"] == "assistant":
        multi_msgs = multi_msgs[:-1]
    convs = [
        ([{"role": "user", "content": "Hello!"}], True),
        ([{"role": "user", "content": "What is the capital of France?"}], True),
        (multi_msgs, True),
        ([{"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
          {"role": "user", "content": "Why is the sky blue?"}], True),
        ([{"role": "user", "content": "  Spaces around, tabs\tand\nnewlines \n"}], True),
        ([{"role": "system", "content": "Be kind."},
          {"role": "user", "content": "Tell me a fact about llamas."},
          {"role": "assistant", "content": "Llamas are members of the camel family."},
          {"role": "user", "content": "Another one?"}], True),
        ([{"role": "user", "content": "What is the capital of France?"},
          {"role": "assistant", "content": "The capital of France is Paris."}], False),
    ]
    chats = [{"messages": m, "add_generation_prompt": g,
              "rendered": tok.apply_chat_template(m, tokenize=False, add_generation_prompt=g)}
             for m, g in convs]
    write_json(SMOL_DIR / "chat.json", chats)

    # logits.safetensors
    prompts = smollm2_prompts(tok, hh_transcripts("helpful-rejection-sampled", 200, seed=31))
    out, rows = {}, []
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = torch.tensor(tok(p, add_special_tokens=False).input_ids, dtype=torch.long)
            rows.append(model(ids[None]).logits[0, -1].float())
            out[f"ids_{i}"] = ids.contiguous()
            print(f"smollm2: prompt {i}: {len(ids)} tokens", file=sys.stderr)
    out.update(compact_logits(torch.stack(rows)))
    save_file(out, str(SMOL_DIR / "logits.safetensors"))

    # greedy.json
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(rendered, add_special_tokens=False).input_ids
    with torch.no_grad():
        gen = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                             dtype=torch.long), do_sample=False, max_new_tokens=24)
    new_ids = gen[0, len(prompt_ids):].tolist()
    text = tok.decode(new_ids, skip_special_tokens=True)
    write_json(SMOL_DIR / "greedy.json", {"messages": msgs, "rendered": rendered,
                                          "prompt_ids": prompt_ids, "max_new_tokens": 24,
                                          "new_ids": new_ids, "text": text})
    print(f"smollm2: greedy: {text!r} ids {new_ids}", file=sys.stderr)

    # Timing (reported, not written): forward of the ~300-token prompt, median of 3.
    ids = out[f"ids_{len(prompts) - 1}"][None]
    times = []
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - t0)
    print(f"smollm2: forward of {ids.shape[1]} tokens: median {statistics.median(times):.3f} s "
          f"({torch.get_num_threads()} threads)", file=sys.stderr)


def compact_logits(logits, k=256, tail=256, seed=0):
    """[N, V] float32 logits as what the test compares: the k largest of each row, `tail` other
    positions of each row (drawn with `seed`), and each row's logsumexp over all V."""
    top_val, top_idx = logits.topk(k, dim=-1)
    g = torch.Generator().manual_seed(seed)
    tail_idx = []
    for i in range(logits.shape[0]):
        rest = torch.ones(logits.shape[1], dtype=torch.bool)
        rest[top_idx[i]] = False
        pool = rest.nonzero()[:, 0]
        tail_idx.append(pool[torch.randperm(len(pool), generator=g)[:tail]].sort().values)
    tail_idx = torch.stack(tail_idx)
    return {"top_idx": top_idx.contiguous(), "top_val": top_val.contiguous(),
            "tail_idx": tail_idx.contiguous(), "tail_val": logits.gather(1, tail_idx).contiguous(),
            "lse": logits.logsumexp(-1).contiguous()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", help="SmolLM2-135M-Instruct.Q4_1.gguf (scripts/setup-pretrained.sh)")
    ap.add_argument("--only", nargs="+", choices=["gguf", "tiny", "smollm2"],
                    default=["gguf", "tiny", "smollm2"])
    args = ap.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    if "gguf" in args.only:
        make_gguf()
    if "tiny" in args.only:
        make_tiny()
    if "smollm2" in args.only:
        if not args.gguf or not os.path.isfile(args.gguf):
            ap.error("--gguf PATH to the SmolLM2 GGUF is needed (scripts/setup-pretrained.sh)")
        make_smollm2(args.gguf)


if __name__ == "__main__":
    main()
