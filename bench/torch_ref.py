#!/usr/bin/python3
"""The PyTorch side of `peft bench`: the same workloads, flags and JSON keys.

Plain PyTorch as typical training code writes it (Debian python3-torch 1.13,
nothing else): GPT-2 (pre-LN, learned positions, tanh GELU, tied head) and
Llama (RMSNorm, rotate-half RoPE, SwiGLU, grouped-query attention) written by
hand, attention as matmul + causal mask + softmax (1.13 has no
scaled_dot_product_attention), GPT-2's init (N(0, 0.02), residual projections
N(0, 0.02/sqrt(2L)), biases 0, norm gains 1), torch.optim.AdamW(lr=1e-4)
over the same trainable set as libpeft:
  full  every parameter;
  lora  A [r, in] (kaiming-uniform) and B [out, r] (zeros) on the targets,
        y = base(x) + (x @ A.T @ B.T) * alpha/r, the base frozen;
  head  the base frozen and run under torch.no_grad(), a linear classifier
        (4 classes) on the last token's final hidden state.
Next-token cross-entropy on uniform random tokens (head: random labels).
The FLOP count is the one documented in examples/peft/cmd_bench.c.
"""
import os
import sys

# Must happen before torch (its OpenMP runtime) loads: with the default
# active waiting, idle OpenMP threads spin and steal the 2 cores from the
# BLAS threads (the performance issue reports PyTorch 2-5x slower without it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


def causal_attention(q, k, v, mask):
    """q, k, v: [B, H, T, D]; mask: [T, T] bool, True where allowed."""
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    att = att.masked_fill(~mask, float("-inf"))
    att = F.softmax(att, dim=-1)
    return att @ v


class GPT2Block(nn.Module):
    def __init__(self, C, H, F_, eps):
        super().__init__()
        self.H = H
        self.ln_1 = nn.LayerNorm(C, eps=eps)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(C, 3 * C)
        self.attn.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=eps)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(C, F_)
        self.mlp.c_proj = nn.Linear(F_, C)

    def forward(self, x, mask):
        B, T, C = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = causal_attention(q, k, v, mask).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn.c_proj(y)
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.wte = nn.Embedding(a.vocab, a.d)
        self.wpe = nn.Embedding(a.n_ctx, a.d)
        self.h = nn.ModuleList([GPT2Block(a.d, a.heads, a.ffn, 1e-5) for _ in range(a.layers)])
        self.ln_f = nn.LayerNorm(a.d, eps=1e-5)
        self.register_buffer("mask", torch.ones(a.seq, a.seq, dtype=torch.bool).tril(), persistent=False)

    def hidden(self, ids):
        T = ids.size(1)
        x = self.wte(ids) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x, self.mask[:T, :T])
        return self.ln_f(x)

    def logits(self, h):
        return h @ self.wte.weight.t()  # tied head


