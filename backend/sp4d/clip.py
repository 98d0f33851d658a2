"""The OpenCLIP image tower (ViT) and the embedder's preprocessing.

Keys follow open_clip's CLIP model (``visual.*`` plus the text remnants the checkpoint keeps:
token_embedding, positional_embedding, ln_final, text_projection, logit_scale, never read).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import dispatch
from .options import UsesOps

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def _gaussian_blur(x: torch.Tensor, sigma: tuple[float, float]) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, kernel int(max(4σ, 3)) made odd."""
    for axis, s in ((2, sigma[0]), (3, sigma[1])):
        k = int(max(4 * s, 3.0))
        k += 1 - k % 2
        t = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
        g = torch.exp(-t ** 2 / (2 * s ** 2))
        g = (g / g.sum()).view(1, 1, -1, 1) if axis == 2 else (g / g.sum()).view(1, 1, 1, -1)
        pad = (0, 0, k // 2, k // 2) if axis == 2 else (k // 2, k // 2, 0, 0)
        c = x.shape[1]
        x = F.conv2d(F.pad(x, pad, mode="reflect"), g.expand(c, 1, *g.shape[2:]), groups=c)
    return x


def preprocess(x: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Images in [-1, 1] (N, 3, H, W) -> normalised CLIP input (N, 3, size, size): antialiasing
    blur when downscaling, bicubic resize (align_corners=True), then CLIP's mean/std."""
    h, w = x.shape[-2:]
    fh, fw = h / size, w / size
    if fh > 1 or fw > 1:
        x = _gaussian_blur(x, (max((fh - 1) / 2, 0.001), max((fw - 1) / 2, 0.001)))
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.resblocks:
            x = blk(x)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, head_width: int,
                 output_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        grid = image_size // patch_size
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, width // head_width, mlp_ratio)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (N, grid², width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class OpenCLIPImageModel(nn.Module):
    """open_clip's CLIP with the text tower removed (its remnant parameters kept for loading)."""

    def __init__(self, embed_dim: int, vision_cfg: dict, text_cfg: dict):
        super().__init__()
        v = vision_cfg
        self.visual = VisionTransformer(v["image_size"], v["patch_size"], v["width"], v["layers"],
                                        v.get("head_width", 64), embed_dim, v.get("mlp_ratio", 4.0))
        t = text_cfg
        self.token_embedding = nn.Embedding(t["vocab_size"], t["width"])
        self.positional_embedding = nn.Parameter(torch.empty(t["context_length"], t["width"]))
        self.ln_final = nn.LayerNorm(t["width"])
        self.text_projection = nn.Parameter(torch.empty(t["width"], embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


# open_clip's ViT-H-14 (the real model); the tiny fixture architecture comes with its config
VIT_H_14 = {"embed_dim": 1024,
            "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}}


class FrozenOpenCLIPImageEmbedder(UsesOps, nn.Module):
    """Keys ``open_clip.model.*``: images in [-1, 1] -> (N, embed_dim) (not normalised); its
    attention kernels are dispatch.clip_attention's."""

    def __init__(self, arch_cfg: dict):
        super().__init__()
        self.open_clip = nn.Module()
        self.open_clip.model = OpenCLIPImageModel(**arch_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        visual = self.open_clip.model.visual
        with dispatch.clip_attention(self.ops):
            return visual(preprocess(x).to(visual.conv1.weight.dtype))
