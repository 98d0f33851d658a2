"""How this process runs SP4D: one frozen RunOptions, built and checked in one place.

The model (model.py and the modules it is built from) computes one function. Which implementation
of each op runs (our Triton kernels, PyTorch's, a compiled multiply-reduce), on which devices, in
which precision and memory layout, and what is compiled, is decided here and nowhere else:
``RunOptions.from_settings`` builds it from a job's settings (sp4d_job.settings), benchmarks build
variants with ``dataclasses.replace``. The modules read their ``ops`` (an OpChoices, set on every
module by ``configure``) and call dispatch.py, which picks the implementation from those choices
and the tensors at hand (device, dtype, size, whether the code runs inside a compiled graph).
``RunOptions.describe()`` prints what runs for each op.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import BackendError

COMPILE_SCOPES = ("blocks", "layers")  # compiled.py: which module instances each compiles
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class OpChoices:
    """Which implementation of each op the modules use, where more than one computes it.

    Defaults are the fastest measured on an H100 (docs/perf.md); every alternative stays for
    comparisons. Each choice applies only where its implementation can run (dispatch.py): the
    Triton kernels need CUDA (or Triton's interpreter) and half precision, the "compiled" forms
    need the code to run inside a compiled graph (RunOptions.compile)."""

    triton_kernels: bool = True  # our GEGLU and short-attention kernels (kernels.py)
    geglu_kernel: str = "tma"  # "tma": persistent with TMA loads on Hopper and newer (else blocked) | "blocked"
    geglu_gate: str = "exp"  # the GEGLU kernel's exact GELU: "exp" | "poly" | "erf" (kernels.GATES)
    frame_norm: bool = True  # eager half precision: ResBlock GroupNorm + embedding + SiLU as Triton kernels
    short_attention_tokens: int = 16  # attention over at most this many tokens counts as short
    sdpa_max_batch_heads: int = 65535  # CUDA attention kernels' grid limit: larger batches go in chunks
    norm_by_image: bool = True  # compiled: GroupNorm from per-image partial sums (else inductor's generic one)
    out_bias_apart: bool = True  # compiled half precision: output projections add their bias after the product
    skips_in_fusion: bool = True  # output blocks' skip concatenations inside the fusion layers
    frame_conv_pixels: int = 4096  # time convolutions as one batched product from this h·w on
    frame_conv_channels_last_pixels: int = 1024  # compiled: cuDNN with channels-last weights from this h·w on
    edge_in_pixels: int = 1024  # first UNet convolution (few input channels) as a product from this h·w on
    edge_out_pixels: int = 4096  # last UNet convolution (few output channels) as a product from this h·w on
    vae_attention: str = "products"  # CUDA half precision: VAE attention as two products | "sdpa"
    clip_attention: str = "flash"  # CLIP tower: flash/memory-efficient SDPA | "pytorch" (PyTorch's pick, cuDNN)

    def __post_init__(self) -> None:
        from . import kernels

        for name, allowed in (("geglu_kernel", ("tma", "blocked")), ("geglu_gate", kernels.GATE_NAMES),
                              ("vae_attention", ("products", "sdpa")), ("clip_attention", ("flash", "pytorch"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"OpChoices.{name} must be one of {allowed}, got {getattr(self, name)!r}")


class UsesOps:
    """Mixin of the modules that dispatch an op: ``ops`` is the choices they follow (the defaults
    until ``configure`` sets the run's on the instance)."""

    ops: OpChoices = OpChoices()


def configure(root: nn.Module, ops: OpChoices) -> None:
    """Give every module under ``root`` that dispatches an op these choices (one shared object)."""
    for m in root.modules():
        if isinstance(m, UsesOps):
            m.ops = ops


@dataclass(frozen=True)
class RunOptions:
    """Devices, precision, compile scope, layout, op choices, memory mode: how SP4D runs here.

    ``devices``: the first holds the model; a second runs the unconditional half of each guided
    step on a UNet copy (split.py). ``compile``: None (eager) or a scope of compiled.py (``layers``
    compiles whole UNet layers and the VAE decoder, ``blocks`` the repeated blocks and the decoder).
    ``compile_saved``: a folder where each compiled graph is saved whole and from where a later
    process loads it without tracing (precompiled.py), or None (dynamo traces in every process).
    ``channels_last``: the UNet's activations and convolution weights NHWC. ``offload``: where the
    conditioner (image tower, VAE encoder) waits while the UNet samples (low-VRAM mode), or None.
    ``decode_chunk``: latents decoded per VAE call. ``cfg_batch``: the guided step's two halves as one
    UNet batch ("joint") or two calls ("sequential": half the activations). ``unet_resident_gib``:
    the UNet's weights kept on the GPU up to this many GiB, the rest streamed block by block
    from host memory (memory.py; eager only), None: all resident. ``tier``: the memory tier
    (memory.TIERS) these came from, for messages."""

    devices: tuple[str, ...] = ("cpu",)
    dtype: torch.dtype = torch.float32
    compile: str | None = None
    compile_saved: str | None = None
    channels_last: bool = False
    offload: str | None = None
    decode_chunk: int = 4
    cfg_batch: str = "joint"
    unet_resident_gib: float | None = None
    tier: str | None = None
    ops: OpChoices = field(default_factory=OpChoices)

    def __post_init__(self) -> None:
        if not self.devices or len(self.devices) > 2:
            raise ValueError(f"one or two devices (the CFG split), got {self.devices}")
        if self.compile not in (None, *COMPILE_SCOPES):
            raise ValueError(f"compile must be None or one of {COMPILE_SCOPES}, got {self.compile!r}")
        if not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point type, got {self.dtype}")
        if self.decode_chunk < 1:
            raise ValueError(f"decode_chunk must be at least 1, got {self.decode_chunk}")
        if self.cfg_batch not in ("joint", "sequential"):
            raise ValueError(f"cfg_batch must be 'joint' or 'sequential', got {self.cfg_batch!r}")
        if self.compile_saved is not None and self.compile is None:
            raise ValueError("compile_saved (a folder of saved graphs) needs a compile scope")
        if self.unet_resident_gib is not None and (self.compile is not None or len(self.devices) > 1):
            raise ValueError("streamed UNet blocks (unet_resident_gib) run eager on one device")

    @property
    def device(self) -> str:
        """The device that holds the model."""
        return self.devices[0]

    def replace(self, **changes) -> RunOptions:
        """A copy with ``changes``; op choices by name too (``replace(frame_norm=False)``)."""
        op_names = {f.name for f in dataclasses.fields(OpChoices)}
        ops = {k: changes.pop(k) for k in list(changes) if k in op_names}
        if ops:
            changes["ops"] = dataclasses.replace(changes.get("ops", self.ops), **ops)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_settings(cls, settings: Mapping, cuda_count: int | None = None,
                      available: int | None = None, triton: bool | None = None) -> RunOptions:
        """The options of a job whose settings passed sp4d_job.settings.validate: devices
        resolved ('auto': the GPU when there is one) and checked against the GPUs present,
        precision (the CPU always computes in float32: half precision there is slow and lossy), the
        compile scope and the layout it prefers (channels-last for the compiled layers on CUDA,
        NCHW otherwise), the memory tier (``vram``: memory.TIERS, 'auto' chosen from ``available``
        bytes, by default the GPU's free memory plus what this process holds; ``low_vram`` caps it
        at 16 GB) and what it sets: offloading, the CFG batch, the decode chunk (the smaller of
        the tier's and the setting's), streamed UNet blocks (which run eager). Compile 'auto' is
        the layers on a CUDA GPU where Triton is installed (``triton``, by default whether it can be
        imported: not on the CPU, nor on Windows without triton-windows) and eager elsewhere, so a
        default that compiles never asks for what the machine cannot do. BackendError for a device
        that is not there."""
        from .memory import TIERS, available_bytes, choose_tier

        devices = resolve_devices(settings["device"], cuda_count)
        scope = settings["compile"]
        cuda = torch.device(devices[0]).type == "cuda"
        if scope == "auto":
            if triton is None:
                triton = importlib.util.find_spec("triton") is not None
            scope = "layers" if cuda and triton else None
        chunk = settings["decode_chunk"]
        common = dict(devices=devices, dtype=DTYPES[settings["precision"]] if cuda else torch.float32)
        if not cuda:  # memory tiers are about GPU memory
            return cls(**common, compile=scope, offload="cpu" if settings["low_vram"] else None, decode_chunk=chunk)
        vram = settings.get("vram", "auto")
        if vram == "auto":
            tier = choose_tier(available if available is not None else available_bytes(devices[0]))
        else:
            tier = TIERS[vram]
        if settings["low_vram"] and tier.name == "24":
            tier = TIERS["16"]
        streamed = tier.unet_resident_gib is not None and len(devices) == 1
        scope = None if streamed else scope
        return cls(**common, compile=scope, channels_last=scope == "layers",
                   offload="cpu" if tier.offload else None, decode_chunk=min(chunk, tier.decode_chunk),
                   cfg_batch=tier.cfg_batch if len(devices) == 1 else "joint",
                   unet_resident_gib=tier.unet_resident_gib if streamed else None, tier=tier.name)

    def describe(self) -> str:
        """What runs for each op with these options on their first device and dtype, one line an
        op (dispatch.py's choices for these devices, precision and compile scope)."""
        from .dispatch import describe

        return describe(self)


def resolve_devices(spec: str, cuda_count: int | None = None) -> tuple[str, ...]:
    """'auto', 'cpu', 'cuda', 'cuda:1' or two of them ('cuda:0,cuda:1': the CFG split) -> device
    names; 'auto' is the GPU when one is visible. BackendError for more than two devices or a CUDA
    device that is not there."""
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    names = [d.strip().lower() for d in spec.split(",") if d.strip()]
    if not names or len(names) > 2:
        raise BackendError("bad_input", f"one device, or at most two devices (the CFG split), got {names}")
    out = []
    for name in names:
        if name == "auto":
            name = "cuda" if count else "cpu"
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise BackendError("bad_input", f"{name!r} is not a device: {exc}") from None
        if dev.type == "cuda" and not count and dev.index is None:
            raise BackendError("no_gpu", f"device {name!r} was asked for but no CUDA GPU is available")
        if dev.type == "cuda" and (dev.index or 0) >= count:
            raise BackendError("bad_input", f"device {name!r} was asked for but {count} CUDA GPU(s) are visible")
        out.append(name)
    return tuple(out)
