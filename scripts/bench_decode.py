"""Decoding benchmark: the dual VAE decoder on one window's latents (48 = 4 frames × 12 views,
RGB and part halves: 96 images of 576²), eager and compiled, NCHW and channels-last, by chunk size.

Random weights (backend/sp4d/testing.py), random latents. Prints a table: seconds for the whole
decode (median of the timed runs), the first call's seconds (the compile, where compiled), peak
GPU memory, achieved TFLOP/s of the counted convolutions, the largest difference from the first
variant's result and from a float32 decode of the first 4 latents (relative to the largest value).

    python scripts/bench_decode.py [--out results.json] [--variants eager,compiled] [--chunks 4,8]
    python scripts/bench_decode.py --smoke     # CPU, tiny decoder, float32: does the script run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks' helpers

from bench_gpu import kernel_tables, peak_bytes, reset_peak, sync  # noqa: E402
from gpu_check_sp4d import rel  # noqa: E402

from backend.sp4d import vae  # noqa: E402
from backend.sp4d.checkpoint import build_model, load_config  # noqa: E402
from backend.sp4d.compiled import compile_modules, uncompile_modules  # noqa: E402
from backend.sp4d.options import OpChoices, configure  # noqa: E402
from backend.sp4d.testing import random_init_  # noqa: E402

VARIANTS = ("eager", "eager-cl", "compiled", "compiled-cl")
SMOKE_DECODER = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, out_ch=3, z_channels=4)


def decode_flops(dec: torch.nn.Module, z: torch.Tensor, ops: OpChoices) -> int:
    """FLOPs of one decode of ``z`` as torch's counter counts them (convolutions and products).
    Counted with the attention through SDPA (the same two products): torch 2.11's counter fails on
    bmm with out_dtype (functional.product_attention) with "bmm_flop() got multiple values for
    argument 'out_shape'". ``ops``: the decoder's choices, restored afterwards."""
    from torch.utils.flop_counter import FlopCounterMode

    configure(dec, dataclasses.replace(ops, vae_attention="sdpa"))
    try:
        with FlopCounterMode(display=False) as counter:
            dec(z[:1])
    finally:
        configure(dec, ops)
    return counter.get_total_flops() * z.shape[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--chunks", default="4,8", help="latents decoded per call (the pipeline's decode_chunk)")
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN times its algorithms per shape")
    ap.add_argument("--generic-norm", action="store_true",
                    help="compiled GroupNorms through inductor's generic decomposition (OpChoices.norm_by_image off)")
    ap.add_argument("--sdpa", action="store_true",
                    help="half-precision mid-block attention through SDPA (OpChoices.vae_attention 'sdpa')")
    ap.add_argument("--profile", action="store_true", help="every GPU kernel of one more decode with the last "
                    "variant, by kind and by total time")
    ap.add_argument("--smoke", action="store_true", help="CPU, a tiny decoder, float32, 4 latents of 16²")
    args = ap.parse_args()
    variants = args.variants.split(",")
    if set(variants) - set(VARIANTS):
        ap.error(f"unknown variant(s) {sorted(set(variants) - set(VARIANTS))}; choose from {','.join(VARIANTS)}")
    if not args.smoke and not torch.cuda.is_available():
        ap.error("needs a CUDA GPU (run it on the device machine), or --smoke")
    torch.set_grad_enabled(False)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    dev, dt = ("cpu", torch.float32) if args.smoke else ("cuda", torch.bfloat16)
    if args.smoke:
        dec = vae.DualDecoder(**SMOKE_DECODER)
        n, side = 4, 16
    else:
        model = build_model(load_config(), "meta")
        dec = model.first_stage_model.decoder
        dec.to_empty(device=dev)
        n, side = 48, args.size // 8
    random_init_(dec)
    dec.to(dt)
    ops = OpChoices(norm_by_image=not args.generic_norm, vae_attention="sdpa" if args.sdpa else "products")
    configure(dec, ops)
    g = torch.Generator(device=dev).manual_seed(0)
    z = torch.randn(n, 2 * dec.z_channels, side, side, generator=g, device=dev).to(dt)
    flops = decode_flops(dec, z, ops)
    dec.float()  # the first 4 latents in float32 (TF32 off): each variant's precision
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    ref32 = dec(z[:4].float())
    torch.backends.cudnn.allow_tf32 = True
    dec.to(dt)
    results, ref = [], None
    for variant in variants:
        for chunk in (int(c) for c in args.chunks.split(",")):
            dec.to(memory_format=torch.channels_last if variant.endswith("-cl") else torch.contiguous_format)
            uncompile_modules([dec])
            torch._dynamo.reset()
            if variant.startswith("compiled"):  # as the backend compiles it: each latent half's decode whole
                compile_modules([dec], "layers")
            reset_peak()
            t0 = sync()
            out = torch.cat([dec(part) for part in z.split(chunk)])
            first = sync() - t0
            times = []
            for _ in range(args.reps):
                t0 = sync()
                out = torch.cat([dec(part) for part in z.split(chunk)])
                times.append(sync() - t0)
            seconds = sorted(times)[len(times) // 2]
            if ref is None:
                ref = out.float()
            err, err32 = rel(out, ref), rel(out[:len(ref32)], ref32)
            peak = peak_bytes() / 2**30
            results.append(dict(variant=variant, chunk=chunk, seconds=seconds, first_call=first, peak_gib=peak,
                                tflops=flops / seconds / 1e12, max_rel=err, max_rel_float32=err32))
            print(f"{variant:12s} chunk {chunk:2d}: {seconds:7.3f} s (first call {first:6.1f} s), "
                  f"peak {peak:6.2f} GiB, {flops / seconds / 1e12:6.1f} TFLOP/s, max diff {err:.2e}, "
                  f"vs float32 {err32:.2e}", flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            torch.cat([dec(part) for part in z.split(chunk)])
            sync()
        summary, full, _ = kernel_tables(prof)
        print(f"kernels of one decode ({variant}, chunk {chunk}):\n{summary}\n" + "\n".join(full.splitlines()[:30]))
    uncompile_modules([dec])
    name = "cpu (smoke run)" if args.smoke else torch.cuda.get_device_name()
    print(f"device {name}, torch {torch.__version__}, {n} latents of {side}² -> {2 * n} images, "
          f"{flops / 1e12:.1f} TFLOP counted")
    if args.out:
        args.out.write_text(json.dumps({"device": name, "torch": torch.__version__, "latents": n, "side": side,
                                        "flops": flops, "generic_norm": args.generic_norm, "sdpa": args.sdpa,
                                        "cudnn_benchmark": args.cudnn_benchmark, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
