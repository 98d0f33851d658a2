"""Conditioning benchmark: the conditioner's pieces on one window's 4 frames of 576², random weights.

Rows (mean seconds of the timed runs, bench_kernels.time_ms): the process's first conditioning call
(profiled: where a cold call spends its time), the whole conditioning encoded once (the default) and per
copy (the official 64 encodes), the CLIP tower, the VAE encoder on 4 and on 8 images (NCHW and
channels-last), the CPU noise draw (float32 and bfloat16); then the GPU kernels of one
4-image encode by kind.

    python scripts/bench_condition.py [--out results.json]
    python scripts/bench_condition.py --smoke   # CPU, the tiny fixture config, float32
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks' helpers

from bench_gpu import kernel_tables, random_model, sync  # noqa: E402
from bench_kernels import time_ms  # noqa: E402

from backend.sp4d.options import OpChoices, configure  # noqa: E402
from backend.sp4d.pipeline import view_angles  # noqa: E402


def timed(fn, reps: int) -> float:
    """Seconds a call, after warm-up calls (cuDNN's algorithm choice, lazy initialisation)."""
    return time_ms(fn, reps=reps) / 1e3


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--config", help="model config (default: the released model)")
    ap.add_argument("--smoke", action="store_true", help="CPU, float32, the config given (tiny), 48 px")
    ap.add_argument("--clip-sdpa", choices=("ours", "pytorch"), default="ours",
                    help="the CLIP tower's attention kernels: ours (no cuDNN) or PyTorch's choice, to compare")
    args = ap.parse_args()
    dev = "cpu" if args.smoke else "cuda"
    if dev == "cuda" and not torch.cuda.is_available():
        print("bench_condition.py needs a CUDA GPU (or --smoke)", file=sys.stderr)
        return 2
    dt = torch.float32 if args.smoke else torch.bfloat16
    size = 48 if args.smoke else args.size
    model = random_model(args.config, dev, dt)
    emb = model.conditioner.embedders
    configure(model, OpChoices(clip_attention="pytorch" if args.clip_sdpa == "pytorch" else "flash"))
    frames = (torch.rand(4, 3, size, size, device=dev) * 2 - 1).to(dt)
    polar, az = view_angles()
    polar_t, az_t = torch.from_numpy(np.tile(polar, 4)), torch.from_numpy(np.tile(az, 4))
    enc = emb[1].encoder
    gen = torch.Generator().manual_seed(0)
    rows = {}
    with torch.inference_mode():
        # the process's first conditioning (a job's first window pays it): timed, and profiled on the
        # CPU side too, where first calls spend their time (library handles, algorithm searches)
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev == "cuda"
                                                              else [])
        t0 = sync()
        with torch.profiler.profile(activities=activities) as cold:
            model.condition(frames, polar_t, az_t, generator=gen)
            sync()
        rows["conditioning, first call in the process (profiled)"] = sync() - t0
        cold_table = cold.key_averages().table(sort_by="cpu_time_total", row_limit=30, max_name_column_width=70)
        for per_copy in (False, True):
            rows[f"conditioning, {'per copy (64 encodes)' if per_copy else 'encoded once (4 encodes)'}"] = timed(
                lambda p=per_copy: model.condition(frames, polar_t, az_t, generator=gen, per_copy=p), args.reps)
        rows["CLIP tower, 4 frames"] = timed(lambda: emb[0](frames), args.reps)
        # each kernel choice against the tower in float32 (which never takes cuDNN attention)
        ref = copy.deepcopy(emb[0]).float()(frames.float())
        clip_rel, chosen = {}, emb[0].ops
        for name, choice in (("ours", "flash"), ("pytorch", "pytorch")):
            configure(emb[0], OpChoices(clip_attention=choice))
            clip_rel[name] = float((emb[0](frames).float() - ref).abs().max() / ref.abs().max())
        configure(emb[0], chosen)
        del ref
        for ndt in (torch.float32, torch.bfloat16):  # the conditioner draws float32 and casts
            rows[f"noise draw on the CPU, 4 frames, {str(ndt)[6:]}"] = timed(
                lambda ndt=ndt: torch.randn(frames.shape, generator=gen, dtype=ndt).to(dev, dt), args.reps)
        for fmt in (torch.contiguous_format, torch.channels_last):
            enc.to(memory_format=fmt)
            name = "NCHW" if fmt == torch.contiguous_format else "channels-last"
            for n in (4, 8):
                x = frames.repeat(2, 1, 1, 1)[:n].contiguous(memory_format=fmt)
                rows[f"VAE encoder, {n} images, {name}"] = timed(lambda x=x: enc.encode(x), args.reps)
        enc.to(memory_format=torch.contiguous_format)
        if dev == "cuda":
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                enc.encode(frames)
                sync()
    print(f"device {torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'}, {size}px, {dt}")
    for k, v in rows.items():
        print(f"  {k:52s} {1e3 * v:9.2f} ms")
    print("CLIP tower against float32, max rel: " + ", ".join(f"{k} kernels {v:.2e}" for k, v in clip_rel.items()))
    print("the first conditioning call, by CPU time:\n" + "\n".join(cold_table.splitlines()[:36]))
    summary, full = "", ""
    if dev == "cuda":
        summary, full, _ = kernel_tables(prof)
        print("kernels of one 4-image encode, by kind:\n" + summary)
        print("\n".join(full.splitlines()[:15]))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "size": size, "dtype": str(dt), "kernels_by_kind": summary,
                                        "kernels": full, "first_call": cold_table, "clip_sdpa": args.clip_sdpa,
                                        "clip_rel_vs_float32": clip_rel,
                                        "torch": torch.__version__}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
