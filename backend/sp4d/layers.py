"""Small building blocks shared by the UNet, the VAE and the image tower."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of a 1-D tensor (values cast to float32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """The UNet's GroupNorm, computed in float32 as the official code does. For bfloat16 inputs
    the native kernel is used instead (it accumulates its statistics in float32): the float32
    round trip cost two full-tensor casts per norm, about a sixth of a denoising step."""

    FRAMES_STATS = True  # compiled 5-D inputs: group_norm_by_image (False: the generic decomposition, to compare)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5 and self.FRAMES_STATS and torch.compiler.is_compiling():
            return group_norm_by_image(x, self.num_groups, self.weight, self.bias, self.eps)
        if x.dtype == torch.bfloat16:
            return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(),
                            self.eps).type(x.dtype)


def group_norm_by_image(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,
                        eps: float) -> torch.Tensor:
    """GroupNorm of a (b, c, ..., h, w) tensor, statistics in float32, for compiled graphs.

    Few statistics over millions of values each: the time ResBlocks normalise over all 48 frames
    (b·groups = 64 statistics, the input a transposed view of (b, frames, c, h, w) memory), the VAE
    decoder over 576² images. The generic decomposition reduces each group in one long strided pass
    (≈ 9× its memory time on an H100, and 40 % of a compiled decode). Here each (h, w) image plane is
    summed first (contiguous rows, whichever the layout), then the few partial sums per group; the
    variance is a second pass around the mean."""
    b, c = x.shape[:2]
    per = c // groups
    count = x[0, :per].numel()
    ft = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(ft)
    shape = (1, c) + (1,) * (x.dim() - 2)

    def group_sum(t: torch.Tensor) -> torch.Tensor:  # (b, c, ..., h, w) -> (b, c, 1, ...), each group's sum
        s = t.sum(dim=(-2, -1)).view(b, groups, -1).sum(-1)
        return s.repeat_interleave(per, dim=1).view((b,) + shape[1:])

    d = xf - group_sum(xf) / count
    rstd = torch.rsqrt(group_sum(d * d) / count + eps)
    return (d * rstd * weight.to(ft).view(shape) + bias.to(ft).view(shape)).to(x.dtype)


def frame_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Convolution with a (k, 1, 1) kernel along the frame axis of x (b, c, frames, h, w), zero
    padding k//2: out[t] = Σ_j W_j · x[t + j − k//2], as one batched matrix product.

    The time ResBlocks get x as a transposed view of (b, frames, c, h, w) memory, so k
    consecutive frames are one contiguous (k·c, h·w) matrix: every output frame is W (c_out, k·c)
    times such a window. Each video is followed by k//2 zero frames (and the first preceded by
    them), so windows never mix videos; a window starting at each padded position gives b·(frames
    + k//2) products, of which the k//2 per video that start in the padding are dropped (2 % more
    work at 48 frames). cuDNN instead converts the transposed view (or NCDHW) to its own layout
    first. The output is a (b, c_out, frames, h, w) view of frames-major memory."""
    b, c, n, h, w = x.shape
    co, k = weight.shape[0], weight.shape[2]
    if weight.shape[1:] != (c, k, 1, 1) or k % 2 == 0:
        raise ValueError(f"frame_conv: weight (c_out, {c}, k odd, 1, 1) expected, got {tuple(weight.shape)}")
    p = k // 2
    frames = x.transpose(1, 2).reshape(b, n, c * h * w)
    padded = F.pad(F.pad(frames, (0, 0, 0, p)).reshape(b * (n + p), c * h * w), (0, 0, p, p))
    windows = padded.as_strided((b * (n + p), k * c, h * w), (c * h * w, h * w, 1))
    wk = weight[:, :, :, 0, 0].permute(0, 2, 1).reshape(1, co, k * c).to(x.dtype)  # (1, c_out, [j, c])
    out = torch.bmm(wk.expand(b * (n + p), co, k * c), windows)
    out = out.view(b, n + p, co, h, w)[:, :n].transpose(1, 2)
    return out if bias is None else out + bias.to(x.dtype).view(co, 1, 1, 1)


