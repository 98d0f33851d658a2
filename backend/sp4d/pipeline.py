"""Generation with SP4D: frames in, V generated views × T frames of RGB and part images out.

The model samples windows of 4 frames × 12 views. Longer clips are covered by windows that share
one frame with the previous window; every window starts from the same noise, and the part
colours of each later window are mapped (per channel gain and offset, fitted on the shared
frame's part images) onto the previous window's, so that one part keeps one colour across
windows. The input view itself is not generated (it is the input frame).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from sp4d_job.layout import GENERATED_VIEWS

from ..errors import BackendError
from . import compiled
from .memory import StreamedBlocks, blocks_to_stream
from .model import SP4D
from .options import RunOptions, configure
from .sampling import linear_guidance_scale
from .split import CFGSplit, device_of
from .unet import set_layout

N_TIME = 4  # frames per window: what the model was trained on


def view_angles(n_view: int = GENERATED_VIEWS) -> tuple[np.ndarray, np.ndarray]:
    """(polar, azimuth) in radians (float64) of the generated views relative to the input view:
    azimuths k·2π/(V+1) for k = 1..V, all at the input's elevation (relative polar π/2)."""
    az = np.array([2 * math.pi * k / (n_view + 1) for k in range(1, n_view + 1)])
    return np.full(n_view, math.pi / 2), az


def window_starts(n: int, t: int = N_TIME) -> list[int]:
    """First frames of windows of t frames covering n frames, consecutive windows sharing one."""
    if n <= t:
        return [0]
    starts = list(range(0, n - t + 1, t - 1))
    if starts[-1] + t < n:
        starts.append(n - t)
    return starts


