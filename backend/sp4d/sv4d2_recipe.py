"""SV4D 2.0's own sampling recipe (the official ``simple_video_sample_4d2.py`` with sv4d2.safetensors).

What the official script does (facts and line citations in docs/svd.md, "SV4D 2.0"):

- a window is 12 frames × 4 generated views (48 latents, time-major: frame t, view v at 4t + v);
- the clip has 21 frames by default; the views sit at azimuths 60°, 120°, 180°, 240° relative to
  the input view (the script's list 0, 60, 120, 180, 240 with the input first), all at the input's
  elevation (relative polar π/2);
- the first window covers frames 0–11 with no view conditioning; every later window starts at a
  frame that an earlier window generated (its *anchor*) and is conditioned on that frame's
  generated views; a later window's images replace the earlier ones for the frames they share;
- guidance: the linear prediction guider from 1.0 to ``max_scale`` 2.0 over the 48 latents of a
  window (the script's ``min_cfg`` 2.0 is not read by that guider);
- Euler EDM, 50 steps, σ 700 → 0.002, ρ 7; the conditioning VAE latents get the 1e-5 noise level.

This module holds the recipe's numbers and its pure parts (view angles, guidance scales, the window
plan); ``sv4d2.SV4D2Pipeline`` runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SV4D2Recipe:
    """The official SV4D 2.0 (4-view) sampling settings.

    ``azimuths_deg``/``elevations_deg``: the input view first, then the generated views, as the
    script lists them (absolute degrees; only differences to the input view reach the model).
    ``max_scale``/``min_scale``: the linear guider's end points over a window's frames·views
    latents. ``frames``: the script's default clip length (``n_frames``)."""

    frames_per_window: int = 12
    views_per_window: int = 4
    azimuths_deg: tuple[float, ...] = (0.0, 60.0, 120.0, 180.0, 240.0)
    elevations_deg: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    max_scale: float = 2.0
    min_scale: float = 1.0
    steps: int = 50
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    frames: int = 21
    image_size: int = 576
    encoding_t: int = 8
    decoding_t: int = 4

    def __post_init__(self) -> None:
        if len(self.azimuths_deg) != self.views_per_window + 1 or len(self.elevations_deg) != len(self.azimuths_deg):
            raise ValueError(f"azimuths_deg and elevations_deg need {self.views_per_window + 1} values (the input "
                             f"view and {self.views_per_window} generated views)")
        if self.frames_per_window < 2:
            raise ValueError("a window needs at least 2 frames (an anchor frame and a new one)")

    @property
    def latents_per_window(self) -> int:
        return self.frames_per_window * self.views_per_window


SV4D2_RECIPE = SV4D2Recipe()


def relative_angles(recipe: SV4D2Recipe = SV4D2_RECIPE) -> tuple[np.ndarray, np.ndarray]:
    """(polar, azimuth) in radians (float64, as the script computes them) of the generated views
    relative to the input view, one value each: polar = π/2 + own polar − input polar,
    azimuth = own − input (both mod 2π); the script first shifts every azimuth by the last one,
    which the difference cancels (up to rounding, kept)."""
    polar = np.array([np.deg2rad(90.0 - e) for e in recipe.elevations_deg])
    last = recipe.azimuths_deg[-1]
    az = np.array([np.deg2rad((a - last) % 360) for a in recipe.azimuths_deg])
    rel_polar = (polar[1:] - polar[0] + math.pi / 2) % (2 * math.pi)
    rel_az = (az[1:] - az[0]) % (2 * math.pi)
    return rel_polar, rel_az


def window_angles(recipe: SV4D2Recipe = SV4D2_RECIPE) -> tuple[torch.Tensor, torch.Tensor]:
    """(polar, azimuth) (frames·views,) float64 for one window, time-major (every frame lists the
    views in order): the conditioner's ``polar_rad`` / ``azimuth_rad``."""
    polar, az = relative_angles(recipe)
    t = recipe.frames_per_window
    return torch.from_numpy(np.tile(polar, t)), torch.from_numpy(np.tile(az, t))


def guidance_scale(recipe: SV4D2Recipe = SV4D2_RECIPE) -> torch.Tensor:
    """(frames·views,) float32 guidance per latent of a window, time-major: the official
    LinearPredictionGuider's linspace(min_scale, max_scale, 48), i.e. 1 + (4t + v)/47 for frame t,
    view v with the defaults (per frame and view, not constant)."""
    return torch.linspace(recipe.min_scale, recipe.max_scale, recipe.latents_per_window)


@dataclass(frozen=True)
class Window:
    """One sampling window: the clip frames it generates (all views of each, in order) and the
    frame whose already generated views condition it (None: the first window, no view
    conditioning). Its images replace earlier windows' for every frame it generates."""

    frames: tuple[int, ...]
    anchor: int | None

    @property
    def start(self) -> int:
        return self.frames[0]


def window_plan(n: int, t: int = SV4D2_RECIPE.frames_per_window) -> list[Window]:
    """The windows of ``t`` frames that generate a clip of ``n`` ≥ t frames, in order.

    The first covers 0..t−1; each later one starts at min(previous start + t − 1, n − t), a frame
    already generated, which is its anchor. For t ≤ n < 2t this is the official script's plan
    (windows at range(0, n, t) with the last moved back to n − t: 0 and n − t). The official
    loop has no plan beyond that (from n = 2t its second window's anchor frame is not generated
    yet); the rule above extends it with windows that overlap by one frame, as the script's
    8-view variant steps."""
    if n < t:
        raise ValueError(f"a clip of {n} frames is shorter than a window ({t}): pad it first (padded_order)")
    plan = [Window(tuple(range(t)), None)]
    while plan[-1].start + t < n:
        s = min(plan[-1].start + t - 1, n - t)
        plan.append(Window(tuple(range(s, s + t)), s))
    return plan


def padded_order(n: int, t: int = SV4D2_RECIPE.frames_per_window) -> list[int]:
    """Indices of ``n`` clip frames that fill at least one window of ``t``: the frames themselves,
    or for a shorter clip the clip played forwards then backwards, repeated, cut to ``t``. Ours:
    the official script refuses a clip shorter than its ``n_frames`` (its reader would append
    the reversed frames once). The outputs of frame i < n are those at position i."""
    if n >= t:
        return list(range(n))
    cycle = list(range(n)) + list(range(n - 1, -1, -1))
    return [cycle[i % len(cycle)] for i in range(t)]
