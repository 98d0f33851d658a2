"""The SV4D 2.0 UNet (one branch) and SP4D's dual UNet with BiDiFuse fusion layers."""

from __future__ import annotations

import torch
from torch import nn

from .layers import EdgeConv, mlp, timestep_embedding, unet_norm
from .options import UsesOps
from .unet_blocks import CrossNetworkLayer, Downsample, SpatioTemporalTransformer, UNetContext, Upsample, VideoResBlock


class Seq(nn.ModuleList):
    """Runs its children in order, giving ``ctx`` to the blocks that take it (the video blocks,
    and any block whose class sets ``takes_ctx``: SVD's, backend/svd)."""

    def forward(self, h: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        for m in self:
            takes = isinstance(m, (VideoResBlock, SpatioTemporalTransformer)) or getattr(m, "takes_ctx", False)
            h = m(h, ctx) if takes else m(h)
        return h


class SpatialTemporalUNet(nn.Module):
    """One branch (keys of ``SpatialUNetModelWithTime``): input_blocks, middle_block,
    output_blocks, out, plus time_embed and label_emb (SP4D reads only net1's copies).

    The layout (levels, skips, where attention sits) is the one of every SVD-family video UNet;
    ``res_block`` and ``attn_block`` make the blocks, so that a subclass with other blocks
    (backend/svd: SVD's VideoUNet) shares it."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
                 attention_resolutions, channel_mult, num_head_channels: int, context_dim: int,
                 adm_in_channels: int, motion_context_dim: int = 4, time_kernel_size=(3, 1, 1),
                 transformer_depth: int = 1, **unused):
        super().__init__()
        if transformer_depth != 1:
            raise ValueError("only transformer_depth 1 is implemented (as in sp4d.yaml)")
        mc = model_channels
        E = 4 * mc
        self.model_channels = mc
        self.emb_channels = E
        self.time_kernel_size = time_kernel_size
        self.num_head_channels, self.context_dim = num_head_channels, context_dim
        self.adm_in_channels, self.motion_context_dim = adm_in_channels, motion_context_dim
        self.time_embed = mlp(mc, E, E)
        self.label_emb = nn.Sequential(mlp(adm_in_channels, E, E))
        res, attn = self.res_block, self.attn_block

        self.input_blocks = nn.ModuleList([Seq([EdgeConv(in_channels, mc, 3, padding=1)])])
        chans, ch, ds = [mc], mc, 1  # ds: the latents' downsampling at the current level
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in attention_resolutions:
                    layers.append(attn(ch))
                self.input_blocks.append(Seq(layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(Seq([Downsample(ch)]))
                chans.append(ch)
                ds *= 2
        self.downsampling = ds  # latent sides must be multiples of this
        self.middle_block = Seq([res(ch, ch), attn(ch), res(ch, ch)])
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + chans.pop(), mc * mult)]
                ch = mc * mult
                if ds in attention_resolutions:
                    layers.append(attn(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(unet_norm(ch), nn.SiLU(), EdgeConv(mc, out_channels, 3, padding=1))
        # output channels of every block: the widths of the fusion layers
        self.block_channels = ([ch_of(b) for b in self.input_blocks], ch_of(self.middle_block),
                               [ch_of(b) for b in self.output_blocks])

    def res_block(self, ch: int, out: int) -> nn.Module:
        """A video ResBlock from ``ch`` to ``out`` channels."""
        return VideoResBlock(ch, self.emb_channels, out, self.time_kernel_size)

    def attn_block(self, ch: int) -> nn.Module:
        """The attention block of a level with ``ch`` channels."""
        hd = self.num_head_channels
        return SpatioTemporalTransformer(ch, ch // hd, hd, self.context_dim, self.adm_in_channels,
                                         self.motion_context_dim)

    def run_blocks(self, x: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        """This branch alone on x (N, in_channels, h, w) with ``ctx`` -> (N, out_channels, h, w):
        input blocks (each output kept as a skip), middle block, output blocks (each on [h | the
        last skip]), out. SV4D 2.0's single branch and SVD's UNet run it; SP4D's two branches run
        their blocks in step with the fusion layers (DualSpatialTemporalUNet.forward)."""
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, ctx)
            skips.append(h)
        h = self.middle_block(h, ctx)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), ctx)
        return self.out(h)

    def embed(self, c_noise: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        """emb = MLP_t(sinusoidal(c_noise)) + MLP_y(vector)."""
        dt = self.time_embed[0].weight.dtype
        return (self.time_embed(timestep_embedding(c_noise, self.model_channels).to(dt))
                + self.label_emb(vector.to(dt)))


def ch_of(block: Seq) -> int:
    last = block[-1]
    return last.out_channels if hasattr(last, "out_channels") else last.in_channels


class DualSpatialTemporalUNet(UsesOps, nn.Module):
    """RGB branch ``net1`` and part branch ``net2`` fused after every block.

    Input x: (b·T·V, 2·(4 + 4), h, w) = [RGB latent | concat | part latent | concat];
    output: (b·T·V, 8, h, w) = [RGB | part]; h and w multiples of ``downsampling``.
    """

    def __init__(self, unet_config: dict):
        super().__init__()
        self.net1 = SpatialTemporalUNet(**unet_config)
        self.net2 = SpatialTemporalUNet(**unet_config)
        chans_in, ch_mid, chans_out = self.net1.block_channels
        self.input_cross_layers = nn.ModuleList([CrossNetworkLayer(c) for c in chans_in])
        self.middle_cross = CrossNetworkLayer(ch_mid)
        self.output_cross_layers = nn.ModuleList([CrossNetworkLayer(c) for c in chans_out])

    channels_last = False  # the weights' layout, set by use_channels_last

    @property
    def downsampling(self) -> int:
        """The factor by which the deepest level's latents are smaller than the input's."""
        return self.net1.downsampling

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, vector: torch.Tensor,
                cond_view: torch.Tensor, n_time: int, n_view: int) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h1, h2 = x.chunk(2, dim=1)
        ctx = UNetContext(self.net1.embed(c_noise, vector), context, cond_view, n_time, n_view)
        skips = []
        for b1, b2, fuse in zip(self.net1.input_blocks, self.net2.input_blocks, self.input_cross_layers,
                                strict=True):
            h1, h2 = fuse(b1(h1, ctx), b2(h2, ctx))
            skips.append((h1, h2))
        fuses = [self.middle_cross, *self.output_cross_layers]
        h1, h2 = self.net1.middle_block(h1, ctx), self.net2.middle_block(h2, ctx)
        for b1, b2, fuse in zip(self.net1.output_blocks, self.net2.output_blocks, fuses, strict=False):
            h1, h2 = self._fuse(fuse, h1, h2, skips.pop())  # each output block's input: [h | skip]
            h1, h2 = b1(h1, ctx), b2(h2, ctx)
        h1, h2 = fuses[-1](h1, h2)
        return torch.cat([self.net1.out(h1), self.net2.out(h2)], dim=1)

    def _fuse(self, fuse: CrossNetworkLayer, h1: torch.Tensor, h2: torch.Tensor,
              skip: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused branches, each concatenated with its skip (inside the fusion layer: see there)."""
        if self.ops.skips_in_fusion:
            return fuse(h1, h2, *skip)
        h1, h2 = fuse(h1, h2)
        return torch.cat([h1, skip[0]], 1), torch.cat([h2, skip[1]], 1)


def use_channels_last(unet: DualSpatialTemporalUNet, on: bool = True) -> None:
    """Lay the UNet's activations and convolution weights out channels-last (NHWC; NDHWC for the
    3-D time convolutions). The transformers work on (pixels, channels) rows, so their entry and
    exit become free views instead of transposing copies, and cuDNN convolves NHWC without
    converting layouts. Same results up to the order of float sums."""
    fmt2, fmt3 = (torch.channels_last, torch.channels_last_3d) if on else (torch.contiguous_format,) * 2
    for m in unet.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            m.weight.data = m.weight.data.contiguous(memory_format=fmt2 if m.weight.dim() == 4 else fmt3)
    unet.channels_last = on


def set_layout(unets, channels_last: bool) -> None:
    """use_channels_last on each UNet whose layout differs (a CFG split's replica included)."""
    for unet in {id(u): u for u in unets}.values():
        if unet.channels_last != channels_last:
            use_channels_last(unet, channels_last)
