"""Set Up's last step: run SP4D once with the user's settings, so that their first job finds on
disk what a process otherwise builds during its first step: with compile on, inductor's compiled
graphs (backend/sp4d/runtime.py keeps them in a persistent user folder; minutes to build), and
in any case the Triton autotuners' picks for the GEGLU kernel and Triton's compiled kernels
(~16 s of a machine's first step, docs/perf.md row 53). Both depend on the image size, the
precision and the memory tier (the UNet's batch, the decoder's chunk), so it runs a one-step
generation with the settings the user's jobs will have."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from .errors import BackendError
from .settings import checked


def prepare(settings: Mapping | None = None, on_event: Callable[[dict], None] | None = None) -> dict:
    """Run the model as ``settings`` (generate settings) will: load, one denoising step and one
    decode at the settings' image size on blank frames. Returns {ran, compiled, seconds, load_s,
    tier, cache}; ran False with the reason on the CPU (nothing there is built per machine)."""
    from .sp4d.runtime import use_compile_cache_dir

    cache = use_compile_cache_dir()  # before torch._dynamo's first import
    import torch

    from .sp4d.options import RunOptions
    from .sp4d.runtime import get_pipeline, with_saved_graphs

    s = checked(settings)
    options = with_saved_graphs(RunOptions.from_settings(s), s, cache)
    base = {"tier": options.tier, "compiled": options.compile is not None, "cache": str(cache) if cache else None}
    if torch.device(options.device).type != "cuda":
        return {**base, "ran": False, "reason": "no CUDA GPU: nothing to prepare for the CPU"}

    def say(message: str) -> None:
        if on_event:
            on_event({"event": "progress", "stage": "prepare", "step": 0, "total": 1, "message": message})

    t0 = time.perf_counter()
    if s["weights"] in (None, "", "hub"):  # downloaded with progress first (the licence: accept_licence)
        from .context import StageContext
        from .weights import fetch_weights

        fetch_weights(StageContext(on_event), accepted=s["accept_licence"])
    say("loading the model")
    pipe = get_pipeline(s["weights"], s["model_config"], options)
    load_s = time.perf_counter() - t0
    pipe.apply(options)
    say(f"compiling ({options.compile}) at {s['image_size']} px: minutes the first time, once per machine"
        if options.compile else f"tuning the kernels at {s['image_size']} px")
    size = s["image_size"]
    if size % pipe.image_multiple:
        raise BackendError("bad_input", f"image_size must be a multiple of {pipe.image_multiple} for this model")
    with torch.inference_mode():
        pipe.views(torch.zeros(1, 3, size, size), steps=1, seed=0)
    return {**base, "ran": True, "seconds": time.perf_counter() - t0, "load_s": load_s}
