"""Random weights for the full-size model (benchmarks and GPU checks without the checkpoint)."""

from __future__ import annotations

import math

import torch


def random_init_(module: torch.nn.Module, seed: int = 0) -> None:
    """The fixtures' scheme: matrices N(0, 1/fan_in), norm weights 1 + 0.1·N, mix factors N(0, 1),
    other vectors 0.1·N, so that layers the official code zero-initialises matter."""
    dev = next(module.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        with torch.no_grad():
            r = torch.randn(p.shape, generator=g, device=dev, dtype=torch.float32)
            if p.dim() >= 2:
                r = r / math.sqrt(p[0].numel())
            elif name.endswith("mix_factor"):
                pass
            elif ("norm" in name or ".ln_" in name) and name.endswith("weight"):
                r = 1 + 0.1 * r
            else:
                r = 0.1 * r
            p.copy_(r.to(p.dtype))
