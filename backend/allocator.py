"""PyTorch's CUDA allocator set up as the memory tiers were measured (backend/sp4d/memory.py).

Its own module, free of torch: the entry points call it before anything imports torch."""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping


def allocator_config(environ: MutableMapping[str, str] = os.environ, platform: str = sys.platform) -> str | None:
    """Expandable segments, so that memory freed between the UNet's differently sized activations
    is reused instead of stranded in fixed-size blocks (the reserved memory stays near the
    allocated). Must run before CUDA starts. Not on Windows, whose driver lacks the virtual-memory
    calls (PyTorch warns and ignores it). A user's own PYTORCH_CUDA_ALLOC_CONF is kept. Returns
    the value in force."""
    own = environ.get("PYTORCH_CUDA_ALLOC_CONF", environ.get("PYTORCH_ALLOC_CONF"))
    if platform.startswith("win") or own is not None:
        return own
    environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    return environ["PYTORCH_CUDA_ALLOC_CONF"]
