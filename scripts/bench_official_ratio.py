"""Our dual UNet against the official one, same weights and inputs, on the same machine.

Runs beside the project a fetched copy of the official code (GitHub itisitis/generative-models,
branch sp4d): pass the folder that holds its ``sgm`` package with --official. Nothing of it is in
this repository. Only the network modules are imported (the package __init__ files, which pull
in training dependencies, are bypassed). The official model runs as the official script runs it:
float32 weights, the dual UNet under fp16 autocast with xformers attention ("softmax-xformers",
when xformers is installed), the decoder in float32 (its config disables autocast for the first
stage) 4 frames at a time, PyTorch's default TF32 settings (convolutions in TF32, products not);
ours in bf16, eager and with the compiled blocks (UNet and decoder). Our random weights
are loaded into the official modules key for key, so the outputs are compared too.

The end-to-end estimate of one 4-frame generation is conditioning + 50 dual-UNet calls + decoding
of the 48 latents. The official conditioning is timed as its script runs it: GeneralConditioner
runs every embedder twice (cond, then uncond), each time the VAE encoder (the official Encoder with
our weights, fp16 autocast, 8 images at a time) on 48 + 12 + 4 images; its CLIP tower (open_clip,
not installed here) is counted as twice ours. Ours encodes each frame once (conditioner.py).

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
sys.path.insert(0, str(ROOT / "scripts"))  # the other benchmarks' helpers

from gpu_check_sp4d import options_for, rel  # noqa: E402

from backend.sp4d.checkpoint import build_model, drop_unused, load_config  # noqa: E402
from backend.sp4d.pipeline import SP4DPipeline  # noqa: E402
from backend.sp4d.testing import random_init_  # noqa: E402


def import_official(path: Path):
    """(DualSpatialUNetWithCrossComm, DecoderDual, Encoder) from the fetched copy, without running
    sgm's __init__ files."""
    for name in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules"):
        mod = types.ModuleType(name)
        mod.__path__ = [str(path / name.replace(".", "/"))]
        sys.modules[name] = mod
    from sgm.modules.diffusionmodules.model import DecoderDual, Encoder
    from sgm.modules.diffusionmodules.video_model import DualSpatialUNetWithCrossComm

    return DualSpatialUNetWithCrossComm, DecoderDual, Encoder


def xformers_works() -> bool:
    """True when an installed xformers runs attention on this GPU (PyPI wheels may lack CUDA ops)."""
    try:
        import xformers.ops

        q = torch.randn(1, 16, 1, 64, device="cuda", dtype=torch.float16)
        xformers.ops.memory_efficient_attention(q, q, q)
    except Exception:  # noqa: BLE001 (ImportError, NotImplementedError "not built with CUDA", ...)
        return False
    return True


def official_attention(choice: str, cuda: bool) -> str:
    """The official modules' attention for --xformers ``choice`` ('auto', 'real', 'standin',
    'none'): 'none' on the CPU unless the stand-in is asked for, 'auto' the installed xformers if
    it runs, else the stand-in (installed here). SystemExit when 'real' cannot run."""
    attn = choice if cuda or choice == "standin" else "none"
    if attn == "auto":
        attn = "real" if xformers_works() else "standin"
    if attn == "real" and not xformers_works():
        raise SystemExit("xformers cannot run attention here (try --xformers standin)")
    if attn == "standin":
        install_xformers_standin()
    return attn


