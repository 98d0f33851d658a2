"""Stable Part Diffusion 4D: our implementation of the official network, loading its keys.

Public API (docs/sp4d.md):
    SP4D.from_config(params)          build from the ``model.params`` tree of sp4d.yaml
    load_checkpoint(model, path)      strict, from safetensors, straight to dtype/device
    model.denoise(x, sigma, cond)     the denoiser on (x, sigma, cond) as the fixtures lay them out
"""

from .model import SP4D  # noqa: F401
