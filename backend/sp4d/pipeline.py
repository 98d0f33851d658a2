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

from .model import SP4D
from .split import CFGSplit

N_TIME, N_VIEW = 4, 12


def view_angles(n_view: int = N_VIEW) -> tuple[np.ndarray, np.ndarray]:
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


def sample_window(model: SP4D, frames: torch.Tensor, noise: torch.Tensor, *, steps: int = 50, cfg: float = 3.0,
                  min_cfg: float = 1.0, cond_noise: dict | None = None, generator: torch.Generator | None = None,
                  on_step: Callable | None = None, decode_chunk: int = 4, split: CFGSplit | None = None,
                  offload: str | None = None) -> torch.Tensor:
    """One window: frames (T, 3, H, W) in [-1, 1] -> decoded (T·V, 3, H, 2W) in [0, 1]."""
    polar, az = view_angles(model.n_view)
    t = frames.shape[0]
    polar_t = torch.from_numpy(np.tile(polar, t))
    az_t = torch.from_numpy(np.tile(az, t))
    c, uc = model.condition(frames, polar_t, az_t, cond_noise, generator, offload=offload)
    z = model.sample(c, uc, noise, steps=steps, cfg=cfg, min_cfg=min_cfg, on_step=on_step, split=split)
    return ((model.decode(z, decode_chunk).float() + 1.0) / 2.0).clamp(0, 1)


def generate_views(model: SP4D, frames: torch.Tensor, *, steps: int = 50, cfg: float = 3.0, min_cfg: float = 1.0,
                   seed: int = 23, noise: torch.Tensor | None = None, cond_noise: dict | None = None,
                   on_step: Callable[[int, int], None] | None = None, decode_chunk: int = 4,
                   split: CFGSplit | None = None, offload: str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB and part views (N, V, 3, H, W) in [0, 1] for N input frames (N, 3, H, W) in [-1, 1].

    ``on_step(done, total)`` after every denoising step (raise there to cancel); ``split``: the
    CFG batch over two devices; ``offload``: where the conditioner waits while sampling (low VRAM).
    """
    n, _, h, w = frames.shape
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    if noise is None:
        noise = torch.randn((N_TIME * model.n_view, 8, h // 8, w // 8), generator=gen)
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

        out = sample_window(model, frames[t0:t0 + N_TIME].to(dev), noise, steps=steps, cfg=cfg, min_cfg=min_cfg,
                            cond_noise=cond_noise, generator=gen, on_step=step, decode_chunk=decode_chunk,
                            split=split, offload=offload).cpu()
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
