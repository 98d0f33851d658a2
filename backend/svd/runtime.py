"""The loaded SVD model of a backend process (kept between jobs, one at a time)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import BackendError
from ..sp4d.options import RunOptions
from .checkpoint import DEFAULT_CONFIG, load_config, load_model, svd_weights
from .pipeline import SVDPipeline

_cache: dict[tuple, SVDPipeline] = {}


def get_pipeline(weights: str | None, config: str | None, options: RunOptions) -> SVDPipeline:
    """The pipeline of the SVD model for these weights and config, loaded on the options' first
    device in their dtype on first use and kept for later jobs; the caller applies its options."""
    cfg_path = Path(config) if config else DEFAULT_CONFIG
    path = svd_weights(weights)
    key = (str(path), str(cfg_path), options.device, options.dtype)
    if key not in _cache:
        release()
        try:
            model = load_model(path, load_config(cfg_path), device=options.device, dtype=options.dtype)
        except torch.OutOfMemoryError as exc:
            raise BackendError("out_of_memory", f"the SVD weights do not fit on {options.device}: use bf16 "
                               "precision, free GPU memory, or a larger GPU") from exc
        _cache[key] = SVDPipeline(model)
    return _cache[key]


def release() -> None:
    """Forget the loaded model (its GPU memory; low-VRAM runs call this before SP4D samples)."""
    _cache.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