def install_xformers_standin() -> None:
    """A stand-in ``xformers`` module whose memory_efficient_attention calls PyTorch's fused SDPA
    kernels (flash for fp16): the kernel that xformers' own 'fa2F-pt' operator calls. Used when the
    real package cannot run here, so that the official code runs its release (xformers) path,
    with its batch chunking, instead of the SDPA fallback that fails at 576 px."""
    import torch.nn.functional as F

    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None, op=None):
        if attn_bias is not None or p:
            raise NotImplementedError("stand-in: no bias or dropout")
        flat = q.dim() == 3  # (B, M, K) -> (B, M, 1, K)
        if flat:
            q, k, v = (t[:, :, None] for t in (q, k, v))
        out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), scale=scale).transpose(1, 2)
        return out[:, :, 0] if flat else out

    xf, ops = types.ModuleType("xformers"), types.ModuleType("xformers.ops")
    xf.__version__ = "0.0.35"
    ops.memory_efficient_attention = memory_efficient_attention
    ops.MemoryEfficientAttentionFlashAttentionOp = None
    xf.ops = ops
    sys.modules["xformers"], sys.modules["xformers.ops"] = xf, ops


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
    ap.add_argument("--steps", type=int, default=50, help="denoising steps of the end-to-end estimate")
    ap.add_argument("--compile-blocks", choices=("off", "blocks", "layers"), default="layers",
                    help="also time ours compiled with this scope (CUDA only)")
    ap.add_argument("--xformers", choices=("auto", "real", "standin", "none"), default="auto",
                    help="official attention: auto = the installed xformers if it runs, else the stand-in")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    dev = args.device
    attn = official_attention(args.xformers, dev == "cuda")
    if dev == "cuda":  # PyTorch's defaults, as the official script runs with them: TF32 in convolutions only
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True
    cfg = load_config(args.config) if args.config else load_config()
    ours = drop_unused(build_model(cfg, "meta"))
    ours.to_empty(device=dev)
    random_init_(ours)
    xf = attn != "none"
    unet_cfg = dict(cfg["model"]["params"]["network_config"]["params"]["unet_config"])
    # the release config asks for xformers; without it, PyTorch attention (same parameters and function)
    unet_cfg["spatial_transformer_attn_type"] = "softmax-xformers" if xf else "softmax"
    dec_cfg = dict(cfg["model"]["params"]["first_stage_config"]["params"]["decoder_config"]["params"])
    dec_cfg["attn_type"] = "vanilla-xformers" if xf else "vanilla"
    OfficialUNet, OfficialDecoder, OfficialEncoder = import_official(args.official)
    vae_emb = ours.conditioner.embedders[1]
    enc_cfg = cfg["model"]["params"]["conditioner_config"]["params"]["emb_models"][1]["params"]
    with torch.device(dev):
        official = OfficialUNet(unet_cfg).to(dev)  # its torch.Tensor([...]) mix factors ignore the default device
        official_dec = OfficialDecoder(**dec_cfg).to(dev)
        official_enc = OfficialEncoder(**enc_cfg["encoder_config"]["params"]["ddconfig"]).to(dev)
        official_quant = torch.nn.Conv2d(vae_emb.encoder.quant_conv.in_channels,
                                         vae_emb.encoder.quant_conv.out_channels, 1)
    official_enc.load_state_dict(vae_emb.encoder.encoder.state_dict(), strict=True)
    official_quant.load_state_dict(vae_emb.encoder.quant_conv.state_dict(), strict=True)
    official.load_state_dict({k: v.float() for k, v in ours.model.diffusion_model.state_dict().items()}, strict=True)
    official_dec.load_state_dict(ours.first_stage_model.decoder.state_dict(), strict=True)
    official.eval()
    official_dec.eval()
    official_enc.eval()
    if dev == "cuda":
        ours.to(torch.bfloat16)  # free the float32 copy before the official call
        torch.cuda.empty_cache()
    pipe = SP4DPipeline(ours, options_for(dev, ours.dtype, None))
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
    z = torch.randn(n // b, 8, h, h, device=dev, generator=g) / ours.scale_factor
    frames = torch.rand(T, 3, args.size, args.size, device=dev, generator=g) * 2 - 1
    polar = torch.full((T * V,), torch.pi / 2, dtype=torch.float64)
    az = torch.linspace(0.5, 6.0, V, dtype=torch.float64).repeat(T)

    def run_official(autocast: bool):
        with torch.inference_mode(), torch.autocast(dev, dtype=torch.float16, enabled=autocast):
            return official(xin, timesteps=c_noise, context=context, y=vector, cond_view=cond_view,
                            cond_motion=cond_motion, num_video_frames=T * V, image_only_indicator=indicator).float()

    def run_official_decode():
        with torch.inference_mode():  # float32: the release config disables autocast for the first stage
            return torch.cat([official_dec(part) for part in z.split(4)]).float()

    def run_ours():
        dt = ours.dtype
        with torch.inference_mode():
            return ours.model.diffusion_model(xin.to(dt), c_noise, context.to(dt), vector, cond_view.to(dt),
                                              n_time=T, n_view=V).float()

    def run_ours_decode():
        with torch.inference_mode():
            return ours.decode(z * ours.scale_factor, pipe.options.decode_chunk).float()

    def run_ours_condition(per_copy: bool = False):
        with torch.inference_mode():
            c, _ = ours.condition(frames.to(ours.dtype), polar, az, generator=torch.Generator().manual_seed(0),
                                  per_copy=per_copy)
        return c["concat"].float()

    def run_ours_clip():
        with torch.inference_mode():
            return ours.conditioner.embedders[0](frames.to(ours.dtype))

    def run_official_encoder():
        """The official conditioner's VAE work: two passes of 48 + 12 + 4 noisy images, 8 at a time
        (the script's encoding_t); returns the first pass's concat latents."""
        with torch.inference_mode(), torch.autocast(dev, dtype=torch.float16, enabled=dev == "cuda"):
            out = []
            for _ in range(2):  # get_unconditional_conditioning: cond, then uncond (zeroed after encoding)
                for imgs in (frames.repeat_interleave(V, 0), torch.zeros_like(frames[:1]).expand(V, -1, -1, -1),
                             frames):
                    imgs = imgs + 1e-5 * torch.randn_like(imgs)
                    out.append(torch.cat([official_quant(official_enc(x)).chunk(2, 1)[0] for x in imgs.split(8)]))
            return out[0].float()

    rows, agree = {}, {}
    mode = "fp16 autocast, " + {"real": "xformers", "standin": "xformers stand-in", "none": "PyTorch SDPA"}[attn]
    if dev != "cuda":  # float32 on the CPU: the equivalence check (full size would not fit twice)
        rows["official float32"], ref = timed(lambda: run_official(False), args.repeats, dev)
        rows["official decode float32"], ref_dec = timed(run_official_decode, args.repeats, dev)
        rows["ours float32"], out = timed(run_ours, args.repeats, dev)
        rows["ours decode float32"], out_dec = timed(run_ours_decode, args.repeats, dev)
        agree["ours float32 vs official float32 (UNet)"] = rel(out, ref)
        agree["ours vs official (decoder)"] = rel(out_dec, ref_dec)
        rows["official conditioning VAE encodes float32"], ref_cond = timed(run_official_encoder, 1, dev)
        rows["ours conditioning float32, encoded once"], out_cond = timed(run_ours_condition, 1, dev)
        rows["ours CLIP tower float32"], _ = timed(run_ours_clip, 1, dev)
        agree["ours conditioning (encoded once) vs official (per copy)"] = rel(out_cond, ref_cond)
        cond = {"official": rows["official conditioning VAE encodes float32"] + 2 * rows["ours CLIP tower float32"],
                "ours": rows["ours conditioning float32, encoded once"]}
        ends = {"official": (cond["official"], rows["official float32"], rows["official decode float32"]),
                "ours": (cond["ours"], rows["ours float32"], rows["ours decode float32"])}
    else:
        rows[f"official UNet ({mode}; the script's mode)"], ref = timed(lambda: run_official(True), args.repeats, dev)
        rows["official decode (float32, 4 at a time)"], ref_dec = timed(run_official_decode, args.repeats, dev)
        rows["official conditioning VAE encodes (fp16 autocast)"], ref_cond = timed(
            run_official_encoder, args.repeats, dev)
        del official, official_dec, official_enc
        torch.cuda.empty_cache()
        rows["ours UNet bfloat16"], out = timed(run_ours, args.repeats, dev)
        agree["ours bfloat16 vs official (UNet)"] = rel(out, ref)
        rows["ours decode bfloat16 (4 at a time)"], out_dec = timed(run_ours_decode, args.repeats, dev)
        agree["ours bfloat16 vs official float32 (decoder)"] = rel(out_dec, ref_dec)
        rows["ours conditioning bfloat16, encoded once"], out_cond = timed(run_ours_condition, args.repeats, dev)
        rows["ours conditioning bfloat16, per copy (official scheme)"], out_cond_pc = timed(
            lambda: run_ours_condition(True), args.repeats, dev)
        rows["ours CLIP tower bfloat16"], _ = timed(run_ours_clip, args.repeats, dev)
        for k, v in (("encoded once", out_cond), ("per copy", out_cond_pc)):
            agree[f"ours conditioning bfloat16 ({k}) vs official (concat)"] = rel(v, ref_cond)
        cond = {"official": rows["official conditioning VAE encodes (fp16 autocast)"]
                + 2 * rows["ours CLIP tower bfloat16"], "ours": rows["ours conditioning bfloat16, encoded once"]}
        ends = {"official": (cond["official"], rows[f"official UNet ({mode}; the script's mode)"],
                             rows["official decode (float32, 4 at a time)"]),
                "ours (eager)": (cond["ours"], rows["ours UNet bfloat16"], rows["ours decode bfloat16 (4 at a time)"])}
        if args.compile_blocks != "off":
            pipe.apply(options_for(dev, ours.dtype, args.compile_blocks))  # as the backend runs it
            t0 = time.perf_counter()
            run_ours()
            torch.cuda.synchronize()
            rows[f"ours compile ({args.compile_blocks}), first call"] = time.perf_counter() - t0
            key = f"ours UNet bfloat16, compiled {args.compile_blocks}"
            rows[key], out_c = timed(run_ours, args.repeats, dev)
            agree[f"ours compiled {args.compile_blocks} vs official (UNet)"] = rel(out_c, ref)
            run_ours_decode()  # the scopes compile the decoder too: its graph first, then the timed calls
            dkey = f"ours decode bfloat16 (4 at a time), compiled {args.compile_blocks}"
            rows[dkey], out_dec_c = timed(run_ours_decode, args.repeats, dev)
            agree[f"ours compiled {args.compile_blocks} vs official (decoder)"] = rel(out_dec_c, ref_dec)
            ends[f"ours (compiled {args.compile_blocks})"] = (cond["ours"], rows[key], rows[dkey])
    print(f"device {torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'}, {n} frames at {args.size}px "
          f"(CFG batch), one dual-UNet call; official attention: {attn}")
    for k, v in agree.items():
        print(f"  {k}, same weights and inputs: max |a-b| / max |b| = {v:.2e}")
    for k, v in rows.items():
        print(f"  {k:58s} {v:8.3f} s")
    print(f"end to end, one 4-frame generation ({args.steps} steps; conditioning: official {cond['official']:.2f} s "
          f"(its encodes + 2 × our CLIP tower), ours {cond['ours']:.2f} s):")
    totals = {k: c + args.steps * step + dec for k, (c, step, dec) in ends.items()}
    base = totals["official"]
    for k, v in totals.items():
        print(f"  {k:30s} {v:8.1f} s   {base / v:5.2f}× faster than the official")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "agreement": agree, "size": args.size, "official_attention": attn,
                                        "conditioning_seconds": cond, "end_to_end_seconds": totals,
                                        "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                                        "torch": torch.__version__}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
