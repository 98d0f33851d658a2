"""The KL autoencoder: encoder (conditioning latents) and the dual decoder (RGB | part)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import dispatch
from .options import UsesOps


class VAEGroupNorm(UsesOps, nn.GroupNorm):
    """nn.GroupNorm (keys weight, bias) computed as dispatch.vae_group_norm picks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dispatch.vae_group_norm(self.ops, x, self.num_groups, self.weight, self.bias, self.eps)


def vae_norm(ch: int) -> nn.GroupNorm:
    return VAEGroupNorm(32, ch, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = vae_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = vae_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(UsesOps, nn.Module):
    """Single-head self-attention over all pixels (1×1 conv projections; dispatch.vae_attention)."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = vae_norm(ch)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q, k, v = (p(h).flatten(2).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = dispatch.vae_attention(self.ops, q, k, v)
        return x + self.proj_out(a.transpose(1, 2).reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(ch: int) -> nn.Module:
    m = nn.Module()
    m.block_1, m.attn_1, m.block_2 = ResnetBlock(ch, ch), AttnBlock(ch), ResnetBlock(ch, ch)
    return m


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult, num_res_blocks: int, in_channels: int, z_channels: int,
                 double_z: bool = True, attn_resolutions=(), **unused):
        super().__init__()
        if attn_resolutions:
            raise ValueError("attention inside the VAE levels is not implemented (none in sp4d.yaml)")
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        mults = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        for i, m in enumerate(ch_mult):
            level = nn.Module()
            cin = ch * mults[i]
            level.block = nn.ModuleList([ResnetBlock(cin if j == 0 else ch * m, ch * m) for j in range(num_res_blocks)])
            level.attn = nn.ModuleList()
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(ch * m)
            self.down.append(level)
        top = ch * ch_mult[-1]
        self.mid = _mid(top)
        self.norm_out = vae_norm(top)
        self.conv_out = nn.Conv2d(top, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for blk in level.block:
                h = blk(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult, num_res_blocks: int, out_ch: int, z_channels: int,
                 attn_resolutions=(), **unused):
        super().__init__()
        if attn_resolutions:
            raise ValueError("attention inside the VAE levels is not implemented (none in sp4d.yaml)")
        top = ch * ch_mult[-1]
        self.z_channels = z_channels
        self.conv_in = nn.Conv2d(z_channels, top, 3, padding=1)
        self.mid = _mid(top)
        self.up = nn.ModuleList([None] * len(ch_mult))
        cin = top
        for i in reversed(range(len(ch_mult))):
            level = nn.Module()
            cout = ch * ch_mult[i]
            level.block = nn.ModuleList([ResnetBlock(cin if j == 0 else cout, cout) for j in range(num_res_blocks + 1)])
            level.attn = nn.ModuleList()
            cin = cout
            if i != 0:
                level.upsample = Upsample(cout)
            self.up[i] = level
        self.norm_out = vae_norm(cin)
        self.conv_out = nn.Conv2d(cin, out_ch, 3, padding=1)

    @property
    def upsampling(self) -> int:
        """Image side / latent side."""
        return 2 ** (len(self.up) - 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i in reversed(range(len(self.up))):
            for blk in self.up[i].block:
                h = blk(h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class DualDecoder(Decoder):
    """Decodes [RGB latent | part latent] with the same weights; images side by side in width."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(n, 2·z_channels, h, w) -> (n, 3, H, 2W)."""
        z1, z2 = z.chunk(2, dim=1)
        return torch.cat([self.single(z1), self.single(z2)], dim=-1)

    def single(self, z: torch.Tensor) -> torch.Tensor:
        """One latent half -> its images (its own method, so that the compile scopes compile it alone)."""
        return Decoder.forward(self, z)


class ModeOnlyAutoencoder(nn.Module):
    """The conditioning VAE: encode → quant_conv → mean (no scale). Its decoder and
    post_quant_conv exist only so that official checkpoints' keys are checked strictly; loading
    drops them (drop_decoder) before reading any tensor, as nothing runs them."""

    def __init__(self, ddconfig: dict, embed_dim: int):
        super().__init__()
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        z2 = 2 * ddconfig["z_channels"]
        self.quant_conv = nn.Conv2d(z2, 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

    def drop_decoder(self) -> None:
        """Forget the unused decoder half (~50 M parameters a copy at full size)."""
        self.decoder = None
        self.post_quant_conv = None

    def moments(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.moments(x).chunk(2, dim=1)[0]
