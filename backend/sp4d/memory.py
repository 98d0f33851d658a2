"""Memory tiers: how SP4D runs on a GPU of 24, 16 or 12 GB, and the UNet blocks it streams.

A tier changes only how the model runs, never what it computes (the same numbers up to the
order of float sums):

- ``offload``: the conditioner (image tower, VAE encoder: 1.6 GiB in half precision) waits on
  the CPU while the UNet samples;
- ``cfg_batch``: "joint" runs the unconditional and conditional halves of a guided step as one
  UNet batch (2 × 48 frames), "sequential" as two calls of 48, which halves the activations;
- ``decode_chunk``: latents per VAE decoder call;
- ``unet_resident_gib``: the dual UNet's weights (7.6 GiB in half precision) kept on the GPU up to
  this many GiB; the largest blocks past it wait in pinned host memory and visit the GPU for
  their own forward (StreamedBlocks). A 12 GB card cannot hold the weights and a step's
  activations at once.

Each tier's ``budget_gib`` is what PyTorch's allocator may reserve on the card (the CUDA context
and a desktop take the rest); docs/perf.md measures every tier under that hard cap
(``torch.cuda.set_per_process_memory_fraction``), with the allocator settings the backend ships
(backend/allocator.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

GIB = 2 ** 30


@dataclass(frozen=True)
class Tier:
    """How SP4D runs within ``budget_gib`` of reserved GPU memory (see the module docstring)."""

    name: str
    budget_gib: float
    offload: bool
    cfg_batch: str
    decode_chunk: int
    unet_resident_gib: float | None  # None: the whole UNet on the GPU


TIERS: dict[str, Tier] = {
    "24": Tier("24", 22.0, offload=False, cfg_batch="joint", decode_chunk=4, unet_resident_gib=None),
    "16": Tier("16", 14.5, offload=True, cfg_batch="sequential", decode_chunk=2, unet_resident_gib=None),
    "12": Tier("12", 10.5, offload=True, cfg_batch="sequential", decode_chunk=1, unet_resident_gib=4.0),
}
TIER_NAMES = ("auto", *TIERS)


def choose_tier(available_bytes: int | None) -> Tier:
    """The largest tier whose budget fits ``available_bytes`` (free GPU memory plus what this
    process already reserves; None: unknown, the largest); the smallest tier when none does (it
    may still run out)."""
    if available_bytes is None:
        return TIERS["24"]
    for tier in sorted(TIERS.values(), key=lambda t: -t.budget_gib):
        if tier.budget_gib * GIB <= available_bytes:
            return tier
    return min(TIERS.values(), key=lambda t: t.budget_gib)


def available_bytes(device: str | torch.device) -> int | None:
    """What this process could use on ``device``: its free memory plus what PyTorch already
    reserves there (a loaded model counts as available to its own next job); None where CUDA
    cannot say (then the largest tier is taken)."""
    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device)


def unet_blocks(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """The dual UNet's streamable units: each branch's input blocks, middle block and output
    blocks (the cross-network layers, embeddings and heads are small and stay), by name."""
    out = []
    for branch in ("net1", "net2"):
        net = getattr(unet, branch)
        out += [(f"{branch}.input_blocks.{i}", b) for i, b in enumerate(net.input_blocks)]
        out.append((f"{branch}.middle_block", net.middle_block))
        out += [(f"{branch}.output_blocks.{i}", b) for i, b in enumerate(net.output_blocks)]
    return out


def module_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def blocks_to_stream(unet: nn.Module, resident_gib: float) -> list[tuple[str, nn.Module]]:
    """The largest blocks whose weights must leave the GPU so that at most ``resident_gib`` of
    the UNet's parameters stay there (largest first: fewest copies for the bytes saved)."""
    excess = module_bytes(unet) - resident_gib * GIB
    chosen = []
    for name, block in sorted(unet_blocks(unet), key=lambda nb: -module_bytes(nb[1])):
        if excess <= 0:
            break
        chosen.append((name, block))
        excess -= module_bytes(block)
    return chosen


