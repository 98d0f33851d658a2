"""The plain PyTorch forms of the ops that have several implementations (dispatch.py picks one).

Every function here computes the reference function of its op (up to the order of float sums);
where a second form exists it is because it runs faster somewhere, which dispatch.py decides from
the run's OpChoices. Shapes are given per function; no function keeps state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_norm_float32(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,
                       eps: float) -> torch.Tensor:
    """GroupNorm computed in float32 and cast back, as the official UNet's GroupNorm32 does."""
    return F.group_norm(x.float(), groups, weight.float(), bias.float(), eps).type(x.dtype)


def group_norm_by_image(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,
                        eps: float) -> torch.Tensor:
    """GroupNorm of a (b, c, ..., h, w) tensor, statistics in float32, written for compiled graphs.

    Few statistics over millions of values each: the time ResBlocks normalise over all 48 frames
    (b·groups statistics, the input a transposed view of (b, frames, c, h, w) memory), the VAE
    decoder over 576² images. Inductor's generic decomposition reduces each group in one long
    strided pass. Here each (h, w) image plane is summed first (contiguous rows, whichever the
    layout), then the few partial sums per group; the variance is a second pass around the mean."""
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


def conv_few_in(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Stride-1, same-size 2-D convolution for few input channels (the UNet's first layer: 8 in,
    320 out) as one product: the k·k shifted copies of x stacked as c·k·k rows (im2col, with a row
    of ones for the bias, padded to a multiple of 8 rows for the tensor cores) times the weight.
    The output is NCHW as the product writes it. cuDNN's kernels for 8 input channels run far from
    the memory bound this one has."""
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
    the taps are summed in float32. cuDNN's kernels for 4 output channels run far from the memory
    bound this one has."""
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


def product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v for one wide head (b, n, d) as two batched products: the scores in
    float32 (cuBLAS's float32 output of half-precision products), the softmax in float32, its
    result rounded to v's type for the second product, as flash kernels do. Flash kernels take
    heads up to 256 wide; for the VAE's 512-wide head PyTorch's memory-efficient kernel is slow in
    compiled graphs and eager SDPA falls back to float32 SIMT products. (On the CPU, which lacks
    bmm's out_dtype: float32 operands.)"""
    if q.is_cuda:
        s = torch.bmm(q, k.transpose(1, 2), out_dtype=torch.float32)
    else:
        s = torch.bmm(q.float(), k.float().transpose(1, 2))
    s = s * q.shape[-1] ** -0.5
    return torch.bmm(s.softmax(-1).to(v.dtype), v)


def geglu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """a·gelu(g) with [a | g] = x·weightᵀ + bias (the plain form of kernels.geglu_linear)."""
    a, gate = F.linear(x, weight, bias).chunk(2, dim=-1)
    return a * F.gelu(gate)


def linear_bias_apart(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """F.linear with the bias added after the product, in float32: in compiled half-precision
    graphs inductor then fuses the bias into the consumers (residual sums, LayerNorms) instead of
    passing it to cuBLAS, whose bias-epilogue kernels for the UNet's output projections are slower
    than the product alone. The product is rounded once more before the bias: within half
    precision's own rounding."""
    return (F.linear(x, weight).float() + bias.float()).to(x.dtype)
