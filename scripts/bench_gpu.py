"""GPU benchmark of one full SP4D generation (run on the device machine; prints a table).

Full-size model with random weights (backend/sp4d/testing.py), 4 frames × 12 views at 576², 50
steps, CFG batch: conditioning, sampling, decoding; time per stage, per denoising step, total,
peak GPU memory, and achieved TFLOP/s of a denoising step against the FLOPs counted by
torch.utils.flop_counter (the floor: those FLOPs at the GPU's dense bf16 peak).

    python scripts/bench_gpu.py [--steps 50] [--size 576] [--precision bf16] [--low-vram] [--clip PATH]

The run's options (backend/sp4d/options.py) come from the flags; variants of an op (the flags
after --devices) are OpChoices, so a variant is timed exactly as the backend would run it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.sp4d.checkpoint import build_model, drop_unused, load_config  # noqa: E402
from backend.sp4d.options import DTYPES, RunOptions  # noqa: E402
from backend.sp4d.pipeline import SP4DPipeline  # noqa: E402
from backend.sp4d.sampling import edm_sigmas  # noqa: E402
from backend.sp4d.testing import random_init_  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peak (SXM)




def gpus() -> range:
    return range(torch.cuda.device_count()) if torch.cuda.is_available() else range(0)


def sync() -> float:
    for i in gpus():
        torch.cuda.synchronize(i)
    return time.perf_counter()


def peak_bytes() -> int:
    """The largest peak over the GPUs (each GPU of a split holds its own copy)."""
    return max((torch.cuda.max_memory_allocated(i) for i in gpus()), default=0)


def reset_peak() -> None:
    for i in gpus():
        torch.cuda.reset_peak_memory_stats(i)


def graph_cache_counts() -> dict[str, int]:
    """Inductor's on-disk graph cache so far in this process: hits are graphs loaded, not compiled."""
    from torch._dynamo.utils import counters

    found = counters["inductor"].items()
    return {k.removeprefix("fxgraph_cache_"): v for k, v in found if k.startswith("fxgraph_cache")}


