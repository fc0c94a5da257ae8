#!/usr/bin/python3
"""Golden values for libpeft's optimizer suite (tests/check_optim.c).

Runs torch.optim.AdamW / torch.optim.SGD (single-tensor code path,
foreach=False) for five steps on three small f32 parameters with fixed
gradients, torch.nn.utils.clip_grad_norm_, and the Hugging Face LR lambdas
(written out here because transformers is not installed) through
torch.optim.lr_scheduler.LambdaLR. Writes expected.safetensors next to this
file (safetensors written by hand with struct + json).

Run by hand only; the output is committed:

    /usr/bin/python3 tests/golden/optim/gen.py            # rewrite expected.safetensors
    /usr/bin/python3 tests/golden/optim/gen.py --out FILE # write elsewhere

Needs only Debian's python3-torch. Deterministic: fixed seed, one thread.

Tensors (all F32):
  init.p{i}                      initial parameter i (i = 0, 1, 2; shapes [3,4], [5], [2,3])
  grad.s{k}.p{i}                 gradient of parameter i at step k (k = 1..5)
  {run}.s{k}.p{i}                parameter i after step k, for the runs:
      adamw          AdamW lr 1e-2, betas (0.9, 0.999), eps 1e-8, wd 0.01
      adamw_groups   AdamW, group A = p0, p1 (lr 1e-2, wd 0.01), group B = p2 (lr 5e-3, wd 0)
      sgd_momentum   SGD lr 0.05, momentum 0.9
      sgd_nesterov   SGD lr 0.05, momentum 0.9, nesterov
      sgd_wd         SGD lr 0.05, weight_decay 0.1
      sgd_damp       SGD lr 0.05, momentum 0.5, dampening 0.1, weight_decay 0.1
  clip.max_norm, clip.norm       [4]: max_norm of case c and the returned total norm
  clip.c{c}.p{i}                 gradient i after clip_grad_norm_ (input: grad.s3.p{i} * 10)
  sched.{name}                   LambdaLR learning rate (base 1.0) used by update k = 0..T:
      constant   warmup 3 (T = 12 values shown)
      linear     warmup 3, total 12
      cosine     warmup 3, total 12
      cosine_min warmup 3, total 12, min_lr_ratio 0.1
      stlr       total 50, cut_frac 0.1, ratio 32 (ULMFiT eq. 3, AllenNLP denominator)
"""

import argparse
import json
import math
import struct
from pathlib import Path

import torch

STEPS = 5
SHAPES = [(3, 4), (5,), (2, 3)]


def f32(t):
    return t.to(torch.float32).contiguous()


