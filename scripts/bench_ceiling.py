"""What this GPU's dense bf16 work reaches at best, against the spec peak behind the FLOP floor.

The issue's floor is a step's counted FLOPs at the spec dense bf16 peak (989 TFLOP/s for an H100
or H200 SXM). This script times the fastest dense work PyTorch has on the same GPU, sustained for
about half a second a shape so that the clocks settle under load: cuBLAS bf16 products (large
squares, and the step's own largest product shapes) and cuDNN's flash attention at the 72² level's
shape. It prints each rate, and what a step of --step-flops would take if every FLOP ran at the
best rate measured: no implementation of the same FLOPs can be faster than that on this GPU.

    python scripts/bench_ceiling.py [--step-flops 399.4e12] [--seconds 0.5] [--out ceiling.json]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks' helpers
from bench_gpu import PEAK_BF16  # noqa: E402
from bench_kernels import time_ms  # noqa: E402

STEP_FLOPS = 399.4e12  # one compiled step's counted FLOPs (docs/perf.md row 13, bench_gpu's count)
TOKENS = {72: 96 * 72 * 72, 36: 96 * 36 * 36, 18: 96 * 18 * 18}  # CFG batch of 96 frames, latent side²
PRODUCTS = [  # (name, m, k, n)
    ("square 4096", 4096, 4096, 4096),
    ("square 8192", 8192, 8192, 8192),
    ("square 16384", 16384, 16384, 16384),
    ("GEGLU 72² (as a plain product)", TOKENS[72], 320, 2560),
    ("FF out 72²", TOKENS[72], 1280, 320),
    ("q,k,v 72²", TOKENS[72], 320, 960),
    ("GEGLU 36²", TOKENS[36], 640, 5120),
    ("GEGLU 18²", TOKENS[18], 1280, 10240),
]
ATTENTION = [("flash attention 72² (96 × 5 heads, 5184 tokens, d 64)", 96, 5, 72 * 72, 64)]


def sustained_ms(fn, *args, seconds: float) -> float:
    """Mean time of fn after enough calls to keep the GPU busy for ``seconds`` (clocks under load)."""
    once = time_ms(fn, *args, reps=3)
    return time_ms(fn, *args, reps=max(20, math.ceil(seconds * 1e3 / max(once, 1e-3))))


def clocks() -> str:
    """The SM clock and power now, as nvidia-smi reports them (empty where there is none)."""
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,power.draw,power.limit",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-flops", type=float, default=STEP_FLOPS)
    ap.add_argument("--seconds", type=float, default=0.5, help="how long each shape runs, for the clocks to settle")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_ceiling.py needs a CUDA GPU (it measures the GPU's best dense bf16 rates)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name()
    peak = PEAK_BF16.get(next((k for k in PEAK_BF16 if k in name), ""), None)
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    rows = []
    for label, m, k, n in PRODUCTS:
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        ms = sustained_ms(torch.mm, a, b, seconds=args.seconds)
        rows.append({"work": label, "ms": ms, "tflops": 2 * m * k * n / ms / 1e9, "clocks": clocks()})
        del a, b
    for label, batch, heads, seq, d in ATTENTION:
        q, k, v = (torch.randn(batch, heads, seq, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        ms = sustained_ms(F.scaled_dot_product_attention, q, k, v, seconds=args.seconds)
        rows.append({"work": label, "ms": ms, "tflops": 4 * batch * heads * seq * seq * d / ms / 1e9,
                     "clocks": clocks()})
        del q, k, v
    print(f"device {name}, torch {torch.__version__}; each shape sustained ~{args.seconds} s")
    print(f"{'work':58s} {'ms':>8s} {'TFLOP/s':>8s}  clocks (SM now, max; power now, limit)")
    for r in rows:
        print(f"{r['work']:58s} {r['ms']:8.3f} {r['tflops']:8.0f}  {r['clocks']}")
    best = max(rows, key=lambda r: r["tflops"])
    at_best = args.step_flops / (best["tflops"] * 1e12)
    summary = (f"a step of {args.step_flops / 1e12:.1f} TFLOP at the best rate measured "
               f"({best['tflops']:.0f} TFLOP/s, {best['work']}): {at_best:.3f} s")
    if peak:
        floor = args.step_flops / peak
        summary += f" = {at_best / floor:.2f}× the floor ({floor:.3f} s at the spec {peak / 1e12:.0f} TFLOP/s)"
    print(summary)
    if args.out:
        args.out.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows,
                                        "step_flops": args.step_flops, "step_at_best_seconds": at_best,
                                        "spec_peak": peak}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
