"""SV4D 2.0 in SP4D's RGB branch: novel-view videos, RGB only.

SP4D's RGB branch ``net1`` is an SV4D 2.0 UNet (``SpatialUNetModelWithTime``): the official
sv4d2.yaml builds one whose ``model.diffusion_model.*`` keys equal SP4D's
``model.diffusion_model.net1.*`` one for one (1,924 tensors), and whose ``conditioner.*`` and
``first_stage_model.decoder.*`` keys equal SP4D's (reference README §1). ``SV4D2`` is SP4D with that
single branch (SingleBranchUNet: net1's class, run without the part branch and the fusion layers)
and a plain decoder, so ``sv4d2.safetensors`` loads strictly with its own key names.

Generation (SV4D2Pipeline) runs SP4D's recipe with these weights, RGB only: windows of 4 frames ×
12 generated views around the input view (view_angles), the conditioner and sampler SP4D uses.
That is not the official SV4D 2.0 script's recipe (12 frames × 4 views a window, view and motion
conditioning images, guidance 2.0): the views are those SP4D's layout asks for.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from sp4d_job.layout import GENERATED_VIEWS

from .conditioner import build_embedders
from .model import SP4D
from .options import UsesOps
from .pipeline import N_TIME, SP4DPipeline, window_starts
from .unet import SpatialTemporalUNet
from .unet_blocks import UNetContext
from .vae import Decoder

HUB_REPO = "stabilityai/sv4d2.0"  # gated, as SP4D's (the file name as the official script expects it)
HUB_FILE = "sv4d2.safetensors"


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
        ctx = UNetContext(self.embed(c_noise, vector), context, cond_view, n_time, n_view)
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, ctx)
            skips.append(h)
        h = self.middle_block(h, ctx)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), ctx)
        return self.out(h)


class SV4D2(SP4D):
    """model.diffusion_model (SingleBranchUNet), conditioner.embedders (SP4D's six),
    first_stage_model.decoder (the plain KL decoder): the official SV4D 2.0 keys."""

    latent_channels = 4

    def __init__(self, unet_config: dict, emb_models: list[dict], decoder_config: dict,
                 scale_factor: float = 0.18215, n_view: int = GENERATED_VIEWS, open_clip_archs: dict | None = None):
        nn.Module.__init__(self)
        from .model import UNET_KEYS

        self.model = nn.Module()
        self.model.diffusion_model = SingleBranchUNet(**{k: unet_config[k] for k in UNET_KEYS if k in unet_config})
        self.conditioner = nn.Module()
        self.conditioner.embedders = build_embedders(emb_models, open_clip_archs or {})
        self.first_stage_model = nn.Module()
        self.first_stage_model.decoder = Decoder(**decoder_config)
        self.scale_factor = scale_factor
        self.n_view = n_view

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
    """SP4DPipeline for SV4D2: RGB views only (module doc)."""

    def views(self, frames: torch.Tensor, *, steps: int = 50, cfg: float = 3.0, min_cfg: float = 1.0,
              seed: int = 23, noise: torch.Tensor | None = None, cond_noise: dict | None = None,
              on_step: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, None]:
        """RGB views (N, V, 3, H, W) in [0, 1] of N frames (N, 3, H, W) in [-1, 1], and None (no
        parts). Windows of 4 frames sharing one frame, as SP4D's (the shared frame's views are
        the first window's)."""
        model = self.model
        n, _, h, w = frames.shape
        gen = torch.Generator().manual_seed(seed)
        if noise is None:
            f = model.first_stage_model.decoder.upsampling
            noise = torch.randn((N_TIME * model.n_view, 4, h // f, w // f), generator=gen)
        noise = noise.to(model.device)
        if n < N_TIME:
            frames = torch.cat([frames, frames[-1:].expand(N_TIME - n, -1, -1, -1)])
        starts = window_starts(frames.shape[0])
        rgb = torch.zeros(frames.shape[0], model.n_view, 3, h, w)
        done = torch.zeros(frames.shape[0], dtype=torch.bool)
        for wi, t0 in enumerate(starts):
            def step(i, _n, _x, wi=wi):
                if on_step:
                    on_step(wi * steps + i + 1, len(starts) * steps)

            out = self.window(frames[t0:t0 + N_TIME].to(model.device), noise, steps=steps, cfg=cfg,
                              min_cfg=min_cfg, cond_noise=cond_noise, generator=gen, on_step=step).cpu()
            out = out.view(N_TIME, model.n_view, 3, h, w)
            for k in range(N_TIME):
                if not done[t0 + k]:
                    rgb[t0 + k] = out[k]
                    done[t0 + k] = True
        return rgb[:n], None
