"""SVD-XT 1.1 as one module whose state-dict keys equal the official DiffusionEngine's.

The denoiser is v-prediction with EDM's c_noise = ¼·ln σ (sp4d.model.edm_scalings, the same
scaling SP4D uses); the sampler is SP4D's Euler EDM sampler with a per-frame linear guidance scale.
Latents x: (T, 4, h, w) in the 0.18215-scaled space; the conditioning latent is unscaled.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..sp4d.memory import visiting
from ..sp4d.model import edm_scalings
from ..sp4d.sampling import edm_sigmas, guide, linear_guidance_scale, sample_euler_edm
from ..sp4d.vae import Encoder
from .conditioner import build_embedders, conditioning
from .unet import VideoUNet
from .vae import VideoDecoder


class SVD(nn.Module):
    """model.diffusion_model (VideoUNet), conditioner.embedders (5), first_stage_model.encoder
    (never run: kept for strict loading) and first_stage_model.decoder (VideoDecoder)."""

    def __init__(self, unet_config: dict, emb_models: list[dict], encoder_config: dict, decoder_config: dict,
                 scale_factor: float = 0.18215, open_clip_archs: dict | None = None):
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = VideoUNet(**unet_config)
        self.conditioner = nn.Module()
        self.conditioner.embedders = build_embedders(emb_models, open_clip_archs or {})
        self.first_stage_model = nn.Module()
        self.first_stage_model.encoder = Encoder(**encoder_config)
        self.first_stage_model.decoder = VideoDecoder(**decoder_config)
        self.scale_factor = scale_factor

    @classmethod
    def from_config(cls, params: dict, open_clip_archs: dict | None = None) -> "SVD":
        """Build from the ``model.params`` tree of svd_xt_1_1.yaml (plain dicts, as yaml loads them)."""
        net = params["network_config"]
        if not net["target"].endswith(".VideoUNet"):
            raise ValueError(f"not an SVD config: network {net['target']}, expected VideoUNet")
        fs = params["first_stage_config"]["params"]
        return cls(net["params"], params["conditioner_config"]["params"]["emb_models"],
                   fs["encoder_config"]["params"], fs["decoder_config"]["params"],
                   params.get("scale_factor", 0.18215), open_clip_archs)

    @property
    def unet(self) -> VideoUNet:
        return self.model.diffusion_model

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.out[2].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.out[2].weight.device

    @property
    def image_multiple(self) -> int:
        """Image sides must be multiples of this: the VAE's upsampling times the UNet's downsampling."""
        return self.first_stage_model.decoder.upsampling * self.unet.downsampling

    # --- the denoiser ------------------------------------------------------------------------
    def network(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict, n_time: int,
                image_only: bool = False) -> torch.Tensor:
        """F: the VideoUNet on [x | concat] with crossattn as context and vector as y; x (N, 4, h, w)."""
        dt = self.dtype
        out = self.unet(torch.cat([x.to(dt), cond["concat"].to(dt)], dim=1), c_noise, cond["crossattn"].to(dt),
                        cond["vector"], n_time, image_only)
        return out.to(x.dtype)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict, n_time: int,
                image_only: bool = False) -> torch.Tensor:
        """D(x; σ) = F(x·c_in, ¼ ln σ, cond)·c_out + x·c_skip; x (N, 4, h, w), σ (N,), cond rows N = b·T."""
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
        shape = (-1,) + (1,) * (x.dim() - 1)
        out = self.network(x * c_in.view(shape), c_noise, cond, n_time, image_only)
        return out * c_out.view(shape) + x * c_skip.view(shape)

    # --- conditioning, sampling, decoding ----------------------------------------------------
    def condition(self, image: torch.Tensor, noise: torch.Tensor, n_frames: int, fps_id: int,
                  motion_bucket_id: int, cond_aug: float, offload: str | torch.device | None = None
                  ) -> tuple[dict, dict]:
        """(cond, uncond) before the repeat over frames (conditioner.conditioning) for image
        (1, 3, H, W) in [-1, 1] and its cond_aug draw ``noise``. ``offload`` (low-VRAM mode): the
        conditioner is on the UNet's device only for this call and waits there afterwards."""
        home = self.device
        with visiting(self.conditioner, home, offload):
            return conditioning(self.conditioner.embedders, image.to(home), noise.to(home), n_frames, fps_id,
                                motion_bucket_id, cond_aug)

    @staticmethod
    def batch_cond(c: dict, uc: dict, n_frames: int) -> dict:
        """[uncond ‖ cond] for one network call, crossattn and concat repeated over the frames:
        crossattn (2T, 1, E), concat (2T, 4, h, w), vector (2T, 3D)."""
        def frames(d):
            return {"crossattn": d["crossattn"].repeat_interleave(n_frames, 0),
                    "concat": d["concat"].repeat_interleave(n_frames, 0), "vector": d["vector"]}

        c, uc = frames(c), frames(uc)
        return {k: torch.cat([uc[k], c[k]]) for k in c}

    def guided(self, cond: dict, scale: torch.Tensor, n_frames: int, halves: bool = False
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """denoise(x, σ) -> the guided D of x (T, 4, h, w) at the noise level σ (a scalar tensor)
        for a CFG-batched ``cond`` (batch_cond) and per-frame guidance ``scale`` (T,).
        ``halves``: the unconditional and conditional halves as two network calls of T rows
        instead of one of 2T (half the activation memory; each video is computed on its own rows,
        so the result is the same up to float rounding)."""
        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            if halves:
                s = sigma * x.new_ones(x.shape[0])
                d = [self.denoise(x, s, {k: v[i * n_frames:(i + 1) * n_frames] for k, v in cond.items()}, n_frames)
                     for i in (0, 1)]
                return guide(torch.cat(d), scale)
            x2 = torch.cat([x, x])
            return guide(self.denoise(x2, sigma * x2.new_ones(x2.shape[0]), cond, n_frames), scale)

        return denoise

    def sample(self, c: dict, uc: dict, noise: torch.Tensor, steps: int = 30, min_cfg: float = 1.5,
               max_cfg: float = 3.0, sigma_max: float = 700.0, sigma_min: float = 0.002,
               on_step: Callable | None = None, halves: bool = False) -> torch.Tensor:
        """Final latents (T, 4, h, w) from N(0, 1) ``noise`` (T, 4, h, w): Euler EDM, no churn,
        guidance min_cfg (frame 0) → max_cfg (last frame); ``halves``: see guided."""
        T = noise.shape[0]
        sigmas = edm_sigmas(steps, sigma_min, sigma_max, device=noise.device)
        scale = linear_guidance_scale(T, min_cfg, max_cfg)
        return sample_euler_edm(self.guided(self.batch_cond(c, uc, T), scale, T, halves), noise, sigmas, on_step)

    def decode(self, z: torch.Tensor, chunk: int = 7) -> torch.Tensor:
        """Latents (T, 4, h, w) -> images (T, 3, 8h, 8w) in model range, ``chunk`` frames a decoder
        call (the temporal layers see only their chunk: the demo's decoding_t)."""
        dec = self.first_stage_model.decoder
        z = (1.0 / self.scale_factor) * z
        dt = dec.conv_in.weight.dtype
        return torch.cat([dec(part.to(dt)).float() for part in z.split(chunk)])
