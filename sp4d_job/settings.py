"""job.json's settings: one schema with types, defaults and allowed values, and its checker.

Blender's preferences write these settings, the backend's command line takes them as flags
(backend/settings.py makes the flags from this schema), and ``validate`` checks them once, before
anything runs. Unknown settings are kept and ignored; a setting given as null takes its default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# compile: false (eager), true (the fastest scope, "layers"), a scope by name, or "auto" (the backend
# compiles the layers where a GPU and Triton allow it: sp4d/options.py)
COMPILE_WORDS = {False: None, None: None, "false": None, "off": None, "": None,
                 True: "layers", "true": "layers", "on": "layers", "blocks": "blocks", "layers": "layers",
                 "auto": "auto"}
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class SettingError(ValueError):
    """A setting that cannot be used: names the setting, what it must be and what it got."""

    def __init__(self, name: str, must: str, value: Any):
        super().__init__(f"settings.{name} must be {must}, got {value!r}")
        self.name = name


@dataclass(frozen=True)
class Setting:
    """One setting: ``kind`` int | float | bool | str | choice | compile | device | path (a str
    or null); ``choices`` for a choice; ``low``/``high`` bounds and ``multiple`` for numbers;
    ``stage``: the first stage that reads it; ``flag``: its command-line flag when not --name."""

    name: str
    default: Any
    kind: str
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    multiple: int | None = None
    stage: str = "generate"
    flag: str | None = None

    def must(self) -> str:
        """What a value must be, in words (error messages, --help)."""
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind == "compile":
            return "true, false, 'auto', 'blocks' or 'layers'"
        if self.kind == "device":
            return "'auto', 'cpu', 'cuda', 'cuda:N', or two of them separated by a comma (the CFG split)"
        if self.kind == "path":
            return "a file path or null"
        words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[self.kind]
        if self.low is not None and self.high is not None:
            words += f" from {self.low:g} to {self.high:g}"
        elif self.low is not None:
            words += f" of at least {self.low:g}"
        if self.multiple:
            words += f", a multiple of {self.multiple}"
        return words

    def parse(self, value: Any) -> Any:
        """The value in its type (numbers from numeric strings too); SettingError when it is not
        one of the allowed values."""
        try:
            out = _PARSE[self.kind](self, value)
        except (TypeError, ValueError, KeyError, OverflowError):
            raise SettingError(self.name, self.must(), value) from None
        if self.kind in ("int", "float") and ((self.low is not None and out < self.low)
                                              or (self.high is not None and out > self.high)
                                              or (self.multiple and out % self.multiple)):
            raise SettingError(self.name, self.must(), value)
        return out


def _int(s: Setting, v: Any) -> int:
    if isinstance(v, bool) or float(v) != int(float(v)):
        raise ValueError(v)
    return int(float(v))


def _float(s: Setting, v: Any) -> float:
    if isinstance(v, bool) or not math.isfinite(float(v)):
        raise ValueError(v)
    return float(v)


def _bool(s: Setting, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(v)
    return v


def _str(s: Setting, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(v)
    return v


def _choice(s: Setting, v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and str(v) in s.choices:
        return str(v)  # a number among numeric names ("vram": 16)
    if v not in s.choices:
        raise ValueError(v)
    return v


def _compile(s: Setting, v: Any) -> str | None:
    return COMPILE_WORDS[v.lower() if isinstance(v, str) else v]


def _device(s: Setting, v: Any) -> str:
    names = [d.strip().lower() for d in _str(s, v).split(",")]
    if not 1 <= len(names) <= 2 or not all(DEVICE.match(d) for d in names):
        raise ValueError(v)
    return ",".join(names)


def _path(s: Setting, v: Any) -> str | None:
    return None if v is None else _str(s, v)


_PARSE = {"int": _int, "float": _float, "bool": _bool, "str": _str, "choice": _choice, "compile": _compile,
          "device": _device, "path": _path}

SETTINGS = (
    Setting("part_source", "auto", "choice", "where the part images come from: auto (SP4D when it can run, else the "
            "oracle for meshes with ground truth; always SP4D for clips and pictures), sp4d, oracle (a mesh's ground "
            "truth, or oracle_mesh's)",
            choices=("auto", "sp4d", "oracle")),
    Setting("oracle_mesh", None, "path", "with part_source oracle, for a job without a mesh (a clip or a picture): "
            "the mesh with ground-truth parts the oracle renders in place of SP4D's views (a mesh.npz with gt_labels, "
            "gt_parents, gt_joints, or the creature of 'python -m backend sample'); the picture's SVD clip still runs"),
    Setting("model", "sp4d", "choice", "the generating model: sp4d (RGB and part views), or sv4d2 (SV4D 2.0 weights "
            "in SP4D's RGB branch: RGB views and orbit videos only, no rig)", choices=("sp4d", "sv4d2")),
    Setting("frames", 4, "int", "frames of the clip to generate (picked evenly)", low=1, high=64),
    # model sv4d2 runs SV4D 2.0's own recipe (backend/sp4d/sv4d2_recipe.py): its clip length and guidance
    Setting("sv4d2_frames", 21, "int", "with model sv4d2: frames of the clip to generate (picked evenly; the "
            "official script's 21)", low=1, high=64),
    Setting("sv4d2_cfg", 2.0, "float", "with model sv4d2: guidance scale of a window's last frame and view "
            "(linear from sv4d2_min_cfg; the official 2.0)"),
    Setting("sv4d2_min_cfg", 1.0, "float", "with model sv4d2: guidance scale of a window's first frame and view "
            "(the official guider's 1.0)"),
    Setting("image_size", 576, "int", "the model's square image size (a multiple of 64 for the released model)",
            low=16, high=2048, multiple=8),
    Setting("steps", 50, "int", "denoising steps", low=1),
    Setting("cfg", 3.0, "float", "guidance scale of the last frame (linear from min_cfg)"),
    Setting("min_cfg", 1.0, "float", "guidance scale of the first frame"),
    Setting("seed", 23, "int", "seed of the noise (a CPU generator)"),
    Setting("device", "auto", "device", "auto, cpu, cuda, cuda:N, or two GPUs (cuda:0,cuda:1): the unconditional "
            "half of each guided step on a UNet copy on the second"),
    Setting("precision", "fp16", "choice", "the GPU's precision (the CPU always computes in fp32); fp16 is as close "
            "to fp32 as the official fp16 autocast, bf16 has the wider range (docs/perf.md row 52)",
            choices=("bf16", "fp16", "fp32")),
    Setting("weights", "hub", "str", "sp4d.safetensors, or 'hub' (the gated Hugging Face repo stabilityai/sp4d)"),
    Setting("accept_licence", False, "bool", "accept the Stability AI Community License of the SP4D weights, so that "
            "'hub' may download them (read it first: https://huggingface.co/stabilityai/sp4d)"),
    Setting("model_config", None, "path", "model config yaml (default: the released model's)", flag="--config"),
    Setting("preprocess", True, "bool", "crop, centre and whiten the clip's frames (off: they are model-ready)"),
    Setting("decode_chunk", 4, "int", "latents decoded per VAE call", low=1),
    Setting("noise_file", None, "path", "safetensors with sampler.randn and cond.noise.* (exact reproduction)"),
    Setting("compile", None, "compile", "torch.compile the UNet and the VAE decoder: true (= layers), 'blocks', "
            "'layers' or 'auto' (layers on a CUDA GPU where Triton is installed and the memory tier allows it, "
            "else eager) (docs/perf.md)"),
    Setting("compiled_graphs", "traced", "choice", "how a later backend process gets the compiled graphs: 'traced' "
            "(dynamo traces again and finds inductor's cached code) or, experimental, 'saved' whole in the compile "
            "cache (torch's AOT precompile: loaded without tracing; not yet measured on a GPU, docs/perf.md row 55)",
            choices=("traced", "saved")),
    Setting("low_vram", False, "bool", "at most the 16 GB memory tier (the image encoders off the GPU while sampling)"),
    Setting("vram", "auto", "choice", "the GPU memory tier: 24, 16 or 12 (GB), or auto (from the GPU's free memory; "
            "docs/perf.md)", choices=("auto", "24", "16", "12")),
    Setting("max_influences", 4, "int", "bones per vertex (0: no limit)", low=0, stage="rig"),
    # the SVD front stage (backend/generate_svd.py): a picture (source kind 'image'), or a mesh whose
    # captured frames do not move (animate_still), becomes a clip before SP4D
    Setting("animate_still", False, "bool", "when the captured frames do not move, animate the first with Stable "
            "Video Diffusion before SP4D (a still mesh gets motion to fit joints from)"),
    Setting("motion_bucket", 127, "int", "SVD's motion amount (its motion_bucket_id: 1 calm … 255 wild)",
            low=1, high=255),
    Setting("svd_seed", 42, "int", "seed of SVD's noise (a CPU generator)"),
    Setting("svd_steps", 30, "int", "SVD denoising steps", low=1),
    Setting("svd_frames", 25, "int", "frames SVD generates (SP4D's input frames are chosen from them)", low=2,
            high=64),
    Setting("svd_width", 1024, "int", "SVD's frame width (the model was trained at 1024)", low=16, high=2048,
            multiple=8),
    Setting("svd_height", 576, "int", "SVD's frame height (the model was trained at 576)", low=16, high=2048,
            multiple=8),
    Setting("svd_weights", "hub", "str", "svd_xt_1_1.safetensors, or 'hub' (the gated Hugging Face repo "
            "stabilityai/stable-video-diffusion-img2vid-xt-1-1)"),
    Setting("accept_svd_licence", False, "bool", "accept the Stability AI Community License of the SVD-XT 1.1 "
            "weights, so that svd_weights 'hub' may download them (read it first: "
            "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt-1-1)"),
    Setting("svd_config", None, "path", "SVD model config yaml (default: the released model's)"),
)
BY_NAME = {s.name: s for s in SETTINGS}
DEFAULTS = {s.name: s.default for s in SETTINGS}


def validate(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every setting in its type with the defaults filled in (null means the default); unknown
    keys kept as they are. SettingError for the first value that is not allowed."""
    given = dict(settings or {})
    out = dict(given)
    for s in SETTINGS:
        value = given.get(s.name)
        out[s.name] = s.default if value is None else s.parse(value)
    return out
