"""SV4D 2.0 in SP4D's RGB branch: novel-view videos, RGB only.

SP4D's RGB branch ``net1`` is an SV4D 2.0 UNet (``SpatialUNetModelWithTime``): the official
sv4d2.yaml builds one whose ``model.diffusion_model.*`` keys equal SP4D's
``model.diffusion_model.net1.*`` one for one (1,924 tensors), and whose ``conditioner.*`` and
``first_stage_model.decoder.*`` keys equal SP4D's (reference README §1). ``SV4D2`` is SP4D with that
single branch (SingleBranchUNet: net1's class, run without the part branch and the fusion layers)
and a plain decoder, so ``sv4d2.safetensors`` loads strictly with its own key names.

Generation (SV4D2Pipeline) runs SV4D 2.0's own recipe (sv4d2_recipe.py, as the official
``simple_video_sample_4d2.py`` runs it): windows of 12 frames × 4 views at 60°, 120°, 180°, 240°
from the input view, each later window conditioned on the views an earlier one generated for its
first frame, linear guidance 1 → 2 over a window's 48 latents, RGB only.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from sp4d_job.layout import GENERATED_VIEWS

from ..errors import BackendError
from .conditioner import conditioning
from .memory import visiting
from .model import SP4D
from .options import RunOptions, UsesOps
from .pipeline import SP4DPipeline
from .sampling import edm_sigmas, sample_euler_edm
from .sv4d2_recipe import SV4D2_RECIPE, SV4D2Recipe, guidance_scale, padded_order, window_angles, window_plan
from .unet import SpatialTemporalUNet
from .unet_blocks import UNetContext
from .vae import Decoder

HUB_REPO = "stabilityai/sv4d2.0"  # gated, as SP4D's (the file name as the official script expects it)
HUB_FILE = "sv4d2.safetensors"


def hub_file(model: str) -> tuple[str, str]:
    """(repository, file) of the weights of the settings' ``model`` on the hub: SV4D 2.0's for
    'sv4d2', else SP4D's."""
    from .. import weights

    return (HUB_REPO, HUB_FILE) if model == "sv4d2" else (weights.HUB_REPO, weights.HUB_FILE)


class SingleBranchUNet(UsesOps, SpatialTemporalUNet):
    """SP4D's RGB branch on its own (the official SpatialUNetModelWithTime): x (b·T·V, 8, h, w)
    = [latent | concat] -> (b·T·V, 4, h, w)."""

    channels_last = False  # the weights' layout (unet.use_channels_last)

    @property
    def net1(self) -> "SingleBranchUNet":  # the RGB branch is this network
        return self

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, vector: torch.Tensor,
                cond_view: torch.Tensor, n_time: int, n_view: int) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.run_blocks(x, UNetContext(self.embed(c_noise, vector), context, cond_view, n_time, n_view))


