"""SP4D's memory tiers on one GPU, each generation under the hard cap of its tier (docs/perf.md).

For each tier and precision asked, a fresh process: PyTorch's CUDA allocator set up as the
backend ships it (backend/allocator.py), the allocator capped at the tier's budget
(``torch.cuda.set_per_process_memory_fraction``: what the allocator *reserves* counts, not only
what tensors hold), the full-size model with random weights placed as the backend places it for
that tier (backend/sp4d/runtime.py), and one 4-frame window at --size generated end to end:
conditioning, --steps denoising steps, decoding. Out of memory anywhere is reported, not hidden.

Prints a table (tier, cap, precision, whether it fits, conditioning / step / decoding seconds,
the whole window at 50 steps counted from them, peak allocated and peak reserved, and what the
CUDA context takes besides) and writes the rows as JSON.

    python scripts/bench_memory.py [--tiers 24,16,12] [--precisions fp16,bf16] [--steps 20] [--out rows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.allocator import allocator_config  # noqa: E402  (torch-free: before torch starts CUDA)


def one(tier_name: str, precision: str, steps: int, size: int) -> dict:
    """One tier in this process (the allocator already configured by the caller's environment)."""
    import torch

    from backend.settings import checked
    from backend.sp4d.checkpoint import build_model, drop_unused, load_config
    from backend.sp4d.memory import GIB, TIERS, place_streamed
    from backend.sp4d.options import RunOptions
    from backend.sp4d.pipeline import SP4DPipeline
    from backend.sp4d.testing import random_init_

    tier = TIERS[tier_name]
    options = RunOptions.from_settings(checked({"device": "cuda", "vram": tier_name, "precision": precision}))
    total = torch.cuda.get_device_properties(0).total_memory
    row = {"tier": tier_name, "cap_gib": tier.budget_gib, "precision": precision, "steps": steps, "size": size,
           "allocator": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"), "gpu": torch.cuda.get_device_name(0),
           "options": {"offload": options.offload, "cfg_batch": options.cfg_batch,
                       "unet_resident_gib": options.unet_resident_gib, "decode_chunk": options.decode_chunk}}
    # random weights made on the GPU before the cap (as fast as a load), then placed as the runtime
    # places a loaded checkpoint: whole on the GPU, or in host memory but for the resident part
    model = drop_unused(build_model(load_config(), "meta"))
    model.to_empty(device="cuda")
    random_init_(model)
    model.to(options.dtype).eval().requires_grad_(False)
    if options.unet_resident_gib is not None:
        model.to("cpu")
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(tier.budget_gib * GIB / total)
    torch.cuda.reset_peak_memory_stats()
    phase = "placing"
    try:
        if options.unet_resident_gib is not None:
            place_streamed(model, model.model.diffusion_model, "cuda", options.unet_resident_gib,
                           (model.conditioner,) if options.offload else ())
        pipe = SP4DPipeline(model)
        pipe.apply(options)
        g = torch.Generator().manual_seed(0)
        frames = torch.rand(4, 3, size, size, generator=g) * 2 - 1
        noise = torch.randn(4 * model.n_view, 8, size // 8, size // 8, generator=g).cuda()

        def sync() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()

        with torch.inference_mode():
            phase = "conditioning"
            t0 = sync()
            c, uc = pipe.condition(frames.cuda(), generator=g)
            row["conditioning_s"] = sync() - t0
            phase = "sampling"
            marks = [sync()]
            z = model.sample(c, uc, noise, steps=steps, split=None, sequential=options.cfg_batch == "sequential",
                             on_step=lambda i, n, x: marks.append(sync()))
            gaps = sorted(b - a for a, b in zip(marks, marks[1:], strict=False))
            row["step_s"] = gaps[len(gaps) // 2]
            row["first_step_s"] = marks[1] - marks[0]
            row["finite"] = bool(torch.isfinite(z).all())
            phase = "decoding"
            t0 = sync()
            pipe.decode(z)
            row["decoding_s"] = sync() - t0
        row["fits"] = True
        row["window_50_steps_s"] = row["conditioning_s"] + 50 * row["step_s"] + row["decoding_s"]
    except torch.OutOfMemoryError as exc:
        row["fits"] = False
        row["failed_in"] = phase
        row["error"] = str(exc).splitlines()[0][:300]
    free, _ = torch.cuda.mem_get_info()
    row["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
    row["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    row["context_gib"] = (total - free - torch.cuda.memory_reserved()) / GIB
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiers", default="24,16,12")
    ap.add_argument("--precisions", default="fp16")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", nargs=2, metavar=("TIER", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("ROW " + json.dumps(one(*args.one, args.steps, args.size)), flush=True)
        return 0
    import torch

    if not torch.cuda.is_available():
        print("bench_memory.py needs a CUDA GPU", file=sys.stderr)
        return 2
    allocator_config()  # the children inherit it, as the backend's own processes do
    rows = []
    for tier in args.tiers.split(","):
        for precision in args.precisions.split(","):
            cmd = [sys.executable, __file__, "--one", tier, precision, "--steps", str(args.steps),
                   "--size", str(args.size)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            found = [line[4:] for line in r.stdout.splitlines() if line.startswith("ROW ")]
            if found:
                rows.append(json.loads(found[-1]))
            else:
                rows.append({"tier": tier, "precision": precision, "fits": False, "failed_in": "process",
                             "error": (r.stderr.strip().splitlines() or ["?"])[-1][:300]})
            print(json.dumps(rows[-1]), flush=True)
    head = ("tier", "cap GiB", "prec", "fits", "cond s", "step s", "decode s", "50-step window s",
            "peak alloc GiB", "peak reserved GiB", "context GiB")
    print(" | ".join(head))
    for r in rows:
        f = lambda k, d=2, r=r: f"{r[k]:.{d}f}" if isinstance(r.get(k), float) else "-"  # noqa: E731
        print(" | ".join([r["tier"], f"{r.get('cap_gib', 0):g}", r["precision"],
                          "yes" if r["fits"] else f"no ({r.get('failed_in')})", f("conditioning_s"), f("step_s", 3),
                          f("decoding_s"), f("window_50_steps_s", 1), f("peak_allocated_gib"),
                          f("peak_reserved_gib"), f("context_gib")]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["fits"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
