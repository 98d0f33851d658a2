"""Our dual UNet against the official one, same weights and inputs, on the same machine.

Runs beside the project a fetched copy of the official code (GitHub itisitis/generative-models,
branch sp4d): pass the folder that holds its ``sgm`` package with --official. Nothing of it is in
this repository. Only the network modules are imported (the package __init__ files, which pull
in training dependencies, are bypassed). The official model runs as the official script runs it:
float32 weights under fp16 autocast; ours in bf16 (and fp16). Our random weights are loaded into
the official model key for key, so the outputs are compared too.

    python scripts/bench_official_ratio.py --official PATH [--config tiny.yaml --device cpu --size 48]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.sp4d.checkpoint import build_model, load_config  # noqa: E402
from backend.sp4d.testing import random_init_  # noqa: E402


def import_official_unet(path: Path):
    """DualSpatialUNetWithCrossComm from the fetched copy, without running sgm's __init__ files."""
    for name in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules"):
        mod = types.ModuleType(name)
        mod.__path__ = [str(path / name.replace(".", "/"))]
        sys.modules[name] = mod
    from sgm.modules.diffusionmodules.video_model import DualSpatialUNetWithCrossComm

    return DualSpatialUNetWithCrossComm


def timed(fn, repeats: int, dev: str) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    if dev == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if dev == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", type=Path, required=True, help="folder holding the official sgm package")
    ap.add_argument("--config")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    dev = args.device
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    cfg = load_config(args.config) if args.config else load_config()
    ours = build_model(cfg, "meta")
    ours.model.to_empty(device=dev)
    random_init_(ours.model)
    unet_cfg = dict(cfg["model"]["params"]["network_config"]["params"]["unet_config"])
    unet_cfg["spatial_transformer_attn_type"] = "softmax"  # no xformers: same parameters, same function
    Official = import_official_unet(args.official)
    with torch.device(dev):
        official = Official(unet_cfg).to(dev)  # its torch.Tensor([...]) mix factors ignore the default device
    official.load_state_dict({k: v.float() for k, v in ours.model.diffusion_model.state_dict().items()}, strict=True)
    official.eval()
    if dev == "cuda":
        ours.model.to(torch.bfloat16)  # free the float32 copy before the official call
        torch.cuda.empty_cache()
    g = torch.Generator(device=dev).manual_seed(0)
    h = args.size // 8
    b, T, V = 2, 4, ours.n_view
    n = b * T * V
    ctx_dim = unet_cfg["context_dim"]
    xin = torch.randn(n, 16, h, h, device=dev, generator=g)
    c_noise = 0.25 * torch.log(torch.exp(torch.empty(n, device=dev).uniform_(-6, 6, generator=g)))
    context = torch.randn(b, T, ctx_dim, device=dev, generator=g)
    vector = torch.randn(n, unet_cfg["adm_in_channels"], device=dev, generator=g)
    cond_view = torch.zeros(b * V, 4, h, h, device=dev)
    cond_motion = torch.randn(b * T, 4, h, h, device=dev, generator=g)
    indicator = torch.zeros(b, n // b, device=dev)

    def run_official(autocast: bool):
        with torch.inference_mode(), torch.autocast(dev, dtype=torch.float16, enabled=autocast):
            return official(xin, timesteps=c_noise, context=context, y=vector, cond_view=cond_view,
                            cond_motion=cond_motion, num_video_frames=T * V, image_only_indicator=indicator).float()

    def run_ours():
        dt = ours.dtype
        with torch.inference_mode():
            return ours.model.diffusion_model(xin.to(dt), c_noise, context.to(dt), vector, cond_view.to(dt),
                                              n_time=T, n_view=V).float()

    rows, agree = {}, {}
    if dev != "cuda":  # float32 on the CPU: the equivalence check (full size would not fit twice)
        rows["official float32"], ref = timed(lambda: run_official(False), args.repeats, dev)
        rows["ours float32"], out = timed(run_ours, args.repeats, dev)
        agree["ours float32 vs official float32"] = float((out - ref).abs().max() / ref.abs().max())
    else:
        rows["official fp16 autocast (the script's mode)"], ref = timed(lambda: run_official(True), args.repeats, dev)
        for name, dt in (("ours bfloat16", torch.bfloat16), ("ours float16", torch.float16)):
            ours.model.to(dt)
            rows[name], out = timed(run_ours, args.repeats, dev)
            agree[f"{name} vs official fp16 autocast"] = float((out - ref).abs().max() / ref.abs().max())
    print(f"device {torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'}, {n} frames at {args.size}px, "
          f"one dual-UNet call")
    for k, v in agree.items():
        print(f"  {k}, same weights and inputs: max |a-b| / max |b| = {v:.2e}")
    base = next(iter(rows.values()))
    for k, v in rows.items():
        print(f"  {k:45s} {v:8.3f} s   {base / v:5.2f}× the official script's mode")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "agreement": agree, "size": args.size}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
