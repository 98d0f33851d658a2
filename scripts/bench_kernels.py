"""GPU micro-benchmark of the UNet's memory-bound pieces at the 576 px CFG batch (prints a table).

For each UNet level (72², 36², 18² latents; widths 320, 640, 1280):
  geglu   the feed-forward's GEGLU projection: cuBLAS product + gating kernel (eager and
          compiled) against the fused Triton kernels (backend/sp4d/kernels.py): blocked, the
          persistent TMA kernel (all its configs), and its warp-specialised configs alone
  camera  attention over 12 views / motion: over 4 frames: PyTorch SDPA (chunked), the compiled
          multiply-reduce (layers.short_attention) and the Triton kernel
  timeres the whole compiled time ResBlock (GroupNorm-SiLU-conv3d twice, + embedding, + skip):
          the generic GroupNorm decomposition against layers.group_norm_by_image (per-image partial
          sums), each with cuDNN's conv3d; with channels-last (3-D) conv weights; with
          functional.frame_conv (a batched product over frame windows); and as the block runs by
          default (dispatch.time_conv: one of these by frame size)
  conv3d  the time ResBlock's (3,1,1) convolution over the 48 frames: cuDNN on the view the block
          passes, on a contiguous input, channels-last, and layers.frame_conv (eager, compiled)
  videores the whole compiled VideoResBlock (2-D ResBlock, time ResBlock, blend; what the
          `layers` compile scope compiles), also at 9²: the time convolutions through cuDNN only
          against the default choice by frame size
  edge    the UNet's first (8 -> 320 channels) and last (320 -> 4) 3×3 convolutions at 72² and
          36²: cuDNN against the products of layers.conv_few_in / conv_few_out (EdgeConv)
  qkv     the self-attention projections at 72²... : three products against one product of the
          concatenated weights (what Attention does)
  spatial the spatial self-attention (all tokens of a frame) through each SDPA backend, on the
          fused projection's strided q, k, v views and on contiguous copies
Errors: ‖a − ref‖/‖ref‖ against float64 on a slice of the rows. --smoke runs the pieces that need
no GPU (timeres, conv3d, edge, qkv, spatial, videores) on the CPU at one tiny level, once, in float32:
a check that the script runs (the tests do this), not a measurement.

    python scripts/bench_kernels.py [--out results.json] [--only geglu,camera,motion,timeres,conv3d,edge,qkv,spatial]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.sp4d import kernels  # noqa: E402
from backend.sp4d.functional import (  # noqa: E402
    conv_few_in,
    conv_few_out,
    frame_conv,
    geglu,
    sdpa_chunked,
    short_attention,
)
from backend.sp4d.options import OpChoices, configure  # noqa: E402
from backend.sp4d.unet_blocks import ResBlock, UNetContext, VideoResBlock  # noqa: E402

LEVELS = [(320, 72), (640, 36), (1280, 18)]  # (width, latent side) of the levels with attention
B, T, V = 2, 4, 12  # CFG halves, frames, views
DT = torch.bfloat16
PIECES = ("geglu", "camera", "motion", "timeres", "conv3d", "edge", "qkv", "spatial", "videores")
CPU_PIECES = ("timeres", "conv3d", "edge", "qkv", "spatial", "videores")  # no Triton kernels: --smoke runs them
SMOKE_LEVELS = [(64, 8)]


def time_ms(fn, *args, reps: int = 20) -> float:
    fn(*args)
    if not torch.cuda.is_available():  # --smoke: one timed call, for the table's shape only
        t0 = time.perf_counter()
        fn(*args)
        return (time.perf_counter() - t0) * 1e3
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


# (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps, split, warp-specialised): tiles for two programs per SM
# (warp-specialised 4-warp configs fail in Triton 3.6's NVGPUWarpSpecialization pass, H100)
OCC2_CONFIGS = ((128, 64, 64, 2, 4), (128, 64, 64, 3, 4), (64, 128, 64, 2, 4), (64, 128, 32, 3, 4),
                (128, 64, 32, 4, 4), (64, 128, 32, 4, 4, True))


@triton.jit
def gate_none(a, g):
    # no GELU (a·g): what the epilogue's arithmetic costs (not the layer's result)
    return a * g


@triton.jit
def gate_tanh(a, g):
    # the tanh form of GELU with the hardware tanh (4.7e-4 from exact GELU: not taken)
    u = g * (0.7978845608028654 + 0.035677408136300125 * g * g)
    t = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [u], dtype=tl.float32, is_pure=True, pack=1)
    return a * (0.5 * g * (1.0 + t))


# the GEGLU kernel's epilogues timed here: the layer's exact ones and two that change the result
BENCH_GATES = {**kernels.GATES, "none": gate_none, "tanh": gate_tanh}


def launcher(launch):
    """A kernels.geglu_* launcher (writes into ``out``) as a function returning its output."""
    def run(x2, weight, bias):
        out = x2.new_empty(x2.shape[0], weight.shape[0] // 2)
        launch(x2, weight, bias, out)
        return out
    return run


def conv3d(x5: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.conv3d(x5, w, bias, padding=(1, 0, 0))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", default=",".join(PIECES))
    ap.add_argument("--smoke", action="store_true", help="CPU, one tiny level, float32: does the script run")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if args.smoke and args.only == ap.get_default("only"):
        only &= set(CPU_PIECES)
    if only - set(PIECES):
        ap.error(f"unknown --only piece(s) {sorted(only - set(PIECES))}; choose from {','.join(PIECES)}")
    if args.smoke:
        if only - set(CPU_PIECES):
            ap.error(f"--smoke runs only {','.join(CPU_PIECES)} (the others need the GPU kernels)")
    elif not torch.cuda.is_available():
        ap.error("needs a CUDA GPU (run it on the device machine), or --smoke")
    dt = torch.float32 if args.smoke else DT
    torch.set_grad_enabled(False)
    dev = "cpu" if args.smoke else "cuda"
    levels = SMOKE_LEVELS if args.smoke else LEVELS
    g = torch.Generator(device=dev).manual_seed(0)
    device_name = "cpu (smoke run)" if args.smoke else torch.cuda.get_device_name()
    print(f"{device_name}, torch {torch.__version__}, {str(dt)[6:]}; kernels usable: "
          f"{kernels.usable(torch.zeros(1, device=dev, dtype=dt))}")
    rows = {}

    def record(piece, level, variant, ms, err, nbytes=None, flops=None):
        rows[f"{piece} / {level} / {variant}"] = {"ms": ms, "rel_err": err}
        extra = f"{nbytes / ms / 1e6:8.0f} GB/s" if nbytes else f"{flops / ms / 1e9:8.0f} TF/s" if flops else ""
        print(f"{piece:7s} {level:12s} {variant:16s} {ms:8.3f} ms {err:9.2e} {extra}")

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device=dev, generator=g)).to(dt)

    def compiled_variants(piece, level, block, args, nbytes, variants) -> None:
        """For each (name, setup): setup() configures the block, which is then compiled afresh, run
        and timed; the first variant's output is the reference of the others."""
        ref = None
        for name, setup in variants:
            setup()
            torch._dynamo.reset()
            fn = torch.compile(block)
            out = fn(*args)
            ref = out.double() if ref is None else ref
            record(piece, level, name, time_ms(fn, *args), rel(out, ref), nbytes=nbytes)

    never = 1 << 30  # a frame size no variant reaches: cuDNN as is

    def choices(block, **ops):
        def setup():
            configure(block, OpChoices(**ops))
        return setup

    def videores(c: int, side: int, level: str) -> None:
        x = randn(B * T * V, c, side, side)
        ctx = UNetContext(randn(B * T * V, 1280), None, None, T, V)
        block = VideoResBlock(c, 1280, c).to(dev, dt)
        compiled_variants("videores", level, block, (x, ctx), 12 * x.numel() * 2,
                          (("cudnn conv3d", choices(block, frame_conv_pixels=never,
                                                    frame_conv_channels_last_pixels=never)),
                           ("FrameConv default", choices(block))))

    if "edge" in only:
        for side in [s for _, s in levels[:2]]:
            x_in = randn(B * T * V, 16, side, side)[:, :8]  # the RGB half of the network input (a view)
            x_out = randn(B * T * V, 320, side, side)
            for name, cin, cout, x in (("in 8->320", 8, 320, x_in), ("out 320->4", 320, 4, x_out)):
                w, b = randn(cout, cin, 3, 3, scale=(9 * cin) ** -0.5), randn(cout, scale=0.1)
                ref = F.conv2d(x[:1].double().cpu(), w.double().cpu(), b.double().cpu(), padding=1).to(dev)
                nbytes = (x.numel() // x.shape[1] * cin + x.numel() // x.shape[1] * cout) * x.element_size()
                product = conv_few_in if cin < cout else conv_few_out
                for variant, fn in (("cudnn", partial(F.conv2d, padding=1)), ("product", product)):
                    ms = time_ms(fn, x, w, b)
                    record("edge", f"{side}²", f"{name} {variant}", ms, rel(fn(x[:1], w, b), ref), nbytes=nbytes)
            del x_in, x_out
    if "videores" in only:
        for c, side in levels + ([] if args.smoke else [(1280, 9)]):
            videores(c, side, f"{c}@{side}²")
    if "geglu" in only:  # the persistent GEGLU kernel with warp-specialised loads alone (Hopper)
        ws_kernel = triton.autotune(configs=[c for c in kernels._TMA_CONFIGS if c.kwargs["WS"]],
                                    key=["M", "N", "K"])(kernels._geglu_tma_kernel.fn)
        # two persistent programs per SM (one warpgroup each, ≤ ~100 KB of shared memory): while one
        # runs its epilogue the other's products keep the tensor cores busy
        occ2_kernel = triton.autotune(configs=[kernels._tma_config(*c) for c in OCC2_CONFIGS],
                                      key=["M", "N", "K"])(kernels._geglu_tma_kernel.fn)
    for c, side in levels:
        level = f"{c}@{side}²"
        tokens = B * T * V * side * side
        if "geglu" in only:
            x = randn(tokens, c)
            w, b = randn(8 * c, c, scale=c ** -0.5), randn(8 * c, scale=0.1)
            ref = geglu(x[:4096].double(), w.double(), b.double())
            for name, fn in (("cublas+eager", geglu), ("cublas+compiled", torch.compile(geglu)),
                             ("triton blocked", launcher(kernels.geglu_blocked)),
                             *((f"tma{ws} {gate}",
                                launcher(partial(kernels.geglu_tma, kernel=kern, gate=BENCH_GATES[gate])))
                               for ws, kern in (("", None), (" ws", ws_kernel))
                               # exact GELU both ways; what the epilogue's GELU costs (none: not the layer's
                               # result, errors are large) and the tanh form
                               for gate in (("erf", "poly", "exp") if not ws else BENCH_GATES)),
                             ("tma occ2 poly", launcher(partial(kernels.geglu_tma, kernel=occ2_kernel, gate="poly",
                                                                per_sm=2)))):
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
            block = ResBlock(c, 1280, c, dims=3, kernel=(3, 1, 1), emb_time_major=True).to(dev, dt)

            def variant(by_image, ch_last, frame_conv_pixels, block=block):
                cudnn = frame_conv_pixels == never  # cuDNN with the weights as they are, at every size

                def setup():
                    configure(block, OpChoices(norm_by_image=by_image, frame_conv_pixels=frame_conv_pixels,
                                               **({"frame_conv_channels_last_pixels": never} if cudnn else {})))
                    for conv in (block.in_layers[2], block.out_layers[3]):
                        conv.weight.data = conv.weight.data.contiguous(
                            memory_format=torch.channels_last_3d if ch_last else torch.contiguous_format)
                return setup

            default = OpChoices().frame_conv_pixels
            compiled_variants("timeres", level, block, (x5, emb), 6 * x5.numel() * 2, (
                ("generic norm", variant(False, False, never)),
                ("norm 5d", variant(True, False, never)),
                ("norm 5d ch-last", variant(True, True, never)),
                ("norm 5d frame_conv", variant(True, False, 0)),
                ("FrameConv default", variant(True, False, default))))
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
                        ("cudnn ch-last", conv3d, (x5l, wl, b)), ("frame_conv", frame_conv, (x5, w, b)),
                        ("frame_conv compiled", torch.compile(frame_conv), (x5, w, b)))
            for name, fn, fargs in variants:
                ms = time_ms(fn, *fargs)
                record("conv3d", level, name, ms, rel(fn(*fargs)[:1, :, :7], ref), flops=flops)
            del xb, x5, x5c, x5l
        if "qkv" in only:
            x = randn(B * T * V, side * side, c)
            ws = [randn(c, c, scale=c ** -0.5) for _ in range(3)]
            ref = torch.cat([F.linear(x[:1, :2048].double(), wi.double()) for wi in ws], -1)
            flops = 2 * x.numel() * 3 * c
            for name, fn in (("three products", lambda x, *ws: torch.cat([F.linear(x, wi) for wi in ws], -1)),
                             ("one product", lambda x, *ws: F.linear(x, torch.cat(ws)))):
                # the separate variant's cat is not part of the layer: time the three products alone
                timed = (lambda x, *ws: [F.linear(x, wi) for wi in ws]) if name == "three products" else fn
                ms = time_ms(timed, x, *ws)
                record("qkv", level, name, ms, rel(fn(x, *ws)[:1, :2048], ref), flops=flops)
            del x
        if "spatial" in only:
            heads, n = c // 64, side * side
            qkv = randn(B * T * V, n, 3 * c, scale=1.0)
            q, k, v = (t.transpose(1, 2) for t in qkv.view(B * T * V, n, 3, heads, 64).unbind(2))
            qc, kc, vc = (t.contiguous() for t in (q, k, v))
            ref = F.scaled_dot_product_attention(*(t[:1, :2].double() for t in (q, k, v)))
            flops = 4 * B * T * V * n * n * c
            from torch.nn.attention import SDPBackend, sdpa_kernel
            for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
                for layout, args_ in (("strided", (q, k, v)), ("contig", (qc, kc, vc))):
                    name = f"{backend.name.split('_')[0].lower()} {layout}"

                    def run(q, k, v, backend=backend):
                        with sdpa_kernel(backend):
                            return sdpa_chunked(q, k, v)
                    try:
                        ms = time_ms(run, *args_, reps=5)
                    except Exception as e:  # noqa: BLE001 - a backend that does not take these inputs
                        print(f"spatial {level:12s} {name:16s} failed: {type(e).__name__}: {str(e)[:200]}")
                        continue
                    record("spatial", level, name, ms, rel(run(*args_)[:1, :2], ref), flops=flops)
            del qkv, q, k, v, qc, kc, vc
        if not args.smoke:
            torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps({"device": device_name, "torch": torch.__version__,
                                        "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
