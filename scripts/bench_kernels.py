"""GPU micro-benchmark of the UNet's memory-bound pieces at the 576 px CFG batch (prints a table).

For each UNet level (72², 36², 18² latents; widths 320, 640, 1280):
  geglu   the feed-forward's GEGLU projection: cuBLAS product + gating kernel (eager and
          compiled) against the fused Triton kernels (backend/sp4d/kernels.py): blocked, the
          persistent TMA kernel (all its configs), and its warp-specialised configs alone
  camera  attention over 12 views / motion: over 4 frames: PyTorch SDPA (chunked), the compiled
          multiply-reduce (layers.short_attention) and the Triton kernel
  timeres the whole compiled time ResBlock (GroupNorm-SiLU-conv3d twice, + embedding, + skip) with
          the generic GroupNorm decomposition and with layers.group_norm_5d (per-image partial
          sums), and with channels-last (3-D) conv weights
  conv3d  the time ResBlock's (3,1,1) convolution over the 48 frames: cuDNN on the view the block
          passes, on a contiguous input, channels-last, and as one batched matrix product over
          three consecutive frames (the frames of a (b, n, c, h·w) tensor lie back to back)
Errors: ‖a − ref‖/‖ref‖ against float64 on a slice of the rows.

    python scripts/bench_kernels.py [--out results.json] [--only geglu,camera,motion,conv3d]
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.sp4d import kernels  # noqa: E402
from backend.sp4d.layers import GroupNorm32, geglu, sdpa_chunked, short_attention  # noqa: E402
from backend.sp4d.unet_blocks import ResBlock  # noqa: E402

LEVELS = [(320, 72), (640, 36), (1280, 18)]  # (width, latent side) of the levels with attention
B, T, V = 2, 4, 12  # CFG halves, frames, views
DT = torch.bfloat16


def time_ms(fn, *args, reps: int = 20) -> float:
    fn(*args)
    fn(*args)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn(*args)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).norm() / ref.norm())


def sdpa_heads_last(q, k, v):
    """layers.sdpa_chunked on the (rows, n, heads, d) views, output as (rows, n, heads·d)."""
    out = sdpa_chunked(*(t.transpose(1, 2) for t in (q, k, v)))
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


def reduce_attention(q, k, v):
    out = short_attention(*(t.transpose(1, 2) for t in (q, k, v)))
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


def launcher(launch):
    """A kernels.geglu_* launcher (writes into ``out``) as a function returning its output."""
    def run(x2, weight, bias):
        out = x2.new_empty(x2.shape[0], weight.shape[0] // 2)
        launch(x2, weight, bias, out)
        return out
    return run


def conv3d(x5: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.conv3d(x5, w, bias, padding=(1, 0, 0))


def conv_frames_gemm(x5: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(3,1,1) convolution over the frame axis of x5 = (b, n, c, h, w) memory (any (b, c, n, h, w)
    view of it), padding 1: out[b, t] = Σ_k W_k · x[b, t+k−1], as one strided batched product."""
    b, c, n, h, wd = x5.shape
    xb = x5.transpose(1, 2)  # (b, n, c, h, w), contiguous
    xp = F.pad(xb.reshape(b, n, c * h * wd), (0, 0, 1, 1))  # a zero frame at each end
    win = xp.as_strided((b, n, 3 * c, h * wd), (xp.stride(0), c * h * wd, h * wd, 1))
    wk = w[:, :, :, 0, 0].permute(0, 2, 1).reshape(w.shape[0], 3 * c)  # (c_out, [k, c_in])
    out = torch.matmul(wk, win) + bias[:, None]  # (b, n, c_out, hw)
    return out.view(b, n, -1, h, wd).transpose(1, 2)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", default="geglu,camera,motion,timeres,conv3d")
    args = ap.parse_args()
    only = set(args.only.split(","))
    # the persistent GEGLU kernel with warp-specialised loads (Triton's Hopper support, experimental)
    ws_kernel = triton.autotune(configs=[c for c in kernels._TMA_CONFIGS if c.kwargs["WS"]],
                                key=["M", "N", "K"])(kernels._geglu_tma_kernel.fn)
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16; kernels usable: "
          f"{kernels.usable(torch.zeros(1, device=dev, dtype=DT))}")
    rows = {}

    def record(piece, level, variant, ms, err, nbytes=None, flops=None):
        rows[f"{piece} / {level} / {variant}"] = {"ms": ms, "rel_err": err}
        extra = f"{nbytes / ms / 1e6:8.0f} GB/s" if nbytes else f"{flops / ms / 1e9:8.0f} TF/s" if flops else ""
        print(f"{piece:7s} {level:12s} {variant:16s} {ms:8.3f} ms {err:9.2e} {extra}")

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device=dev, generator=g)).to(DT)

    for c, side in LEVELS:
        level = f"{c}@{side}²"
        tokens = B * T * V * side * side
        if "geglu" in only:
            x = randn(tokens, c)
            w, b = randn(8 * c, c, scale=c ** -0.5), randn(8 * c, scale=0.1)
            ref = geglu(x[:4096].double(), w.double(), b.double())
            for name, fn in (("cublas+eager", geglu), ("cublas+compiled", torch.compile(geglu)),
                             ("triton blocked", launcher(kernels.geglu_blocked)),
                             ("triton tma", launcher(kernels.geglu_tma)),
                             ("triton tma ws", launcher(partial(kernels.geglu_tma, kernel=ws_kernel)))):
                try:
                    ms = time_ms(fn, x, w, b)
                except Exception as e:  # noqa: BLE001 - an experimental variant that does not compile here
                    print(f"geglu   {level:12s} {name:16s} failed: {type(e).__name__}: {str(e)[:200]}")
                    continue
                record("geglu", level, name, ms, rel(fn(x, w, b)[:4096], ref), flops=2 * tokens * c * 8 * c)
            del x
        for piece, n in (("camera", V), ("motion", T)):
            if piece not in only:
                continue
            heads = c // 64
            rows_ = tokens // n
            qkv = randn(rows_, n, 3 * c, scale=3.0)  # q, k, v as the to_q/k/v outputs viewed per head
            q, k, v = (t.view(rows_, n, heads, 64) for t in qkv.split(c, -1))
            ref = sdpa_heads_last(*(t[:2048].double() for t in (q, k, v)))
            nbytes = 4 * tokens * c * 2
            for name, fn in (("sdpa chunked", sdpa_heads_last), ("compiled reduce", torch.compile(reduce_attention)),
                             ("triton kernel", kernels.short_attention)):
                ms = time_ms(fn, q, k, v)
                record(piece, level, name, ms, rel(fn(q, k, v)[:2048], ref), nbytes=nbytes)
            del qkv, q, k, v
        if "timeres" in only:
            n = T * V
            x5 = randn(B, n, c, side, side).transpose(1, 2)
            emb = randn(B, n, 1280)
            block = ResBlock(c, 1280, c, dims=3, kernel=(3, 1, 1), emb_time_major=True).to(dev, DT)
            ref = None
            for name, frames_stats, ch_last in (("generic norm", False, False), ("norm 5d", True, False),
                                                ("norm 5d ch-last", True, True)):
                GroupNorm32.FRAMES_STATS = frames_stats
                for conv in (block.in_layers[2], block.out_layers[3]):
                    conv.weight.data = conv.weight.data.contiguous(
                        memory_format=torch.channels_last_3d if ch_last else torch.contiguous_format)
                torch._dynamo.reset()
                fn = torch.compile(block)
                out = fn(x5, emb)
                ref = out.double() if ref is None else ref  # the first variant is the reference here
                ms = time_ms(fn, x5, emb)
                record("timeres", level, name, ms, rel(out, ref), nbytes=6 * x5.numel() * 2)
            GroupNorm32.FRAMES_STATS = True
            del x5, block
        if "conv3d" in only:
            n = T * V
            xb = randn(B, n, c, side, side)
            x5 = xb.transpose(1, 2)  # what VideoResBlock passes: (b, c, n, h, w) view of (b, n, c, h, w)
            w, b = randn(c, c, 3, 1, 1, scale=(3 * c) ** -0.5), randn(c, scale=0.1)
            ref = F.conv3d(x5[:1, :, :8].double().cpu(), w.double().cpu(), b.double().cpu(), padding=(1, 0, 0))
            ref = ref[:, :, :7].to(dev)  # the 8th frame would need the 9th
            flops = 2 * B * n * side * side * c * 3 * c
            x5c = x5.contiguous()
            x5l = x5.contiguous(memory_format=torch.channels_last_3d)
            wl = w.to(memory_format=torch.channels_last_3d)
            variants = (("cudnn view", conv3d, (x5, w, b)), ("cudnn contig", conv3d, (x5c, w, b)),
                        ("cudnn ch-last", conv3d, (x5l, wl, b)), ("frames gemm", conv_frames_gemm, (x5, w, b)))
            for name, fn, fargs in variants:
                ms = time_ms(fn, *fargs)
                record("conv3d", level, name, ms, rel(fn(*fargs)[:1, :, :7], ref), flops=flops)
            del xb, x5, x5c, x5l
        torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                        "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
