"""Blocks of the SV4D 2.0 spatial-temporal UNet (as used twice by SP4D).

Every block takes ``(h, ctx)``; ``ctx`` (UNetContext) carries the embedding and conditioning.
The frame axis of a batch is ``b·T·V`` images, time-major within each batch element (t·V + v).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from . import dispatch
from .layers import AlphaBlender, Attention, FeedForward, FrameConv, OutLinear, mlp, timestep_embedding, unet_norm
from .options import UsesOps


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


class ResBlock(UsesOps, nn.Module):
    """GroupNorm-SiLU-conv, + projected embedding, GroupNorm-SiLU-conv, + skip (2-D or 3-D)."""

    def __init__(self, ch: int, emb_ch: int, out_ch: int | None = None, dims: int = 2,
                 kernel: tuple[int, ...] | int = 3, emb_time_major: bool = False):
        super().__init__()
        out_ch = out_ch or ch
        self.out_channels = out_ch
        k = tuple(kernel) if isinstance(kernel, (tuple, list)) else (kernel,) * dims
        # along the frames only: FrameConv (dispatch.time_conv)
        conv = nn.Conv2d if dims == 2 else FrameConv if k[1:] == (1, 1) and k[0] % 2 else nn.Conv3d
        pad = tuple(x // 2 for x in k)
        self.in_layers = nn.Sequential(unet_norm(ch), nn.SiLU(), conv(ch, out_ch, k, padding=pad))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, out_ch))
        self.out_layers = nn.Sequential(unet_norm(out_ch), nn.SiLU(), nn.Dropout(0.0),
                                        conv(out_ch, out_ch, k, padding=pad))
        self.skip_connection = nn.Identity() if out_ch == ch else conv(ch, out_ch, 1)
        self.emb_time_major = emb_time_major  # 3-D: emb is (b, t, E), moved to (b, C, t, 1, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (n, C, h, w), emb (n, E); 3-D: x (b, C, frames, h, w), emb (b, frames, E)."""
        h = self.in_layers[2](self._norm_silu(0, x))
        h = self.out_layers[3](self.out_layers[2](self._norm_silu(1, h, self._embedding(emb, h))))
        return self.skip_connection(x) + h

    def _norm_silu(self, which: int, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """silu(norm(x + add)) of the in (0) or out (1) layers, in the memory layout their
        convolution reads best (frames-major for the batched product over frame windows)."""
        norm, conv = (self.in_layers[0], self.in_layers[2]) if which == 0 else (self.out_layers[0], self.out_layers[3])
        frames_major = isinstance(conv, FrameConv) and dispatch.time_conv_impl(
            self.ops, x.shape[-2] * x.shape[-1], False) == "frame_conv"
        return dispatch.norm_silu(self.ops, norm, x, add, frames_major)

    def _embedding(self, emb: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The projected embedding, shaped to add to h: (n, C, 1, 1), or (b, C, frames, 1, 1)."""
        e = self.emb_layers(emb).type(h.dtype)
        if self.emb_time_major:
            e = e.transpose(1, 2)
        while e.dim() < h.dim():
            e = e[..., None]
        return e


class VideoResBlock(ResBlock):
    """A 2-D ResBlock (``spatial``), then a 3-D ResBlock along the b·T·V frame axis, blended by
    ``time_mixer``."""

    def __init__(self, ch: int, emb_ch: int, out_ch: int | None = None, time_kernel=(3, 1, 1)):
        super().__init__(ch, emb_ch, out_ch)
        out = self.out_channels
        self.time_mix_blocks = ResBlock(out, emb_ch, out, dims=3, kernel=tuple(time_kernel), emb_time_major=True)
        self.time_mixer = AlphaBlender()

    def forward(self, x: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        x = self.spatial(x, ctx.emb)
        n = ctx.n_frames
        x5 = rearrange(x, "(b f) c h w -> b c f h w", f=n)  # a view: frames-major memory
        xt = self.time_mix_blocks(x5, rearrange(ctx.emb, "(b f) e -> b f e", f=n))
        return rearrange(self.time_mixer(x5, xt), "b c f h w -> (b f) c h w")

    def spatial(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The 2-D ResBlock (its own method, so that the blocks compile scope compiles it alone)."""
        return ResBlock.forward(self, x, emb)


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
        s = x.shape[1]
        x = rearrange(x, "(g n) s c -> (g s) n c", n=n)
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2.cross(self.norm2, x, context)
        x = self.ff(self.norm3(x)) + x
        return rearrange(x, "(g s) n c -> (g n) s c", s=s)


class TransformerLayer(nn.Module):
    """What the UNets' attention layers share (SP4D's SpatioTemporalTransformer, SVD's
    SpatialVideoTransformer): GroupNorm and a linear ``proj_in`` from (N, C, h, w) to token rows
    (N, h·w, heads·dim_head), and one spatial TransformerBlock; each subclass adds its temporal
    blocks and its ``proj_out`` (official key names)."""

    def __init__(self, ch: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.in_channels = ch
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.proj_in = nn.Linear(ch, heads * dim_head)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(heads * dim_head, heads, dim_head, context_dim)])

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, h, w) -> proj_in(GroupNorm(x)) as rows (N, h·w, heads·dim_head)."""
        return self.proj_in(rearrange(self.norm(x), "n c h w -> n (h w) c"))


class SpatioTemporalTransformer(TransformerLayer):
    """Spatial transformer, then "camera" and "motion" time-mix blocks, each alpha-blended.

    Keys follow the official block (norm, proj_in, transformer_blocks, time_mix_blocks,
    motion_blocks, time_mix_time_embed, time_mix_motion_embed, time_mixer, time_mixer_motion,
    proj_out). The regroupings reproduce the official tensor reshapes exactly (reference §3):
    the camera block attends over 12 consecutive rows of the (batch, view, pixel) order at a
    fixed frame, the motion block over the T frames at each (view, pixel).
    """

    def __init__(self, ch: int, heads: int, dim_head: int, context_dim: int, view_emb_dim: int,
                 motion_context_dim: int):
        super().__init__(ch, heads, dim_head, context_dim)
        inner = heads * dim_head
        self.time_mix_blocks = nn.ModuleList([TimeMixBlock(inner, heads, dim_head, context_dim)])
        self.motion_blocks = nn.ModuleList([TimeMixBlock(inner, heads, dim_head, motion_context_dim)])
        self.time_mix_time_embed = mlp(view_emb_dim, 4 * ch, ch)
        self.time_mix_motion_embed = mlp(ch, 4 * ch, ch)
        self.time_mixer = AlphaBlender()
        self.time_mixer_motion = AlphaBlender()
        self.proj_out = OutLinear(inner, ch)

    def forward(self, x: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        """x (b·T·V, C, h, w) -> same; rows p = pixels (h·w) of a frame, c = channels."""
        context, T, V = ctx.context, ctx.n_time, ctx.n_view
        c, h, w = x.shape[1:]
        x_in = x
        cond_view = F.interpolate(ctx.cond_view, size=(h, w), mode="bilinear")
        spatial_ctx = repeat(context, "b t d -> (b t v) 1 d", v=V)  # each frame's CLIP token
        camera_ctx = repeat(context, "b t d -> (b t p) 1 d", p=h * w)
        motion_ctx = rearrange(cond_view, "bv d h w -> (bv h w) 1 d")

        x = self.tokens(x)
        b = context.shape[0]
        frames = torch.arange(T, device=x.device).repeat(b)
        emb_time = self.time_mix_motion_embed(timestep_embedding(frames, c).to(x.dtype))[:, None]  # (b·T, 1, C)
        emb_view = self.time_mix_time_embed(rearrange(ctx.emb, "(b t v) e -> b t v e", t=T, v=V)[:, 0].flatten(0, 1))
        emb_view = repeat(emb_view, "bv c -> (bv p) 1 c", p=h * w)  # (b·V·hw, 1, C)

        x = self.transformer_blocks[0](x, spatial_ctx)
        # camera: rows (b, v, p), sequence over t; the block then groups rows by V
        x = rearrange(x, "(b t v) p c -> (b v p) t c", t=T, v=V)
        x = self.time_mixer(x, self.time_mix_blocks[0](x + emb_view, camera_ctx, V))
        # motion: rows (b, t), sequence over (v, p); the block groups rows by T
        x = rearrange(x, "(b v p) t c -> (b t) (v p) c", v=V, p=h * w)
        x = self.time_mixer_motion(x, self.motion_blocks[0](x + emb_time, motion_ctx, T))
        x = rearrange(self.proj_out(x), "bt (v h w) c -> (bt v) c h w", v=V, h=h)
        return x + x_in


class CrossNetworkLayer(nn.Module):
    """BiDiFuse: f = conv1×1(ReLU(conv1×1([h1, h2]))); both branches get + f.

    Given the next output block's skips (OpChoices.skips_in_fusion), each fused branch comes back
    concatenated with its skip (that block's input): a compiled graph then writes the sums straight
    into the concatenation, instead of an eager torch.cat reading and writing them once more."""

    def __init__(self, ch: int):
        super().__init__()
        self.fusion_conv = nn.Sequential(nn.Conv2d(2 * ch, ch, 1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, h1: torch.Tensor, h2: torch.Tensor, s1: torch.Tensor | None = None,
                s2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.fusion_conv(torch.cat([h1, h2], dim=1))
        if s1 is None:
            return h1 + f, h2 + f
        return torch.cat([h1 + f, s1], dim=1), torch.cat([h2 + f, s2], dim=1)
