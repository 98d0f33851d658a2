"""SVD's own UNet blocks (keys of the official VideoUNet): the video ResBlock with its time block
named ``time_stack`` and the spatial-video transformer (one temporal block with a frame-index
embedding, the temporal cross-attention reading frame 0's CLIP token).

Everything inside them is SP4D's (backend/sp4d/unet_blocks.py and layers.py), so the op
dispatch, Triton kernels and compile scopes apply unchanged. The frame axis of a batch is b·T
images, time-major within each video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import nn

from ..sp4d.layers import AlphaBlender, OutLinear, mlp, timestep_embedding
from ..sp4d.unet_blocks import TimeMixBlock, TransformerLayer, UNetContext, VideoResBlock


@dataclass
class SVDContext(UNetContext):
    """UNetContext with n_view 1, no view conditioning; ``image_only``: every frame is a still
    image (the official image_only_indicator all ones: the temporal parts' blend weight is 1 for
    the spatial side, so they are skipped). SVD sampling never sets it."""

    image_only: bool = False


class SVDVideoResBlock(VideoResBlock):
    """SP4D's video ResBlock (2-D ResBlock, 3-D ResBlock along the T frames, blended
    α·spatial + (1 − α)·temporal) with the time block under SVD's key ``time_stack``."""

    def __init__(self, ch: int, emb_ch: int, out_ch: int | None = None, time_kernel=(3, 1, 1)):
        super().__init__(ch, emb_ch, out_ch, time_kernel)
        self.time_stack = self._modules.pop("time_mix_blocks")

    @property
    def time_mix_blocks(self) -> nn.Module:  # what VideoResBlock.forward calls
        return self.time_stack

    def forward(self, x: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        """x (b·T, C, h, w) -> (b·T, C', h, w)."""
        if getattr(ctx, "image_only", False):
            return self.spatial(x, ctx.emb)
        return VideoResBlock.forward(self, x, ctx)


class SpatialVideoTransformer(TransformerLayer):
    """GroupNorm, linear proj_in; spatial TransformerBlock per frame (cross-attention to that
    frame's CLIP token); x_mix = x + MLP(sinusoid(frame index)); the temporal block over the T
    frames at every pixel (cross-attention to frame 0's token); α·spatial + (1 − α)·temporal;
    proj_out; + input. Keys: norm, proj_in, transformer_blocks, time_stack, time_pos_embed,
    time_mixer, proj_out."""

    takes_ctx = True  # sp4d.unet.Seq gives it the UNetContext
    compile_scopes = {"layers": "forward"}  # sp4d.compiled: a whole layer in the "layers" scope

    def __init__(self, ch: int, heads: int, dim_head: int, context_dim: int):
        super().__init__(ch, heads, dim_head, context_dim)
        inner = heads * dim_head
        self.time_stack = nn.ModuleList([TimeMixBlock(inner, heads, dim_head, context_dim)])
        self.time_pos_embed = mlp(ch, 4 * ch, ch)
        self.time_mixer = AlphaBlender()
        self.proj_out = OutLinear(inner, ch)

    def forward(self, x: torch.Tensor, ctx: SVDContext) -> torch.Tensor:
        """x (b·T, C, h, w), ctx.context (b·T, 1, D): each frame's CLIP token -> (b·T, C, h, w)."""
        T, context = ctx.n_time, ctx.context
        c, h, w = x.shape[1:]
        x_in = x
        x = self.transformer_blocks[0](self.tokens(x), context)
        if not getattr(ctx, "image_only", False):
            frames = torch.arange(T, device=x.device).repeat(x.shape[0] // T)
            emb = self.time_pos_embed(timestep_embedding(frames, c).to(x.dtype))[:, None]  # (b·T, 1, C)
            time_ctx = repeat(context[::T], "b one d -> (b p) one d", p=h * w)  # frame 0's token per pixel
            x = self.time_mixer(x, self.time_stack[0](x + emb, time_ctx, T))
        x = rearrange(self.proj_out(x), "n (h w) c -> n c h w", h=h, w=w)
        return x + x_in