def make_data():
    g = torch.Generator().manual_seed(20250901)
    init = []
    for shape in SHAPES:
        mag = 0.2 + 0.8 * torch.rand(shape, generator=g, dtype=torch.float64)
        sign = torch.where(torch.rand(shape, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
        init.append(f32(mag * sign))
    grads = []
    scales = [0.1, 1.0, 0.01, 0.5, 2.0]  # varied magnitudes exercise the second moment
    for k in range(STEPS):
        grads.append([f32(scales[k] * torch.randn(shape, generator=g, dtype=torch.float64)) for shape in SHAPES])
    return init, grads


def run(init, grads, make_opt):
    params = [p.clone().requires_grad_(True) for p in init]
    opt = make_opt(params)
    out = []
    for k in range(STEPS):
        for p, gr in zip(params, grads[k]):
            p.grad = gr.clone()
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


def runs(init, grads):
    AdamW, SGD = torch.optim.AdamW, torch.optim.SGD
    return {
        "adamw": run(init, grads, lambda ps: AdamW(ps, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                                                   foreach=False)),
        "adamw_groups": run(init, grads, lambda ps: AdamW([{"params": ps[:2]},
                                                           {"params": ps[2:], "lr": 5e-3, "weight_decay": 0.0}],
                                                          lr=1e-2, weight_decay=0.01, foreach=False)),
        "sgd_momentum": run(init, grads, lambda ps: SGD(ps, lr=0.05, momentum=0.9, foreach=False)),
        "sgd_nesterov": run(init, grads, lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True, foreach=False)),
        "sgd_wd": run(init, grads, lambda ps: SGD(ps, lr=0.05, weight_decay=0.1, foreach=False)),
        "sgd_damp": run(init, grads, lambda ps: SGD(ps, lr=0.05, momentum=0.5, dampening=0.1, weight_decay=0.1,
                                                    foreach=False)),
    }


def verify_adamw(init, grads, got):
    """Independent float64 AdamW (the algorithm box of the PyTorch docs)."""
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.01
    p = [x.double() for x in init]
    m = [torch.zeros_like(x) for x in p]
    v = [torch.zeros_like(x) for x in p]
    for k in range(STEPS):
        t = k + 1
        for i in range(len(p)):
            gr = grads[k][i].double()
            p[i] = p[i] - lr * wd * p[i]
            m[i] = b1 * m[i] + (1 - b1) * gr
            v[i] = b2 * v[i] + (1 - b2) * gr * gr
            mh, vh = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            p[i] = p[i] - lr * mh / (vh.sqrt() + eps)
            err = (p[i] - got[k][i].double()).abs().max().item()
            assert err < 1e-5, f"AdamW self-check: step {t} param {i} differs by {err}"


def clip_cases(grads):
    max_norms = [0.5, 1.0, 3.0, 1e3]
    base = [g * 10.0 for g in grads[2]]
    norms, clipped = [], []
    for mx in max_norms:
        ps = [torch.zeros(g.shape, requires_grad=True) for g in base]
        for p, g in zip(ps, base):
            p.grad = g.clone()
        n = torch.nn.utils.clip_grad_norm_(ps, mx)
        norms.append(float(n))
        clipped.append([p.grad.clone() for p in ps])
    return max_norms, norms, clipped


def hf_lambdas():
    """transformers/optimization.py lambdas (num_cycles 0.5)."""
    def constant(W):
        return lambda s: s / max(1.0, W) if s < W else 1.0

    def linear(W, T):
        def f(s):
            if s < W:
                return float(s) / float(max(1, W))
            return max(0.0, float(T - s) / float(max(1, T - W)))
        return f

    def cosine(W, T, min_ratio=None):
        def f(s):
            if s < W:
                return float(s) / float(max(1, W))
            progress = float(s - W) / float(max(1, T - W))
            factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
            if min_ratio is not None:  # get_cosine_with_min_lr_schedule_with_warmup
                factor = factor * (1 - min_ratio) + min_ratio
            return max(0.0, factor)
        return f

    def stlr(T, cut_frac, ratio):
        cut = int(T * cut_frac)

        def f(s):
            s = min(s, T)
            p = s / cut if s < cut else 1 - (s - cut) / (T - cut)
            return (1 + p * (ratio - 1)) / ratio
        return f

    return {
        "constant": (constant(3), 12),
        "linear": (linear(3, 12), 12),
        "cosine": (cosine(3, 12), 12),
        "cosine_min": (cosine(3, 12, 0.1), 12),
        "stlr": (stlr(50, 0.1, 32.0), 50),
    }


def scheduled_lrs(lam, T):
    """The lr LambdaLR gives update k = 0..T (optimizer step, then scheduler step)."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    out = []
    for k in range(T + 1):
        out.append(opt.param_groups[0]["lr"])
        assert abs(out[-1] - lam(k)) < 1e-15, "LambdaLR semantics"
        opt.step()
        sched.step()
    return out


def write_safetensors(path, tensors, meta):
    header = {"__metadata__": meta}
    blobs, off = [], 0
    for name, t in tensors:
        b = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "expected.safetensors"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    init, grads = make_data()
    res = runs(init, grads)
    verify_adamw(init, grads, res["adamw"])

    tensors = [(f"init.p{i}", p) for i, p in enumerate(init)]
    for k in range(STEPS):
        tensors += [(f"grad.s{k + 1}.p{i}", g) for i, g in enumerate(grads[k])]
    for name, steps in res.items():
        for k in range(STEPS):
            tensors += [(f"{name}.s{k + 1}.p{i}", p) for i, p in enumerate(steps[k])]
    max_norms, norms, clipped = clip_cases(grads)
    tensors += [("clip.max_norm", torch.tensor(max_norms)), ("clip.norm", torch.tensor(norms))]
    for c, gs in enumerate(clipped):
        tensors += [(f"clip.c{c}.p{i}", g) for i, g in enumerate(gs)]
    for name, (lam, T) in hf_lambdas().items():
        tensors.append((f"sched.{name}", torch.tensor(scheduled_lrs(lam, T), dtype=torch.float64)))

    write_safetensors(args.out, tensors, {"generator": "tests/golden/optim/gen.py", "torch": torch.__version__})
    print(f"wrote {args.out}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
