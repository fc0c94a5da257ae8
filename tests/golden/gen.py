#!/usr/bin/python3
"""Golden-fixture generator for libpeft's C tests.

Builds tiny GPT-2 and Llama models with random weights, writes them in the
file formats libpeft reads (Hugging Face safetensors in F32/F16/BF16, a
sharded safetensors checkpoint, GGUF v3 in F32 and Q8_0, a llama2.c v0 .bin)
and writes the reference results (logits, loss, per-parameter gradients,
per-block hidden states) computed in float64.

Run by hand only; the outputs are committed next to this file:

    /usr/bin/python3 tests/golden/gen.py            # rewrite tests/golden/
    /usr/bin/python3 tests/golden/gen.py --out DIR  # write elsewhere (to diff)

Needs only torch (Debian python3-torch 1.13) and numpy. There is no
transformers or safetensors package here, so the models follow Hugging Face's
GPT2LMHeadModel / LlamaForCausalLM semantics in plain torch, and every file
format is written with struct + json. Before writing anything the script
checks itself (see verify_* below) and stops on any mismatch.
"""

import argparse
import json
import math
import os
import struct
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
F64 = torch.float64

SEED = 20250811

# Fixed token batch [2, 8] shared by every model (vocab 96). Both rows start
# with BOS 1; row 0 has token 0, row 1 has 95 (vocab edge) and a repeat.
INPUT_IDS = [[1, 17, 42, 0, 88, 23, 60, 9],
             [1, 71, 3, 95, 30, 30, 64, 12]]

# ---------------------------------------------------------------------------
# Configurations (exactly what config.json holds)
# ---------------------------------------------------------------------------

GPT2_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.0,
    "bos_token_id": 95,
    "embd_pdrop": 0.0,
    "eos_token_id": 95,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 32,
    "n_embd": 32,
    "n_head": 4,
    "n_inner": None,
    "n_layer": 2,
    "n_positions": 32,
    "reorder_and_upcast_attn": False,
    "resid_pdrop": 0.0,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
    "summary_activation": None,
    "summary_first_dropout": 0.0,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 96,
}

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "head_dim": 8,
    "hidden_act": "silu",
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 48,
    "max_position_embeddings": 32,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 96,
}

# The tied variant: same weights minus lm_head. It deliberately omits
# "head_dim" (older configs do not have it; a loader derives hidden/heads).
LLAMA_TIED_CONFIG = {k: v for k, v in LLAMA_CONFIG.items() if k != "head_dim"}
LLAMA_TIED_CONFIG["tie_word_embeddings"] = True


# ---------------------------------------------------------------------------
# Random weights (HF names, f32 tensors = the canonical stored values)
# ---------------------------------------------------------------------------

def _randn(gen, shape, std, mean=0.0):
    return (torch.randn(shape, generator=gen, dtype=F64) * std + mean).float()


def make_gpt2_params(cfg, gen):
    V, E, L, T = cfg["vocab_size"], cfg["n_embd"], cfg["n_layer"], cfg["n_positions"]
    p = {}
    p["transformer.wte.weight"] = _randn(gen, (V, E), 0.2)
    p["transformer.wpe.weight"] = _randn(gen, (T, E), 0.1)
    for l in range(L):
        h = f"transformer.h.{l}."
        p[h + "ln_1.weight"] = _randn(gen, (E,), 0.1, 1.0)
        p[h + "ln_1.bias"] = _randn(gen, (E,), 0.05)
        p[h + "attn.c_attn.weight"] = _randn(gen, (E, 3 * E), 0.15)   # Conv1D [in, out]
        p[h + "attn.c_attn.bias"] = _randn(gen, (3 * E,), 0.05)
        p[h + "attn.c_proj.weight"] = _randn(gen, (E, E), 0.1)
        p[h + "attn.c_proj.bias"] = _randn(gen, (E,), 0.05)
        p[h + "ln_2.weight"] = _randn(gen, (E,), 0.1, 1.0)
        p[h + "ln_2.bias"] = _randn(gen, (E,), 0.05)
        p[h + "mlp.c_fc.weight"] = _randn(gen, (E, 4 * E), 0.15)
        p[h + "mlp.c_fc.bias"] = _randn(gen, (4 * E,), 0.05)
        p[h + "mlp.c_proj.weight"] = _randn(gen, (4 * E, E), 0.08)
        p[h + "mlp.c_proj.bias"] = _randn(gen, (E,), 0.05)
    p["transformer.ln_f.weight"] = _randn(gen, (E,), 0.1, 1.0)
    p["transformer.ln_f.bias"] = _randn(gen, (E,), 0.05)
    return p


