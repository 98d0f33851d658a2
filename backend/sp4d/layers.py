"""The UNet's small building blocks: embeddings, norms, convolutions, attention, feed-forward.

Modules that have more than one implementation of their op (UsesOps) call dispatch.py with their
``ops``; their parameters and keys are those of the official modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import dispatch
from .options import UsesOps


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of a 1-D tensor (values cast to float32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(UsesOps, nn.GroupNorm):
    """The UNet's GroupNorm (keys weight, bias), float32 statistics as the official code's
    GroupNorm32: which implementation runs is dispatch.unet_group_norm's choice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dispatch.unet_group_norm(self.ops, x, self.num_groups, self.weight, self.bias, self.eps)


class FrameConv(UsesOps, nn.Conv3d):
    """nn.Conv3d with a (k, 1, 1) kernel (keys weight, bias): the time ResBlocks' convolution along
    the frame axis, computed as dispatch.time_conv picks by frame size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dispatch.time_conv(self.ops, self, x)


class EdgeConv(UsesOps, nn.Conv2d):
    """nn.Conv2d (keys weight, bias) for the UNet's first and last layers, whose few input or
    output channels leave cuDNN's kernels far from their memory bound on large latents: there one
    matrix product (dispatch.edge_conv), elsewhere cuDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dispatch.edge_conv(self.ops, self, x)


def unet_norm(ch: int) -> GroupNorm32:
    return GroupNorm32(32, ch)


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Linear, SiLU, Linear (keys .0 and .2)."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


class OutLinear(UsesOps, nn.Linear):
    """nn.Linear (keys weight, bias) for the output projections (attention's to_out, the
    feed-forward's second layer, the transformer's proj_out): dispatch.out_linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dispatch.out_linear(self.ops, x, self.weight, self.bias)


class Attention(UsesOps, nn.Module):
    """Multi-head attention with bias-free q/k/v projections (keys to_q, to_k, to_v, to_out.0)."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(OutLinear(inner, query_dim), nn.Identity())

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """(b, n, C) -> (b, n, C); with a single context token, (b, 1, C), which broadcasts over
        the n queries: softmax over one key is 1, so every query gets that key's value."""
        ctx = x if context is None else context
        b, n, _ = x.shape
        if ctx.shape[1] == 1:
            return self.to_out(self.to_v(ctx))
        if context is None:  # self-attention: one product for q, k and v (x read once, one wider GEMM)
            w = torch.cat((self.to_q.weight, self.to_k.weight, self.to_v.weight))
            q, k, v = F.linear(x, w).view(b, n, 3, self.heads, -1).unbind(2)
        else:
            q, k, v = (p(t).view(b, t.shape[1], self.heads, -1)
                       for p, t in ((self.to_q, x), (self.to_k, ctx), (self.to_v, ctx)))
        return self.to_out(dispatch.attention(self.ops, q, k, v))

    def cross(self, norm: nn.Module, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x + self(norm(x), context), the pre-norm residual cross-attention. A single context
        token makes the attention's output independent of x: computed once per row of
        ``context`` and broadcast, with no norm of x and no projection of every token."""
        return x + self(x if context.shape[1] == 1 else norm(x), context)


class GEGLU(UsesOps, nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dispatch.geglu(self.ops, x, self.proj.weight, self.proj.bias)


class FeedForward(nn.Module):
    """GEGLU feed-forward, width ×4 (keys net.0.proj, net.2)."""

    def __init__(self, dim: int, dim_out: int | None = None, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Identity(), OutLinear(inner, dim_out or dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AlphaBlender(nn.Module):
    """alpha·spatial + (1 − alpha)·temporal with alpha = sigmoid(mix_factor) (key mix_factor).

    The official blocks pass an all-zero image-only indicator, so alpha never becomes 1.
    """

    def __init__(self, alpha: float = 0.0):
        super().__init__()
        self.mix_factor = nn.Parameter(torch.tensor([float(alpha)]))

    def forward(self, x_spatial: torch.Tensor, x_temporal: torch.Tensor) -> torch.Tensor:
        # a·s + (1 − a)·t as one fused lerp t + a·(s − t) (equal up to float rounding)
        dt = x_temporal.dtype  # the two can differ under autocast (a precision comparison runs one)
        return torch.lerp(x_temporal, x_spatial.to(dt), torch.sigmoid(self.mix_factor).to(dt))
