"""The conditioner: six embedders in the official order, their outputs and unconditional forms.

0 cond_frames_without_noise -> crossattn (1, T, D): CLIP token of each input frame
1 cond_frames  -> concat (T·V, 4, h, w): VAE mean of each frame repeated for the V views,
                  and vector[:, :d0]: sinusoidal embedding of the noise level 1e-5
2 polar_rad    -> vector: sinusoidal embedding of each view's polar angle
3 azimuth_rad  -> vector: same for the azimuth
4 cond_view    -> cond_view (V, 4, h, w): VAE mean of V grey images (zeroed for the network)
5 cond_motion  -> cond_motion (T, 4, h, w): VAE mean of the frames (never read by the network)
The VAE inputs get images + 1e-5·N(0, 1) (the official ZeroSampler's level). Unconditional:
every image-derived output is zero, the cond_aug part of vector too; the angles stay.

The official conditioner encodes 64 images per call (each frame 12 times, each copy with its own
1e-5 draw; 12 grey images; the frames again), and runs twice (cond and uncond). Only
``concat`` reaches the network: ``cond_view`` is multiplied by 0 and ``cond_motion`` is never read
(reference README §1). Without given noise draws, ``conditioning`` therefore encodes each frame
once (one draw per frame, shared by its copies: a 1e-5 perturbation, far below bf16 resolution)
and returns ``cond_view`` and ``cond_motion`` as the zeros the network sees: 4 encodes instead of
64. With given draws (fixtures, noise files) it reproduces the official
per-copy computation.
"""

from __future__ import annotations

import torch
from torch import nn

from .clip import FrozenOpenCLIPImageEmbedder
from .layers import timestep_embedding
from .vae import ModeOnlyAutoencoder

COND_NOISE = 1e-5


class SinusoidalEmbedder(nn.Module):
    """Sinusoidal embedding of scalars (no weights)."""

    def __init__(self, outdim: int):
        super().__init__()
        self.outdim = outdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(x.reshape(-1), self.outdim).reshape(*x.shape, self.outdim).flatten(1)


class VAEEmbedder(nn.Module):
    """Keys ``encoder.*``: images -> conditioning latents (mean, unscaled), encoded in chunks."""

    def __init__(self, ddconfig: dict, embed_dim: int, sigma_outdim: int | None = None, chunk: int = 8):
        super().__init__()
        self.encoder = ModeOnlyAutoencoder(ddconfig, embed_dim)
        self.sigma_outdim = sigma_outdim
        self.chunk = chunk

    def forward(self, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = images + COND_NOISE * noise.to(images.dtype)
        dtype = self.encoder.quant_conv.weight.dtype
        return torch.cat([self.encoder.encode(c.to(dtype)) for c in x.split(self.chunk)])


def build_embedders(emb_models: list[dict], open_clip_archs: dict) -> nn.ModuleList:
    """Embedders from the official ``conditioner_config.params.emb_models`` list."""
    from .clip import VIT_H_14

    archs = {"ViT-H-14": VIT_H_14, **open_clip_archs}
    out = []
    for spec in emb_models:
        cls = spec["target"].rsplit(".", 1)[-1]
        p = spec.get("params", {})
        if cls == "FrozenOpenCLIPImagePredictionEmbedder":
            arch = p["open_clip_embedding_config"]["params"]["arch"]
            if arch not in archs:
                raise ValueError(f"unknown OpenCLIP architecture {arch!r}; known: {sorted(archs)}")
            out.append(FrozenOpenCLIPImageEmbedder(archs[arch]))
        elif cls == "VideoPredictionEmbedderWithEncoder":
            enc = p["encoder_config"]["params"]
            sig = p.get("sigma_cond_config", {}).get("params", {}).get("outdim")
            out.append(VAEEmbedder(enc["ddconfig"], enc["embed_dim"], sig))
        elif cls == "ConcatTimestepEmbedderND":
            out.append(SinusoidalEmbedder(p["outdim"]))
        else:
            raise ValueError(f"unsupported embedder {spec['target']}")
    return nn.ModuleList(out)


def conditioning(embedders: nn.ModuleList, frames: torch.Tensor, polar: torch.Tensor, azimuth: torch.Tensor,
                 n_view: int, noise: dict[str, torch.Tensor] | None = None,
                 generator: torch.Generator | None = None, per_copy: bool | None = None) -> tuple[dict, dict]:
    """(cond, uncond) dicts with crossattn, concat, vector, cond_view, cond_motion.

    frames: (T, 3, H, W) in [-1, 1]; polar, azimuth: (T·V,) radians (float64 as the script has
    them); noise: optional fixed N(0,1) draws for 'cond_frames', 'cond_view', 'cond_motion'.
    per_copy: the official 64 encodes (default: when ``noise`` is given), else one encode per
    frame and zeros for the two outputs the network never sees (module docstring).
    """
    clip, vae_frames, polar_e, azim_e, vae_view, vae_motion = embedders
    T = frames.shape[0]
    per_copy = noise is not None if per_copy is None else per_copy

    def draw(name, like):
        if noise is not None and name in noise:
            return noise[name].to(like.device)
        # float32 on the CPU (device-independent draws), then cast: torch draws bfloat16 normals on the
        # CPU one at a time, far slower
        return torch.randn(like.shape, generator=generator, device="cpu").to(like.device, like.dtype)

    crossattn = clip(frames)[None]  # (1, T, D)
    if per_copy:
        cond_frames = frames.repeat_interleave(n_view, dim=0)
        grey = torch.zeros((n_view,) + frames.shape[1:], dtype=frames.dtype, device=frames.device)
        concat = vae_frames(cond_frames, draw("cond_frames", cond_frames))
        cond_view = vae_view(grey, draw("cond_view", grey))
        cond_motion = vae_motion(frames, draw("cond_motion", frames))
    else:
        if noise is not None and "cond_frames" in noise:  # per-copy draws given: each frame's first copy's
            once = noise["cond_frames"][::n_view].to(frames.device)
        else:
            once = draw("frames", frames)
        latents = vae_frames(frames, once)
        concat = latents.repeat_interleave(n_view, dim=0)
        cond_view = latents.new_zeros((n_view,) + latents.shape[1:])
        cond_motion = torch.zeros_like(latents)
    level = torch.full((T * n_view,), COND_NOISE, dtype=torch.float64, device=frames.device)
    aug = timestep_embedding(level, vae_frames.sigma_outdim).to(crossattn.dtype)
    angles = torch.cat([polar_e(polar.to(frames.device)), azim_e(azimuth.to(frames.device))], 1).to(aug.dtype)
    c = {"crossattn": crossattn, "concat": concat, "vector": torch.cat([aug, angles], 1),
         "cond_view": cond_view, "cond_motion": cond_motion}
    uc = {k: torch.zeros_like(v) for k, v in c.items() if k != "vector"}
    uc["vector"] = torch.cat([torch.zeros_like(aug), angles], 1)
    return c, uc
