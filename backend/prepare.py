"""Set Up's last step: run SP4D once with the user's settings, so that their first job finds on
disk what a process otherwise builds during its first step: with compile on, inductor's compiled
graphs (backend/sp4d/runtime.py keeps them in a persistent user folder; minutes to build), and
in any case the Triton autotuners' picks for the GEGLU kernel and Triton's compiled kernels
(~16 s of a machine's first step, docs/perf.md row 53). Both depend on the image size, the
precision and the memory tier (the UNet's batch, the decoder's chunk), so it runs a one-step
generation with the settings the user's jobs will have.

``warm`` is the same run inside the serving process (the server's ``warm`` request, which the
add-on sends when its panel is first shown): the model stays loaded and its graphs traced, so the
artist's first job of a session starts as a warm job does."""

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
    from .sp4d.runtime import with_saved_graphs

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
    return {**base, **_run_once(s, options, say, t0)}


def _run_once(s: dict, options, say: Callable[[str], None], t0: float, step: bool = True) -> dict:
    """Load the model of checked settings ``s`` (kept by runtime.get_pipeline for the process's
    later jobs) and, with ``step``, run one denoising step and one decode at the settings' image
    size on blank frames. Returns {ran, loaded (False: it was loaded already), seconds, load_s}."""
    import torch

    from .sp4d import runtime

    say("loading the model")
    kind = "sv4d2" if s["model"] == "sv4d2" else "sp4d"
    before = runtime.loaded_pipeline()
    pipe = runtime.get_pipeline(s["weights"], s["model_config"], options, kind=kind)
    loaded = pipe is not before
    load_s = time.perf_counter() - t0
    pipe.apply(options)
    if step:
        say(f"compiling ({options.compile}) at {s['image_size']} px: minutes the first time, once per machine"
            if options.compile else f"tuning the kernels at {s['image_size']} px")
        size = s["image_size"]
        if size % pipe.image_multiple:
            raise BackendError("bad_input", f"image_size must be a multiple of {pipe.image_multiple} for this model")
        with torch.inference_mode():
            pipe.views(torch.zeros(1, 3, size, size), steps=1, seed=0)
    return {"ran": step, "loaded": loaded, "seconds": time.perf_counter() - t0, "load_s": load_s}


def warm(settings: Mapping | None, ctx) -> dict:
    """The server's ``warm`` request: prepare's run in the serving process, so that its first job
    finds the model loaded, the kernels tuned and (with compile) its graphs traced. It never
    downloads (weights not on this disk: warmed False with the reason; the first job downloads
    them with its progress) and waits for the model as a job does (``ctx``: a StageContext; a job
    under way goes first, a job sent meanwhile waits for the warm-up). Where the settings force
    the CPU it loads the model without the step (nothing there is built per machine); with
    ``device: auto`` and no GPU nothing loads (a job uses the oracle there). Returns {warmed,
    reason?, tier, compiled, ran, loaded, seconds, load_s}."""
    from .sp4d.runtime import use_compile_cache_dir

    cache = use_compile_cache_dir()  # before torch._dynamo's first import
    import torch

    from .generate import sp4d_unavailable
    from .generate_sp4d import MODEL_LOCK
    from .sp4d import sv4d2
    from .sp4d.options import RunOptions
    from .sp4d.runtime import with_saved_graphs
    from .weights import cached

    s = checked(settings)
    if s["part_source"] == "oracle":
        return {"warmed": False, "reason": "the part source is the oracle: no model to load"}
    why_not = sp4d_unavailable(s)  # no GPU (and no forced CPU), a local weights file that is not there
    if why_not is not None:
        return {"warmed": False, "reason": why_not.message}
    if s["weights"] in (None, "", "hub"):
        if cached(*sv4d2.hub_file(s["model"])) is None:
            return {"warmed": False, "reason": "the weights are not downloaded yet: the first job downloads them"}
    options = with_saved_graphs(RunOptions.from_settings(s), s, cache)
    on_gpu = torch.device(options.device).type == "cuda"
    ctx.wait_for(MODEL_LOCK, "warm", "a job's generation")
    try:
        ctx.check()
        out = _run_once(s, options, lambda m: ctx.progress("warm", 0, 1, m), time.perf_counter(), step=on_gpu)
    finally:
        MODEL_LOCK.release()
    return {"warmed": True, "tier": options.tier, "compiled": options.compile is not None, **out}
