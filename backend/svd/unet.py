"""SVD's VideoUNet: SP4D's video UNet layout (sp4d.unet.SpatialTemporalUNet) with SVD's blocks.

Input x: (b·T, 4 + 4, h, w) = [noisy latent · c_in | conditioning latent]; output (b·T, 4, h, w).
emb = MLP_t(sinusoid(c_noise)) + MLP_y(vector); skips pushed after every input block and
concatenated before every output block. h and w multiples of ``downsampling``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..sp4d.options import UsesOps
from ..sp4d.unet import SpatialTemporalUNet
from .blocks import SpatialVideoTransformer, SVDContext, SVDVideoResBlock

CONFIG_KEYS = ("in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions",
               "channel_mult", "num_head_channels", "context_dim", "adm_in_channels", "transformer_depth")


class VideoUNet(UsesOps, SpatialTemporalUNet):
    """Keys of the official ``VideoUNet`` (time_embed, label_emb, input_blocks, middle_block,
    output_blocks, out)."""

    channels_last = False  # the weights' layout (sp4d.unet.use_channels_last)

    def __init__(self, video_kernel_size=(3, 1, 1), **config):
        super().__init__(time_kernel_size=tuple(video_kernel_size),
                         **{k: config[k] for k in CONFIG_KEYS if k in config})

    def res_block(self, ch: int, out: int) -> nn.Module:
        return SVDVideoResBlock(ch, self.emb_channels, out, self.time_kernel_size)

    def attn_block(self, ch: int) -> nn.Module:
        hd = self.num_head_channels
        return SpatialVideoTransformer(ch, ch // hd, hd, self.context_dim)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, vector: torch.Tensor,
                n_time: int, image_only: bool = False) -> torch.Tensor:
        """x (b·T, 8, h, w), c_noise (b·T,), context (b·T, 1, D), vector (b·T, adm) -> (b·T, 4, h, w)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.run_blocks(x, SVDContext(self.embed(c_noise, vector), context, None, n_time, 1, image_only))
