"""Attention over a few tokens (the camera block's 12 views, the motion block's 4 frames) at the
shapes of the 576 px CFG batch, compiled: which formulation is fastest (prints a table).

q, k, v are laid out as the Attention module makes them: a linear layer's (rows, n, heads·d)
output viewed as (rows, heads, n, d). Each variant is torch.compile'd alone; 'sdpa' is PyTorch's
fused attention, eager and chunked (what ran before short attention). Error: max |a-b| / max |b|
against float32 math on the first 4096 rows.

    python scripts/bench_short_attention.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.sp4d.layers import Attention, short_attention  # noqa: E402


def unrolled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One multiply-reduce over d per key, the softmax and the weighted sum written per key."""
    dt, m = q.dtype, k.shape[-2]
    qf = q.float() * q.shape[-1] ** -0.5
    s = torch.stack([(qf * k[..., j:j + 1, :].float()).sum(-1) for j in range(m)], -1)
    p = s.softmax(-1)
    out = p[..., 0:1] * v[..., 0:1, :].float()
    for j in range(1, m):
        out = out + p[..., j:j + 1] * v[..., j:j + 1, :].float()
    return out.to(dt)


def matmul32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Batched matrix products in float32 (scores kept in float32, as the fused kernels do)."""
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.matmul(s.softmax(-1), v.float()).to(q.dtype)


def sdpa_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    step = max(1, Attention.MAX_BATCH_HEADS // q.shape[1])
    return torch.cat([F.scaled_dot_product_attention(q[i:i + step], k[i:i + step], v[i:i + step])
                      for i in range(0, q.shape[0], step)])


VARIANTS = {"reduce": short_attention, "unrolled": unrolled, "matmul32": matmul32}


def reference(q, k, v):
    s = torch.matmul(q.double(), k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.matmul(s.softmax(-1), v.double()).float()


def time_ms(fn, *args, reps: int = 10) -> float:
    fn(*args)
    if args[0].device.type != "cuda":  # smoke runs on the CPU
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(*args)
        return (time.perf_counter() - t0) * 1e3 / reps
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn(*args)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rows-div", type=int, default=1, help="fewer rows (a quick smoke run on the CPU)")
    args = ap.parse_args()
    dev = args.device
    heads, d = 5, 64
    # level 1 of the UNet at 576 px (72² pixels), CFG batch of b = 2: camera rows b·T·hw, motion rows b·V·hw
    shapes = {"camera (12 views)": (2 * 4 * 72 * 72 // args.rows_div, 12),
              "motion (4 frames)": (2 * 12 * 72 * 72 // args.rows_div, 4)}
    g = torch.Generator(device=dev).manual_seed(0)
    name = torch.cuda.get_device_name() if dev == "cuda" else dev
    rows_out = {}
    print(f"{name}, torch {torch.__version__}, bf16, {heads} heads × {d}")
    print(f"{'block':18s} {'variant':9s} {'ms/call':>8s} {'GB/s':>7s} {'max rel':>9s}")
    for name, (rows, n) in shapes.items():
        q, k, v = (torch.randn(rows, n, heads * d, device=dev, generator=g, dtype=torch.bfloat16)
                   .view(rows, n, heads, d).transpose(1, 2) for _ in range(3))
        ref = reference(q[:4096], k[:4096], v[:4096])
        nbytes = 4 * q.numel() * q.element_size()  # q, k, v read and the output written once
        fns = {"sdpa": sdpa_chunked} | {k_: torch.compile(f, dynamic=False) for k_, f in VARIANTS.items()}
        for vname, fn in fns.items():
            ms = time_ms(fn, q, k, v)
            out = fn(q, k, v)[:4096].float()
            err = float((out - ref).abs().max() / ref.abs().max())
            rows_out[f"{name} / {vname}"] = {"ms": ms, "max_rel": err}
            print(f"{name:18s} {vname:9s} {ms:8.3f} {nbytes / ms / 1e6:7.0f} {err:9.2e}")
            del out
    if args.out:
        args.out.write_text(json.dumps({"device": name, "torch": torch.__version__,
                                        "rows": rows_out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
