"""GroupNorm, then SiLU, of the UNet ResBlocks' activations: eager half precision on the GPU.

The time ResBlocks normalise (b, c, frames, h, w) tensors whose (h, w) planes are contiguous but
whose frames and channels are not in NCDHW order (transposed views of frames-major memory).
Eagerly, F.group_norm first copies such a view to contiguous memory, then reduces each of the
b·32 groups (up to 5 M values each) with one thread block; SiLU and the embedding sum before the
second norm are more passes. Here a Triton program per (b, c, frame) plane computes the plane's
float32 sum and squared deviations; the groups' statistics follow from those few thousand numbers
(Chan's combination); a second kernel writes silu(x·a + s) straight into the layout the following
convolution reads. A constant per plane added before the norm (the ResBlock's embedding) only
moves that plane's mean, so it is folded into s. The spatial ResBlocks' NCHW images are the case
of one frame (no copy to save there, but the SiLU and embedding passes). Compiled graphs keep
functional.group_norm_by_image, which inductor fuses the same way; float32 and the CPU keep
F.group_norm (dispatch.norm_silu decides, with OpChoices.frame_norm).
"""

from __future__ import annotations

import torch

from . import kernels
from .kernels import triton


def usable(x: torch.Tensor) -> bool:
    """A 4-D or 5-D half-precision tensor with contiguous (h, w) planes where the Triton kernels run
    (eagerly: compiled graphs fuse these themselves)."""
    return (not torch.compiler.is_compiling() and kernels.usable(x) and x.dim() in (4, 5)
            and x.stride(-1) == 1 and x.stride(-2) == x.shape[-1])


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _plane_stats_kernel(x_ptr, sum_ptr, m2_ptr, C, F, sb, sc, sf, HW, BLOCK: tl.constexpr):
        plane = tl.program_id(0).to(tl.int64)  # (b, c, frame) order
        f = plane % F
        c = (plane // F) % C
        b = plane // (F * C)
        base = x_ptr + b * sb + c * sc + f * sf
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, HW, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            acc += tl.load(base + offs, mask=offs < HW, other=0.0).to(tl.float32)
        total = tl.sum(acc, axis=0)
        mean = total / HW
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, HW, BLOCK):  # deviations from the plane's mean: a second read, from cache
            offs = start + tl.arange(0, BLOCK)
            v = tl.load(base + offs, mask=offs < HW, other=0.0).to(tl.float32)
            d = tl.where(offs < HW, v - mean, 0.0)
            acc += d * d
        tl.store(sum_ptr + plane, total)
        tl.store(m2_ptr + plane, tl.sum(acc, axis=0))

    @triton.jit
    def _plane_affine_silu_kernel(x_ptr, y_ptr, a_ptr, s_ptr, C, F, sb, sc, sf, ob, oc, of, HW,
                                  BLOCK: tl.constexpr):
        plane = tl.program_id(0).to(tl.int64)
        f = plane % F
        c = (plane // F) % C
        b = plane // (F * C)
        a = tl.load(a_ptr + b * C + c)
        s = tl.load(s_ptr + plane)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < HW
        z = tl.load(x_ptr + b * sb + c * sc + f * sf + offs, mask=mask, other=0.0).to(tl.float32) * a + s
        y = z / (1.0 + tl.exp(-z))
        tl.store(y_ptr + b * ob + c * oc + f * of + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def group_norm_silu(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                    add: torch.Tensor | None = None, frames_major: bool = True) -> torch.Tensor:
    """silu(group_norm(x + add)) of x (b, c, frames, h, w) or (n, c, h, w) with contiguous planes
    (``usable``); ``add``: None or a constant per plane, broadcastable to (b, c, frames, 1, 1) (to
    (n, c, 1, 1) for 4-D x). A 4-D output is NCHW. A 5-D output is frames-major when
    ``frames_major`` (a transposed view of (b, frames, c, h, w) memory, which layers.frame_conv
    reads without a copy), else contiguous NCDHW (what cuDNN's 3-D convolution takes)."""
    if x.dim() == 4:  # images: planes (n, c), each image its own groups
        add = None if add is None else add[:, :, None]
        return group_norm_silu(x[:, :, None], groups, weight, bias, eps, add, frames_major=False)[:, :, 0]
    b, c, f, h, w = x.shape
    hw, per = h * w, c // groups
    planes = b * c * f
    sums = torch.empty(planes, device=x.device, dtype=torch.float32)
    m2 = torch.empty_like(sums)
    block = min(triton.next_power_of_2(hw), 1024)
    sb, sc, sf = x.stride()[:3]
    _plane_stats_kernel[(planes,)](x, sums, m2, c, f, sb, sc, sf, hw, BLOCK=block, num_warps=4)
    e = (torch.zeros(b, c, f, device=x.device) if add is None
         else add.float().expand(b, c, f, 1, 1)[..., 0, 0].contiguous())  # (b, c, f), whatever add's layout
    means = (sums.view(b, c, f) / hw + e).view(b, groups, per * f)  # each plane's mean of x + add
    mean = means.mean(-1, keepdim=True)  # planes of equal size: the group's mean is their mean
    m2_group = m2.view(b, groups, per * f).sum(-1, keepdim=True) + hw * (means - mean).square().sum(-1, keepdim=True)
    rstd = torch.rsqrt(m2_group / (hw * per * f) + eps)  # (b, groups, 1)
    scale = (rstd * weight.float().view(groups, per)).view(b, c)
    shift = ((e.view(b, groups, per * f) - mean) * rstd).view(b, groups, per, f) * weight.float().view(groups, per, 1)
    shift = (shift + bias.float().view(groups, per, 1)).reshape(planes)
    out = (torch.empty(b, f, c, h, w, device=x.device, dtype=x.dtype).transpose(1, 2) if frames_major
           else torch.empty(x.shape, device=x.device, dtype=x.dtype))
    ob, oc, of = out.stride()[:3]
    grid = (planes, triton.cdiv(hw, block))
    _plane_affine_silu_kernel[grid](x, out, scale.contiguous(), shift.contiguous(), c, f, sb, sc, sf, ob, oc, of,
                                    hw, BLOCK=block, num_warps=4)
    return out
