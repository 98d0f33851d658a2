"""Blocks of the SV4D 2.0 spatial-temporal UNet (as used twice by SP4D).

Every block takes ``(h, ctx)``; ``ctx`` (UNetContext) carries the embedding and conditioning.
The frame axis of a batch is ``b·T·V`` images, time-major within each batch element (t·V + v).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import frame_norm
from .layers import AlphaBlender, Attention, FeedForward, FrameConv, OutLinear, mlp, timestep_embedding, unet_norm
from .vae import Decoder


@dataclass
class UNetContext:
    emb: torch.Tensor  # (b·T·V, E) time + vector embedding
    context: torch.Tensor  # (b, T, D) CLIP token per frame
    cond_view: torch.Tensor  # (b·V, Dv, h0, w0) view-conditioning latents
    n_time: int
    n_view: int

    @property
    def n_frames(self) -> int:
        return self.n_time * self.n_view


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + projected embedding, GroupNorm-SiLU-conv, + skip (2-D or 3-D)."""

    def __init__(self, ch: int, emb_ch: int, out_ch: int | None = None, dims: int = 2,
                 kernel: tuple[int, ...] | int = 3, emb_time_major: bool = False):
        super().__init__()
        out_ch = out_ch or ch
        self.out_channels = out_ch
        k = tuple(kernel) if isinstance(kernel, (tuple, list)) else (kernel,) * dims
        # along the frames only: a batched product over frame windows (layers.frame_conv)
        conv = nn.Conv2d if dims == 2 else FrameConv if k[1:] == (1, 1) and k[0] % 2 else nn.Conv3d
        pad = tuple(x // 2 for x in k)
        self.in_layers = nn.Sequential(unet_norm(ch), nn.SiLU(), conv(ch, out_ch, k, padding=pad))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, out_ch))
        self.out_layers = nn.Sequential(unet_norm(out_ch), nn.SiLU(), nn.Dropout(0.0),
                                        conv(out_ch, out_ch, k, padding=pad))
        self.skip_connection = nn.Identity() if out_ch == ch else conv(ch, out_ch, 1)
        self.emb_time_major = emb_time_major  # 3-D: emb is (b, t, E), moved to (b, C, t, 1, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if frame_norm.usable(x):  # eager half precision on the GPU: norm, embedding sum and SiLU fused
            return self._forward_frame_norm(x, emb)
        h = self.in_layers(x)
        return self.skip_connection(x) + self.out_layers(h + self._embedding(emb, h))

    def _embedding(self, emb: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The projected embedding, shaped to add to h: (n, C, 1, 1), or (b, C, frames, 1, 1)."""
        e = self.emb_layers(emb).type(h.dtype)
        if self.emb_time_major:
            e = e.transpose(1, 2)
        while e.dim() < h.dim():
            e = e[..., None]
        return e

    def _forward_frame_norm(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """forward with frame_norm's kernels: the same function (the embedding sum and SiLU in
        float32, rounded once) without F.group_norm's copies of frames-major inputs and the passes
        of SiLU and the sum."""
        def norm_silu(norm: nn.GroupNorm, conv: nn.Module, t: torch.Tensor, add=None) -> torch.Tensor:
            big = isinstance(conv, FrameConv) and t.shape[-2] * t.shape[-1] >= conv.FRAME_MIN
            return frame_norm.group_norm_silu(t, norm.num_groups, norm.weight, norm.bias, norm.eps, add,
                                              frames_major=big)  # frame_conv reads frames-major memory

        h = self.in_layers[2](norm_silu(self.in_layers[0], self.in_layers[2], x))
        e = self._embedding(emb, h)
        return self.skip_connection(x) + self.out_layers[3](norm_silu(self.out_layers[0], self.out_layers[3], h, e))


class VideoResBlock(ResBlock):
    """A 2-D ResBlock, then a 3-D ResBlock along the b·T·V frame axis, blended by ``time_mixer``."""

    def __init__(self, ch: int, emb_ch: int, out_ch: int | None = None, time_kernel=(3, 1, 1)):
        super().__init__(ch, emb_ch, out_ch)
        out = self.out_channels
        self.time_mix_blocks = ResBlock(out, emb_ch, out, dims=3, kernel=tuple(time_kernel), emb_time_major=True)
        self.time_mixer = AlphaBlender()

    def forward(self, x: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        x = super().forward(x, ctx.emb)
        n = ctx.n_frames
        bt, c, h, w = x.shape
        x5 = x.view(bt // n, n, c, h, w).transpose(1, 2)  # b c (T·V) h w
        xt = self.time_mix_blocks(x5, ctx.emb.view(bt // n, n, -1))
        out = self.time_mixer(x5, xt)
        return out.transpose(1, 2).reshape(bt, c, h, w)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.out_channels = ch
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.out_channels = ch
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TransformerBlock(nn.Module):
    """Spatial block: self-attention, cross-attention, GEGLU feed-forward (pre-LN, residual)."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, heads, dim_head, context_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2.cross(self.norm2, x, context)
        return self.ff(self.norm3(x)) + x


