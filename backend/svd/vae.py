"""SVD's first stage: the KL encoder (SP4D's) and the temporal ``VideoDecoder``.

The VideoDecoder is SP4D's KL decoder (backend/sp4d/vae.py) where every ResnetBlock is followed by
a 3-D ResBlock along the frames of its chunk (kernel (3, 1, 1), zero padding at the chunk's first
and last frame, GroupNorm over all frames of the chunk, eps 1e-5, float32 statistics), blended
α·temporal + (1 − α)·spatial with α = sigmoid(mix_factor) (the UNet's blend is the other way
round), and whose conv_out is followed by a 3-D convolution that replaces its output. Frames are
decoded in chunks, and the temporal layers see only the frames of their chunk: the result depends
on the chunk size (the demo's ``decoding_t`` 7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..sp4d.layers import FrameConv
from ..sp4d.unet_blocks import ResBlock
from ..sp4d.vae import Decoder, ResnetBlock


class TimeResBlock(ResBlock):
    """SP4D's 3-D ResBlock without an embedding (keys in_layers, out_layers): x (b, C, t, h, w)."""

    def __init__(self, ch: int, kernel=(3, 1, 1)):
        super().__init__(ch, 1, ch, dims=3, kernel=tuple(kernel))
        del self.emb_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[2](self._norm_silu(0, x))
        return x + self.out_layers[3](self._norm_silu(1, h))


class VAEVideoResBlock(ResnetBlock):
    """ResnetBlock, then TimeResBlock over the chunk's frames, blended α·temporal + (1 − α)·spatial."""

    def __init__(self, cin: int, cout: int, kernel=(3, 1, 1)):
        super().__init__(cin, cout)
        self.time_stack = TimeResBlock(cout, kernel)
        self.mix_factor = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x (b·t, C, h, w) with t = ``frames`` -> (b·t, C', h, w)."""
        x = rearrange(ResnetBlock.forward(self, x), "(b t) c h w -> b c t h w", t=frames)
        a = torch.sigmoid(self.mix_factor).to(x.dtype)
        x = a * self.time_stack(x) + (1.0 - a) * x
        return rearrange(x, "b c t h w -> (b t) c h w")


class TimeConvOut(nn.Conv2d):
    """conv_out (keys weight, bias) whose output a Conv3d along the frames (``time_mix_conv``)
    replaces: (b·t, C, h, w) -> (b·t, out, h, w)."""

    def __init__(self, cin: int, cout: int, kernel=(3, 1, 1)):
        super().__init__(cin, cout, 3, padding=1)
        self.time_mix_conv = FrameConv(cout, cout, tuple(kernel), padding=tuple(k // 2 for k in kernel))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = rearrange(super().forward(x), "(b t) c h w -> b c t h w", t=frames)
        return rearrange(self.time_mix_conv(x), "b c t h w -> (b t) c h w")


class VideoDecoder(Decoder):
    """Latents (t, z, h, w) of one chunk -> images (t, 3, 8h, 8w); keys of the official VideoDecoder."""

    def __init__(self, video_kernel_size=(3, 1, 1), **ddconfig):
        super().__init__(**ddconfig)
        k = tuple(video_kernel_size)

        def video(blk: ResnetBlock) -> VAEVideoResBlock:
            return VAEVideoResBlock(blk.conv1.in_channels, blk.conv1.out_channels, k)

        self.mid.block_1, self.mid.block_2 = video(self.mid.block_1), video(self.mid.block_2)
        for level in self.up:
            level.block = nn.ModuleList([video(b) for b in level.block])
        self.conv_out = TimeConvOut(self.conv_out.in_channels, self.conv_out.out_channels, k)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """One chunk: all of z's frames are one video (the temporal layers see them all)."""
        t = z.shape[0]
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h, t)), t)
        for i in reversed(range(len(self.up))):
            for blk in self.up[i].block:
                h = blk(h, t)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)), t)
