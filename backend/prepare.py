"""Set Up's last step: load SP4D and compile it once, so that a user's first job finds the
compiled graphs in inductor's on-disk cache (backend/sp4d/runtime.py: a persistent user folder)
instead of compiling for minutes. The graphs depend on the image size, the precision and the
memory tier (the UNet's batch, the decoder's chunk), so it runs a one-step generation with the
settings the user's jobs will have."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from .errors import BackendError
from .settings import checked

DEFAULT_SCOPE = "layers"


def prepare(settings: Mapping | None = None, on_event: Callable[[dict], None] | None = None) -> dict:
    """Compile the model as ``settings`` (generate settings; compile unset: the 'layers' scope)
    will run it: load, one denoising step and one decode at the settings' image size on blank
    frames. Returns {compiled, seconds, load_s, tier, cache}; compiled False with the reason
    where compiling does not apply (the CPU, a tier that streams UNet blocks)."""
    from .sp4d.runtime import use_compile_cache_dir

    cache = use_compile_cache_dir()  # before torch._dynamo's first import
    import torch

    from .sp4d.options import RunOptions
    from .sp4d.runtime import get_pipeline

    s = checked({**(settings or {})})
    s["compile"] = s["compile"] or DEFAULT_SCOPE
    options = RunOptions.from_settings(s)
    base = {"tier": options.tier, "cache": str(cache) if cache else None}
    if torch.device(options.device).type != "cuda":
        return {**base, "compiled": False, "reason": "no CUDA GPU: generation runs eager on the CPU"}
    if options.compile is None:
        return {**base, "compiled": False, "reason": f"the {options.tier} GB tier runs eager"}

    def say(message: str) -> None:
        if on_event:
            on_event({"event": "progress", "stage": "prepare", "step": 0, "total": 1, "message": message})

    t0 = time.perf_counter()
    say("loading the model")
    pipe = get_pipeline(s["weights"], s["model_config"], options)
    load_s = time.perf_counter() - t0
    pipe.apply(options)
    say(f"compiling ({options.compile}) at {s['image_size']} px: minutes the first time, once per machine")
    size = s["image_size"]
    if size % pipe.image_multiple:
        raise BackendError("bad_input", f"image_size must be a multiple of {pipe.image_multiple} for this model")
    with torch.inference_mode():
        pipe.views(torch.zeros(1, 3, size, size), steps=1, seed=0)
    return {**base, "compiled": True, "seconds": time.perf_counter() - t0, "load_s": load_s}