def frames_for(size: int, clip: str | None) -> torch.Tensor:
    if clip:
        from backend.clip_input import prepare_frames, read_clip

        f = prepare_frames(read_clip(clip), 4, size).frames
    else:
        f = np.full((4, size, size, 3), 255, np.uint8)
        f[:, size // 4: 3 * size // 4, size // 3: 2 * size // 3] = (180, 90, 60)
    return torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255 * 2 - 1


class Layout(NamedTuple):
    """What a kernel sees of a tensor: shape, strides, data-pointer alignment (mod 256 bytes), dtype."""

    shape: tuple
    stride: tuple
    align: int
    dtype: torch.dtype

    @classmethod
    def of(cls, t: torch.Tensor) -> Layout:
        return cls(tuple(t.shape), t.stride(), t.data_ptr() % 256, t.dtype)

    def __repr__(self) -> str:  # short, for the printed groups
        return repr(tuple(self))

    def like(self, device: str = "cuda") -> torch.Tensor:
        """A random tensor of this layout."""
        span = 1 + sum((n - 1) * st for n, st in zip(self.shape, self.stride, strict=True))
        shift = self.align // self.dtype.itemsize
        return torch.randn(span + shift, device=device).to(self.dtype).as_strided(self.shape, self.stride, shift)


def swap(values: list, kw: dict, fn, kind: type) -> tuple[list, dict]:
    """fn applied to the positional and keyword arguments that are instances of kind."""
    return ([fn(a) if isinstance(a, kind) else a for a in values],
            {k: fn(v) if isinstance(v, kind) else v for k, v in kw.items()})


def trace_externs(step, names: tuple[str, ...] = ("convolution", "mm", "addmm", "bmm")) -> list[dict]:
    """Run step() with inductor's extern kernels (convolutions and cuBLAS products of the compiled
    graphs) wrapped: per call the operands' layouts (shape, strides, pointer alignment) and its GPU
    time in the step (CUDA events), grouped; then each group's call replayed alone on fresh tensors
    of the same layouts. The profiler's table by input shape attributes kernels to the wrong
    operators inside compiled graphs (it showed 1.2 ms for a 0.33 ms convolution); these events
    time exactly the call."""
    from torch._inductor.select_algorithm import extern_kernels

    origs, calls = {n: getattr(extern_kernels, n) for n in names}, []

    def traced(name):
        def call(*args, **kw):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = origs[name](*args, **kw)
            end.record()
            # layouts only: holding the tensors would keep every activation of the step alive
            args, kw = swap(args, kw, Layout.of, torch.Tensor)
            calls.append((name, f"{name} {args} {kw}", start, end, args, kw))
            return out
        return call

    for n in names:
        setattr(extern_kernels, n, traced(n))
    try:
        step()
    finally:
        for n, f in origs.items():
            setattr(extern_kernels, n, f)
    sync()
    groups: dict[str, dict] = {}
    for name, key, start, end, args, kw in calls:
        g = groups.setdefault(key, {"op": name, "layout": key, "calls": 0, "step_ms": 0.0, "example": (args, kw)})
        g["calls"] += 1
        g["step_ms"] += start.elapsed_time(end)
    rows = []
    for g in sorted(groups.values(), key=lambda g: -g["step_ms"]):
        args, kw = swap(*g.pop("example"), Layout.like, Layout)
        for _ in range(3):
            origs[g["op"]](*args, **kw)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            origs[g["op"]](*args, **kw)
        end.record()
        sync()
        g["step_ms_per_call"] = g["step_ms"] / g["calls"]
        g["alone_ms_per_call"] = start.elapsed_time(end) / 10
        rows.append(g)
    by_op = {}
    for g in rows:
        by_op[g["op"]] = by_op.get(g["op"], 0.0) + g["step_ms"]
    print("extern kernels in one compiled step (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in by_op.items()))
    for g in rows[:40]:
        print(f"{g['calls']:3d} calls {g['step_ms_per_call']:7.3f} ms/call in the step, "
              f"{g['alone_ms_per_call']:7.3f} alone  {g['layout'][:240]}")
    return rows


KERNEL_KINDS = (("inductor reduction", ("triton_red", "triton_per")), ("inductor pointwise", ("triton_poi",)),
                ("GEGLU kernel", ("geglu",)), ("short attention kernel", ("short_attention",)),
                ("attention (SDPA)", ("sdpa", "flash", "fmha", "attention")),
                ("cuDNN convolution",
                 ("fprop", "implicit_gemm", "convolve", "nchwToNhwc", "nhwcToNchw", "im2col", "cudnn::")),
                ("cuBLAS product", ("nvjet", "gemm", "cutlass", "sm90_xmma")),
                ("other Triton", ("triton",)))


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k.lower() in low for k in keys)), "other (eager ATen)")


def inductor_kernel_rates(calls_per_step: dict[str, list], save: Path | None) -> list[dict]:
    """The Triton kernels inductor loaded in this process (needs config.benchmark_kernel before the
    compile; kernels built by its parallel compile workers may be missing), each timed alone on its
    own arguments: bytes moved (inductor's count), GB/s, and its share of the profiled step; the
    sources of the 40 largest are copied to ``save`` for reading."""
    import shutil

    import triton.testing
    from torch._inductor.codecache import PyCodeCache
    from torch._inductor.runtime.runtime_utils import get_num_bytes
    from torch._inductor.wrapper_benchmark import get_triton_kernel

    rows = []
    for mod in list(PyCodeCache.modules):
        if not (hasattr(mod, "get_args") and hasattr(mod, "call")):
            continue
        try:
            kernel = get_triton_kernel(mod)
        except AssertionError:  # a graph's module (several kernels), not one kernel's
            continue
        args = mod.get_args()
        n_io = sum(a.startswith("in_out_ptr") for a in kernel.fn.arg_names)
        gb = kernel.inductor_meta.get("kernel_num_gb") or get_num_bytes(*args, num_in_out_args=n_io) / 1e9
        ms = triton.testing.do_bench(lambda mod=mod, args=args: mod.call(args), warmup=10, rep=40)
        n, step_ms = calls_per_step.get(kernel.fn.__name__, (0, 0.0))
        rows.append({"name": kernel.fn.__name__, "ms": ms, "gb": gb, "gb_per_s": gb / ms * 1e3,
                     "calls_in_step": n, "step_ms": step_ms, "file": mod.__file__})
    rows.sort(key=lambda r: -r["step_ms"])
    print(f"{len(rows)} inductor kernels; the largest in the step (a name may stand for kernels of several graphs):")
    for r in rows[:40]:
        print(f"{r['step_ms']:7.2f} ms in step ({r['calls_in_step']:3d} calls)  alone {r['ms']:6.3f} ms "
              f"{r['gb']:6.3f} GB {r['gb_per_s']:6.0f} GB/s  {r['name'][:110]}")
    if save:
        save.mkdir(parents=True, exist_ok=True)
        for r in rows[:40]:
            shutil.copy(r["file"], save / f"{r['name'][:80]}_{Path(r['file']).stem[:8]}.py")
    return rows


