"""GPU check of the SP4D network (run on the device machine; prints tables, writes JSON).

1. The tiny fixtures on CUDA in float32 with TF32 off: worst relative error per fixture tensor.
2. The full-size dual UNet with random weights: one denoiser call at --size (default 576) with the
   CFG batch (2 × 48 frames) in float32 (TF32 off), bfloat16, float16 and float32 weights under
   fp16 autocast (``autocast_float16``: the official script's release mode); agreement of the
   reduced precisions with float32, time per call and peak GPU memory.

Usage: python scripts/gpu_check_sp4d.py --fixtures PATH/sp4d_tiny [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.sp4d.checkpoint import build_model, load_config, load_model  # noqa: E402
from backend.sp4d.model import edm_scalings  # noqa: E402
from backend.sp4d.options import RunOptions  # noqa: E402
from backend.sp4d.pipeline import SP4DPipeline  # noqa: E402
from backend.sp4d.testing import random_init_  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def options_for(dev: str, dtype: torch.dtype, scope: str | None, devices: list[str] | None = None,
                **ops) -> RunOptions:
    """The backend's options for this device, precision and compile scope (its layout included);
    ``ops``: OpChoices changed from their defaults."""
    return RunOptions(devices=tuple(devices or (dev,)), dtype=dtype, compile=scope,
                      channels_last=scope == "layers" and torch.device(dev).type == "cuda").replace(**ops)


def fixture_check(fix: Path, dev: str, devices: list[str] | None = None, scope: str | None = None) -> dict:
    """Worst relative error per fixture tensor, the model run as the backend runs it with ``scope``
    (the compile scope); with ``devices`` the 3-step sampling also runs with the CFG split over them."""
    from safetensors.torch import load_file

    cfg = load_config(fix / "config.yaml")
    m = load_model(fix / "weights.safetensors", cfg, device=dev)
    pipe = SP4DPipeline(m, options_for(dev, torch.float32, scope))
    u = load_file(fix / "unet.safetensors", device=dev)
    cond = {k[5:]: u[k] for k in u if k.startswith("in.c.")}
    res = {"unet.out.denoised": rel(m.denoise(u["in.x"], u["in.sigma"], cond), u["out.denoised"])}
    v = load_file(fix / "vae.safetensors", device=dev)
    res["vae.enc.mode"] = rel(m.conditioner.embedders[1].encoder.encode(v["enc.in"]), v["enc.mode"])
    res["vae.dec.out"] = rel(m.decode(v["dec.z"]), v["dec.out"])
    s = load_file(fix / "sampling.safetensors", device=dev)
    frames = s["input.frames_u8"].permute(0, 3, 1, 2).float() / 255 * 2 - 1
    noise = {k: s[f"cond.noise.{k}"].float() for k in ("cond_frames", "cond_view", "cond_motion")}
    c, uc = m.condition(frames, s["input.polar_rad"], s["input.azimuth_rad"], noise)
    res["sampling.cond.c.crossattn"] = rel(c["crossattn"], s["cond.c.crossattn"])
    res["sampling.cond.c.concat"] = rel(c["concat"], s["cond.c.concat"])
    z = m.sample(c, uc, s["sampler.randn"], steps=3)
    res["sampling.step2.x_out"] = rel(z, s["step2.x_out"])
    res["sampling.decode.out"] = rel(m.decode(z), s["decode.out"])
    if devices:
        pipe.apply(options_for(dev, torch.float32, scope, devices))
        try:
            res[f"sampling.step2.x_out split {','.join(devices)}"] = rel(
                m.sample(c, uc, s["sampler.randn"], steps=3, split=pipe.split), s["step2.x_out"])
        finally:
            pipe.close()
    return res


def full_size_call(size: int, batch: int, repeats: int, scope: str | None = None,
                   dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16"), **ops) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    m = build_model(load_config(), "meta")
    m.model.to_empty(device="cuda")  # only the denoiser is exercised here
    random_init_(m.model)
    pipe = SP4DPipeline(m, options_for("cuda", torch.float32, scope, **ops))
    h = size // 8
    n = 48 * batch
    g = torch.Generator(device="cuda").manual_seed(1)
    sigma = torch.exp(torch.empty(n, device="cuda").uniform_(math.log(0.002), math.log(700), generator=g))
    x = torch.randn(n, 8, h, h, device="cuda", generator=g) * (sigma.view(-1, 1, 1, 1) ** 2 + 1).sqrt()
    cond = {"crossattn": torch.randn(batch, 4, 1024, device="cuda", generator=g),
            "concat": torch.randn(n, 4, h, h, device="cuda", generator=g),
            "vector": torch.randn(n, 1280, device="cuda", generator=g),
            "cond_view": torch.zeros(12 * batch, 4, h, h, device="cuda"),
            "cond_motion": torch.randn(4 * batch, 4, h, h, device="cuda", generator=g)}
    rows = {}
    ref = None
    for name in dtypes:  # the first is the reference
        # "autocast_float16": float32 weights under fp16 autocast, the official script's release mode
        # (products and convolutions in fp16, norms and softmax in float32; our kernels need half weights)
        autocast = name.startswith("autocast_")
        dt = torch.float32 if autocast else getattr(torch, name)
        m.model.to(dt)
        # under autocast the plain PyTorch ops run (our kernels take half-precision weights)
        pipe.apply(options_for("cuda", dt, scope, **ops, **({"triton_kernels": False, "frame_norm": False}
                                                            if autocast else {})))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        amp = torch.autocast("cuda", dtype=getattr(torch, name[len("autocast_"):]) if autocast else torch.float16,
                             enabled=autocast)
        try:
            with torch.inference_mode(), amp:
                out = m.denoise(x, sigma, cond)  # warm-up (and the value compared)
                c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
                net = m.network(x * c_in.view(-1, 1, 1, 1), c_noise, cond)  # the UNet's own output, undiluted
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(repeats):
                    m.denoise(x, sigma, cond)
                torch.cuda.synchronize()
        except RuntimeError as exc:  # a variant that cannot run here is reported, the others still measured
            rows[name] = {"error": str(exc).splitlines()[0][:300]}
            print(f"{name}: {rows[name]['error']}")
            continue
        dt_s = (time.perf_counter() - t0) / repeats
        row = {"seconds_per_call": dt_s, "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
               "finite": bool(torch.isfinite(out).all())}
        if ref is None:
            ref, ref_net = out.float(), net.float()
        else:
            err = (out.float() - ref).abs()
            row["max_rel_to_fp32"] = float(err.max() / ref.abs().max())
            row["mean_rel_to_fp32"] = float(err.mean() / ref.abs().mean())
            # the network output before the EDM skip (x·c_skip dominates D at high noise levels)
            err = (net.float() - ref_net).abs()
            row["net_max_rel_to_fp32"] = float(err.max() / ref_net.abs().max())
            row["net_mean_rel_to_fp32"] = float(err.mean() / ref_net.abs().mean())
        rows[name] = row
        del out, net
        torch.cuda.empty_cache()
    return {"size": size, "batch": batch, "frames": n, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", type=Path, required=True)
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--batch", type=int, default=2, help="2 = the CFG batch (uncond + cond)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--fixtures-only", action="store_true", help="skip the full-size precision check")
    ap.add_argument("--dtypes", default="float32,bfloat16,float16",
                    help="the full-size check's precisions, the reference first (each compiles anew when compiled)")
    ap.add_argument("--compile-blocks", nargs="?", const="blocks", choices=("blocks", "layers"),
                    help="check the torch.compile'd blocks (scope: blocks or layers)")
    ap.add_argument("--devices", help="also sample the fixture with the CFG split over these two devices, "
                    "e.g. cuda:0,cuda:1")
    ap.add_argument("--no-frame-norm", action="store_true",
                    help="the full-size check's eager ResBlock norms through F.group_norm, not frame_norm's kernels")
    args = ap.parse_args()
    dtypes = tuple(args.dtypes.split(","))
    if not set(dtypes) <= {"float32", "bfloat16", "float16", "autocast_float16"} or len(dtypes) < 2:
        ap.error(f"--dtypes: two or more of float32, bfloat16, float16, autocast_float16, got {args.dtypes!r}")
    if not torch.cuda.is_available():
        ap.error("needs a CUDA GPU (run it on the device machine)")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    devices = args.devices.split(",") if args.devices else None
    fx = fixture_check(args.fixtures, devices[0] if devices else "cuda", devices, args.compile_blocks)
    print("\nfixtures on CUDA, float32, TF32 off (max|a-b| / max|b|, limit 1e-4)")
    for k, v in fx.items():
        print(f"  {k:48s} {v:.2e}")
    torch.cuda.empty_cache()
    if args.fixtures_only:
        if args.out:
            args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                            "compile_blocks": args.compile_blocks, "fixtures": fx}, indent=1))
        return 0
    try:
        ops = {"frame_norm": False} if args.no_frame_norm else {}
        full = full_size_call(args.size, args.batch, args.repeats, args.compile_blocks, dtypes, **ops)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        print("float32 CFG batch does not fit: measuring the conditional half only")
        full = full_size_call(args.size, 1, args.repeats, args.compile_blocks, dtypes, **ops)
    print(f"\nfull-size dual UNet, one denoiser call: {full['frames']} frames at {args.size}px")
    print(f"  {'dtype':16s} {'s/call':>8s} {'peak GiB':>9s} {'D max rel':>9s} {'D mean':>9s} {'net max':>9s} "
          f"{'net mean':>9s}")
    for name, r in full["rows"].items():
        if "error" in r:
            continue
        print(f"  {name:16s} {r['seconds_per_call']:8.3f} {r['peak_gib']:9.2f} "
              f"{r.get('max_rel_to_fp32', 0):9.2e} {r.get('mean_rel_to_fp32', 0):9.2e} "
              f"{r.get('net_max_rel_to_fp32', 0):9.2e} {r.get('net_mean_rel_to_fp32', 0):9.2e}")
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                        "fixtures": fx, "full": full}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
