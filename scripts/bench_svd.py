"""Our SVD-XT 1.1 against the official code, same random weights and inputs, in one run.

One picture -> 25 frames at 1024×576 with the demo's settings (30 steps, decoding_t 7). The
official modules come from a fetched copy of Stability AI's generative-models (branch main): pass
the folder that holds its ``sgm`` package with --official (nothing of it is in this repository;
the package __init__ files are bypassed, ``fsspec`` is stubbed when missing). They run as the demo
runs them: float32 weights, the VideoUNet under fp16 autocast with xformers attention (the
installed xformers when it runs, else a stand-in calling PyTorch's fused SDPA kernels, which is
what xformers' own flash operator calls), the VideoDecoder in float32 7 frames at a time, the
conditioner twice (cond and uncond passes both run the encoders). The official CLIP tower
(open_clip) is counted as two of our CLIP calls in fp16. Ours runs as the backend runs it
(backend/svd: bf16, eager and compiled with the ``layers`` scope), and the end-to-end time of ours
is a real SVDPipeline.generate (conditioning, 30 guided steps, decoding), with its peak memory;
the official end-to-end time is conditioning + steps × one UNet call + decoding (the Euler and
guidance arithmetic between calls is negligible). Our random weights are loaded into the
official modules key for key, so the outputs are compared too.

    python scripts/bench_svd.py --official PATH            # on one GPU: prints a table
    python scripts/bench_svd.py --device cpu --config tests/fixtures/svd/svd_tiny/config.yaml \\
        --width 48 --height 32 --frames 6 --steps 2        # a smoke run (CI), ours only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_official_ratio import official_attention  # noqa: E402

from backend.sp4d.options import RunOptions  # noqa: E402
from backend.sp4d.testing import random_init_  # noqa: E402
from backend.svd.checkpoint import build_model, load_config  # noqa: E402
from backend.svd.pipeline import SVDParams, SVDPipeline  # noqa: E402


def import_official(path: Path):
    """(VideoUNet, VideoDecoder, Encoder) of the fetched copy, without running sgm's __init__ files."""
    for name in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules", "sgm.modules.autoencoding"):
        mod = types.ModuleType(name)
        mod.__path__ = [str(path / name.replace(".", "/"))]
        sys.modules[name] = mod
    try:
        import fsspec  # noqa: F401 (sgm.util imports it for file IO the modules never do)
    except ImportError:
        sys.modules["fsspec"] = types.ModuleType("fsspec")
    from sgm.modules.autoencoding.temporal_ae import VideoDecoder
    from sgm.modules.diffusionmodules.model import Encoder
    from sgm.modules.diffusionmodules.video_model import VideoUNet

    return VideoUNet, VideoDecoder, Encoder