def match_colours(src: torch.Tensor, dst: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel gain and offset mapping src colours onto dst over ``mask`` pixels.

    src, dst: (N, 3, H, W) in [0, 1]; mask: (N, H, W) bool. Identity when too few pixels."""
    gain, off = torch.ones(3), torch.zeros(3)
    if mask.sum() < 50:
        return gain, off
    for ch in range(3):
        s = src[:, ch][mask].double()
        d = dst[:, ch][mask].double()
        var = s.var(unbiased=False)
        if var > 1e-6:
            g = ((s - s.mean()) * (d - d.mean())).mean() / var
            gain[ch] = float(g.clamp(0.5, 2.0))
        off[ch] = float(d.mean() - gain[ch] * s.mean())
    return gain, off


class SP4DPipeline:
    """The model and how this process runs it (RunOptions): input frames in, views out.

    Owns the CFG split's UNet copy on a second device (made once) and applies the options to the
    model: op choices on every module, the UNet layout, the compiled instances, the decoder's
    layout. Generation, the benchmarks and the tests all run the model through it.
    """

    def __init__(self, model: SP4D, options: RunOptions | None = None):
        self.model = model
        self.options = RunOptions(devices=(str(next(model.parameters()).device),), dtype=model.dtype)
        self.split: CFGSplit | None = None
        self.streamed: StreamedBlocks | None = None
        self.apply(options or self.options)

    @property
    def unets(self) -> list[torch.nn.Module]:
        """The model's dual UNet and, with a split, its copy on the second device."""
        own = self.model.model.diffusion_model
        return [own] + ([self.split.unets[1]] if self.split is not None and self.split.unets[1] is not own else [])

    def apply(self, options: RunOptions) -> bool:
        """Run with ``options`` from now on; True when this call set up a compile (the next UNet
        and decoder calls compile, or load inductor's cached graphs). The model must already be on
        the options' first device in their dtype (runtime.py loads it so)."""
        dec = self.model.first_stage_model.decoder
        if self.split is not None and self.split.devices != [device_of(d) for d in options.devices]:
            self.close()
        if len(options.devices) > 1 and self.split is None:
            compiled.uncompile_modules([self.model.model.diffusion_model])  # the copy is made eager
            try:
                self.split = CFGSplit(self.model, options.devices)
            except torch.OutOfMemoryError as exc:
                raise BackendError("out_of_memory", f"the second copy of the UNet does not fit on "
                                   f"{options.devices[1]}: free its memory or run on one device") from exc
        self._stream(options)
        configure(self.model, options.ops)
        for unet in self.unets:
            configure(unet, options.ops)
        set_layout(self.unets, options.channels_last)
        if options.compile is None:
            compiled.uncompile_modules([*self.unets, dec])
            fresh = False
        else:
            fresh = compiled.compile_modules([*self.unets, dec], options.compile, options.compile_saved)
        # a compiled decoder is faster with channels-last weights, an eager one slower
        dec.to(memory_format=torch.channels_last if options.compile else torch.contiguous_format)
        self.options = options
        return fresh

    def _stream(self, options: RunOptions) -> None:
        """Stream the UNet's largest blocks from host memory as ``options.unet_resident_gib`` asks
        (memory.py), or put every block back on the GPU."""
        want = options.unet_resident_gib
        have = self.options.unet_resident_gib if self.streamed is not None else None
        if want == have:
            return
        if self.streamed is not None:
            self.streamed.close()
            self.streamed = None
        if want is not None:
            unet = self.model.model.diffusion_model
            compiled.uncompile_modules([unet])
            self.streamed = StreamedBlocks(blocks_to_stream(unet, want), options.device)

    def close(self) -> None:
        """Drop the split's UNet copy (its memory on the second device)."""
        if self.split is not None:
            self.split.close()
            self.split = None

    @property
    def image_multiple(self) -> int:
        """Input image sides must be multiples of this."""
        return self.model.image_multiple

    def condition(self, frames: torch.Tensor, cond_noise: dict | None = None,
                  generator: torch.Generator | None = None) -> tuple[dict, dict]:
        """(cond, uncond) of one window's frames (T, 3, H, W) in [-1, 1], for the generated views."""
        polar, az = view_angles(self.model.n_view)
        t = frames.shape[0]
        return self.model.condition(frames, torch.from_numpy(np.tile(polar, t)), torch.from_numpy(np.tile(az, t)),
                                    cond_noise, generator, offload=self.options.offload)

    def guided(self, c: dict, uc: dict, frames: int, cfg: float = 3.0, min_cfg: float = 1.0
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """denoise(x, sigma) -> the guided D of ``frames`` latents: one denoising step's network work."""
        scale = linear_guidance_scale(frames, min_cfg, cfg)
        return self.model.guided(self.model.batch_cond(c, uc), scale, self.split,
                                 self.options.cfg_batch == "sequential")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, 8, h, w) -> images (N, 3, H, 2W) in [0, 1] (RGB left, parts right)."""
        return ((self.model.decode(z, self.options.decode_chunk).float() + 1.0) / 2.0).clamp(0, 1)

    def window(self, frames: torch.Tensor, noise: torch.Tensor, *, steps: int = 50, cfg: float = 3.0,
               min_cfg: float = 1.0, cond_noise: dict | None = None, generator: torch.Generator | None = None,
               on_step: Callable | None = None) -> torch.Tensor:
        """One window: frames (T, 3, H, W) in [-1, 1] -> decoded (T·V, 3, H, 2W) in [0, 1]."""
        c, uc = self.condition(frames, cond_noise, generator)
        z = self.model.sample(c, uc, noise, steps=steps, cfg=cfg, min_cfg=min_cfg, on_step=on_step, split=self.split,
                              sequential=self.options.cfg_batch == "sequential")
        if not torch.isfinite(z).all():
            raise BackendError("numeric_overflow", f"the denoised latents are not finite in {self.options.dtype}: "
                               "set precision to bf16 (wider range than fp16) or fp32")
        return self.decode(z)

    def views(self, frames: torch.Tensor, *, steps: int = 50, cfg: float = 3.0, min_cfg: float = 1.0,
              seed: int = 23, noise: torch.Tensor | None = None, cond_noise: dict | None = None,
              on_step: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB and part views (N, V, 3, H, W) in [0, 1] for N input frames (N, 3, H, W) in [-1, 1].

        ``on_step(done, total)`` after every denoising step (raise there to cancel); ``noise``
        (T·V, 8, H/8, W/8) and ``cond_noise`` fix the draws (fixtures, noise files), else they come
        from a CPU generator seeded with ``seed``."""
        model = self.model
        n, _, h, w = frames.shape
        dev = next(model.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        if noise is None:
            f = model.first_stage_model.decoder.upsampling
            noise = torch.randn((N_TIME * model.n_view, 8, h // f, w // f), generator=gen)
        noise = noise.to(dev)
        if n < N_TIME:  # still or short input: repeat the last frame, drop its outputs afterwards
            frames = torch.cat([frames, frames[-1:].expand(N_TIME - n, -1, -1, -1)])
        starts = window_starts(frames.shape[0])
        total = len(starts) * steps
        rgb = torch.zeros(frames.shape[0], model.n_view, 3, h, w)
        parts = torch.zeros_like(rgb)
        done = torch.zeros(frames.shape[0], dtype=torch.bool)
        for wi, t0 in enumerate(starts):
            def step(i, _n, _x, wi=wi):
                if on_step:
                    on_step(wi * steps + i + 1, total)

            out = self.window(frames[t0:t0 + N_TIME].to(dev), noise, steps=steps, cfg=cfg, min_cfg=min_cfg,
                              cond_noise=cond_noise, generator=gen, on_step=step).cpu()
            out = out.view(N_TIME, model.n_view, 3, h, 2 * w)
            w_rgb, w_parts = out[..., :w], out[..., w:]
            shared = [k for k in range(N_TIME) if done[t0 + k]]
            if shared:
                k = shared[0]
                prev, cur = parts[t0 + k], w_parts[k]
                fg = (prev.min(1).values < 0.95) & (cur.min(1).values < 0.95)
                gain, off = match_colours(cur, prev, fg)
                w_parts = (w_parts * gain.view(1, 1, 3, 1, 1) + off.view(1, 1, 3, 1, 1)).clamp(0, 1)
                bg = w_parts.min(2, keepdim=True).values > 0.95  # keep the white background white
                w_parts = torch.where(bg, torch.ones_like(w_parts), w_parts)
            for k in range(N_TIME):
                if not done[t0 + k]:
                    rgb[t0 + k], parts[t0 + k] = w_rgb[k], w_parts[k]
                    done[t0 + k] = True
        return rgb[:n], parts[:n]