class RMSNorm(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LlamaBlock(nn.Module):
    def __init__(self, C, H, Hkv, F_, eps):
        super().__init__()
        D = C // H
        self.H, self.Hkv, self.D = H, Hkv, D
        self.input_layernorm = RMSNorm(C, eps)
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(C, H * D, bias=False)
        self.self_attn.k_proj = nn.Linear(C, Hkv * D, bias=False)
        self.self_attn.v_proj = nn.Linear(C, Hkv * D, bias=False)
        self.self_attn.o_proj = nn.Linear(H * D, C, bias=False)
        self.post_attention_layernorm = RMSNorm(C, eps)
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(C, F_, bias=False)
        self.mlp.up_proj = nn.Linear(C, F_, bias=False)
        self.mlp.down_proj = nn.Linear(F_, C, bias=False)

    def forward(self, x, mask, cos, sin):
        B, T, C = x.shape
        a = self.self_attn
        h = self.input_layernorm(x)
        q = a.q_proj(h).view(B, T, self.H, self.D).transpose(1, 2)
        k = a.k_proj(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
        v = a.v_proj(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.H // self.Hkv
        if rep > 1:  # repeat_kv: each kv head serves `rep` query heads
            k = k[:, :, None].expand(B, self.Hkv, rep, T, self.D).reshape(B, self.H, T, self.D)
            v = v[:, :, None].expand(B, self.Hkv, rep, T, self.D).reshape(B, self.H, T, self.D)
        y = causal_attention(q, k, v, mask).transpose(1, 2).reshape(B, T, C)
        x = x + a.o_proj(y)
        h = self.post_attention_layernorm(x)
        return x + self.mlp.down_proj(F.silu(self.mlp.gate_proj(h)) * self.mlp.up_proj(h))


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.d)
        self.layers = nn.ModuleList([LlamaBlock(a.d, a.heads, a.kv_heads, a.ffn, 1e-5) for _ in range(a.layers)])
        self.norm = RMSNorm(a.d, 1e-5)
        D = a.d // a.heads
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
        freqs = torch.outer(torch.arange(a.seq, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self.register_buffer("mask", torch.ones(a.seq, a.seq, dtype=torch.bool).tril(), persistent=False)

    def hidden(self, ids):
        T = ids.size(1)
        x = self.embed_tokens(ids)
        cos, sin = self.cos[:T], self.sin[:T]
        for b in self.layers:
            x = b(x, self.mask[:T, :T], cos, sin)
        return self.norm(x)

    def logits(self, h):
        return h @ self.embed_tokens.weight.t()  # tied head


def init_weights(model, n_layer):
    """GPT-2's init, as peft_model_create does it."""
    std_res = 0.02 / math.sqrt(2 * n_layer)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            residual = name.endswith(("c_proj.weight", "o_proj.weight", "down_proj.weight"))
            nn.init.normal_(p, 0.0, std_res if residual else 0.02)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
        else:
            nn.init.ones_(p)


def target_matches(targets, module):
    """peft_target_matches: equal, or ends with '.' + entry; 'all-linear'."""
    for t in targets.split(","):
        t = t.strip()
        if t == "all-linear" or module == t or module.endswith("." + t):
            return True
    return False


def projections(a):
    """(module path, out, in) of every block projection, HF names."""
    C, F_, D = a.d, a.ffn, a.d // a.heads
    KV = a.kv_heads * D
    out = []
    for l in range(a.layers):
        if a.arch == "gpt2":
            p = "transformer.h.%d." % l
            out += [(p + "attn.c_attn", 3 * C, C), (p + "attn.c_proj", C, C), (p + "mlp.c_fc", F_, C), (p + "mlp.c_proj", C, F_)]
        else:
            p = "model.layers.%d." % l
            out += [(p + "self_attn.q_proj", C, C), (p + "self_attn.k_proj", KV, C), (p + "self_attn.v_proj", KV, C),
                    (p + "self_attn.o_proj", C, C), (p + "mlp.gate_proj", F_, C), (p + "mlp.up_proj", F_, C),
                    (p + "mlp.down_proj", C, F_)]
    return out


def flops_per_token(a):
    """The count documented at the top of examples/peft/cmd_bench.c."""
    C, T, V, L = float(a.d), float(a.seq), float(a.vocab), float(a.layers)
    mm = mm_train = mm_no_in = 0.0
    for name, o, i in projections(a):
        p = float(o * i)
        pl = a.lora_r * (i + o) if a.strategy == "lora" and target_matches(a.lora_targets, name) else 0.0
        mm += p + pl
        mm_train += p if a.strategy == "full" else pl
        reads_emb = (name.startswith("transformer.h.0.") or name.startswith("model.layers.0.")) and any(
            s in name for s in ("c_attn", "q_proj", "k_proj", "v_proj"))
        if reads_emb and a.strategy != "full":
            mm_no_in += p + (a.lora_r * i if pl else 0.0)
    attn = 2.0 * T * C * L
    if a.strategy == "head":
        cls = 4.0 * C / T
        return 2.0 * (mm + cls) + attn + 2.0 * cls
    mm += V * C
    if a.strategy == "full":
        mm_train += V * C
    return (2.0 * mm + attn) + (2.0 * (mm - mm_no_in) + 2.0 * attn) + 2.0 * mm_train


def square_peak():
    """Best torch.mm rate on large squares (used only without --peak-gflops)."""
    best = 0.0
    for n in (1024, 2048):
        x, y = torch.rand(n, n), torch.rand(n, n)
        torch.mm(x, y)
        t_end = time.perf_counter() + 0.5
        for i in range(100):
            t0 = time.perf_counter()
            torch.mm(x, y)
            best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0))
            if i >= 2 and time.perf_counter() > t_end:
                break
    return best * 1e-9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=0)
    ap.add_argument("--ffn", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--strategy", choices=("full", "lora", "head"), default="lora")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-targets", default=None)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--peak-gflops", type=float, default=0.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.steps <= a.warmup or a.warmup < 0:
        ap.error("--steps must exceed --warmup")
    if a.kv_heads == 0 or a.arch == "gpt2":
        a.kv_heads = a.heads
    if a.ffn == 0:
        a.ffn = 4 * a.d if a.arch == "gpt2" else (8 * a.d // 3 + 31) // 32 * 32
    if a.lora_targets is None:
        a.lora_targets = "c_attn" if a.arch == "gpt2" else "q_proj,v_proj"
    a.n_ctx = max(a.seq, 1024)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rss_import = rss_mib()

    model = GPT2(a) if a.arch == "gpt2" else Llama(a)
    init_weights(model, a.layers)
    total = sum(p.numel() for p in model.parameters())
    head = None
    if a.strategy == "full":
        params = list(model.parameters())
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        if a.strategy == "lora":
            for name, mod in list(model.named_modules()):
                for cname, child in list(mod.named_children()):
                    path = (name + "." + cname) if name else cname
                    hf = ("transformer." + path) if a.arch == "gpt2" else ("model." + path)
                    if isinstance(child, nn.Linear) and target_matches(a.lora_targets, hf):
                        setattr(mod, cname, LoRALinear(child, a.lora_r, 8.0))
            params = [p for n, p in model.named_parameters() if "lora_" in n]
        else:
            head = nn.Linear(a.d, 4)
            params = list(head.parameters())
    trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    gen = torch.Generator().manual_seed(a.seed)

    def step(ids, labels):
        opt.zero_grad(set_to_none=True)
        if head is not None:
            with torch.no_grad():
                feat = model.hidden(ids)[:, -1, :]
            loss = F.cross_entropy(head(feat), labels)
        else:
            logits = model.logits(model.hidden(ids))
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    model.train()
    ms, losses, cpu_ms = [], [], 0.0
    for s in range(a.steps):
        ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=gen)
        labels = torch.randint(0, 4, (a.batch,), generator=gen)
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(step(ids, labels))
        ms.append(1e3 * (time.perf_counter() - t0))
        if s >= a.warmup:  # CPU time of every thread of the process
            cpu_ms += 1e3 * (time.process_time() - c0) / (a.steps - a.warmup)
    timed = sorted(ms[a.warmup:])
    n = len(timed)
    median = timed[n // 2] if n % 2 else 0.5 * (timed[n // 2 - 1] + timed[n // 2])
    tps = a.batch * a.seq / (median * 1e-3)
    fpt = flops_per_token(a)
    peak = a.peak_gflops if a.peak_gflops > 0 else square_peak()
    r = {
        "impl": "pytorch", "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "arch": a.arch, "strategy": a.strategy, "layers": a.layers, "d": a.d, "heads": a.heads,
        "kv_heads": a.kv_heads, "ffn": a.ffn, "vocab": a.vocab, "batch": a.batch, "seq": a.seq,
        "threads": torch.get_num_threads(), "steps": a.steps, "timed_steps": n,
        "tokens_per_s": round(tps, 2), "step_ms_median": round(median, 3), "step_ms_min": round(timed[0], 3),
        "cpu_ms_per_step": round(cpu_ms, 3),
        "peak_rss_mib": round(rss_mib(), 1), "rss_after_import_mib": round(rss_import, 1),
        "trainable_params": trainable, "total_params": total, "flops_per_token": fpt,
        "sgemm_gflops": round(peak, 2), "mfu": round(fpt * tps / (peak * 1e9), 5),
        "loss_first": round(losses[0], 5), "loss_last": round(losses[-1], 5),
    }
    if a.json:
        print(json.dumps(r))
    else:
        print("%s %s (pytorch %s): %.1f tokens/s, step %.1f ms (median of %d), peak RSS %.1f MiB, "
              "%d trainable of %d, MFU %.3f, loss %.4f -> %.4f" % (
                  a.arch, a.strategy, torch.__version__, tps, median, n, r["peak_rss_mib"], trainable, total,
                  r["mfu"], losses[0], losses[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