def place_streamed(model: nn.Module, unet: nn.Module, device: str | torch.device, resident_gib: float,
                   keep_on_host: tuple[nn.Module, ...] = ()) -> None:
    """Move a model loaded in host memory to ``device`` except the UNet blocks that will be
    streamed (blocks_to_stream) and the modules in ``keep_on_host`` (an offloaded conditioner),
    so that the whole model never has to fit the GPU at once. Buffers all move (they are small)."""
    host = {id(p) for _, b in blocks_to_stream(unet, resident_gib) for p in b.parameters()}
    host |= {id(p) for m in keep_on_host for p in m.parameters()}
    with torch.inference_mode(False):
        for p in model.parameters():
            if id(p) not in host:
                p.data = p.data.to(device)
        for m in model.modules():
            for name, b in m._buffers.items():
                if b is not None:
                    m._buffers[name] = b.to(device)


class StreamedBlocks:
    """Blocks whose parameters live in (pinned) host memory and are copied to ``device`` for the
    duration of their own forward, then dropped: the GPU holds one streamed block at a time.

    The copies are made when the block is called (a forward pre-hook) and released after it
    returns (a forward hook); results are those of the resident block. Eager only: a compiled
    graph would keep its own view of the parameters. ``close`` puts every block back on
    ``device``."""

    def __init__(self, blocks: list[tuple[str, nn.Module]], device: str | torch.device):
        self.device = torch.device(device)
        self.names = [n for n, _ in blocks]
        self.bytes = sum(module_bytes(b) for _, b in blocks)
        self._host: list[list[tuple[nn.Parameter, torch.Tensor]]] = []
        self._hooks = []
        pin = self.device.type == "cuda"
        for _, block in blocks:
            pairs = []
            for p in block.parameters():
                host = p.detach().to("cpu")
                pairs.append((p, host.pin_memory() if pin else host))
                p.data = pairs[-1][1]
            self._host.append(pairs)
            self._hooks.append(block.register_forward_pre_hook(self._arrive(pairs)))
            self._hooks.append(block.register_forward_hook(self._leave(pairs)))
        if pin:
            torch.cuda.empty_cache()

    def _arrive(self, pairs):
        def hook(_module, _args):
            with torch.inference_mode(False):  # normal tensors, whatever mode the caller runs in
                for p, host in pairs:
                    p.data = host.to(self.device, non_blocking=True)
        return hook

    @staticmethod
    def _leave(pairs):
        def hook(_module, _args, _out):
            for p, host in pairs:
                p.data = host
        return hook

    def close(self) -> None:
        """Remove the hooks and put every streamed parameter back on the device for good."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        with torch.inference_mode(False):
            for pairs in self._host:
                for p, host in pairs:
                    p.data = host.to(self.device)
        self._host.clear()


@contextmanager
def visiting(module: nn.Module, home: torch.device, offload: str | torch.device | None) -> Iterator[None]:
    """``module`` (a conditioner: image tower, VAE encoders) on ``home`` for the ``with`` block;
    with ``offload`` (the tiers' offloading) it goes back there afterwards, also on an error,
    and a CUDA ``home`` returns the freed blocks, so the UNet samples without it on the GPU."""
    module.to(home)
    try:
        yield
    finally:
        if offload is not None:
            module.to(offload)
            if home.type == "cuda":
                torch.cuda.empty_cache()


def describe_tier(tier: Tier) -> str:
    """One line for progress messages: the tier and what it changes."""
    bits = [f"{tier.name} GB tier (allocator budget {tier.budget_gib:g} GiB)"]
    if tier.offload:
        bits.append("image encoders on the CPU while sampling")
    if tier.cfg_batch == "sequential":
        bits.append("guidance halves one after the other")
    if tier.unet_resident_gib is not None:
        bits.append(f"UNet blocks beyond {tier.unet_resident_gib:g} GiB streamed from host memory")
    return ", ".join(bits)
