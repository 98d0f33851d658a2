"""What the backend's interpreter has and lacks: ``python -m backend doctor [--json]``.

Standard library only, and nothing heavy is imported to find what is missing (``find_spec``
looks for a module without running it), so that it answers in an interpreter that has none of
the backend's packages: Blender's Set Up runs it to verify a new environment, and ``serve``
runs ``missing()`` before importing anything else, so that a backend without torch answers
``missing_dependency`` (with the list) instead of dying on an ImportError.

``report()`` adds what the GPU check needs: torch's version, whether CUDA (or Apple's MPS) is
usable, each GPU's name, memory and compute capability, and whether this torch build has kernels
for that capability (a new GPU with an old torch, or an old GPU with a new one, imports fine
and then fails on the first kernel).
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys

# module -> the distribution that provides it (pyproject.toml's dependencies; a test keeps them equal)
REQUIRED = {
    "torch": "torch",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface_hub",
    "einops": "einops",
    "numpy": "numpy",
    "scipy": "scipy",
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "skimage": "scikit-image",
    "robust_laplacian": "robust-laplacian",
    "yaml": "pyyaml",
    "threadpoolctl": "threadpoolctl",
}


def missing() -> list[str]:
    """The distributions whose modules this interpreter cannot find (none imported)."""
    out = []
    for module, dist in REQUIRED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(dist)
    return out


def missing_message(names: list[str]) -> str:
    """What to tell the artist about ``names`` missing: which, and what to do."""
    return (f"the backend's Python ({sys.executable}) lacks {', '.join(names)}: press Set Up Backend in the SP4D "
            "preferences (Edit > Preferences > Add-ons > SP4D Rig), or install the backend there with "
            "`pip install <extension folder>`")


def torch_report() -> dict:
    """torch's version and its devices; ``error`` when torch cannot be imported or asked."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch install says why, whatever it raises
        return {"torch": None, "error": f"{type(exc).__name__}: {exc}"}
    out: dict = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda": False, "gpus": [],
                 "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    try:
        out["cuda"] = bool(torch.cuda.is_available())
        arches = set(torch.cuda.get_arch_list()) if out["cuda"] else set()
        for i in range(torch.cuda.device_count() if out["cuda"] else 0):
            p = torch.cuda.get_device_properties(i)
            sm = f"sm_{p.major}{p.minor}"
            out["gpus"].append({"index": i, "name": p.name, "vram_gib": round(p.total_memory / 2**30, 2),
                                "capability": f"{p.major}.{p.minor}",
                                # kernels for this GPU: its own sm, or PTX of an older one the driver compiles
                                "supported": sm in arches or any(a.startswith("compute_") for a in arches)})
    except Exception as exc:  # noqa: BLE001 - a driver that torch cannot talk to
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def report(with_torch: bool = True) -> dict:
    """Everything Set Up shows in the preferences (see the module's docstring)."""
    out = {"python": sys.version.split()[0], "executable": sys.executable, "platform": sys.platform,
           "machine": platform.machine(), "missing": missing()}
    if with_torch and "torch" not in out["missing"]:
        out.update(torch_report())
    return out



JOB_COMMANDS = ("generate", "rig", "run", "reweight", "weights", "warm", "orbits")


def serve_missing(names: list[str], stdin=None, stdout=None) -> int:
    """The protocol (docs/protocol.md) of a backend that lacks ``names``: ``ready`` lists them,
    ``ping`` answers with them, every job ends at once with ``missing_dependency``, ``shutdown``
    and the end of stdin exit. Standard library only: it runs where numpy or torch cannot."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    message = missing_message(names)

    def send(event: dict) -> None:
        stdout.write(json.dumps(event) + "\n")
        stdout.flush()

    from . import __version__

    send({"id": None, "event": "ready", "version": __version__, "missing": names})
    for line in stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            send({"id": None, "event": "error", "code": "bad_request", "message": "the request is not a JSON object"})
            continue
        rid, cmd = req.get("id"), req.get("cmd")
        rid = rid if rid is None or isinstance(rid, (str, int)) else None
        if cmd == "ping":
            send({"id": rid, "event": "result", "data": {"pong": True, "version": __version__, "missing": names}})
        elif cmd in JOB_COMMANDS:
            send({"id": rid, "event": "error", "code": "missing_dependency", "message": message, "missing": names})
        elif cmd == "cancel":
            send({"id": rid, "event": "result", "data": {"cancelled": 0}})
        elif cmd == "shutdown":
            send({"id": rid, "event": "result", "data": {"shutdown": True}})
            break
        else:
            send({"id": rid, "event": "error", "code": "bad_request", "message": f"unknown cmd {cmd!r}"})
    return 0


def main(argv: list[str] | None = None) -> int:
    """Print the report (``--json``: one JSON object); exit 0 when nothing is missing, 3 when
    something is (the report says what)."""
    argv = sys.argv[1:] if argv is None else argv
    rep = report(with_torch="--no-torch" not in argv)
    if "--json" in argv:
        print(json.dumps(rep))
    else:
        for k, v in rep.items():
            print(f"{k}: {v}")
    return 3 if rep["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
