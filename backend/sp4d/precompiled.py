"""Compiled graphs saved whole on disk and loaded by a later process without compiling or tracing.

torch.compile with inductor's on-disk caches still has every new process trace each compiled
method with dynamo and rebuild its guards before it finds the cached graph (~26 s for the 41
graphs of ``compile: layers`` on an H200, docs/perf.md row 55). Experimental: the setting
``compiled_graphs: saved`` turns it on; verified on the CPU; on a GPU its first job is measured in
docs/perf.md rows 56 and 60–62 (on an H100 every graph loads, none is traced, and the first job
is only ~2–4 s faster than traced: inductor still loads its kernels and autotunes per process).
torch's AOT precompile
(``torch.compile(fn, fullgraph=True).aot_compile``) saves the traced bytecode, the guards and the
compiled graph in one artifact; ``torch.compiler.load_compiled_function`` brings it back.

Each compiled method is compiled as its class's unbound function with the instance as the first
argument, so that one artifact serves every instance of a class at one input signature (their
parameters are inputs of the graph, as with dynamo's inlined modules). An artifact is found by a
key — the class, the method, the arguments' shapes, dtypes, strides and devices, the other
arguments' values, the code of this package, torch's and Triton's versions and the GPU — and
then kept only if its guards accept the call (they check the instance's attributes the trace
read), so a stale or foreign artifact is compiled again, never run. The artifacts live in the
user's compile cache folder beside inductor's (runtime.compile_cache_dir), written by this
process's own code; like inductor's caches they are pickles, so the folder must be the user's
own, never a downloaded one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path

import torch

_lock = threading.Lock()  # compiling is not thread-safe; loading shares the same store dict
_code_version: list[str] = []
STORES: list[SavedGraphs] = []  # this process's stores, for their ``stats`` (scripts/bench_first_job.py)


def code_version() -> str:
    """A digest of what a saved graph depends on beyond its key: this package's source files
    (backend/sp4d, backend/svd), torch's and Triton's versions and the GPU's compute capability."""
    if not _code_version:
        h = hashlib.sha256()
        root = Path(__file__).resolve().parent.parent
        for pkg in ("sp4d", "svd"):
            for p in sorted((root / pkg).glob("*.py")):
                h.update(p.name.encode())
                h.update(p.read_bytes())
        try:
            import triton

            h.update(triton.__version__.encode())
        except ImportError:
            pass
        h.update(torch.__version__.encode())
        if torch.cuda.is_available():
            h.update(repr(torch.cuda.get_device_capability()).encode())
        _code_version.append(h.hexdigest()[:16])
    return _code_version[0]


def available() -> bool:
    """Whether this torch saves compiled graphs whole (AOT precompile: torch 2.11 and later)."""
    from torch._dynamo import config as dynamo_config

    return hasattr(dynamo_config, "enable_aot_compile") and hasattr(torch.compiler, "load_compiled_function")


def _describe(v) -> str:
    """One argument as the key sees it: a tensor by its metadata, containers and dataclasses
    (unet_blocks.UNetContext) field by field, anything else by its value. A dataclass by its
    ``repr`` would print its tensors' values, so every sampling step (a new time embedding) would
    ask for a graph of its own: a first job compiled again instead of loading
    (docs/perf.md row 60)."""
    if isinstance(v, torch.Tensor):
        return f"T{tuple(v.shape)}{v.stride()}{v.dtype}{v.device}{v.requires_grad}"
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(_describe(x) for x in v) + ")"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_describe(x)}" for k, x in sorted(v.items())) + "}"
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        fields = ",".join(f"{f.name}={_describe(getattr(v, f.name))}" for f in dataclasses.fields(v))
        return f"{type(v).__qualname__}({fields})"
    return repr(v)