def kernel_tables(prof) -> tuple[str, str, dict[str, list]]:
    """Every GPU kernel of the profiled step by total time, and the sums by kind: kernel rows
    are exact, unlike the operator rows' attribution inside compiled graphs."""
    kernels_: dict[str, list] = {}
    for e in prof.key_averages():  # kernels: GPU time, no CPU time (annotations of graphs start with ##)
        if e.self_device_time_total > 0 and e.self_cpu_time_total == 0 and not e.key.startswith("##"):
            kernels_[e.key] = [e.count, e.self_device_time_total / 1e3]
    total = sum(ms for _, ms in kernels_.values())
    kinds: dict[str, float] = {}
    for name, (_, ms) in kernels_.items():
        kinds[kernel_kind(name)] = kinds.get(kernel_kind(name), 0.0) + ms
    summary = "\n".join(f"{k:24s} {ms:8.1f} ms {100 * ms / total:5.1f} %" for k, ms in
                        sorted(kinds.items(), key=lambda kv: -kv[1])) + f"\n{'all kernels':24s} {total:8.1f} ms"
    full = "\n".join(f"{ms:9.3f} ms {n:5d} calls {ms / n:8.3f} ms/call  {kernel_kind(k):22s} {k[:200]}"
                     for k, (n, ms) in sorted(kernels_.items(), key=lambda kv: -kv[1][1]))
    return summary, full, kernels_