def make_llama_params(cfg, gen):
    V, E, F = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = E // H
    p = {}
    p["model.embed_tokens.weight"] = _randn(gen, (V, E), 0.2)
    for l in range(cfg["num_hidden_layers"]):
        b = f"model.layers.{l}."
        p[b + "input_layernorm.weight"] = _randn(gen, (E,), 0.1, 1.0)
        p[b + "self_attn.q_proj.weight"] = _randn(gen, (H * D, E), 0.2)   # Linear [out, in]
        p[b + "self_attn.k_proj.weight"] = _randn(gen, (Hkv * D, E), 0.2)
        p[b + "self_attn.v_proj.weight"] = _randn(gen, (Hkv * D, E), 0.15)
        p[b + "self_attn.o_proj.weight"] = _randn(gen, (E, H * D), 0.15)
        p[b + "post_attention_layernorm.weight"] = _randn(gen, (E,), 0.1, 1.0)
        p[b + "mlp.gate_proj.weight"] = _randn(gen, (F, E), 0.15)
        p[b + "mlp.up_proj.weight"] = _randn(gen, (F, E), 0.15)
        p[b + "mlp.down_proj.weight"] = _randn(gen, (E, F), 0.12)
    p["model.norm.weight"] = _randn(gen, (E,), 0.1, 1.0)
    p["lm_head.weight"] = _randn(gen, (V, E), 0.2)
    return p


# ---------------------------------------------------------------------------
# Models (float64, autograd). P maps HF names to f64 tensors.
# ---------------------------------------------------------------------------

def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)          # biased, as torch LayerNorm
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def causal_attention(q, k, v):
    """q,k,v: [B, H, T, D] -> [B, H, T, D]; scores / sqrt(D), causal softmax."""
    T, D = q.shape[-2], q.shape[-1]
    s = q @ k.transpose(-1, -2) / math.sqrt(D)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def attention_loops(q, k, v):
    """Explicit reference: per batch, head and query row, softmax over j <= i."""
    B, H, T, D = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                sc = [float((q[b, h, i] * k[b, h, j]).sum()) / math.sqrt(D) for j in range(i + 1)]
                m = max(sc)
                e = [math.exp(s - m) for s in sc]
                z = sum(e)
                for j in range(i + 1):
                    out[b, h, i] += (e[j] / z) * v[b, h, j]
    return out


