"""Building SP4D and loading official weights: strictly, from safetensors only.

Weights come from a local ``sp4d.safetensors`` or the gated Hugging Face repo
``stabilityai/sp4d`` (huggingface_hub with its own token store or HF_TOKEN; the download itself:
backend/weights.py). The model is built
on the meta device and every tensor is read from the file straight to the target device and
dtype, one at a time: no float32 copy of the 5 B parameters is ever made on the host.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from sp4d_job.hub import HUB_FILE, HUB_REPO  # noqa: F401 (names kept for callers)
from sp4d_job.layout import GENERATED_VIEWS

from ..errors import BackendError
from ..weights import fetch_weights, hub_reachable, offline_reason  # noqa: F401 (offline_reason: older callers)
from .model import SP4D
from .vae import ModeOnlyAutoencoder

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "sp4d.yaml"


def load_config(path: str | Path = DEFAULT_CONFIG) -> dict:
    """The parsed yaml (``model.params`` holds the model; ``open_clip_tiny_cfg`` is optional)."""
    return yaml.safe_load(Path(path).read_text())


MODELS = ("sp4d", "sv4d2")  # the ``model`` setting: SP4D, or SV4D 2.0 in its RGB branch (sv4d2.py)
NAMES = {"sp4d": "SP4D", "sv4d2": "SV4D 2.0"}


def build_model(config: dict, device: str | torch.device = "meta", kind: str = "sp4d") -> SP4D:
    """SP4D (or with ``kind`` 'sv4d2' SV4D 2.0: SP4D's RGB branch alone, sv4d2.py) from a parsed
    config on ``device`` (meta: no memory, for loading or key checks)."""
    from .sv4d2 import SV4D2

    archs = {"SP4D-tiny-ViT": config["open_clip_tiny_cfg"]} if "open_clip_tiny_cfg" in config else {}
    cls = {"sp4d": SP4D, "sv4d2": SV4D2}[kind]
    with torch.device(device):
        return cls.from_config(config["model"]["params"], n_view=int(config.get("N_VIEW", GENERATED_VIEWS)),
                               open_clip_archs=archs)


def hub_weights(token: str | None = None, ctx=None, repo: str = HUB_REPO, filename: str = HUB_FILE) -> Path:
    """``filename`` of the hub ``repo`` (default: sp4d.safetensors of stabilityai/sp4d; SVD and
    SV4D 2.0 pass their own) from the hub cache, else downloaded into it (backend/weights.py:
    progress on ``ctx``, cancellable, resumable; the licence, offline and gated refusals as clear
    errors)."""
    return fetch_weights(ctx, repo=repo, filename=filename, token=token)


def resolve_weights(spec: str | None, repo: str = HUB_REPO, filename: str = HUB_FILE) -> Path:
    """A weights spec ('hub', None or a path) to a local safetensors path (the hub: ``filename``
    of ``repo``, SP4D's by default)."""
    if spec in (None, "", "hub"):
        return hub_weights(repo=repo, filename=filename)
    p = Path(spec).expanduser()
    if not p.is_file():
        raise BackendError("missing_weights", f"weights file {p} does not exist")
    if p.suffix != ".safetensors":
        raise BackendError("bad_checkpoint", f"{p.name}: only .safetensors weights are loaded (no pickles)")
    return p


def _describe(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" … (+{len(keys) - n} more)" if len(keys) > n else "")


def check_keys(expected: dict[str, tuple], found: dict[str, tuple], what: str = "SP4D") -> None:
    """Raise bad_checkpoint naming missing, unexpected and mis-shaped keys (``what``: the model)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shaped = sorted(f"{k} {tuple(found[k])} != {tuple(expected[k])}" for k in set(expected) & set(found)
                    if tuple(found[k]) != tuple(expected[k]))
    if missing or unexpected or shaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_describe(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_describe(unexpected)}")
        if shaped:
            parts.append(f"{len(shaped)} with wrong shapes: {_describe(shaped)}")
        raise BackendError("bad_checkpoint", f"the checkpoint does not match the {what} model: " + "; ".join(parts))


def drop_unused(model: SP4D) -> SP4D:
    """Drop the modules nothing runs (the conditioner's VAE decoders, 0.28 GiB in bf16 at full
    size) after the checkpoint's keys were checked against the whole model."""
    for m in model.modules():
        if isinstance(m, ModeOnlyAutoencoder):
            m.drop_decoder()
    return model


def load_strict(model: torch.nn.Module, weights: str | Path, name: str, device: str = "cpu",
                dtype: torch.dtype = torch.float32, drop=None) -> torch.nn.Module:
    """Load ``weights`` (safetensors only) into ``model`` (built on the meta device) strictly:
    every key and shape checked against the whole model first (bad_checkpoint naming what
    differs, ``name`` the model's), then ``drop(model)`` removes what inference never runs, and
    each kept tensor goes straight to ``device``/``dtype``. Unreadable: bad_checkpoint or
    missing_weights. SP4D, SV4D 2.0 and SVD load through it."""
    from safetensors import SafetensorError, safe_open

    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    path = Path(weights)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            check_keys(expected, found, name)
            if drop is not None:
                drop(model)
            sd = {k: f.get_tensor(k).to(dtype) for k in model.state_dict()}
    except SafetensorError as exc:
        raise BackendError("bad_checkpoint", f"{path.name} is not a readable safetensors file: {exc}") from exc
    except OSError as exc:
        raise BackendError("missing_weights", f"cannot read {path}: {exc}") from exc
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_model(weights: str | Path, config: dict | None = None, device: str = "cpu",
               dtype: torch.dtype = torch.float32, kind: str = "sp4d") -> SP4D:
    """Build SP4D (``kind`` 'sv4d2': SV4D 2.0) and load ``weights`` strictly, each tensor straight
    to ``device``/``dtype``."""
    model = build_model(config or load_config(), "meta", kind)
    return load_strict(model, weights, NAMES[kind], device, dtype, drop_unused)
