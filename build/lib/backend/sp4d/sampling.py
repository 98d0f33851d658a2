"""EDM discretisation, the Euler EDM sampler (no churn) and the linear prediction guider."""

from __future__ import annotations

from typing import Callable

import torch


def edm_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0,
               device=None) -> torch.Tensor:
    """n Karras/EDM noise levels from sigma_max down to sigma_min, then a final 0 (float32)."""
    ramp = torch.linspace(0, 1, n, device=device)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def linear_guidance_scale(n_frames: int, min_scale: float = 1.0, max_scale: float = 3.0) -> torch.Tensor:
    """Per-frame guidance scale rising linearly along the (time-major) frame axis."""
    return torch.linspace(min_scale, max_scale, n_frames)


def guide(denoised: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """D_u + s·(D_c − D_u) for a batch [uncond ‖ cond] of b·F frames each; scale: (F,)."""
    d_u, d_c = denoised.chunk(2)
    f = scale.shape[0]
    s = scale.to(d_u.device, d_u.dtype).repeat(d_u.shape[0] // f).view(-1, *([1] * (d_u.dim() - 1)))
    return d_u + s * (d_c - d_u)


def sample_euler_edm(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                     sigmas: torch.Tensor, on_step: Callable[[int, int, torch.Tensor], None] | None = None
                     ) -> torch.Tensor:
    """Euler integration of the probability-flow ODE from sigmas[0] to 0.

    denoise(x, sigma) -> guided D(x; sigma); noise ~ N(0, 1); x_0 = noise·sqrt(1 + σ_0²).
    ``on_step(i, n, x)`` runs after each step (progress and cancellation).
    """
    x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    n = len(sigmas) - 1
    for i in range(n):
        s = sigmas[i]
        d = (x - denoise(x, s)) / s
        x = x + (sigmas[i + 1] - s) * d
        if on_step:
            on_step(i, n, x)
    return x
