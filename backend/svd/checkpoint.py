"""Building SVD-XT 1.1 and loading official weights: strictly, from safetensors only.

Weights come from a local ``svd_xt_1_1.safetensors`` or the gated Hugging Face repo
``stabilityai/stable-video-diffusion-img2vid-xt-1-1`` through SP4D's hub code (same cache, token,
offline and error codes). The model is built on the meta device; every key and shape is checked
against the file before any tensor is read, then each tensor goes straight to the target device
and dtype (the release stores float16).
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from sp4d_job.hub import SVD_FILE, SVD_REPO

from ..sp4d.checkpoint import load_strict, resolve_weights
from ..sp4d.vae import ModeOnlyAutoencoder
from .model import SVD

HUB_REPO, HUB_FILE = SVD_REPO, SVD_FILE  # sp4d_job.hub: one definition for Blender and the backend
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "svd_xt_1_1.yaml"
TINY_ARCH = "SVD-tiny-ViT"  # the fixtures' OpenCLIP architecture, given by ``open_clip_tiny_cfg``


def load_config(path: str | Path = DEFAULT_CONFIG) -> dict:
    """The parsed yaml (``model.params`` holds the model; ``open_clip_tiny_cfg`` is optional)."""
    return yaml.safe_load(Path(path).read_text())


def build_model(config: dict, device: str | torch.device = "meta") -> SVD:
    """SVD from a parsed config on ``device`` (meta: no memory, for loading or key checks)."""
    archs = {TINY_ARCH: config["open_clip_tiny_cfg"]} if "open_clip_tiny_cfg" in config else {}
    with torch.device(device):
        return SVD.from_config(config["model"]["params"], open_clip_archs=archs)


def svd_weights(spec: str | None) -> Path:
    """A weights spec ('hub', None or a path) to a local safetensors path (SVD's hub file)."""
    return resolve_weights(spec, repo=HUB_REPO, filename=HUB_FILE)


def drop_unused(model: SVD) -> SVD:
    """Drop what inference never runs, after the keys were checked: the conditioner VAE's decoder
    and the first stage's encoder (0.16 GiB in fp16 at full size)."""
    for m in model.modules():
        if isinstance(m, ModeOnlyAutoencoder):
            m.drop_decoder()
    model.first_stage_model.encoder = None
    return model


def load_model(weights: str | Path, config: dict | None = None, device: str = "cpu",
               dtype: torch.dtype = torch.float32, keep_unused: bool = False) -> SVD:
    """Build SVD and load ``weights`` strictly, each tensor straight to ``device``/``dtype``.
    ``keep_unused``: keep the modules inference never runs (tests of the first-stage encoder)."""
    model = build_model(config or load_config(), "meta")
    return load_strict(model, weights, "SVD-XT 1.1", device, dtype, None if keep_unused else drop_unused)