class SV4D2(SP4D):
    """model.diffusion_model (SingleBranchUNet), conditioner.embedders (SP4D's six),
    first_stage_model.decoder (the plain KL decoder): the official SV4D 2.0 keys."""

    latent_channels = 4
    decoder_class = Decoder  # the plain KL decoder (SP4D's DualDecoder's keys)

    @staticmethod
    def build_unet(config: dict) -> nn.Module:
        return SingleBranchUNet(**config)

    @classmethod
    def from_config(cls, params: dict, n_view: int = GENERATED_VIEWS, open_clip_archs: dict | None = None) -> "SV4D2":
        """From the ``model.params`` of sv4d2.yaml, or of sp4d.yaml (its RGB branch's settings)."""
        net = params["network_config"]
        unet = net["params"].get("unet_config", net["params"])
        dec = params["first_stage_config"]["params"]["decoder_config"]["params"]
        return cls(unet, params["conditioner_config"]["params"]["emb_models"], dec,
                   params.get("scale_factor", 0.18215), n_view, open_clip_archs)

    def network(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict, unet: nn.Module | None = None
                ) -> torch.Tensor:
        dt = self.dtype
        xin = torch.cat([x.to(dt), cond["concat"].to(dt)], dim=1)
        context = cond["crossattn"].to(dt)
        b = context.shape[0]
        out = (unet or self.model.diffusion_model)(xin, c_noise, context, cond["vector"], cond["cond_view"].to(dt),
                                                  n_time=context.shape[1], n_view=cond["cond_view"].shape[0] // b)
        return out.to(x.dtype)


    def condition_window(self, frames: torch.Tensor, anchors: torch.Tensor | None, polar: torch.Tensor,
                         azimuth: torch.Tensor, generator: torch.Generator | None = None,
                         offload: str | torch.device | None = None) -> tuple[dict, dict]:
        """(cond, uncond) of one SV4D 2.0 window: frames (T, 3, H, W) and the anchor frame's
        generated views ``anchors`` (V, 3, H, W), both in [-1, 1], or None (the first window);
        polar, azimuth (T·V,) radians. As the official script: crossattn the frames' CLIP tokens,
        concat their VAE means repeated for the V views, cond_view the anchors' VAE means (zero
        without anchors, and always zero in uncond), each VAE input + 1e-5·N(0, 1); cond_motion
        is never read by the network (zeros). Conditioner offload as SP4D.condition."""
        n_view = polar.shape[0] // frames.shape[0]
        home = self.device
        with visiting(self.conditioner, home, offload):
            c, uc = conditioning(self.conditioner.embedders, frames.to(home), polar, azimuth, n_view,
                                 generator=generator, per_copy=False)
            if anchors is not None:
                if anchors.shape[0] != n_view:
                    raise ValueError(f"{anchors.shape[0]} anchor views for windows of {n_view} views")
                draw = torch.randn(anchors.shape, generator=generator).to(home, anchors.dtype)
                c["cond_view"] = self.conditioner.embedders[4](anchors.to(home), draw)
            return c, uc

    @staticmethod
    def batch_cond(c: dict, uc: dict) -> dict:
        """[uncond ‖ cond] for one network call. Unlike SP4D's (whose script never conditions on
        views), cond_view stays: the anchors' latents in the conditional half of a later window
        (the official script's cond_mv), zeros elsewhere (condition_window)."""
        return {k: torch.cat([uc[k], c[k]]) for k in c}


def sv4d2_key_shapes(sp4d_shapes: dict[str, tuple]) -> dict[str, tuple]:
    """SV4D 2.0's keys and shapes from SP4D's (reference README §1): net1's UNet keys without the
    ``net1.`` level, the conditioner and the first-stage decoder unchanged; net2 and the fusion
    layers have no counterpart."""
    out = {}
    for k, shape in sp4d_shapes.items():
        if k.startswith("model.diffusion_model.net1."):
            out["model.diffusion_model." + k[len("model.diffusion_model.net1."):]] = shape
        elif not k.startswith("model.diffusion_model."):
            out[k] = shape
    return out


class SV4D2Pipeline(SP4DPipeline):
    """SP4DPipeline running SV4D 2.0's own recipe (sv4d2_recipe.py; module doc): input frames in,
    RGB views of the recipe's cameras out (no part images)."""

    def __init__(self, model: SV4D2, options: RunOptions | None = None, recipe: SV4D2Recipe = SV4D2_RECIPE):
        self.recipe = recipe
        super().__init__(model, options)

    def sample_window(self, frames: torch.Tensor, anchors: torch.Tensor | None, noise: torch.Tensor,
                      recipe: SV4D2Recipe, *, steps: int, generator: torch.Generator | None = None,
                      on_step: Callable | None = None) -> torch.Tensor:
        """One window: frames (T, 3, H, W), anchors (V, 3, H, W) or None, in [-1, 1], noise
        (T·V, 4, h, w) ~ N(0, 1) -> views (T·V, 3, H, W) in [0, 1], time-major."""
        model = self.model
        polar, az = window_angles(recipe)
        c, uc = model.condition_window(frames, anchors, polar, az, generator, offload=self.options.offload)
        sequential = self.options.cfg_batch == "sequential"
        denoise = model.guided(model.batch_cond(c, uc), guidance_scale(recipe), self.split, sequential)
        sigmas = edm_sigmas(steps, recipe.sigma_min, recipe.sigma_max, device=noise.device)
        z = sample_euler_edm(denoise, noise, sigmas, on_step)
        if not torch.isfinite(z).all():
            raise BackendError("numeric_overflow", f"the denoised latents are not finite in {self.options.dtype}: "
                               "set precision to bf16 (wider range than fp16) or fp32")
        return self.decode(z)

    def views(self, frames: torch.Tensor, *, steps: int = SV4D2_RECIPE.steps, cfg: float | None = None,
              min_cfg: float | None = None, seed: int = 23, noise: torch.Tensor | None = None,
              cond_noise: dict | None = None, on_step: Callable[[int, int], None] | None = None
              ) -> tuple[torch.Tensor, None]:
        """RGB views (N, V, 3, H, W) in [0, 1] of N frames (N, 3, H, W) in [-1, 1] at the recipe's
        cameras, and None (no parts). The window plan (sv4d2_recipe.window_plan; a clip shorter
        than a window is padded, padded_order) runs in order, each later window conditioned on
        the views generated for its anchor frame, later windows' images replacing earlier ones.
        ``cfg``/``min_cfg``: the guidance end points (default the recipe's 2.0 and 1.0). Each window
        draws its own noise from a CPU generator seeded with ``seed`` (the official script draws
        once per window from its seeded global generator); ``noise`` (T·V, 4, h, w) fixes it for
        every window. ``on_step(done, total)`` after every denoising step."""
        import dataclasses

        recipe = dataclasses.replace(self.recipe, max_scale=self.recipe.max_scale if cfg is None else cfg,
                                     min_scale=self.recipe.min_scale if min_cfg is None else min_cfg)
        if cond_noise is not None:
            raise BackendError("bad_input", "the noise file's cond.noise.* draws are SP4D's; SV4D 2.0's recipe "
                               "takes only sampler.randn")
        model = self.model
        t, v = recipe.frames_per_window, recipe.views_per_window
        n, _, h, w = frames.shape
        f = model.first_stage_model.decoder.upsampling
        shape = (t * v, model.latent_channels, h // f, w // f)
        if noise is not None and tuple(noise.shape) != shape:
            raise BackendError("bad_input", f"SV4D 2.0's noise must be {shape} (one window), got {tuple(noise.shape)}")
        order = padded_order(n, t)
        clip = frames[order]
        plan = window_plan(len(order), t)
        gen = torch.Generator().manual_seed(seed)
        out = torch.zeros(len(order), v, 3, h, w)
        for wi, win in enumerate(plan):
            def step(i, _n, _x, wi=wi):
                if on_step:
                    on_step(wi * steps + i + 1, len(plan) * steps)

            z0 = noise if noise is not None else torch.randn(shape, generator=gen)
            anchors = None if win.anchor is None else out[win.anchor] * 2 - 1
            dev = model.device
            views = self.sample_window(clip[list(win.frames)].to(dev), None if anchors is None else anchors.to(dev),
                                       z0.to(dev), recipe, steps=steps, generator=gen, on_step=step)
            out[list(win.frames)] = views.float().cpu().view(t, v, 3, h, w)
        return out[:n], None