def sync(dev: str) -> None:
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, dev: str) -> tuple[float, object]:
    """Seconds per call of ``fn`` (after one warm-up call) and its last output."""
    out = fn()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    sync(dev)
    return (time.perf_counter() - t0) / repeats, out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, help="folder holding the official sgm package (omit: ours only)")
    ap.add_argument("--config", help="model config (default: the released model's)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=576)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--decoding-t", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per component")
    ap.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16", help="ours (CUDA)")
    ap.add_argument("--compile", choices=("off", "blocks", "layers"), default="layers",
                    help="ours compiled with this scope too (CUDA only)")
    ap.add_argument("--low-vram", action="store_true",
                    help="ours in low-VRAM mode (conditioner off the GPU while sampling, CFG halves one by one)")
    ap.add_argument("--xformers", choices=("auto", "real", "standin", "none"), default="auto",
                    help="official attention: auto = the installed xformers if it runs, else the stand-in")
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args()
    dev = args.device
    cuda = torch.device(dev).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: pass --device cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision] if cuda \
        else torch.float32
    if cuda:  # PyTorch's defaults, as the official demo runs with them: TF32 in convolutions only
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True
    cfg = load_config(args.config) if args.config else load_config()
    params = SVDParams(frames=args.frames, steps=args.steps, decoding_t=args.decoding_t, width=args.width,
                       height=args.height)
    T, h, w = params.frames, params.height // 8, params.width // 8
    ours = build_model(cfg, "meta")
    ours.first_stage_model.encoder = None  # never run (and not compared)
    ours.to_empty(device=dev)
    random_init_(ours)
    res: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu", "frames": T, "steps": params.steps,
                 "size": [params.width, params.height], "precision": str(dtype), "seconds": {}, "rel_diff": {}}
    sec = res["seconds"]

    g = torch.Generator(device=dev).manual_seed(0)
    n = 2 * T
    unet_p = cfg["model"]["params"]["network_config"]["params"]
    xin = torch.randn(n, 8, h, w, device=dev, generator=g)
    c_noise = 0.25 * torch.empty(n, device=dev).uniform_(-6, 6, generator=g)
    context = torch.randn(n, 1, unet_p["context_dim"], device=dev, generator=g)
    vector = torch.randn(n, unet_p["adm_in_channels"], device=dev, generator=g)
    z = torch.randn(T, 4, h, w, device=dev, generator=g)
    image = (np.random.default_rng(0).random((params.height, params.width, 3)) * 255).astype(np.uint8)
    pic = torch.rand(1, 3, params.height, params.width, device=dev, generator=g) * 2 - 1

    official = None
    if args.official:
        attn = official_attention(args.xformers, cuda)
        res["official_attention"] = attn
        OUNet, ODecoder, OEncoder = import_official(args.official)
        up = dict(unet_p)
        up["spatial_transformer_attn_type"] = "softmax-xformers" if attn != "none" else "softmax"
        fs = cfg["model"]["params"]["first_stage_config"]["params"]
        dp = dict(fs["decoder_config"]["params"])
        dp["attn_type"] = "vanilla-xformers" if attn != "none" else "vanilla"
        ep = dict(cfg["model"]["params"]["conditioner_config"]["params"]["emb_models"][3]["params"]
                  ["encoder_config"]["params"]["ddconfig"])
        ep["attn_type"] = dp["attn_type"]
        with torch.device(dev):
            official = OUNet(**up).to(dev).eval()
            o_dec = ODecoder(**dp).to(dev).eval()
            o_enc = OEncoder(**ep).to(dev).eval()
        vae = ours.conditioner.embedders[3].encoder
        o_quant = torch.nn.Conv2d(vae.quant_conv.in_channels, vae.quant_conv.out_channels, 1).to(dev)
        official.load_state_dict({k: v.float() for k, v in ours.unet.state_dict().items()}, strict=True)
        o_dec.load_state_dict(ours.first_stage_model.decoder.state_dict(), strict=True)
        o_enc.load_state_dict(vae.encoder.state_dict(), strict=True)
        o_quant.load_state_dict(vae.quant_conv.state_dict(), strict=True)

        def run_official_unet():
            with torch.inference_mode(), torch.autocast(dev, dtype=torch.float16, enabled=cuda):
                return official(xin, timesteps=c_noise, context=context, y=vector, num_video_frames=T,
                                image_only_indicator=torch.zeros(2, T, device=dev)).float()

        def run_official_decode():
            with torch.inference_mode():
                zz = (1.0 / ours.scale_factor) * z
                return torch.cat([o_dec(c, timesteps=len(c)) for c in zz.split(params.decoding_t)]).float()

        def run_official_encode():
            with torch.inference_mode():
                return o_quant(o_enc(pic)).float()

        sec["official_unet_call"], ref_unet = timed(run_official_unet, args.repeats, dev)
        sec["official_decode"], ref_dec = timed(run_official_decode, args.repeats, dev)
        t_enc, _ = timed(run_official_encode, args.repeats, dev)
        ref_unet, ref_dec = ref_unet.cpu(), ref_dec.cpu()
        del official, o_dec, o_enc
        if cuda:
            torch.cuda.empty_cache()

    ours.to(dtype)
    offload = "cpu" if args.low_vram else None
    res["low_vram"] = bool(args.low_vram)
    cfg_batch = "sequential" if args.low_vram else "joint"
    pipe = SVDPipeline(ours, RunOptions(devices=(dev,), dtype=dtype, offload=offload, cfg_batch=cfg_batch))

    def run_unet():
        with torch.inference_mode():
            return ours.unet(xin.to(dtype), c_noise, context.to(dtype), vector, T).float()

    def run_decode():
        with torch.inference_mode():
            return ours.decode(z, params.decoding_t)

    def run_condition():
        with torch.inference_mode():
            return ours.condition(pic, torch.zeros_like(pic), T, 6, 127, 0.02)[0]["concat"]

    clip = ours.conditioner.embedders[0]

    def run_clip():
        with torch.inference_mode():
            return clip(pic)

    def run_generate(p=params):
        return pipe.generate(image, p, seed=0)

    sec["ours_unet_call_eager"], out_unet = timed(run_unet, args.repeats, dev)
    sec["ours_decode_eager"], out_dec = timed(run_decode, args.repeats, dev)
    sec["ours_condition"], _ = timed(run_condition, args.repeats, dev)
    t_clip, _ = timed(run_clip, args.repeats, dev)
    scopes = [None] + ([args.compile] if cuda and args.compile != "off" else [])
    for scope in scopes:
        name = "eager" if scope is None else scope
        pipe.apply(RunOptions(devices=(dev,), dtype=dtype, compile=scope, channels_last=scope == "layers" and cuda,
                              offload=offload, cfg_batch=cfg_batch))
        if scope is not None:
            sec[f"ours_unet_call_{name}"], out_unet_c = timed(run_unet, args.repeats, dev)
            sec[f"ours_decode_{name}"], _ = timed(run_decode, args.repeats, dev)
            if args.official:
                res["rel_diff"][f"unet_{name}"] = rel(out_unet_c.cpu(), ref_unet)
        run_generate(dataclasses.replace(params, steps=min(2, params.steps)))  # warm-up (compiles), 2 steps
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync(dev)
        t0 = time.perf_counter()
        frames = run_generate()
        sync(dev)
        sec[f"ours_end_to_end_{name}"] = time.perf_counter() - t0
        if cuda:
            res[f"ours_peak_gib_{name}"] = torch.cuda.max_memory_allocated() / 2 ** 30
        assert frames.shape == (T, params.height, params.width, 3)
    if args.official:
        res["rel_diff"]["unet_eager"] = rel(out_unet.cpu(), ref_unet)
        res["rel_diff"]["decode"] = rel(out_dec.cpu(), ref_dec)
        sec["official_condition"] = 2 * (t_enc + 2 * t_clip)  # two passes; open_clip's tower as 2× ours
        sec["official_end_to_end"] = (sec["official_condition"] + params.steps * sec["official_unet_call"]
                                      + sec["official_decode"])

    print(f"SVD-XT 1.1, {T} frames {params.width}×{params.height}, {params.steps} steps, decoding_t "
          f"{params.decoding_t}, on {res['device']}; ours {args.precision if cuda else 'fp32'}"
          f"{', low VRAM' if args.low_vram else ''}")
    rows = [(k, v) for k, v in sec.items()]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v:10.3f} s")
    for k, v in res.items():
        if k.startswith("ours_peak"):
            print(f"  {k:<{width}}  {v:10.2f} GiB")
    if args.official:
        for scope in scopes:
            name = "eager" if scope is None else scope
            ratio = sec["official_end_to_end"] / sec[f"ours_end_to_end_{name}"]
            res[f"speedup_end_to_end_{name}"] = ratio
            print(f"  speed-up end to end ({name}): {ratio:.2f}× the official code")
        for k, v in res["rel_diff"].items():
            print(f"  max rel diff {k}: {v:.2e} (official vs ours, same weights and inputs)")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
