"""torch.compile of module instances: which parts of the model a compile scope compiles.

A scope lists (class, method) pairs; ``compile_modules`` wraps that method of every matching
instance under the given roots with torch.compile, as an attribute of the instance (the class
and other instances keep their eager methods), and ``uncompile_modules`` removes the wrappers.
Instances of one class run the same code, so inductor compiles one graph per class and input
shape and every instance of that shape reuses it: compiling stays short while the elementwise
work between the matrix products is fused.
"""

from __future__ import annotations

import os

from .unet_blocks import (
    CrossNetworkLayer,
    ResBlock,
    SpatioTemporalTransformer,
    TimeMixBlock,
    TransformerBlock,
    Upsample,
    VideoResBlock,
)
from .vae import Decoder, DualDecoder

# scope -> (class, method) pairs; an instance takes the first pair its class matches. Both scopes
# compile the VAE decoder's halves whole (one graph per chunk shape: its GroupNorms and SiLUs fuse,
# its 512-wide attention runs as products).
SCOPES: dict[str, tuple[tuple[type, str], ...]] = {
    # the repeated inner blocks: transformer and time-mix blocks, each ResBlock (a video ResBlock's
    # 2-D part and its time ResBlock apart)
    "blocks": ((TransformerBlock, "forward"), (TimeMixBlock, "forward"), (VideoResBlock, "spatial"),
               (ResBlock, "forward"), (DualDecoder, "single"), (Decoder, "forward")),
    # whole UNet layers: also fuses the camera/motion regroupings, GroupNorms and blends around the
    # blocks, the branches' fusion (concatenation, 1×1 convolutions, ReLU, the two sums) and the upsampling
    "layers": ((SpatioTemporalTransformer, "forward"), (VideoResBlock, "forward"), (CrossNetworkLayer, "forward"),
               (Upsample, "forward"), (DualDecoder, "single"), (Decoder, "forward")),
}
METHODS = {name for pairs in SCOPES.values() for _, name in pairs}
# inductor's multi-kernel: each reduction compiled both persistent and looped, the faster picked on
# its first call (inductor's heuristic loops the LayerNorms over 320-1280 channels, fused with the
# residual sums and regroupings, well below the memory bandwidth). A multi-kernel graph loaded from
# inductor's on-disk graph cache fails at its first call when it looks up its pick in the pick cache
# (torch 2.11 / Triton 3.6: "'NoneType' object does not support the context manager protocol"), so
# that cache is off (a process times its picks again at its first step, seconds) and the graph cache
# stays on: a later backend process loads its graphs instead of compiling them again. The variable is
# inductor's own, read when each multi-kernel's graph is loaded.
MULTI_KERNEL_ENV = {"TORCHINDUCTOR_DISABLE_MULTI_KERNEL_CACHE": "1"}
INDUCTOR_OPTIONS = {"triton.multi_kernel": 1}
_changes = [0]  # compile_modules and uncompile_modules calls that changed something, in this process


def changes() -> int:
    """A number that changes whenever instances are compiled or uncompiled (split.py runs the first
    call after a change one half after the other: compiling is not thread-safe)."""
    return _changes[0]


def _targets(roots, scope: str):
    """(module, method name) of every instance under ``roots`` that ``scope`` compiles."""
    seen = set()
    for root in roots:
        for m in root.modules():
            if id(m) in seen:
                continue
            seen.add(id(m))
            name = next((n for cls, n in SCOPES[scope] if isinstance(m, cls)), None)
            if name is None:  # classes of other models name their own (``compile_scopes``, e.g. backend/svd)
                name = getattr(type(m), "compile_scopes", {}).get(scope)
            if name is not None:
                yield m, name


def compiled_scope(roots) -> str | None:
    """The scope the instances under ``roots`` are compiled with, None when eager."""
    return _compiled_with(roots)[0]


def _compiled_with(roots) -> tuple[str | None, str | None]:
    """(scope, folder of saved graphs or None) the instances under ``roots`` are compiled with."""
    for root in roots:
        for m in root.modules():
            for name in METHODS & vars(m).keys():
                scope = getattr(vars(m)[name], "sp4d_scope", None)
                if scope is not None:
                    return scope, getattr(vars(m)[name], "sp4d_saved", None)
    return None, None


def compile_modules(roots, scope: str, saved: str | os.PathLike | None = None) -> bool:
    """Compile ``scope``'s methods of the instances under ``roots`` (each a UNet, a decoder, a
    whole model). With ``saved`` (a folder), each graph is saved whole there and a later process
    loads it without tracing (precompiled.py); without, dynamo traces in every process and
    inductor's caches hold the compiled code. True when this call wrapped them (their next call
    compiles or loads), False when they already were compiled so."""
    import torch._dynamo  # here, not at import: its first import fixes inductor's cache folder (runtime.py)

    if scope not in SCOPES:
        raise ValueError(f"compile scope must be one of {sorted(SCOPES)}, got {scope!r}")
    roots = list(roots)
    saved = str(saved) if saved is not None else None
    if saved is not None:
        from .precompiled import available

        if not available():  # an older torch: dynamo traces in each process, inductor's cache helps
            saved = None
    if _compiled_with(roots) == (scope, saved):
        return False
    uncompile_modules(roots)
    os.environ.update(MULTI_KERNEL_ENV)
    # every UNet level has its own shapes: a graph per (class, shape) instead of eager fallbacks
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    store = None
    if saved is not None:
        from .precompiled import SavedGraphs

        store = SavedGraphs(saved, INDUCTOR_OPTIONS)
    for m, name in _targets(roots, scope):
        if store is not None:
            from .precompiled import SavedMethod

            fn = SavedMethod(m, name, store)
        else:
            fn = torch.compile(getattr(m, name), dynamic=False, options=INDUCTOR_OPTIONS)
        fn.sp4d_scope = scope
        fn.sp4d_saved = saved
        setattr(m, name, fn)
    _changes[0] += 1
    return True


def uncompile_modules(roots) -> None:
    """Back to the eager methods (after a failed compile, for another scope, or to compare)."""
    for root in roots:
        for m in root.modules():
            for name in METHODS & vars(m).keys():
                if getattr(vars(m)[name], "sp4d_scope", None) is not None:
                    delattr(m, name)
                    _changes[0] += 1
