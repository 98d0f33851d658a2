"""The CFG batch split over two devices: the unconditional half on one, the conditional on the other.

The two halves of a guided denoising step are independent until the guidance blend, so each
device runs one half on its own copy of the dual UNet (the RGB/part split would need the
branches' cross-network exchange at every level instead). Both halves are launched from two
threads and meet on the model's device for the blend; the result equals the one-device CFG batch
up to the matrix kernels' batch-size rounding.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Callable, Sequence

import torch
from torch import nn

from . import compiled
from .sampling import guide


def replicate(module: nn.Module, device: torch.device | str) -> nn.Module:
    """An eager copy of ``module`` whose parameters and buffers are made directly on ``device`` (no
    second copy on the source device, which may be full). Compiled wrappers are not copied: they
    would run the original's methods (compile the copy with compiled.compile_modules)."""
    memo: dict[int, object] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(p.detach().to(device, copy=True), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = b.detach().to(device, copy=True)
    replica = copy.deepcopy(module, memo)
    compiled.uncompile_modules([replica])
    return replica


def device_of(name: str) -> torch.device:
    """The device a name means ('cuda': the current CUDA device, with its index)."""
    d = torch.device(name)
    return torch.device("cuda", torch.cuda.current_device()) if d.type == "cuda" and d.index is None else d


def _device_scope(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


class CFGSplit:
    """Guided denoising with the [uncond ‖ cond] batch split over ``devices`` (two of them).

    ``devices[0]`` must be the model's own device (it runs the conditional half and the blend);
    the unconditional half runs on a replica on ``devices[1]``, made once and kept.
    """

    def __init__(self, model: nn.Module, devices: Sequence[str]):
        if len(devices) != 2:
            raise ValueError(f"the CFG split needs exactly two devices, got {list(devices)}")
        self.model = model
        self.devices = [device_of(d) for d in devices]
        home = next(model.parameters()).device
        if self.devices[0] != home:
            raise ValueError(f"the first device ({devices[0]}) must hold the model (it is on {home})")
        unet = model.model.diffusion_model
        self.unets = [unet, unet if self.devices[1] == home else replicate(unet, self.devices[1])]
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="sp4d-cfg")
        self.warmed: set[tuple] = set()  # (shape, dtype, compile changes) run once one half after the other

    def guided(self, cond: dict, scale: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """denoise(x, sigma) -> guided D for a CFG-batched ``cond`` ([uncond ‖ cond] along dim 0)."""
        halves = [{k: v.chunk(2)[1].to(self.devices[0]) for k, v in cond.items()},  # cond
                  {k: v.chunk(2)[0].to(self.devices[1]) for k, v in cond.items()}]  # uncond
        grad = torch.is_grad_enabled()
        inference = torch.is_inference_mode_enabled()

        def half(i: int, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            dev = self.devices[i]
            # grad and inference mode are per thread: take the caller's
            with torch.inference_mode(inference), torch.set_grad_enabled(grad), _device_scope(dev):
                xi = x.to(dev, non_blocking=True)
                d = self.model.denoise(xi, sigma.to(dev) * xi.new_ones(xi.shape[0]), halves[i],
                                       unet=self.unets[i])
                return d.to(self.devices[0])

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            key = (tuple(x.shape), x.dtype, compiled.changes())
            if key not in self.warmed:  # a first call compiles: one half after the other (not thread-safe)
                d_c, d_u = half(0, x, sigma), half(1, x, sigma)
                self.warmed.add(key)
            else:
                d_c, d_u = self.pool.map(lambda i: half(i, x, sigma), (0, 1))
            return guide(torch.cat([d_u, d_c]), scale)

        return denoise

    def close(self) -> None:
        self.pool.shutdown(wait=False)