class FrameConv(nn.Conv3d):
    """nn.Conv3d with a (k, 1, 1) kernel (keys weight, bias) for the time ResBlocks, computed the
    way that measured fastest on an H100 for the frame size (scripts/bench_kernels.py, timeres):
    frame_conv for large frames (72² latents: whole compiled block 3.75 -> 2.87 ms); cuDNN with
    channels-last weights for mid-size frames in compiled graphs (36²: 2.30 -> 1.65 ms); cuDNN
    as is below (18²: both alternatives slower)."""

    FRAME_MIN = 4096  # h·w from which frame_conv is used
    CHANNELS_LAST_MIN = 1024  # h·w from which compiled graphs give cuDNN channels-last weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = x.shape[-2] * x.shape[-1]
        if hw >= self.FRAME_MIN:
            return frame_conv(x, self.weight, self.bias)
        w = self.weight
        if hw >= self.CHANNELS_LAST_MIN and torch.compiler.is_compiling():
            w = w.contiguous(memory_format=torch.channels_last_3d)
        return F.conv3d(x, w, self.bias, padding=self.padding)


def conv_few_in(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Stride-1, same-size 2-D convolution for few input channels (the UNet's first layer: 8 in,
    320 out) as one product: the k·k shifted copies of x stacked as c·k·k rows (im2col, with a row
    of ones for the bias, padded to a multiple of 8 rows for the tensor cores) times the weight.
    The output is NCHW as the product writes it. cuDNN's kernels for 8 input channels run far from
    the memory bound this has (docs/perf.md row 28)."""
    n, c, h, w = x.shape
    co, _, kh, kw = weight.shape
    kk = c * kh * kw
    rows = -(-(kk + 1) // 8) * 8
    xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
    s0, s1, s2, s3 = xp.stride()
    cols = x.new_empty(n, rows, h, w)
    cols[:, :kk].view(n, c, kh, kw, h, w).copy_(xp.as_strided((n, c, kh, kw, h, w), (s0, s1, s2, s3, s2, s3)))
    cols[:, kk] = 1
    cols[:, kk + 1:] = 0
    wk = torch.zeros(co, rows, dtype=x.dtype, device=x.device)
    wk[:, :kk] = weight.reshape(co, kk)
    if bias is not None:
        wk[:, kk] = bias
    return torch.bmm(wk.expand(n, co, rows), cols.view(n, rows, h * w)).view(n, co, h, w)


def conv_few_out(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Stride-1, same-size 2-D convolution for few output channels (the UNet's last layer: 320 in,
    4 out) as one product and a shifted sum: Y = W (c_out·k·k, c) · x (c, h·w) gives every tap's
    contribution at every pixel, and out[y, x] = Σ_ij Y_ij[y + i − k//2, x + j − k//2]. Reads x once;
    the taps are summed in float32. cuDNN's kernels for 4 output channels take ~30× this one's
    memory bound (docs/perf.md row 28)."""
    n, c, h, w = x.shape
    co, _, kh, kw = weight.shape
    wk = weight.permute(0, 2, 3, 1).reshape(co * kh * kw, c).to(x.dtype)
    y = torch.bmm(wk.expand(n, -1, c), x.reshape(n, c, h * w)).view(n, co, kh, kw, h, w)
    yp = F.pad(y, (kw // 2, kw // 2, kh // 2, kh // 2))
    out = yp[:, :, 0, 0, :h, :w].to(torch.promote_types(x.dtype, torch.float32))
    for i in range(kh):
        for j in range(kw):
            if i or j:
                out += yp[:, :, i, j, i:i + h, j:j + w]
    if bias is not None:
        out += bias.view(co, 1, 1)
    return out.to(x.dtype)


class EdgeConv(nn.Conv2d):
    """nn.Conv2d (keys weight, bias) for the UNet's first and last layers, whose few input or
    output channels leave cuDNN's kernels far from their memory bound on large latents: there one
    matrix product (conv_few_in, conv_few_out), elsewhere cuDNN."""

    # h·w from which the products are used (scripts/bench_kernels.py edge, H100: the input product
    # wins at 36² and 72², the output product only at 72²)
    MIN_PIXELS_IN, MIN_PIXELS_OUT = 1024, 4096
    FEW = 16  # input or output channels counted as few

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, pixels = self.kernel_size, x.shape[-2] * x.shape[-1]
        plain = (self.stride != (1, 1) or self.dilation != (1, 1) or self.groups != 1 or k[0] % 2 == 0
                 or k[1] % 2 == 0 or self.padding != (k[0] // 2, k[1] // 2) or self.padding_mode != "zeros")
        if not plain and self.in_channels <= self.FEW and pixels >= self.MIN_PIXELS_IN:
            return conv_few_in(x, self.weight, self.bias)
        if not plain and self.out_channels <= self.FEW and pixels >= self.MIN_PIXELS_OUT:
            return conv_few_out(x, self.weight, self.bias)
        return super().forward(x)


def unet_norm(ch: int) -> GroupNorm32:
    return GroupNorm32(32, ch)


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Linear, SiLU, Linear (keys .0 and .2)."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


def short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v over a few keys, written as multiply-reduce for compiled graphs.

    q: (..., n, d), k and v: (..., m, d) with n, m small (the camera and motion blocks attend over
    12 views or 4 frames). Flash kernels tile 64 or more queries per block, so most of each tile
    would be empty; compiled, these lines become fused reductions that read q, k and v once.
    Computed in float32 (the softmax at least as exact as the fused kernels')."""
    dt = q.dtype
    q, k, v = q.float(), k.float(), v.float()
    s = (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1) * q.shape[-1] ** -0.5  # (..., n, m)
    return (s.softmax(-1).unsqueeze(-1) * v.unsqueeze(-3)).sum(-2).to(dt)


def sdpa_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, max_batch_heads: int = 65535) -> torch.Tensor:
    """PyTorch's fused attention on (b, heads, n, d); CUDA attention kernels limit batch·heads
    per launch (grid size), so larger batches go in chunks."""
    b, step = q.shape[0], max(1, max_batch_heads // q.shape[1])
    if b <= step:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.cat([F.scaled_dot_product_attention(q[i:i + step], k[i:i + step], v[i:i + step])
                      for i in range(0, b, step)])


def geglu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """a·gelu(g) with [a | g] = x·weightᵀ + bias (the plain path of kernels.geglu_linear)."""
    a, gate = F.linear(x, weight, bias).chunk(2, dim=-1)
    return a * F.gelu(gate)


class OutLinear(nn.Linear):
    """nn.Linear (keys weight, bias) for the output projections (attention's to_out, the
    feed-forward's second layer, the transformer's proj_out). In compiled half-precision graphs the
    bias is added after the product, in float32, so that inductor fuses it into the consumers (the
    residual sums and LayerNorms) instead of passing it to cuBLAS, whose bias-epilogue kernels for
    (497664 × 320)·(320 × 320) took 0.34 ms against 0.18 ms without (docs/perf.md row 30). The
    product is rounded once more before the bias: within half precision's own rounding."""

    UNFUSED = True  # off: the plain linear (bench_gpu --fused-bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.UNFUSED and self.bias is not None and x.dtype in (torch.bfloat16, torch.float16)
                and torch.compiler.is_compiling()):
            return (F.linear(x, self.weight).float() + self.bias.float()).to(x.dtype)
        return super().forward(x)


class Attention(nn.Module):
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

    MAX_BATCH_HEADS = 65535  # see sdpa_chunked
    SHORT = 16  # sequences up to this length: kernels.short_attention, or short_attention when compiled

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
        short = max(n, ctx.shape[1]) <= self.SHORT
        if short and kernels.attention_usable(q):
            return self.to_out(kernels.short_attention(q, k, v))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if short and torch.compiler.is_compiling():
            out = short_attention(q, k, v)
        else:
            out = sdpa_chunked(q, k, v, self.MAX_BATCH_HEADS)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))

    def cross(self, norm: nn.Module, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x + self(norm(x), context), the pre-norm residual cross-attention. A single context
        token makes the attention's output independent of x: computed once per row of
        ``context`` and broadcast, with no norm of x and no projection of every token."""
        return x + self(x if context.shape[1] == 1 else norm(x), context)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the fused kernel: the 2×-wide projection never reaches memory
        fn = kernels.geglu_linear if kernels.usable(x) else geglu
        return fn(x, self.proj.weight, self.proj.bias)


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
        a = torch.sigmoid(self.mix_factor).to(x_spatial.dtype)
        return torch.lerp(x_temporal, x_spatial, a)