class SavedGraphs:
    """The artifacts of one folder, compiled with inductor ``options``: ``find(module, name, args,
    kwargs)`` -> the saved (or newly compiled and saved) graph of that method for that call."""

    def __init__(self, folder: str | os.PathLike, options: dict | None = None):
        self.folder = Path(folder)
        self.options = dict(options or {})
        self._loaded: dict[str, list] = {}  # key -> artifacts loaded in this process
        self.stats = {"loaded": 0, "compiled": 0, "rejected": 0}
        STORES.append(self)

    def key(self, module: torch.nn.Module, name: str, args: tuple, kwargs: dict) -> str:
        cls = type(module)
        text = "|".join([f"{cls.__module__}.{cls.__qualname__}.{name}", _describe(args), _describe(kwargs),
                         repr(sorted(self.options.items())), str(module.training), code_version()])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _accepts(self, fn, module, args, kwargs) -> bool:
        try:
            return bool(fn.guard_check(module, *args, **kwargs))
        except Exception:  # an artifact from other code whose guards cannot even be evaluated
            return False

    def find(self, module: torch.nn.Module, name: str, args: tuple, kwargs: dict):
        """The saved graph whose guards accept this call, loaded from disk when needed, else a
        new one compiled now and saved."""
        key = self.key(module, name, args, kwargs)
        with _lock:
            loaded = self._loaded.setdefault(key, [])
            for fn in loaded:
                if self._accepts(fn, module, args, kwargs):
                    return fn
            seen = {getattr(fn, "sp4d_path", None) for fn in loaded}
            for path in sorted(self.folder.glob(f"{key}-*.bin")):
                if str(path) in seen:
                    continue
                try:
                    with open(path, "rb") as f:
                        fn = torch.compiler.load_compiled_function(f)
                except Exception:  # truncated, or from another torch: compiled again below
                    self.stats["rejected"] += 1
                    continue
                fn.sp4d_path = str(path)
                loaded.append(fn)
                if self._accepts(fn, module, args, kwargs):
                    self.stats["loaded"] += 1
                    return fn
                self.stats["rejected"] += 1
            from torch._dynamo import config as dynamo_config

            with dynamo_config.patch(enable_aot_compile=True):  # torch 2.11 has it off by default
                compiled = torch.compile(getattr(type(module), name), fullgraph=True, dynamic=False,
                                         options=self.options)
            fn = compiled.aot_compile(((module, *args), kwargs))
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{key}-{len(list(self.folder.glob(f'{key}-*.bin')))}.bin"
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            fn.save_compiled_function(str(tmp))
            os.replace(tmp, path)
            fn.sp4d_path = str(path)
            loaded.append(fn)
            self.stats["compiled"] += 1
            return fn


def _unbound(name: str) -> str:
    """What an unpickled SavedMethod becomes in a saved guard state: its method's name."""
    return name


class SavedMethod:
    """What ``compiled.compile_modules`` sets as an instance's method when graphs are saved: each
    input signature's graph found once per instance, then called with the instance."""

    def __init__(self, module: torch.nn.Module, name: str, store: SavedGraphs):
        self.module, self.name, self.store = module, name, store
        self._fns: dict[str, object] = {}

    def __reduce__(self):
        # inside another saved graph's traced module tree: its guard state is pickled, and this
        # wrapper (its loaded graphs hold unpicklable guard managers) goes as its name only
        return (_unbound, (self.name,))

    def __call__(self, *args, **kwargs):
        if torch.compiler.is_compiling():  # traced inside an enclosing graph: the plain method
            return getattr(type(self.module), self.name)(self.module, *args, **kwargs)
        sig = _describe(args) + _describe(kwargs)
        fn = self._fns.get(sig)
        if fn is None:
            fn = self._fns[sig] = self.store.find(self.module, self.name, args, kwargs)
        try:
            return fn(self.module, *args, **kwargs)
        except RuntimeError as exc:  # the instance changed since (its guards refuse): find again
            if "GuardManager check failed" not in str(exc):
                raise
            fn = self._fns[sig] = self.store.find(self.module, self.name, args, kwargs)
            return fn(self.module, *args, **kwargs)
