"""SVD's conditioner: five embedders in the official order, and (cond, uncond) for one image.

0 cond_frames_without_noise -> crossattn (1, 1, E): CLIP image embedding of the clean image
1 fps_id                    -> vector[:, 0:D]:   sinusoid of fps_id, one row per frame
2 motion_bucket_id          -> vector[:, D:2D]:  sinusoid of the motion bucket
3 cond_frames               -> concat (1, 4, h, w): VAE mean of image + cond_aug·N(0, 1)
                               (the noise is added in pixel space by the caller's recipe, here;
                               the mean is NOT multiplied by the latent scale factor)
4 cond_aug                  -> vector[:, 2D:3D]: sinusoid of the cond_aug level
Unconditional: crossattn and concat zero, vector identical (fps, motion and cond_aug kept).
"""

from __future__ import annotations

import torch
from torch import nn

from ..sp4d.clip import VIT_H_14, FrozenOpenCLIPImageEmbedder
from ..sp4d.conditioner import SinusoidalEmbedder
from ..sp4d.vae import ModeOnlyAutoencoder


class VAEEncoderEmbedder(nn.Module):
    """Keys ``encoder.*`` (the official VideoPredictionEmbedderWithEncoder): images in [-1, 1]
    (N, 3, H, W) -> VAE means (N, 4, H/8, W/8), unscaled, encoded ``chunk`` images at a time."""

    def __init__(self, ddconfig: dict, embed_dim: int, chunk: int = 8):
        super().__init__()
        self.encoder = ModeOnlyAutoencoder(ddconfig, embed_dim)
        self.chunk = chunk

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = self.encoder.quant_conv.weight.dtype
        return torch.cat([self.encoder.encode(c.to(dtype)) for c in images.split(self.chunk)])


ORDER = ("FrozenOpenCLIPImagePredictionEmbedder", "ConcatTimestepEmbedderND", "ConcatTimestepEmbedderND",
         "VideoPredictionEmbedderWithEncoder", "ConcatTimestepEmbedderND")


def build_embedders(emb_models: list[dict], open_clip_archs: dict) -> nn.ModuleList:
    """The five embedders from the official ``conditioner_config.params.emb_models`` list."""
    classes = tuple(spec["target"].rsplit(".", 1)[-1] for spec in emb_models)
    if classes != ORDER:
        raise ValueError(f"not an SVD conditioner: embedders {classes}, expected {ORDER}")
    archs = {"ViT-H-14": VIT_H_14, **open_clip_archs}
    out = []
    for cls, spec in zip(classes, emb_models, strict=True):
        p = spec.get("params", {})
        if cls == "FrozenOpenCLIPImagePredictionEmbedder":
            arch = p["open_clip_embedding_config"]["params"].get("arch", "ViT-H-14")
            if arch not in archs:
                raise ValueError(f"unknown OpenCLIP architecture {arch!r}; known: {sorted(archs)}")
            out.append(FrozenOpenCLIPImageEmbedder(archs[arch]))
        elif cls == "VideoPredictionEmbedderWithEncoder":
            enc = p["encoder_config"]["params"]
            out.append(VAEEncoderEmbedder(enc["ddconfig"], enc["embed_dim"]))
        else:
            out.append(SinusoidalEmbedder(p["outdim"]))
    return nn.ModuleList(out)


def conditioning(embedders: nn.ModuleList, image: torch.Tensor, noise: torch.Tensor, n_frames: int,
                 fps_id: int, motion_bucket_id: int, cond_aug: float) -> tuple[dict, dict]:
    """(cond, uncond) dicts with crossattn (1, 1, E), concat (1, 4, h, w), vector (T, 3D).

    image: (1, 3, H, W) in [-1, 1]; noise: (1, 3, H, W) N(0, 1), the cond_aug draw."""
    clip, fps_e, motion_e, vae, aug_e = embedders
    crossattn = clip(image)[:, None].float()
    concat = vae(image + cond_aug * noise).float()
    dev = image.device
    vector = torch.cat([fps_e(torch.full((n_frames,), int(fps_id), dtype=torch.int64, device=dev)),
                        motion_e(torch.full((n_frames,), int(motion_bucket_id), dtype=torch.int64, device=dev)),
                        aug_e(torch.full((n_frames,), float(cond_aug), dtype=torch.float32, device=dev))], 1)
    c = {"crossattn": crossattn, "concat": concat, "vector": vector}
    uc = {"crossattn": torch.zeros_like(crossattn), "concat": torch.zeros_like(concat), "vector": vector}
    return c, uc
