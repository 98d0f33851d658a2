"""SP4D as one module whose state-dict keys equal the official DiffusionEngine's."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from sp4d_job.layout import GENERATED_VIEWS

from .conditioner import build_embedders, conditioning
from .memory import visiting
from .sampling import edm_sigmas, guide, linear_guidance_scale, sample_euler_edm
from .split import CFGSplit
from .unet import DualSpatialTemporalUNet
from .vae import DualDecoder

UNET_KEYS = ("in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions",
             "channel_mult", "num_head_channels", "context_dim", "adm_in_channels", "motion_context_dim",
             "time_kernel_size", "transformer_depth")


def edm_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """v-scaling with EDM c_noise: (c_skip, c_out, c_in, c_noise)."""
    c_skip = 1.0 / (sigma ** 2 + 1.0)
    c_out = -sigma / (sigma ** 2 + 1.0) ** 0.5
    c_in = 1.0 / (sigma ** 2 + 1.0) ** 0.5
    return c_skip, c_out, c_in, 0.25 * sigma.log()


class SP4D(nn.Module):
    """model.diffusion_model (dual UNet), conditioner.embedders, first_stage_model.decoder."""

    def __init__(self, unet_config: dict, emb_models: list[dict], decoder_config: dict,
                 scale_factor: float = 0.18215, n_view: int = GENERATED_VIEWS, open_clip_archs: dict | None = None):
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = self.build_unet({k: unet_config[k] for k in UNET_KEYS if k in unet_config})
        self.conditioner = nn.Module()
        self.conditioner.embedders = build_embedders(emb_models, open_clip_archs or {})
        self.first_stage_model = nn.Module()
        self.first_stage_model.decoder = self.decoder_class(**decoder_config)
        self.scale_factor = scale_factor
        self.n_view = n_view

    decoder_class: type[nn.Module] = DualDecoder  # first_stage_model.decoder: [RGB | part] latents -> images

    @staticmethod
    def build_unet(config: dict) -> nn.Module:
        """model.diffusion_model from the UNET_KEYS settings of one branch: SP4D's dual UNet."""
        return DualSpatialTemporalUNet(config)

    @classmethod
    def from_config(cls, params: dict, n_view: int = GENERATED_VIEWS, open_clip_archs: dict | None = None) -> "SP4D":
        """Build from the ``model.params`` tree of sp4d.yaml (plain dicts, as yaml loads them)."""
        net = params["network_config"]
        if not net["target"].endswith("DualSpatialUNetWithCrossComm") or not params.get("dual_concat", False):
            raise ValueError("not an SP4D config: expected DualSpatialUNetWithCrossComm with dual_concat")
        dec = params["first_stage_config"]["params"]["decoder_config"]["params"]
        return cls(net["params"]["unet_config"], params["conditioner_config"]["params"]["emb_models"], dec,
                   params.get("scale_factor", 0.18215), n_view, open_clip_archs)

    # --- the denoiser ------------------------------------------------------------------------
    def network(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict, unet: nn.Module | None = None
                ) -> torch.Tensor:
        """The wrapped dual UNet (``unet``: a replica on another device, by default our own): each
        branch gets its latent with the concat latent appended."""
        dt = self.dtype
        concat = cond["concat"].to(dt)
        rgb, part = x.to(dt).chunk(2, dim=1)
        xin = torch.cat([rgb, concat, part, concat], dim=1)
        context = cond["crossattn"].to(dt)
        b = context.shape[0]
        out = (unet or self.model.diffusion_model)(xin, c_noise, context, cond["vector"], cond["cond_view"].to(dt),
                                         n_time=context.shape[1], n_view=cond["cond_view"].shape[0] // b)
        return out.to(x.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.diffusion_model.net1.out[2].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.diffusion_model.net1.out[2].weight.device

    latent_channels = 8  # [RGB | part] latents (SV4D 2.0, sv4d2.py: 4, RGB only)

    @property
    def image_multiple(self) -> int:
        """Image sides must be multiples of this: the VAE's upsampling times the UNet's downsampling."""
        return self.first_stage_model.decoder.upsampling * self.model.diffusion_model.downsampling

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict, unet: nn.Module | None = None
                ) -> torch.Tensor:
        """D(x; sigma) = net(x·c_in, c_noise, cond)·c_out + x·c_skip; sigma: (N,)."""
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
        shape = (-1,) + (1,) * (x.dim() - 1)
        out = self.network(x * c_in.view(shape), c_noise, cond, unet)
        return out * c_out.view(shape) + x * c_skip.view(shape)

    # --- conditioning, sampling, decoding ----------------------------------------------------
    def condition(self, frames: torch.Tensor, polar: torch.Tensor, azimuth: torch.Tensor,
                  noise: dict | None = None, generator: torch.Generator | None = None,
                  offload: str | torch.device | None = None, per_copy: bool | None = None) -> tuple[dict, dict]:
        """(cond, uncond) for frames on the UNet's device. ``offload`` (low-VRAM mode): the
        conditioner (image tower and VAE encoder) is on the GPU only for this call and waits on
        ``offload`` (e.g. the CPU) while the UNet samples. ``per_copy``: conditioner.conditioning."""
        home = self.device
        with visiting(self.conditioner, home, offload):
            return conditioning(self.conditioner.embedders, frames.to(home), polar, azimuth, self.n_view, noise,
                                generator, per_copy)

    @staticmethod
    def batch_cond(c: dict, uc: dict) -> dict:
        """[uncond ‖ cond] for one network call; cond_view is zeroed as the official script does."""
        out = {k: torch.cat([uc[k], c[k]]) for k in c}
        out["cond_view"] = out["cond_view"] * 0
        return out

    def guided(self, cond: dict, scale: torch.Tensor, split: CFGSplit | None = None, sequential: bool = False
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """denoise(x, sigma) -> the guided D of x (F, 8, h, w) at the noise level sigma (a scalar
        tensor), for a CFG-batched ``cond`` (batch_cond) and per-frame guidance ``scale`` (F,);
        ``split``: the unconditional half on a second device; ``sequential``: the two halves as
        two UNet calls of F frames instead of one of 2F (half the activations, same result)."""
        if split is not None:
            return split.guided(cond, scale)
        if sequential:
            halves = [{k: v.chunk(2)[i] for k, v in cond.items()} for i in range(2)]  # uncond, cond

            def denoise_halves(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
                s = sigma * x.new_ones(x.shape[0])
                return guide(torch.cat([self.denoise(x, s, h) for h in halves]), scale)

            return denoise_halves

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            x2 = torch.cat([x, x])
            return guide(self.denoise(x2, sigma * x2.new_ones(x2.shape[0]), cond), scale)

        return denoise

    def sample(self, c: dict, uc: dict, noise: torch.Tensor, steps: int = 50, cfg: float = 3.0,
               min_cfg: float = 1.0, sigma_max: float = 700.0, sigma_min: float = 0.002,
               on_step: Callable | None = None, split: CFGSplit | None = None, sequential: bool = False
               ) -> torch.Tensor:
        """Final latents (T·V, 8, h, w) from N(0,1) ``noise`` with linear guidance min_cfg → cfg;
        ``split`` runs the unconditional half on a second device, ``sequential`` the two halves
        one after the other (guided)."""
        sigmas = edm_sigmas(steps, sigma_min, sigma_max, device=noise.device)
        scale = linear_guidance_scale(noise.shape[0], min_cfg, cfg)
        return sample_euler_edm(self.guided(self.batch_cond(c, uc), scale, split, sequential), noise, sigmas, on_step)

    def decode(self, z: torch.Tensor, chunk: int = 4) -> torch.Tensor:
        """Latents (N, 8, h, w) -> images (N, 3, H, 2W) in model range (RGB left, parts right),
        ``chunk`` latents a decoder call."""
        dec = self.first_stage_model.decoder
        z = z * (1.0 / self.scale_factor)
        return torch.cat([dec(part.to(dec.conv_in.weight.dtype)) for part in z.split(chunk)])
