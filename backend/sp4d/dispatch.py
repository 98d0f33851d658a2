"""Which implementation of an op runs: the run's OpChoices applied to the tensors at hand.

The modules call these functions with their ``ops`` (options.OpChoices) instead of choosing
themselves, as diffusers' attention dispatcher does: each ``*_impl`` function names the
implementation for a device, dtype, size and whether the code is being compiled, and the op
function runs it. ``describe`` uses the same ``*_impl`` functions, so what it prints is what runs.
"Compiled" means traced by torch.compile into a graph (compiled.py wraps module instances).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import frame_norm, functional, kernels
from .options import OpChoices, RunOptions

HALF = (torch.bfloat16, torch.float16)


def compiling() -> bool:
    """Whether the calling code is being traced into a compiled graph."""
    return torch.compiler.is_compiling()


# --- attention ---------------------------------------------------------------------------------
def attention_impl(ops: OpChoices, tokens: int, kernel_ok: bool, compiled: bool) -> str:
    """'triton' (kernels.short_attention), 'reduce' (functional.short_attention, fused by
    inductor) or 'sdpa' (PyTorch's fused attention, chunked at the grid limit) for attention whose
    longer side has ``tokens`` tokens; ``kernel_ok``: the Triton kernels can take these tensors."""
    if tokens <= ops.short_attention_tokens:
        if ops.triton_kernels and kernel_ok:
            return "triton"
        if compiled:
            return "reduce"
    return "sdpa"


def attention(ops: OpChoices, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v per head: q (B, n, heads, d), k and v (B, m, heads, d) (a projection's
    output viewed per head) -> (B, n, heads·d)."""
    b, n = q.shape[:2]
    impl = attention_impl(ops, max(n, k.shape[1]), kernels.attention_usable(q), compiling())
    if impl == "triton":
        return kernels.short_attention(q, k, v)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if impl == "reduce":
        out = functional.short_attention(q, k, v)
    else:
        out = functional.sdpa_chunked(q, k, v, ops.sdpa_max_batch_heads)
    return out.transpose(1, 2).reshape(b, n, -1)


def vae_attention_impl(ops: OpChoices, cuda: bool, dtype: torch.dtype) -> str:
    """'products' (functional.product_attention) or 'sdpa' for the VAE's one 512-wide head."""
    return "products" if ops.vae_attention == "products" and cuda and dtype in HALF else "sdpa"


def vae_attention(ops: OpChoices, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Single-head attention over all pixels: q, k, v (b, pixels, c) -> (b, pixels, c)."""
    if vae_attention_impl(ops, q.is_cuda, q.dtype) == "products":
        return functional.product_attention(q, k, v)
    return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]


CLIP_BACKENDS = {"flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
                 "pytorch": None}


def clip_attention(ops: OpChoices):
    """The context the CLIP tower runs in: 'flash' keeps PyTorch off cuDNN attention, which builds
    a graph for the tower's shape at its first call in each process (most of a cold first
    conditioning on Hopper) for 32 calls of microseconds; 'pytorch' leaves PyTorch's pick."""
    backends = CLIP_BACKENDS[ops.clip_attention]
    return sdpa_kernel(backends) if backends else nullcontext()


# --- feed-forward and projections --------------------------------------------------------------
def geglu_impl(ops: OpChoices, kernel_ok: bool) -> str:
    """'triton' (kernels.geglu_linear: the 2×-wide projection never reaches memory) or 'plain'."""
    return "triton" if ops.triton_kernels and kernel_ok else "plain"


def geglu(ops: OpChoices, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """a·gelu(g) with [a | g] = x·weightᵀ + bias: x (..., K), weight (2N, K) -> (..., N)."""
    if geglu_impl(ops, kernels.usable(x)) == "triton":
        return kernels.geglu_linear(x, weight, bias, ops.geglu_gate, ops.geglu_kernel == "tma")
    return functional.geglu(x, weight, bias)


def out_linear_impl(ops: OpChoices, has_bias: bool, dtype: torch.dtype, compiled: bool) -> str:
    """'bias apart' (functional.linear_bias_apart) or 'linear' for an output projection."""
    return "bias apart" if ops.out_bias_apart and has_bias and dtype in HALF and compiled else "linear"


def out_linear(ops: OpChoices, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if out_linear_impl(ops, bias is not None, x.dtype, compiling()) == "bias apart":
        return functional.linear_bias_apart(x, weight, bias)
    return F.linear(x, weight, bias)


# --- normalisation ------------------------------------------------------------------------------
def unet_norm_impl(ops: OpChoices, dims: int, dtype: torch.dtype, compiled: bool) -> str:
    """The UNet's GroupNorm (float32 statistics as the official GroupNorm32): 'by image'
    (functional.group_norm_by_image, for the time ResBlocks' 5-D inputs when compiled), 'native'
    (F.group_norm in half precision, which accumulates its statistics in float32: the float32 round trip
    costs two full-tensor casts) or 'float32' (the round trip)."""
    if compiled and dims == 5 and ops.norm_by_image:
        return "by image"
    return "native" if dtype in HALF else "float32"


def unet_group_norm(ops: OpChoices, x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,
                    eps: float) -> torch.Tensor:
    impl = unet_norm_impl(ops, x.dim(), x.dtype, compiling())
    if impl == "by image":
        return functional.group_norm_by_image(x, groups, weight, bias, eps)
    if impl == "native":
        return F.group_norm(x, groups, weight.to(x.dtype), bias.to(x.dtype), eps)
    return functional.group_norm_float32(x, groups, weight, bias, eps)


def vae_norm_impl(ops: OpChoices, compiled: bool) -> str:
    """The VAE's GroupNorm: 'by image' when compiled (inductor's generic decomposition reduces each
    of an image's 32 groups in one long pass), else 'native' (nn.GroupNorm)."""
    return "by image" if compiled and ops.norm_by_image else "native"


def vae_group_norm(ops: OpChoices, x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float) -> torch.Tensor:
    if vae_norm_impl(ops, compiling()) == "by image":
        return functional.group_norm_by_image(x, groups, weight, bias, eps)
    return F.group_norm(x, groups, weight, bias, eps)


def norm_silu_impl(ops: OpChoices, kernel_ok: bool) -> str:
    """A ResBlock's GroupNorm, embedding sum and SiLU: 'triton' (frame_norm.py: two kernels,
    eager half precision on the GPU) or 'plain' (the norm module, then SiLU)."""
    return "triton" if ops.frame_norm and ops.triton_kernels and kernel_ok else "plain"


def norm_silu(ops: OpChoices, norm: torch.nn.GroupNorm, x: torch.Tensor, add: torch.Tensor | None = None,
              frames_major: bool = False) -> torch.Tensor:
    """silu(norm(x + add)): x (b, c, frames, h, w) or (n, c, h, w); ``add`` None or a constant per
    plane (the ResBlock's embedding); ``frames_major``: the Triton path writes a 5-D output as a view
    of (b, frames, c, h, w) memory (what functional.frame_conv reads without a copy)."""
    if norm_silu_impl(ops, frame_norm.usable(x)) == "triton":
        return frame_norm.group_norm_silu(x, norm.num_groups, norm.weight, norm.bias, norm.eps, add, frames_major)
    return F.silu(norm(x if add is None else x + add))


# --- convolutions -------------------------------------------------------------------------------
def time_conv_impl(ops: OpChoices, pixels: int, compiled: bool) -> str:
    """The time ResBlocks' (k, 1, 1) convolution for frames of ``pixels`` = h·w: 'frame_conv'
    (functional.frame_conv, one batched product over frame windows), 'cudnn channels-last'
    (cuDNN with channels-last weights, when compiled) or 'cudnn'."""
    if pixels >= ops.frame_conv_pixels:
        return "frame_conv"
    if pixels >= ops.frame_conv_channels_last_pixels and compiled:
        return "cudnn channels-last"
    return "cudnn"


def time_conv(ops: OpChoices, conv: torch.nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    impl = time_conv_impl(ops, x.shape[-2] * x.shape[-1], compiling())
    if impl == "frame_conv":
        return functional.frame_conv(x, conv.weight, conv.bias)
    w = conv.weight.contiguous(memory_format=torch.channels_last_3d) if impl == "cudnn channels-last" else conv.weight
    return F.conv3d(x, w, conv.bias, padding=conv.padding)


def edge_conv_impl(ops: OpChoices, conv: torch.nn.Conv2d, pixels: int, few: int = 16) -> str:
    """The UNet's first and last convolutions: 'product in' (functional.conv_few_in), 'product out'
    (functional.conv_few_out) or 'cudnn'. The products only for stride-1, same-size, odd kernels
    with at most ``few`` input or output channels, from the OpChoices' frame sizes on."""
    k = conv.kernel_size
    plain = (conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or k[0] % 2 == 0
             or k[1] % 2 == 0 or conv.padding != (k[0] // 2, k[1] // 2) or conv.padding_mode != "zeros")
    if not plain and conv.in_channels <= few and pixels >= ops.edge_in_pixels:
        return "product in"
    if not plain and conv.out_channels <= few and pixels >= ops.edge_out_pixels:
        return "product out"
    return "cudnn"


def edge_conv(ops: OpChoices, conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    impl = edge_conv_impl(ops, conv, x.shape[-2] * x.shape[-1])
    if impl == "product in":
        return functional.conv_few_in(x, conv.weight, conv.bias)
    if impl == "product out":
        return functional.conv_few_out(x, conv.weight, conv.bias)
    return torch.nn.Conv2d.forward(conv, x)


# --- what runs ----------------------------------------------------------------------------------
def describe(options: RunOptions) -> str:
    """What runs for each op with ``options`` at 576 px (latents 72², 36², 18², 9²), one line an
    op: the ``*_impl`` choices above for the options' first device, dtype and compile scope."""
    ops, dt = options.ops, options.dtype
    cuda = torch.device(options.device).type == "cuda"
    kernel_ok = kernels.triton is not None and cuda and dt in HALF  # head size 64 and 80: powers of two (64)
    scope = options.compile
    compiled = scope is not None  # every block with attention, feed-forward or a ResBlock is compiled in both scopes
    short = attention_impl(ops, 12, kernel_ok, compiled)
    attn = {"triton": "our Triton kernel (kernels.short_attention)", "sdpa": "PyTorch SDPA, chunked",
            "reduce": "multiply-reduce fused by inductor (functional.short_attention)"}
    gate = f", exact GELU '{ops.geglu_gate}'"
    geglu = {"triton": ("our Triton kernel, persistent with TMA on Hopper or newer (blocked kernel elsewhere)"
                        if ops.geglu_kernel == "tma" else "our blocked Triton kernel") + gate,
             "plain": "cuBLAS product, then gelu(g)·a"}[geglu_impl(ops, kernel_ok)]
    eager_norm = {"triton": "our Triton kernels (frame_norm.py), norm, embedding and SiLU in two passes",
                  "plain": f"GroupNorm ({unet_norm_impl(ops, 4, dt, False)}), then SiLU"}
    norm = (f"5-D: {unet_norm_impl(ops, 5, dt, True)}, 4-D: {unet_norm_impl(ops, 4, dt, True)}, fused by inductor "
            "with the SiLU" if compiled else eager_norm[norm_silu_impl(ops, kernel_ok)])
    times = ", ".join(f"{s}²: {time_conv_impl(ops, s * s, compiled)}" for s in (72, 36, 18, 9))
    edges = []
    for name, (cin, cout) in (("first", (8, 320)), ("last", (320, 4))):
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1, device="meta")
        edges.append(f"{name} " + ", ".join(f"{s}²: {edge_conv_impl(ops, conv, s * s)}" for s in (72, 36, 18)))
    rows = [
        ("devices", " + ".join(options.devices) + (" (CFG split: the unconditional half on the second)"
                                                  if len(options.devices) > 1 else "")),
        ("precision", str(dt).removeprefix("torch.")),
        ("compiled", {None: "nothing (eager)", "blocks": "the UNet's transformer, time-mix and res blocks; "
                      "the VAE decoder", "layers": "whole UNet layers (spatio-temporal transformers, video "
                      "ResBlocks, fusion layers, upsampling); the VAE decoder"}[scope]),
        ("UNet layout", "channels-last (NHWC)" if options.channels_last else "NCHW"),
        ("attention, camera and motion blocks (12 and 4 tokens)", attn[short]),
        ("attention, spatial blocks (h·w tokens)", attn[attention_impl(ops, 72 * 72, kernel_ok, compiled)]
         + (" (PyTorch picks cuDNN or flash)" if cuda else "")),
        ("attention to one context token", "the token's value, projected (softmax over one key is 1)"),
        ("GEGLU projection", geglu),
        ("ResBlock GroupNorm + SiLU", norm),
        ("time convolutions", times),
        ("first and last UNet convolutions (never compiled)", "; ".join(edges)),
        ("output projections", {"bias apart": "product, then the bias in float32 (fused by inductor)",
                                "linear": "F.linear"}[out_linear_impl(ops, True, dt, compiled)]),
        ("skip concatenations", "inside the fusion layers" if ops.skips_in_fusion else "eager, after them"),
        ("VAE GroupNorm", f"decoder: {vae_norm_impl(ops, compiled)}, encoder: {vae_norm_impl(ops, False)}"),
        ("VAE attention", {"products": "two products, float32 scores and softmax",
                           "sdpa": "PyTorch SDPA"}[vae_attention_impl(ops, cuda, dt)]),
        ("CLIP tower attention", {"flash": "flash / memory-efficient SDPA (no cuDNN)",
                                  "pytorch": "PyTorch's pick"}[ops.clip_attention]),
        ("conditioner while sampling", f"waits on {options.offload} (low VRAM)" if options.offload
         else "stays on the GPU"),
        ("memory tier", f"{options.tier} GB" if options.tier else "none (CPU)"),
        ("guidance halves", "one UNet batch" if options.cfg_batch == "joint"
         else "two UNet calls, one after the other"),
        ("UNet weights", "all on the GPU" if options.unet_resident_gib is None
         else f"{options.unet_resident_gib:g} GiB on the GPU, the largest blocks streamed from pinned host memory"),
        ("decoding", f"{options.decode_chunk} latents a VAE call"
         + (", decoder weights channels-last" if compiled else "")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:{width}s}  {v}" for k, v in rows)