class TimeMixBlock(nn.Module):
    """Attention along a short axis: rows of ``x`` (B, S, C) are read as (B/n groups × n) and
    each group of n consecutive rows attends across itself, at each of the S positions.

    Sub-blocks: feed-forward in, self-attention, cross-attention to ``context`` (one token per
    (group, position) row), feed-forward; all pre-LN with residuals.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.ff_in = FeedForward(dim, dim)
        self.attn1 = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, dim_head, context_dim)
        self.norm1, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, n: int) -> torch.Tensor:
        bn, s, c = x.shape
        x = x.view(bn // n, n, s, c).transpose(1, 2).reshape(-1, n, c)  # (B/n · S, n, C)
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2.cross(self.norm2, x, context)
        x = self.ff(self.norm3(x)) + x
        return x.view(bn // n, s, n, c).transpose(1, 2).reshape(bn, s, c)


class SpatioTemporalTransformer(nn.Module):
    """Spatial transformer, then "camera" and "motion" time-mix blocks, each alpha-blended.

    Keys follow the official block (norm, proj_in, transformer_blocks, time_mix_blocks,
    motion_blocks, time_mix_time_embed, time_mix_motion_embed, time_mixer, time_mixer_motion,
    proj_out). The regroupings reproduce the official tensor reshapes exactly (reference §3):
    the camera block attends over 12 consecutive rows of the (batch, view, pixel) order at a
    fixed frame, the motion block over the T frames at each (view, pixel).
    """

    def __init__(self, ch: int, heads: int, dim_head: int, context_dim: int, view_emb_dim: int,
                 motion_context_dim: int):
        super().__init__()
        inner = heads * dim_head
        self.in_channels = ch
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.proj_in = nn.Linear(ch, inner)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, dim_head, context_dim)])
        self.time_mix_blocks = nn.ModuleList([TimeMixBlock(inner, heads, dim_head, context_dim)])
        self.motion_blocks = nn.ModuleList([TimeMixBlock(inner, heads, dim_head, motion_context_dim)])
        self.time_mix_time_embed = mlp(view_emb_dim, 4 * ch, ch)
        self.time_mix_motion_embed = mlp(ch, 4 * ch, ch)
        self.time_mixer = AlphaBlender()
        self.time_mixer_motion = AlphaBlender()
        self.proj_out = OutLinear(inner, ch)

    def forward(self, x: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        context, T, V = ctx.context, ctx.n_time, ctx.n_view
        b, _, d1 = context.shape
        _, c, h, w = x.shape
        hw = h * w
        x_in = x
        cond_view = F.interpolate(ctx.cond_view, size=(h, w), mode="bilinear")
        d2 = cond_view.shape[1]
        spatial_ctx = context[:, :, None].expand(b, T, V, d1).reshape(-1, 1, d1)
        camera_ctx = context[:, :, None].expand(b, T, hw, d1).reshape(-1, 1, d1)
        motion_ctx = cond_view.permute(0, 2, 3, 1).reshape(-1, 1, d2)

        x = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))  # (b·T·V, hw, C)
        inner = x.shape[-1]
        frames = torch.arange(T, device=x.device).repeat(b)
        emb_time = self.time_mix_motion_embed(timestep_embedding(frames, c).to(x.dtype))[:, None]  # (b·T, 1, C)
        emb_view = self.time_mix_time_embed(ctx.emb.view(b, T, V, -1)[:, 0].reshape(b * V, -1))
        emb_view = emb_view[:, None].expand(b * V, hw, inner).reshape(-1, 1, inner)  # (b·V·hw, 1, C)

        x = self.transformer_blocks[0](x, spatial_ctx)
        # camera: rows (b, v, p), sequence over t; the block then groups rows by V
        x = x.view(b, T, V, hw, inner).permute(0, 2, 3, 1, 4).reshape(-1, T, inner)
        x = self.time_mixer(x, self.time_mix_blocks[0](x + emb_view, camera_ctx, V))
        # motion: rows (b, t), sequence over (v, p); the block groups rows by T
        x = x.view(b, V, hw, T, inner).permute(0, 3, 1, 2, 4).reshape(b * T, -1, inner)
        x = self.time_mixer_motion(x, self.motion_blocks[0](x + emb_time, motion_ctx, T))
        x = x.reshape(-1, hw, inner)
        x = self.proj_out(x).transpose(1, 2).reshape(-1, c, h, w)
        return x + x_in


class CrossNetworkLayer(nn.Module):
    """BiDiFuse: f = conv1×1(ReLU(conv1×1([h1, h2]))); both branches get + f.

    Given the next output block's skips, each fused branch comes back concatenated with its skip
    (that block's input): a compiled graph then writes the sums straight into the concatenation,
    instead of an eager torch.cat reading and writing them once more (docs/perf.md row 37)."""

    CONCAT_SKIPS = True  # False: the UNet concatenates eagerly (to compare)

    def __init__(self, ch: int):
        super().__init__()
        self.fusion_conv = nn.Sequential(nn.Conv2d(2 * ch, ch, 1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, h1: torch.Tensor, h2: torch.Tensor, s1: torch.Tensor | None = None,
                s2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.fusion_conv(torch.cat([h1, h2], dim=1))
        if s1 is None:
            return h1 + f, h2 + f
        return torch.cat([h1 + f, s1], dim=1), torch.cat([h2 + f, s2], dim=1)


COMPILE_SCOPES = {
    # the repeated inner blocks: one graph per shape, shared by every instance
    "blocks": (TransformerBlock, TimeMixBlock, ResBlock, Decoder),
    # whole UNet layers: also fuses the camera/motion regroupings, GroupNorms and blends around them,
    # the branches' fusion (concatenation, 1×1 convolutions, ReLU, the two sums) and the upsampling
    "layers": (SpatioTemporalTransformer, VideoResBlock, CrossNetworkLayer, Upsample, Decoder),
}
# both scopes also compile the VAE decoder whole (one graph per chunk shape, ~30 s): its GroupNorms
# and SiLUs fuse, its 512-wide attention runs as products (decode 1.69 -> 0.83 s at 576², docs/perf.md
# rows 31 and 34)
# `compile: true` means the fastest scope: every headline number is the layers scope's (docs/perf.md);
# "blocks" compiles fewer, smaller graphs
DEFAULT_SCOPE = "layers"
_eager_forward: dict[type, object] = {}
# inductor's multi-kernel: each reduction compiled both persistent and looped, the faster picked on
# the first call. Its heuristic otherwise loops the LayerNorms over 320-1280 channels (fused with
# the residual sums and regroupings) at ~1.5-2 TB/s; picking by time gave -38 ms a step on an H200
# (0.992 -> 0.954 s, docs/perf.md row 29) for ~30 s more compile. In torch 2.11 / Triton 3.6 a
# multi-kernel graph loaded from inductor's on-disk graph cache fails at its first call when it
# looks up its pick in the pick cache (the file name hashes the deserialised Triton function:
# "'NoneType' object does not support the context manager protocol"). So the pick cache is off
# (each process times its picks again at its first step, seconds) and the graph cache stays on: a
# later backend process loads its graphs instead of compiling them again (docs/perf.md row 41).
MULTI_KERNEL_ENV = {"TORCHINDUCTOR_DISABLE_MULTI_KERNEL_CACHE": "1"}
INDUCTOR_OPTIONS = {"triton.multi_kernel": 1}


def compile_blocks(scope: str = DEFAULT_SCOPE) -> bool:
    """torch.compile the UNet's blocks of ``scope`` (COMPILE_SCOPES) once per class: a graph per
    distinct shape is shared by every instance, so compiling stays short while the elementwise
    work between the matrix products is fused. Opt-in (GPU speed); undone by uncompile_blocks.
    True when this call wrapped the blocks (the next forward compiles), False when they already were."""
    import torch._dynamo

    if scope not in COMPILE_SCOPES:
        raise ValueError(f"compile scope must be one of {sorted(COMPILE_SCOPES)}, got {scope!r}")
    if set(_eager_forward) == set(COMPILE_SCOPES[scope]):
        return False  # already compiled: keep the graphs
    uncompile_blocks()
    os.environ.update(MULTI_KERNEL_ENV)  # read by each multi-kernel when its graph is loaded
    # every UNet level has its own shapes: allow a graph per (block, shape) instead of eager fallbacks
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for cls in COMPILE_SCOPES[scope]:
        _eager_forward[cls] = cls.forward
        cls.forward = torch.compile(cls.forward, dynamic=False, options=INDUCTOR_OPTIONS)
    return True


def compiled_classes() -> tuple[str, ...]:
    """The block classes whose forwards are compiled now (empty: eager)."""
    return tuple(sorted(cls.__name__ for cls in _eager_forward))


def uncompile_blocks() -> None:
    """Back to the eager forwards (after a failed compile, or to compare)."""
    for cls, fn in _eager_forward.items():
        cls.forward = fn
    _eager_forward.clear()