def gpt2_forward(P, cfg, ids, attn=causal_attention):
    """Returns (logits [B,T,V], hidden list of [B,T,E] after each block)."""
    B, T = ids.shape
    E, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    D = E // H
    x = P["transformer.wte.weight"][ids] + P["transformer.wpe.weight"][:T].unsqueeze(0)
    hidden = []
    for l in range(cfg["n_layer"]):
        h = f"transformer.h.{l}."
        a = layer_norm(x, P[h + "ln_1.weight"], P[h + "ln_1.bias"], eps)
        qkv = a @ P[h + "attn.c_attn.weight"] + P[h + "attn.c_attn.bias"]    # Conv1D: x W + b
        q, k, v = qkv.split(E, dim=-1)
        heads = lambda t: t.reshape(B, T, H, D).transpose(1, 2)
        o = attn(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(B, T, E)
        x = x + (o @ P[h + "attn.c_proj.weight"] + P[h + "attn.c_proj.bias"])
        m = layer_norm(x, P[h + "ln_2.weight"], P[h + "ln_2.bias"], eps)
        m = gelu_new(m @ P[h + "mlp.c_fc.weight"] + P[h + "mlp.c_fc.bias"])
        x = x + (m @ P[h + "mlp.c_proj.weight"] + P[h + "mlp.c_proj.bias"])
        hidden.append(x)
    x = layer_norm(x, P["transformer.ln_f.weight"], P["transformer.ln_f.bias"], eps)
    return x @ P["transformer.wte.weight"].t(), hidden


def rms_norm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope_tables(T, D, theta):
    """cos/sin [T, D/2]: angle of pair i at position p = p * theta^(-2i/D)."""
    inv = theta ** (-(torch.arange(0, D, 2, dtype=F64) / D))
    ang = torch.arange(T, dtype=F64)[:, None] * inv[None, :]
    return torch.cos(ang), torch.sin(ang)


def rope_neox(x, cos, sin):
    """HF rotate-half on [B, H, T, D]: pairs (i, i + D/2)."""
    h = x.shape[-1] // 2
    x0, x1 = x[..., :h], x[..., h:]
    return torch.cat([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)


def rope_norm(x, cos, sin):
    """Interleaved (llama.cpp NORM / llama2.c / Meta) on [B, H, T, D]: pairs (2i, 2i+1)."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


def llama_forward(P, cfg, ids, rope=rope_neox):
    """HF LlamaForCausalLM. rope_neox expects HF-order Q/K rows, rope_norm Meta order."""
    B, T = ids.shape
    E, H, Hkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D, eps = E // H, cfg["rms_norm_eps"]
    cos, sin = rope_tables(T, D, cfg["rope_theta"])
    x = P["model.embed_tokens.weight"][ids]
    hidden = []
    for l in range(cfg["num_hidden_layers"]):
        b = f"model.layers.{l}."
        a = rms_norm(x, P[b + "input_layernorm.weight"], eps)
        q = (a @ P[b + "self_attn.q_proj.weight"].t()).reshape(B, T, H, D).transpose(1, 2)
        k = (a @ P[b + "self_attn.k_proj.weight"].t()).reshape(B, T, Hkv, D).transpose(1, 2)
        v = (a @ P[b + "self_attn.v_proj.weight"].t()).reshape(B, T, Hkv, D).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = H // Hkv                                     # query head h uses kv head h // rep
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        o = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, H * D)
        x = x + o @ P[b + "self_attn.o_proj.weight"].t()
        m = rms_norm(x, P[b + "post_attention_layernorm.weight"], eps)
        g = m @ P[b + "mlp.gate_proj.weight"].t()
        u = m @ P[b + "mlp.up_proj.weight"].t()
        x = x + (g * torch.sigmoid(g) * u) @ P[b + "mlp.down_proj.weight"].t()
        hidden.append(x)
    x = rms_norm(x, P["model.norm.weight"], eps)
    head = P["lm_head.weight"] if "lm_head.weight" in P else P["model.embed_tokens.weight"]
    return x @ head.t(), hidden


def next_token_loss(logits, ids):
    """Mean cross-entropy of logits[:, t] against ids[:, t+1] (B*(T-1) terms)."""
    V = logits.shape[-1]
    lp = torch.log_softmax(logits[:, :-1], dim=-1).reshape(-1, V)
    tgt = ids[:, 1:].reshape(-1)
    return -lp[torch.arange(tgt.numel()), tgt].mean()


# ---------------------------------------------------------------------------
# Rounding helpers (f16, bf16, Q8_0)
# ---------------------------------------------------------------------------

def bf16_bits(a):
    """f32 ndarray -> uint16 bf16 bits, ggml/torch rule: round to nearest even."""
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    assert not np.isnan(a).any()
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def bf16_to_f32(bits):
    return (bits.astype("<u4") << 16).view("<f4")


def round_tensor(t, kind):
    """f32 tensor -> f32 tensor holding the values representable in kind."""
    a = t.numpy()
    if kind == "f16":
        return torch.from_numpy(a.astype("<f2").astype("<f4"))
    if kind == "bf16":
        r = torch.from_numpy(bf16_to_f32(bf16_bits(a)).reshape(a.shape).copy())
        assert torch.equal(r, t.to(torch.bfloat16).float()), "bf16 rounding disagrees with torch"
        return r
    raise ValueError(kind)


def np_roundf(x):
    """C roundf (half away from zero), as gguf-py does it."""
    a = np.abs(x)
    f = np.floor(a)
    return np.sign(x) * (f + np.floor(2 * (a - f)))


def quantize_q8_0(a):
    """f32 [rows, cols] (cols % 32 == 0) -> bytes, ggml quantize_row_q8_0_ref bit for bit."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    assert a.shape[-1] % 32 == 0
    blocks = a.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = np_roundf(blocks * inv).astype(np.int8)
    out = np.concatenate([d.astype("<f2").view(np.uint8), q.view(np.uint8)], axis=1)
    return out.tobytes()


def dequantize_q8_0(raw, shape):
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 34)
    d = b[:, :2].copy().view("<f2").astype(np.float32)
    q = b[:, 2:].copy().view(np.int8).astype(np.float32)
    return (q * d).reshape(shape)


# ---------------------------------------------------------------------------
# Q/K permutation (convert_hf_to_gguf.py LlamaModel.permute)
# ---------------------------------------------------------------------------

def permute_hf_to_meta(w, n_head):
    """HF row j*D + c*h + i  ->  Meta/GGUF row j*D + 2i + c."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
             .transpose(1, 2).reshape(w.shape))


def permute_meta_to_hf(w, n_head):
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
             .transpose(1, 2).reshape(w.shape))


def meta_order(P, cfg):
    """Copy of P with q_proj/k_proj rows in Meta (GGUF, llama2.c) order."""
    out = dict(P)
    for n in P:
        if n.endswith("q_proj.weight"):
            out[n] = permute_hf_to_meta(P[n], cfg["num_attention_heads"])
        elif n.endswith("k_proj.weight"):
            out[n] = permute_hf_to_meta(P[n], cfg["num_key_value_heads"])
    return out


# ---------------------------------------------------------------------------
# safetensors writer/reader
# ---------------------------------------------------------------------------

ST_DTYPE = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "I32": ("<i4", 4)}


def st_bytes(tensors, metadata=None):
    """tensors: name -> (dtype string, shape, raw bytes). Layout as the reference
    writer: larger dtypes first, then by name; header padded with spaces to 8."""
    order = sorted(tensors, key=lambda n: (-ST_DTYPE[tensors[n][0]][1], n))
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    off = 0
    for n in order:
        dt, shape, raw = tensors[n]
        assert len(raw) == int(np.prod(shape, dtype=np.int64)) * ST_DTYPE[dt][1]
        header[n] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    return struct.pack("<Q", len(hj)) + hj + b"".join(tensors[n][2] for n in order)


def st_entry(t, dtype):
    """torch tensor -> (dtype string, shape, raw) with values rounded to dtype."""
    a = t.detach().numpy() if t.dtype != torch.int32 else t.numpy()
    if dtype == "F32":
        raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
    elif dtype == "F16":
        raw = np.ascontiguousarray(a, dtype="<f4").astype("<f2").tobytes()
    elif dtype == "BF16":
        raw = bf16_bits(np.ascontiguousarray(a, dtype="<f4")).tobytes()
    elif dtype == "I32":
        raw = np.ascontiguousarray(a, dtype="<i4").tobytes()
    else:
        raise ValueError(dtype)
    return (dtype, tuple(t.shape), raw)


def st_read(data):
    """Strict reader (the checks of formats.md §1.4); returns name -> f32/i32 tensor."""
    n = struct.unpack_from("<Q", data, 0)[0]
    assert 8 + n <= len(data) and data[8:9] == b"{"
    hdr = json.loads(data[8:8 + n].decode())
    hdr.pop("__metadata__", None)
    ents = sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0])
    pos = 0
    out = {}
    for name, e in ents:
        b, end = e["data_offsets"]
        assert b == pos and end >= b, name
        np_dt, sz = ST_DTYPE[e["dtype"]]
        assert end - b == int(np.prod(e["shape"], dtype=np.int64)) * sz, name
        raw = data[8 + n + b:8 + n + end]
        a = np.frombuffer(raw, dtype=np_dt).reshape(e["shape"])
        if e["dtype"] == "BF16":
            a = bf16_to_f32(a)
        out[name] = torch.from_numpy(a.astype(np.float32 if e["dtype"] != "I32" else np.int32))
        pos = end
    assert 8 + n + pos == len(data), "trailing bytes"
    return out


# ---------------------------------------------------------------------------
# GGUF writer/reader
# ---------------------------------------------------------------------------

GGUF_ALIGN = 32
GT_U32, GT_I32, GT_F32, GT_BOOL, GT_STR, GT_ARR = 4, 5, 6, 7, 8, 9
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8


def _gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _gval(typ, v):
    if typ == GT_U32:
        return struct.pack("<I", v)
    if typ == GT_I32:
        return struct.pack("<i", v)
    if typ == GT_F32:
        return struct.pack("<f", v)
    if typ == GT_BOOL:
        return struct.pack("<B", 1 if v else 0)
    if typ == GT_STR:
        return _gstr(v)
    raise ValueError(typ)


def gguf_bytes(kvs, tensors):
    """kvs: list of (key, type, value) where type is GT_* or (GT_ARR, elem_type).
    tensors: list of (name, torch shape, ggml type, raw bytes), written in order;
    each tensor padded to GGUF_ALIGN, including the last (gguf-py layout)."""
    out = [struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(kvs))]
    for key, typ, val in kvs:
        out.append(_gstr(key))
        if isinstance(typ, tuple):
            et = typ[1]
            out.append(struct.pack("<IIQ", GT_ARR, et, len(val)))
            out.extend(_gval(et, x) for x in val)
        else:
            out.append(struct.pack("<I", typ))
            out.append(_gval(typ, val))
    pad = lambda n: (GGUF_ALIGN - n % GGUF_ALIGN) % GGUF_ALIGN
    off = 0
    for name, shape, gt, raw in tensors:
        dims = list(reversed(shape))                     # ne[0] = fastest dim
        out.append(_gstr(name) + struct.pack("<I", len(dims)))
        out.append(struct.pack(f"<{len(dims)}Q", *dims))
        out.append(struct.pack("<IQ", gt, off))
        off += len(raw) + pad(len(raw))
    head = b"".join(out)
    parts = [head, b"\0" * pad(len(head))]
    for _, _, _, raw in tensors:
        parts += [raw, b"\0" * pad(len(raw))]
    return b"".join(parts)


def gguf_read(data):
    """Minimal strict reader: returns (kv dict, name -> (torch shape, ggml type, raw))."""
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def rstr():
        nonlocal pos
        n = take("<Q")
        s = data[pos:pos + n].decode()
        pos += n
        return s

    def rval(t):
        return {GT_U32: lambda: take("<I"), GT_I32: lambda: take("<i"), GT_F32: lambda: take("<f"),
                GT_BOOL: lambda: take("<B"), GT_STR: rstr}[t]()

    magic, ver, nt, nkv = take("<IIQQ")
    assert magic == 0x46554747 and ver == 3
    kv = {}
    for _ in range(nkv):
        k = rstr()
        t = take("<I")
        if t == GT_ARR:
            et, cnt = take("<IQ")
            kv[k] = [rval(et) for _ in range(cnt)]
        else:
            kv[k] = rval(t)
    infos = []
    for _ in range(nt):
        name = rstr()
        nd = take("<I")
        dims = [take("<Q") for _ in range(nd)]
        gt, off = take("<IQ")
        infos.append((name, tuple(reversed(dims)), gt, off))
    start = pos + (GGUF_ALIGN - pos % GGUF_ALIGN) % GGUF_ALIGN
    ts = {}
    expect = 0
    for name, shape, gt, off in infos:
        n = int(np.prod(shape))
        size = {GGML_F32: n * 4, GGML_F16: n * 2, GGML_Q8_0: n // 32 * 34}[gt]
        assert off == expect, (name, off, expect)
        ts[name] = (shape, gt, data[start + off:start + off + size])
        expect = off + size + (GGUF_ALIGN - size % GGUF_ALIGN) % GGUF_ALIGN
    assert start + expect == len(data), "GGUF data section size"
    return kv, ts


def gguf_tensor_f32(shape, gt, raw):
    if gt == GGML_F32:
        return torch.from_numpy(np.frombuffer(raw, "<f4").reshape(shape).copy())
    if gt == GGML_F16:
        return torch.from_numpy(np.frombuffer(raw, "<f2").astype(np.float32).reshape(shape))
    if gt == GGML_Q8_0:
        return torch.from_numpy(dequantize_q8_0(raw, shape))
    raise ValueError(gt)


LLAMA_GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LLAMA_GGUF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    if hf in LLAMA_GGUF_NAMES:
        return LLAMA_GGUF_NAMES[hf]
    parts = hf.split(".", 3)                          # model, layers, N, rest
    return f"blk.{parts[2]}.{LLAMA_GGUF_LAYER[parts[3]]}"


def llama_vocab(V):
    """A synthetic SentencePiece-style vocab so the file carries the tokenizer
    keys convert_hf_to_gguf.py writes: <unk>, <s>, </s>, then single characters."""
    chars = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] \
        + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [str(d) for d in range(10)] \
        + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    toks = ["<unk>", "<s>", "</s>"] + chars[:V - 3]
    assert len(toks) == V and len(set(toks)) == V
    scores = [0.0, 0.0, 0.0] + [float(-i) for i in range(V - 3)]
    types = [2, 3, 3] + [1] * (V - 3)
    return toks, scores, types


def llama_gguf(P, cfg, qtype):
    """GGUF v3 file as convert_hf_to_gguf.py --outtype f32|q8_0 writes it.
    Returns (file bytes, HF-order f32 params holding exactly the stored values)."""
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    file_type = {"f32": 0, "q8_0": 7}[qtype]
    toks, scores, types = llama_vocab(cfg["vocab_size"])
    kvs = [
        ("general.architecture", GT_STR, "llama"),
        ("general.type", GT_STR, "model"),
        ("general.name", GT_STR, "Golden Tiny Llama"),
        ("llama.block_count", GT_U32, cfg["num_hidden_layers"]),
        ("llama.context_length", GT_U32, cfg["max_position_embeddings"]),
        ("llama.embedding_length", GT_U32, cfg["hidden_size"]),
        ("llama.feed_forward_length", GT_U32, cfg["intermediate_size"]),
        ("llama.attention.head_count", GT_U32, H),
        ("llama.attention.head_count_kv", GT_U32, Hkv),
        ("llama.rope.freq_base", GT_F32, cfg["rope_theta"]),
        ("llama.attention.layer_norm_rms_epsilon", GT_F32, cfg["rms_norm_eps"]),
        ("llama.attention.key_length", GT_U32, cfg["head_dim"]),
        ("llama.attention.value_length", GT_U32, cfg["head_dim"]),
        ("general.file_type", GT_U32, file_type),
        ("llama.vocab_size", GT_U32, cfg["vocab_size"]),
        ("llama.rope.dimension_count", GT_U32, cfg["hidden_size"] // H),
        ("tokenizer.ggml.model", GT_STR, "llama"),
        ("tokenizer.ggml.pre", GT_STR, "default"),
        ("tokenizer.ggml.tokens", (GT_ARR, GT_STR), toks),
        ("tokenizer.ggml.scores", (GT_ARR, GT_F32), scores),
        ("tokenizer.ggml.token_type", (GT_ARR, GT_I32), types),
        ("tokenizer.ggml.bos_token_id", GT_U32, cfg["bos_token_id"]),
        ("tokenizer.ggml.eos_token_id", GT_U32, cfg["eos_token_id"]),
        ("tokenizer.ggml.unknown_token_id", GT_U32, 0),
        ("tokenizer.ggml.add_bos_token", GT_BOOL, True),
        ("tokenizer.ggml.add_eos_token", GT_BOOL, False),
        ("general.quantization_version", GT_U32, 2),
    ]
    M = meta_order(P, cfg)
    tensors = []
    stored = {}
    # convert_hf_to_gguf.py walks the safetensors keys in sorted order.
    for hf in sorted(P):
        name = gguf_name(hf)
        w = M[hf]
        a = w.numpy()
        if w.dim() <= 1 or name.endswith("_norm.weight") or qtype == "f32":
            gt, raw = GGML_F32, np.ascontiguousarray(a, "<f4").tobytes()
        elif a.shape[-1] % 32 == 0:
            gt, raw = GGML_Q8_0, quantize_q8_0(a)
        else:
            # gguf.quants raises QuantError (row not a whole number of Q8_0
            # blocks) and convert_hf_to_gguf.py falls back to F16.
            gt, raw = GGML_F16, a.astype("<f2").tobytes()
        tensors.append((name, tuple(w.shape), gt, raw))
        held = gguf_tensor_f32(tuple(w.shape), gt, raw)
        if hf.endswith("q_proj.weight"):
            held = permute_meta_to_hf(held, H)
        elif hf.endswith("k_proj.weight"):
            held = permute_meta_to_hf(held, Hkv)
        stored[hf] = held
    return gguf_bytes(kvs, tensors), stored, [(t[0], t[2]) for t in tensors]


# ---------------------------------------------------------------------------
# llama2.c legacy v0 .bin
# ---------------------------------------------------------------------------

def llama2c_bin(P, cfg):
    E, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, Hkv, V, T = (cfg["num_attention_heads"], cfg["num_key_value_heads"],
                    cfg["vocab_size"], cfg["max_position_embeddings"])
    D = E // H
    shared = "lm_head.weight" not in P
    M = meta_order(P, cfg)
    hdr = struct.pack("<7i", E, F, L, H, Hkv, V if shared else -V, T)
    f32 = lambda t: np.ascontiguousarray(t.numpy(), "<f4").tobytes()
    per = lambda s: b"".join(f32(M[f"model.layers.{l}.{s}"]) for l in range(L))
    # llama2.c model.py precompute_freqs_cis, in float32 as it does.
    freqs = 1.0 / (10000.0 ** (torch.arange(0, D, 2)[: D // 2].float() / D))
    ang = torch.outer(torch.arange(T), freqs).float()
    body = [f32(M["model.embed_tokens.weight"]), per("input_layernorm.weight"),
            per("self_attn.q_proj.weight"), per("self_attn.k_proj.weight"),
            per("self_attn.v_proj.weight"), per("self_attn.o_proj.weight"),
            per("post_attention_layernorm.weight"), per("mlp.gate_proj.weight"),
            per("mlp.down_proj.weight"), per("mlp.up_proj.weight"),
            f32(M["model.norm.weight"]), f32(torch.cos(ang)), f32(torch.sin(ang))]
    if not shared:
        body.append(f32(M["lm_head.weight"]))
    return hdr + b"".join(body)


def llama2c_read(data, T_check):
    """Parse a v0 .bin back into HF-named, HF-order f32 params + config bits."""
    E, F, L, H, Hkv, V, T = struct.unpack_from("<7i", data, 0)
    shared = V > 0
    V = abs(V)
    D = E // H
    kv = Hkv * D
    pos = 28

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = np.frombuffer(data, "<f4", n, pos).reshape(shape).copy()
        pos += 4 * n
        return torch.from_numpy(a)

    P = {"model.embed_tokens.weight": take(V, E)}
    blocks = [("input_layernorm.weight", (E,)), ("self_attn.q_proj.weight", (E, E)),
              ("self_attn.k_proj.weight", (kv, E)), ("self_attn.v_proj.weight", (kv, E)),
              ("self_attn.o_proj.weight", (E, E)), ("post_attention_layernorm.weight", (E,)),
              ("mlp.gate_proj.weight", (F, E)), ("mlp.down_proj.weight", (E, F)),
              ("mlp.up_proj.weight", (F, E))]
    for s, shape in blocks:
        w = take(L, *shape)
        for l in range(L):
            P[f"model.layers.{l}.{s}"] = w[l]
    P["model.norm.weight"] = take(E)
    take(T, D // 2)
    take(T, D // 2)
    if not shared:
        P["lm_head.weight"] = take(V, E)
    assert pos == len(data) and T == T_check
    return P


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------

def to64(P):
    return {n: t.detach().to(F64) for n, t in P.items()}


def maxdiff(a, b):
    return float((a - b).abs().max())


def verify_gpt2_attention(P, cfg, ids):
    lg, hs = gpt2_forward(to64(P), cfg, ids)
    lr, hr = gpt2_forward(to64(P), cfg, ids, attn=attention_loops)
    d = max(maxdiff(lg, lr), max(maxdiff(a, b) for a, b in zip(hs, hr)))
    assert d < 1e-12, f"gpt2 attention vs explicit loops: {d}"
    return d


def verify_rope_layouts(P, cfg, ids):
    P64 = to64(P)
    a, ha = llama_forward(P64, cfg, ids, rope=rope_neox)
    b, hb = llama_forward(meta_order(P64, cfg), cfg, ids, rope=rope_norm)
    d = max(maxdiff(a, b), max(maxdiff(x, y) for x, y in zip(ha, hb)))
    assert d < 1e-10, f"rotate-half/HF vs interleaved/Meta: {d}"
    # The two permutations are inverses.
    for n in P:
        if n.endswith("q_proj.weight"):
            hd = cfg["num_attention_heads"]
        elif n.endswith("k_proj.weight"):
            hd = cfg["num_key_value_heads"]
        else:
            continue
        assert torch.equal(permute_meta_to_hf(permute_hf_to_meta(P[n], hd), hd), P[n])
        # index map of formats.md §3.4: GGUF row j*D + 2i + c <- HF row j*D + c*h + i
        D = cfg["hidden_size"] // cfg["num_attention_heads"]
        Mw = permute_hf_to_meta(P[n], hd)
        for j in range(hd):
            for i in range(D // 2):
                for c in range(2):
                    assert torch.equal(Mw[j * D + 2 * i + c], P[n][j * D + c * (D // 2) + i])
    return d


def verify_grads(fwd, P64, grads, ids, names, gen):
    """Central finite differences on a few entries of some parameters."""
    worst = 0.0
    for n in names:
        flat = P64[n].reshape(-1)
        for _ in range(3):
            i = int(torch.randint(flat.numel(), (1,), generator=gen))
            h = 1e-6
            Pp = dict(P64)
            Pm = dict(P64)
            wp = flat.clone()
            wp[i] += h
            wm = flat.clone()
            wm[i] -= h
            Pp[n] = wp.reshape(P64[n].shape)
            Pm[n] = wm.reshape(P64[n].shape)
            fd = (next_token_loss(fwd(Pp)[0], ids) - next_token_loss(fwd(Pm)[0], ids)) / (2 * h)
            g = float(grads[n].reshape(-1)[i])
            err = abs(float(fd) - g) / max(1e-3, abs(g))
            worst = max(worst, err)
            assert err < 1e-6, f"finite difference {n}[{i}]: fd {float(fd)} vs autograd {g}"
    return worst


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

def evaluate(fwd, P):
    """Logits/loss/hidden/grads in float64 from f32 params P."""
    P64 = {n: t.detach().to(F64).requires_grad_(True) for n, t in P.items()}
    ids = torch.tensor(INPUT_IDS)
    logits, hidden = fwd(P64)
    loss = next_token_loss(logits, ids)
    loss.backward()
    grads = {n: t.grad.detach() for n, t in P64.items()}
    return logits.detach(), loss.detach(), [h.detach() for h in hidden], grads


def logits_only(fwd, P):
    with torch.no_grad():
        return fwd(to64(P))[0]


def write(path, data, summary):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    summary.append((path, len(data)))


def write_json(path, obj, summary):
    write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), summary)


def model_files(outdir, name, cfg, P, summary):
    d = outdir / name
    write_json(d / "config.json", cfg, summary)
    for suffix, dt in (("", "F32"), (".f16", "F16"), (".bf16", "BF16")):
        data = st_bytes({n: st_entry(t, dt) for n, t in P.items()}, {"format": "pt"})
        back = st_read(data)
        assert set(back) == set(P)
        for n in P:
            want = P[n] if dt == "F32" else round_tensor(P[n], dt.lower())
            assert torch.equal(back[n], want), (name, suffix, n)
        write(d / f"model{suffix}.safetensors", data, summary)


def expected_file(outdir, name, P, fwd, extra, summary):
    logits, loss, hidden, grads = evaluate(fwd, P)
    ids = torch.tensor(INPUT_IDS, dtype=torch.int32)
    T = {"input_ids": st_entry(ids, "I32"),
         "logits": st_entry(logits.float(), "F32"),
         "loss": st_entry(loss.float().reshape(1), "F32")}
    for kind in ("f16", "bf16"):
        Pr = {n: round_tensor(t, kind) for n, t in P.items()}
        T[f"logits_{kind}"] = st_entry(logits_only(fwd, Pr).float(), "F32")
    for k, v in extra.items():
        T[k] = st_entry(v.float(), "F32")
    for i, h in enumerate(hidden):
        T[f"hidden.{i}"] = st_entry(h.float(), "F32")
    for n, g in grads.items():
        T[f"grad.{n}"] = st_entry(g.float(), "F32")
    data = st_bytes(T, {"format": "pt"})
    st_read(data)
    write(outdir / name / "expected.safetensors", data, summary)
    return logits, loss, hidden, grads, sorted(T)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                    help="output directory (default: the directory of this script)")
    args = ap.parse_args()
    out = args.out
    # One generator per use, so changing one part never shifts another's draws.
    gen_gpt2 = torch.Generator().manual_seed(SEED)
    gen_llama = torch.Generator().manual_seed(SEED + 1)
    gen_fd = torch.Generator().manual_seed(SEED + 2)
    ids = torch.tensor(INPUT_IDS)
    summary = []
    names_by_file = {}

    # ---- GPT-2 -----------------------------------------------------------
    gcfg = GPT2_CONFIG
    gP = make_gpt2_params(gcfg, gen_gpt2)
    d_att = verify_gpt2_attention(gP, gcfg, ids)
    gfwd = lambda P: gpt2_forward(P, gcfg, ids)
    model_files(out, "gpt2", gcfg, gP, summary)
    glog, gloss, _, ggrads, names_by_file["gpt2"] = expected_file(out, "gpt2", gP, gfwd, {}, summary)
    g_fd = verify_grads(gfwd, to64(gP), ggrads, ids,
                        ["transformer.wte.weight", "transformer.h.0.attn.c_attn.bias",
                         "transformer.h.1.ln_2.weight", "transformer.wpe.weight"], gen_fd)

    # Sharded copy: module order, split after h.0 as save_pretrained would.
    sd = out / "gpt2-sharded"
    write_json(sd / "config.json", gcfg, summary)
    order = list(gP)
    cut = order.index("transformer.h.1.ln_1.weight")
    shards = [order[:cut], order[cut:]]
    wmap = {}
    total = 0
    for i, part in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write(sd / fn, st_bytes({n: st_entry(gP[n], "F32") for n in part}, {"format": "pt"}), summary)
        for n in part:
            wmap[n] = fn
            total += gP[n].numel() * 4
    write_json(sd / "model.safetensors.index.json",
               {"metadata": {"total_size": total}, "weight_map": wmap}, summary)

    # ---- Llama (untied) ----------------------------------------------------
    lcfg = LLAMA_CONFIG
    lP = make_llama_params(lcfg, gen_llama)
    d_rope = verify_rope_layouts(lP, lcfg, ids)
    lfwd = lambda P: llama_forward(P, lcfg, ids)
    model_files(out, "llama", lcfg, lP, summary)

    gg_f32, held_f32, _ = llama_gguf(lP, lcfg, "f32")
    gg_q8, held_q8, q8_types = llama_gguf(lP, lcfg, "q8_0")
    for n in lP:
        assert torch.equal(held_f32[n], lP[n]), n
    # Read both GGUFs back independently and run them with interleaved RoPE.
    d_gguf = {}
    for label, data, held in (("f32", gg_f32, held_f32), ("q8_0", gg_q8, held_q8)):
        kv, ts = gguf_read(data)
        assert kv["general.architecture"] == "llama" and kv["llama.block_count"] == 2
        inv = {gguf_name(n): n for n in lP}
        Pm = {inv[g]: gguf_tensor_f32(*ts[g]) for g in ts}
        lg_meta = logits_only(lambda P: llama_forward(P, lcfg, ids, rope=rope_norm), Pm)
        d_gguf[label] = maxdiff(lg_meta, logits_only(lfwd, held))
        assert d_gguf[label] < 1e-10, (label, d_gguf[label])
        write(out / "llama" / ("model.gguf" if label == "f32" else "model.q8_0.gguf"), data, summary)
    logits_q8 = logits_only(lfwd, held_q8)

    binf = llama2c_bin(lP, lcfg)
    Pb = llama2c_read(binf, lcfg["max_position_embeddings"])
    lg_bin = logits_only(lambda P: llama_forward(P, lcfg, ids, rope=rope_norm), Pb)
    write(out / "llama" / "model.bin", binf, summary)

    llog, lloss, _, lgrads, names_by_file["llama"] = expected_file(
        out, "llama", lP, lfwd, {"logits_q8_0": logits_q8}, summary)
    d_bin = maxdiff(lg_bin, llog)
    assert d_bin < 1e-10, d_bin
    l_fd = verify_grads(lfwd, to64(lP), lgrads, ids,
                        ["model.embed_tokens.weight", "model.layers.0.self_attn.k_proj.weight",
                         "model.layers.1.input_layernorm.weight", "lm_head.weight"], gen_fd)

    # ---- Llama (tied) -------------------------------------------------------
    tcfg = LLAMA_TIED_CONFIG
    tP = {n: t for n, t in lP.items() if n != "lm_head.weight"}
    tfwd = lambda P: llama_forward(P, tcfg, ids)
    model_files(out, "llama-tied", tcfg, tP, summary)
    tlog, tloss, _, tgrads, names_by_file["llama-tied"] = expected_file(
        out, "llama-tied", tP, tfwd, {}, summary)
    t_fd = verify_grads(tfwd, to64(tP), tgrads, ids, ["model.embed_tokens.weight"], gen_fd)

    # ---- Summary ------------------------------------------------------------
    print("golden fixtures (seed %d) written to %s" % (SEED, out))
    print("checks: gpt2 attention vs loops %.2e; llama HF/rotate-half vs Meta/interleaved %.2e;"
          % (d_att, d_rope))
    print("        gguf f32 read-back %.2e, gguf q8_0 read-back %.2e, llama2.c read-back %.2e;"
          % (d_gguf["f32"], d_gguf["q8_0"], d_bin))
    print("        finite-difference grads rel err gpt2 %.1e llama %.1e llama-tied %.1e"
          % (g_fd, l_fd, t_fd))
    for label, lg, ls in (("gpt2", glog, gloss), ("llama", llog, lloss), ("llama-tied", tlog, tloss)):
        print("%-10s loss %.6f (ln V = %.4f), logits std %.3f, range [%.2f, %.2f]"
              % (label, float(ls), math.log(96), float(lg.std()), float(lg.min()), float(lg.max())))
    print("llama q8_0 gguf tensor types:",
          ", ".join("%s=%s" % (n, {0: "F32", 1: "F16", 8: "Q8_0"}[t]) for n, t in q8_types))
    print("max |logits_q8_0 - logits| = %.3e" % maxdiff(logits_q8, llog))
    total = 0
    for p, n in summary:
        print("  %8d  %s" % (n, os.path.relpath(p, out)))
        total += n
    print("  %8d  total" % total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
