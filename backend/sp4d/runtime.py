"""The loaded model of a backend process: built once, kept between jobs."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

import torch

from ..errors import BackendError
from .checkpoint import DEFAULT_CONFIG, load_config, load_model, resolve_weights
from .model import SP4D

_cache: dict[tuple, SP4D] = {}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


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


def resolve_device(spec: str | None) -> str:
    spec = (spec or "auto").lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" and not torch.cuda.is_available():
        raise BackendError("missing_weights", "device 'cuda' was asked for but no CUDA GPU is available")
    return spec


def resolve_devices(spec: str | None) -> list[str]:
    """One device, or two ('cuda:0,cuda:1') for the CFG split; the first holds the model."""
    from .split import parse_devices

    names = [resolve_device(d) for d in parse_devices(spec or "auto")]
    if len(names) > 2:
        raise BackendError("bad_input", f"at most two devices (the CFG split), got {names}")
    count = torch.cuda.device_count()
    for d in names:
        dev = torch.device(d)
        if dev.type == "cuda" and (dev.index or 0) >= count:
            raise BackendError("bad_input", f"device {d!r} was asked for but {count} CUDA GPU(s) are visible")
    return names


_splits: dict[tuple, object] = {}


def _drop_splits() -> None:
    for split in _splits.values():
        split.close()
    _splits.clear()


def get_split(model: SP4D, devices: list[str]):
    """The CFGSplit of this model over these devices (its replica is made once and kept)."""
    from .split import CFGSplit

    key = tuple(devices)
    if key not in _splits or _splits[key].model is not model:  # a reloaded model needs a new replica
        _drop_splits()  # one replica at a time
        try:
            _splits[key] = CFGSplit(model, devices)
        except torch.OutOfMemoryError as exc:
            raise BackendError("out_of_memory", f"the second copy of the UNet does not fit on {devices[1]}: "
                               "free its memory or run on one device") from exc
    return _splits[key]


def resolve_dtype(precision: str | None, device: str) -> torch.dtype:
    p = (precision or "bf16").lower()
    if p not in DTYPES:
        raise BackendError("bad_input", f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    return torch.float32 if device == "cpu" else DTYPES[p]  # half precision on the CPU is slow and lossy


def get_model(weights: str | None, config: str | None, device: str, dtype: torch.dtype) -> SP4D:
    """The model for these settings, loaded on first use (out of memory: a clear error)."""
    cfg_path = Path(config) if config else DEFAULT_CONFIG
    path = resolve_weights(weights)
    key = (str(path), str(cfg_path), device, dtype)
    if key not in _cache:
        _cache.clear()  # one model at a time (and no replica of the old one)
        _drop_splits()
        try:
            _cache[key] = load_model(path, load_config(cfg_path), device=device, dtype=dtype)
        except torch.OutOfMemoryError as exc:
            raise BackendError("out_of_memory", f"the SP4D weights do not fit on {device}: use bf16 precision, "
                               "free GPU memory, or a larger GPU") from exc
    return _cache[key]