def add_option_flags(ap: argparse.ArgumentParser) -> None:
    """The flags that build the run's RunOptions (options_from)."""
    ap.add_argument("--precision", default="bf16", choices=list(DTYPES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--devices", help="CFG split over two devices, e.g. cuda:0,cuda:1 (cuda:0,cuda:0 checks "
                    "the split on one GPU)")
    ap.add_argument("--compile-blocks", nargs="?", const="blocks", choices=("blocks", "layers"),
                    help="torch.compile the model's instances of a compile scope (blocks or layers)")
    ap.add_argument("--layout", choices=("auto", "nchw", "nhwc"), default="auto",
                    help="the UNet's activations and convolution weights; auto: as the backend picks them "
                    "(RunOptions.from_settings: NHWC for the compiled layers on CUDA)")
    ap.add_argument("--low-vram", action="store_true", help="conditioner on the GPU only while conditioning")
    ap.add_argument("--no-kernels", action="store_true", help="no Triton kernels: the plain PyTorch paths")
    ap.add_argument("--geglu-kernel", choices=("tma", "blocked"), default="tma",
                    help="the GEGLU kernel: persistent with TMA (Hopper+) or the blocked one")
    ap.add_argument("--geglu-gate", choices=("exp", "poly", "erf"), default="exp", help="its exact-GELU epilogue")
    ap.add_argument("--no-frame-norm", action="store_true",
                    help="eager ResBlock norms through F.group_norm, not frame_norm's kernels")
    ap.add_argument("--fused-bias", action="store_true",
                    help="output projections through cuBLAS's bias epilogue also when compiled (no bias apart)")
    ap.add_argument("--eager-skip-cats", action="store_true",
                    help="the output blocks' skip concatenations eagerly, outside the fusion layers")
    ap.add_argument("--cudnn-edges", action="store_true",
                    help="the UNet's first and last convolutions through cuDNN (no products)")


def options_from(args: argparse.Namespace) -> RunOptions:
    """The RunOptions the flags of add_option_flags describe."""
    dev = args.devices.split(",")[0] if args.devices else args.device
    cuda = torch.device(dev).type == "cuda"
    layout = {"auto": args.compile_blocks == "layers" and cuda, "nchw": False, "nhwc": True}[args.layout]
    never = 1 << 30
    edges = {"edge_in_pixels": never, "edge_out_pixels": never} if args.cudnn_edges else {}
    return RunOptions(devices=tuple(args.devices.split(",")) if args.devices else (dev,),
                      dtype=DTYPES[args.precision] if cuda else torch.float32, compile=args.compile_blocks,
                      channels_last=layout, offload="cpu" if args.low_vram else None).replace(
        triton_kernels=not args.no_kernels, geglu_kernel=args.geglu_kernel, geglu_gate=args.geglu_gate,
        frame_norm=not args.no_frame_norm, out_bias_apart=not args.fused_bias,
        skips_in_fusion=not args.eager_skip_cats, **edges)


def random_model(config: str | None, device: str, dtype: torch.dtype):
    """The full-size model (or ``config``'s) with random weights (testing.random_init_), built as
    the backend loads it (the conditioner's unused VAE decoders dropped)."""
    model = drop_unused(build_model(load_config(config) if config else load_config(), "meta"))
    model.to_empty(device=device)
    random_init_(model)
    return model.to(dtype)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=576)
    ap.add_argument("--clip")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--config", help="model config (default: the released model)")
    add_option_flags(ap)
    ap.add_argument("--profile", action="store_true", help="print the top GPU kernels of one denoising step")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="cuDNN times its algorithms for each convolution shape on first use and keeps the fastest")
    ap.add_argument("--tune-inductor", action="store_true",
                    help="inductor's coordinate-descent tuning of its generated kernels (longer compile)")
    ap.add_argument("--inductor-kernels", type=Path, metavar="DIR",
                    help="with --compile-blocks and --profile: time every Triton kernel inductor generated alone "
                    "(GB/s against the step's share) and copy the largest ones' sources to DIR")
    ap.add_argument("--trace-externs", action="store_true",
                    help="with --compile-blocks: time each convolution and cuBLAS product of one compiled step by "
                    "operand layout, and again alone on tensors of the same layouts")
    ap.add_argument("--max-autotune-gemm", action="store_true",
                    help="inductor times Triton templates (persistent TMA among them) against cuBLAS for every "
                    "matrix product in the compiled graphs, with their bias/residual epilogues fused (longer compile)")
    args = ap.parse_args()
    options = options_from(args)
    dev, dt = options.device, options.dtype
    if args.tune_inductor or args.max_autotune_gemm or args.inductor_kernels:
        import torch._inductor.config as inductor_config  # (a bare `import torch.…` would make torch local here)

        inductor_config.coordinate_descent_tuning = args.tune_inductor
        # the kernels' modules get their own arguments (get_args) for --inductor-kernels
        inductor_config.benchmark_kernel = bool(args.inductor_kernels)
        if args.max_autotune_gemm:
            inductor_config.max_autotune_gemm = True
            inductor_config.max_autotune_gemm_backends = "ATEN,TRITON"
            inductor_config.triton.enable_persistent_tma_matmul = True
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if dt == torch.float32:  # float32 means float32 (agreement checks): no TF32 in matmuls or convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name() if torch.device(dev).type == "cuda" else "cpu"
    t0 = sync()
    model = random_model(args.config, dev, dt)
    if args.low_vram:
        model.conditioner.to("cpu")
    pipe = SP4DPipeline(model, options.replace(compile=None))  # the compile is set up (and timed) below
    torch.cuda.empty_cache()
    t_load = sync() - t0
    print(options.describe())
    rows = {}
    frames = frames_for(args.size, args.clip).to(dev)
    with torch.inference_mode():
        reset_peak()
        t0 = sync()
        c, uc = pipe.condition(frames.to(dt), generator=torch.Generator().manual_seed(0))
        rows["conditioning"] = (sync() - t0, peak_bytes())
        n = 4 * model.n_view
        cond = model.batch_cond(c, uc)
        h = args.size // model.first_stage_model.decoder.upsampling
        noise = torch.randn(n, 8, h, h, generator=torch.Generator().manual_seed(1)).to(dev)
        sigmas = edm_sigmas(args.steps, device=dev)
        x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)
        x2 = torch.cat([x, x])

        def one_call():  # one denoiser call on the CFG batch (the step's network work, one device)
            return model.denoise(x2, sigmas[0] * x2.new_ones(len(x2)), cond)

        # count the FLOPs of one denoiser call (a separate, uncounted-in-time call)
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            one_call()
        flops = fc.get_total_flops()
        denoise = pipe.guided(c, uc, n)
        split_err, graph_cache = None, None
        if pipe.split is not None:
            from backend.sp4d.sampling import guide, linear_guidance_scale

            ref = guide(one_call(), linear_guidance_scale(n))
            got = denoise(x, sigmas[0])
            split_err = float((got.float() - ref.float()).abs().max() / ref.float().abs().max())
            print(f"CFG split over {args.devices}: first step vs one-device batch, max rel {split_err:.2e}")
        if options.compile:
            pipe.apply(options)
            tc = sync()
            denoise(x, sigmas[0])  # the split compiles the halves' own graphs (half the batch), one after the other
            pipe.decode(x[:options.decode_chunk])  # the scopes compile the decoder too: its graph for the chunks
            rows["compile (1st call)"] = (sync() - tc, peak_bytes())
            graph_cache = graph_cache_counts()
            print(f"inductor's graph cache: {graph_cache} (hits: graphs loaded, not compiled)")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            one_call()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
                one_call()
                sync()
            kernels_table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40,
                                                      max_name_column_width=90)
            # the matrix products and convolutions by shape: which of them run far from the peak
            products = [e for e in prof.key_averages(group_by_input_shape=True)
                        if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::convolution")]
            products.sort(key=lambda e: -e.device_time_total)
            shapes_table = "\n".join(f"{e.key:18s} {e.count:4d} calls {e.device_time_total / 1e3:9.2f} ms  "
                                     f"{str(e.input_shapes)[:150]}" for e in products[:30])
            kinds_table, all_kernels, step_kernels = kernel_tables(prof)
            print("\n".join(kernels_table.splitlines()[:24]) + "\n" + kinds_table)
            if args.out:
                args.out.with_suffix(".profile.txt").write_text(
                    kernels_table + "\n" + kinds_table + "\n\nevery kernel:\n" + all_kernels
                    + "\n\noperators by input shape (inside compiled graphs these rows also count kernels of "
                    "neighbouring operators: use --trace-externs):\n" + shapes_table + "\n")
        kernel_rates = None
        if args.inductor_kernels:
            if not args.profile:
                ap.error("--inductor-kernels needs --profile (the kernels' calls in a step)")
            kernel_rates = inductor_kernel_rates(step_kernels, args.inductor_kernels)
        extern_trace = trace_externs(one_call) if args.trace_externs else None
        reset_peak()
        step_times = []
        t0 = sync()
        for i in range(args.steps):
            ts = sync()
            d = denoise(x, sigmas[i])
            x = x + (sigmas[i + 1] - sigmas[i]) * (x - d) / sigmas[i]
            step_times.append(sync() - ts)
        rows["sampling"] = (sync() - t0, peak_bytes())
        reset_peak()
        t0 = sync()
        images = pipe.decode(x)
        rows["decoding"] = (sync() - t0, peak_bytes())
    total = sum(rows[k][0] for k in ("conditioning", "sampling", "decoding"))
    step = float(np.median(step_times))
    peak = PEAK_BF16.get(next((k for k in PEAK_BF16 if k in name), ""), None)
    print(f"device {name}, torch {torch.__version__}, {args.precision}, {args.size}px, {args.steps} steps, "
          f"{'low-VRAM' if args.low_vram else 'default'} mode{'; cuDNN benchmark' if args.cudnn_benchmark else ''}; "
          f"model init {t_load:.1f} s")
    print(f"{'stage':14s} {'seconds':>8s} {'peak GiB':>9s}")
    for k, (s, m) in rows.items():
        print(f"{k:14s} {s:8.2f} {m / 2**30:9.2f}")
    print(f"{'total':14s} {total:8.2f} {max(m for _, m in rows.values()) / 2**30:9.2f}")
    floor = f", floor {flops / peak:.3f} s ({step / (flops / peak):.2f}× the floor)" if peak else ""
    print(f"denoising step (CFG batch {2 * n}): median {step:.3f} s; {flops / 1e12:.1f} TFLOP counted -> "
          f"{flops / step / 1e12:.0f} TFLOP/s achieved" + floor)
    print(f"output {tuple(images.shape)}, finite {bool(torch.isfinite(images).all())}")
    if args.out:
        args.out.write_text(json.dumps({"device": name, "torch": torch.__version__, "args": vars(args) | {"out": None},
                                        "options": repr(options), "described": options.describe(),
                                        "stages": {k: {"seconds": s, "peak_bytes": m} for k, (s, m) in rows.items()},
                                        "total_seconds": total, "step_median_seconds": step, "step_flops": flops,
                                        "graph_cache": graph_cache, "split_max_rel": split_err,
                                        "extern_trace": extern_trace, "inductor_kernels": kernel_rates,
                                        "step_times": step_times}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
