"""The loaded model of a backend process (kept between jobs) and where inductor keeps its graphs."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

import torch

from ..errors import BackendError
from .checkpoint import DEFAULT_CONFIG, load_config, load_model, resolve_weights
from .memory import place_streamed
from .options import RunOptions
from .pipeline import SP4DPipeline

_cache: dict[tuple, SP4DPipeline] = {}


def compile_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where inductor keeps compiled graphs and Triton kernels between backend processes: the
    user's TORCHINDUCTOR_CACHE_DIR, else the user's cache folder. Inductor's own default is the temp
    folder, which a reboot empties: the next backend would compile for ~3 minutes, not ~30 s."""
    if environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(environ["TORCHINDUCTOR_CACHE_DIR"])
    base = environ.get("LOCALAPPDATA" if os.name == "nt" else "XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "sp4d-blender" / "torchinductor"


def use_compile_cache_dir(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Point inductor at compile_cache_dir (TORCHINDUCTOR_CACHE_DIR in ``environ``), creating it;
    None, and inductor's own default kept, where it cannot be created (say a read-only home):
    the folder only saves time, so it must not fail a job."""
    path = compile_cache_dir(environ)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def with_saved_graphs(options: RunOptions, settings: Mapping, cache: Path | None) -> RunOptions:
    """``options`` with compiled graphs saved whole in the compile cache folder (its ``saved``
    subfolder; precompiled.py) when they compile, a cache folder exists and the settings'
    ``compiled_graphs`` is 'saved'."""
    if options.compile is None or cache is None or settings.get("compiled_graphs", "traced") != "saved":
        return options
    return options.replace(compile_saved=str(cache / "saved"))


def loaded_pipeline() -> SP4DPipeline | None:
    """The pipeline this process holds (get_pipeline keeps one at a time), or None."""
    return next(iter(_cache.values()), None)


def get_pipeline(weights: str | None, config: str | None, options: RunOptions, kind: str = "sp4d"
                 ) -> SP4DPipeline:
    """The pipeline of the model for these weights and config, loaded on the options' first device
    in their dtype on first use and kept for later jobs (one model at a time); the caller applies
    its options (SP4DPipeline.apply). ``kind`` 'sv4d2': SV4D 2.0 in SP4D's RGB branch (sv4d2.py).
    Out of memory while loading: a clear error."""
    from . import sv4d2

    cfg_path = Path(config) if config else DEFAULT_CONFIG
    path = resolve_weights(weights) if kind == "sp4d" else resolve_weights(weights, sv4d2.HUB_REPO, sv4d2.HUB_FILE)
    key = (str(path), str(cfg_path), options.device, options.dtype, kind)
    if key not in _cache:
        for old in _cache.values():
            old.close()
        _cache.clear()  # one model at a time (and no copy of the old one)
        try:
            if options.unet_resident_gib is None:
                model = load_model(path, load_config(cfg_path), device=options.device, dtype=options.dtype, kind=kind)
            else:  # a tier that streams UNet blocks: the whole model never on the GPU at once
                model = load_model(path, load_config(cfg_path), device="cpu", dtype=options.dtype, kind=kind)
                place_streamed(model, model.model.diffusion_model, options.device, options.unet_resident_gib,
                               (model.conditioner,) if options.offload else ())
        except torch.OutOfMemoryError as exc:
            raise BackendError("out_of_memory", f"the {'SV4D 2.0' if kind == 'sv4d2' else 'SP4D'} weights do not "
                               f"fit on {options.device}: choose a smaller memory tier (vram: 16 or 12), free GPU "
                               "memory, or use a larger GPU") from exc
        _cache[key] = (sv4d2.SV4D2Pipeline if kind == "sv4d2" else SP4DPipeline)(model)
    return _cache[key]
