"""Generation with SVD-XT 1.1: one picture in, a clip of T frames out.

``SVDParams`` is what is computed (the official demo's defaults: 25 frames, 30 steps, fps_id 6,
motion bucket 127, cond_aug 0.02, decoding_t 7, 1024×576, guidance 1.5 → 3.0 per frame);
``RunOptions`` (backend/sp4d/options.py, shared with SP4D) is how this process runs it: device,
precision, compile scope, layout, op choices, low-VRAM offloading. The CFG split over two devices
is SP4D's only, and so are streamed UNet blocks (``unet_resident_gib``: SVD's 1.5 B-parameter UNet
stays resident); SVD runs on the options' first device. ``options.offload`` keeps the conditioner
off the GPU while sampling; ``options.cfg_batch`` 'sequential' runs the two CFG halves of each step
one after the other (half the UNet's activation memory, the same result up to float rounding).

Randomness (SVD reference §10): after seeding, exactly two draws in this order, on the CPU (so
that a seed gives the same clip on every device): the cond_aug noise (1, 3, H, W), then the
initial latent (T, 4, H/8, W/8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import BackendError
from ..sp4d import compiled
from ..sp4d.options import RunOptions, configure
from ..sp4d.unet import set_layout
from .model import SVD
from .preprocess import resize_and_crop, to_model, to_u8


@dataclass(frozen=True)
class SVDParams:
    """What the clip depends on besides the picture and the seed (defaults: the official demo's)."""

    frames: int = 25
    steps: int = 30
    fps_id: int = 6
    motion_bucket_id: int = 127
    cond_aug: float = 0.02
    decoding_t: int = 7
    width: int = 1024
    height: int = 576
    min_cfg: float = 1.5
    max_cfg: float = 3.0

    def check(self, multiple: int = 64) -> None:
        """BackendError bad_input for values the model cannot run."""
        if self.width % multiple or self.height % multiple:
            raise BackendError("bad_input", f"SVD frame size {self.width}×{self.height} must be multiples of "
                               f"{multiple}")
        if self.frames < 1 or self.steps < 1 or self.decoding_t < 1:
            raise BackendError("bad_input", "SVD frames, steps and decoding_t must be at least 1")
        if not 0 <= self.motion_bucket_id <= 1023:
            raise BackendError("bad_input", f"motion bucket {self.motion_bucket_id} out of range")


def draws(params: SVDParams, seed: int, multiple: int = 8) -> dict[str, torch.Tensor]:
    """The run's two N(0, 1) draws from a CPU generator seeded with ``seed``: 'cond_aug'
    (1, 3, H, W), then 'init' (T, 4, H/f, W/f) with f the VAE factor."""
    gen = torch.Generator().manual_seed(int(seed))
    aug = torch.randn((1, 3, params.height, params.width), generator=gen)
    init = torch.randn((params.frames, 4, params.height // multiple, params.width // multiple), generator=gen)
    return {"cond_aug": aug, "init": init}


class SVDPipeline:
    """The model and how this process runs it (RunOptions): a picture in, frames out."""

    def __init__(self, model: SVD, options: RunOptions | None = None):
        self.model = model
        self.options = RunOptions(devices=(str(model.device),), dtype=model.dtype)
        self.apply(options or self.options)

    def apply(self, options: RunOptions) -> bool:
        """Run with ``options`` from now on (op choices, UNet layout, compiled instances); True when
        this call set up a compile. The model must already be on the options' first device in
        their dtype (runtime.py loads it so)."""
        unet, dec = self.model.unet, self.model.first_stage_model.decoder
        configure(self.model, options.ops)
        set_layout([unet], options.channels_last)
        if options.compile is None:
            compiled.uncompile_modules([unet, dec])
            fresh = False
        else:
            fresh = compiled.compile_modules([unet, dec], options.compile)
        self.options = options
        return fresh

    @property
    def image_multiple(self) -> int:
        return self.model.image_multiple

    def prepare(self, image: np.ndarray, params: SVDParams) -> np.ndarray:
        """(H, W, 3|4) uint8 -> (height, width, 3|4) uint8: the demo's resize-and-crop unless the
        picture already has the size."""
        if image.shape[:2] != (params.height, params.width):
            image = resize_and_crop(image, params.width, params.height)
        return image

    def latents(self, image: torch.Tensor, params: SVDParams, noise: dict[str, torch.Tensor],
                on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """image (1, 3, H, W) in [-1, 1] -> final latents (T, 4, H/8, W/8) (float32)."""
        dev = self.model.device
        c, uc = self.model.condition(image, noise["cond_aug"], params.frames, params.fps_id,
                                     params.motion_bucket_id, params.cond_aug, offload=self.options.offload)

        def step(i, n, _x):
            if on_step:
                on_step(i + 1, n)

        return self.model.sample(c, uc, noise["init"].to(dev), steps=params.steps, min_cfg=params.min_cfg,
                                 max_cfg=params.max_cfg, on_step=step, halves=self.options.cfg_batch == "sequential")

    def generate(self, image: np.ndarray, params: SVDParams = SVDParams(), seed: int = 42,
                 noise: dict[str, torch.Tensor] | None = None,
                 on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
        """A picture (H, W, 3|4) uint8 -> the clip (T, height, width, 3) uint8.

        ``noise`` ('cond_aug', 'init') fixes the draws (fixtures), else they come from ``seed``
        (``draws``); ``on_step(done, total)`` after every denoising step (raise there to cancel)."""
        params.check(self.image_multiple)
        image = self.prepare(image, params)
        noise = noise or draws(params, seed, self.model.first_stage_model.decoder.upsampling)
        with torch.inference_mode():
            z = self.latents(to_model(image).to(self.model.device), params, noise, on_step)
            out = self.model.decode(z, params.decoding_t)
            if not (torch.isfinite(z).all() and torch.isfinite(out).all()):
                raise BackendError("numeric_overflow", f"SVD's latents or frames are not finite in "
                                   f"{self.options.dtype}: set precision to bf16 (wider range than fp16) or fp32")
            return to_u8(out)
