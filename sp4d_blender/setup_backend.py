"""Create the backend's own Python environment from Blender (the preferences' Set Up Backend).

Where: the extension's persistent user folder (paths.backend_env), never Blender's per-session
temp folder, so the environment survives a restart. What: a virtual environment of Blender's
Python, then torch built for this machine, then the backend bundled in the extension (its
pyproject lists safetensors, huggingface_hub, numpy, …), then a check with the new interpreter
(``python -m backend doctor --json``: nothing missing, torch's version, CUDA, each GPU's name,
memory and compute capability) whose report the preferences show.

Which torch: pip's default torch is CPU-only on Windows and a 3 GB CUDA build on Linux, whatever
the machine has. So the NVIDIA driver is asked first (``nvidia-smi``: the newest CUDA it runs) and
torch comes from the PyTorch index built for the newest CUDA at or below it (cu118 … cu130); a
machine without an NVIDIA GPU gets the CPU build (macOS: PyPI's, with MPS). With ``uv`` on the PATH,
``uv pip install --torch-backend=auto`` makes the same choice. A package index or a folder of
wheels (find-links) set in the preferences replaces every index (mirrors, offline installs, tests).

Last, ``python -m backend prepare`` (backend/prepare.py) runs the model once with the user's
settings, so that the first job finds the compiled graphs and the tuned kernels on disk (issue 22).
It is skipped, saying why, on a machine without a CUDA GPU (prepare answers ran False there). Its
failure (no weights yet, the licence not accepted, the GPU out of memory) does not undo the
environment, which is complete by then: the report says what happened and the first job builds
what prepare would have. Every step is cancellable (``cancel``: the running command is stopped).

pip builds the backend from a copy of its sources in a temporary folder, so nothing (build/,
*.egg-info) is written into the installed extension's folder. Every step runs as a subprocess (an
argument list, no shell); each output line is reported so the UI can show progress.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .client import BACKEND_ROOT

TORCH_REQUIREMENT = "torch>=2.4"
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
# (the newest CUDA a driver runs, the wheel tag built for it), newest first: a driver runs every
# toolkit up to its own version, so the newest tag at or below it
CUDA_TAGS = (((13, 0), "cu130"), ((12, 9), "cu129"), ((12, 8), "cu128"), ((12, 6), "cu126"), ((12, 4), "cu124"),
             ((12, 1), "cu121"), ((11, 8), "cu118"))


class SetupError(RuntimeError):
    """Set Up failed; ``code`` is a stable error code (docs/protocol.md): ``setup_failed`` for a
    step that exited with an error, ``missing_dependency`` when the new environment lacks a package,
    ``cancelled`` when the user stopped it."""

    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


def venv_python(target: Path) -> Path:
    return Path(target) / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


@dataclass
class Gpu:
    """What the NVIDIA driver says: the newest CUDA it runs and its GPUs (name, memory in MiB)."""

    cuda: tuple[int, int] | None
    names: list[str] = field(default_factory=list)
    memory_mib: list[int] = field(default_factory=list)
    driver: str | None = None


def parse_nvidia_smi(summary: str, query: str = "") -> Gpu | None:
    """``nvidia-smi``'s summary (its header says ``CUDA Version: 12.4``) and, optionally, the
    output of ``--query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits``.
    None when the summary names no CUDA version (no driver, or no GPU)."""
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", summary)
    if not m:
        return None
    gpu = Gpu(cuda=(int(m.group(1)), int(m.group(2))))
    d = re.search(r"Driver Version:\s*([\d.]+)", summary)
    gpu.driver = d.group(1) if d else None
    for line in query.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) >= 2 and cells[0]:
            gpu.names.append(cells[0])
            gpu.memory_mib.append(int(float(cells[1])) if re.fullmatch(r"[\d.]+", cells[1]) else 0)
    return gpu


def detect_nvidia(nvidia_smi: str | None = None, timeout: float = 15) -> Gpu | None:
    """Ask the NVIDIA driver (``nvidia-smi`` on the PATH, or the given one); None without one."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe and sys.platform == "win32":
        cand = Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32" / "nvidia-smi.exe"
        exe = str(cand) if cand.exists() else None
    if not exe:
        return None
    try:
        summary = subprocess.run([exe], capture_output=True, text=True, timeout=timeout).stdout
        query = subprocess.run([exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(summary, query)


def torch_tag(cuda: tuple[int, int] | None) -> str:
    """The PyTorch wheel tag for a driver that runs CUDA ``cuda`` (cu118 … cu130), 'cpu' without
    one or with a driver older than every CUDA build."""
    if cuda is None:
        return "cpu"
    for version, tag in CUDA_TAGS:
        if tuple(cuda) >= version:
            return tag
    return "cpu"


@dataclass
class Plan:
    """The commands of one Set Up (argument lists, run in order) and what they install."""

    commands: list[list[str]]
    torch_source: str  # in words, for the log and the preferences
    python: Path


def _index_args(package_index: str, find_links: str) -> list[str]:
    """pip/uv arguments that replace every index: a package index (URL or folder) and/or a
    find-links folder (alone: offline, nothing but that folder)."""
    args: list[str] = []
    if package_index:
        args += ["--index-url", package_index]
    if find_links:
        args += ["--find-links", find_links]
        if not package_index:
            args.append("--no-index")
    return args


def plan(target: Path, source: Path, *, platform: str = sys.platform, gpu: Gpu | None = None,
         uv: str | None = None, base_python: str | None = None, package_index: str = "",
         find_links: str = "") -> Plan:
    """The Set Up commands for this machine (see the module's docstring); pure, so every platform's
    choice is tested on any machine."""
    target = Path(target)
    py = str(venv_python(target))
    base = base_python or sys.executable
    override = _index_args(package_index, find_links)
    if uv:
        torch_args = override or ["--torch-backend=auto"]
        what = ("the package index set in the preferences" if override else
                "uv's --torch-backend=auto (the PyTorch build for this machine's driver)")
        return Plan([[uv, "venv", "--allow-existing", "--python", base, str(target)],
                     [uv, "pip", "install", "--python", py, *torch_args, TORCH_REQUIREMENT, str(source)]],
                    what, venv_python(target))
    if override:
        torch_args, what = override, "the package index set in the preferences"
    elif platform == "darwin":
        torch_args, what = [], "PyPI (macOS: CPU and Apple MPS)"
    else:
        tag = torch_tag(gpu.cuda if gpu else None)
        torch_args = ["--index-url", PYTORCH_INDEX + tag]
        what = (f"the PyTorch index for {tag} (the driver runs CUDA {gpu.cuda[0]}.{gpu.cuda[1]})"
                if tag != "cpu" and gpu else "the PyTorch CPU index (no NVIDIA GPU found)" if gpu is None
                else "the PyTorch CPU index (the NVIDIA driver is older than every CUDA build: update it)")
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check"]
    return Plan([[base, "-m", "venv", str(target)],
                 [*pip, *torch_args, TORCH_REQUIREMENT],
                 [*pip, *override, str(source)]], what, venv_python(target))


CANCELLED = "Set Up was cancelled; the environment is incomplete: press Set Up Backend again"


def _watch(proc: subprocess.Popen, cancel: threading.Event | None) -> None:
    """Stop ``proc`` when ``cancel`` is set (a thread: the caller may be blocked reading its output)."""
    if cancel is None:
        return

    def watch():
        while proc.poll() is None:
            if cancel.wait(0.2):
                proc.kill()
                return

    threading.Thread(target=watch, daemon=True).start()


def _run(cmd: list[str], on_line: Callable[[str], None], cwd: str, cancel: threading.Event | None = None) -> None:
    if cancel is not None and cancel.is_set():
        raise SetupError("cancelled", CANCELLED)
    on_line("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    _watch(proc, cancel)
    tail: list[str] = []
    for line in proc.stdout:
        on_line(line.rstrip())
        tail = (tail + [line.rstrip()])[-6:]
    if proc.wait() != 0 and cancel is not None and cancel.is_set():
        raise SetupError("cancelled", CANCELLED)
    if proc.returncode != 0:
        last = next((t for t in reversed(tail) if t.strip()), "")
        raise SetupError("setup_failed", f"setting up the backend failed at: {' '.join(cmd[:5])} (exit "
                         f"{proc.returncode}){': ' + last if last else ''}")


def verify(python: str | Path, timeout: float = 300) -> dict:
    """The new interpreter's own report (backend/doctor.py): what it lacks, torch, CUDA, GPUs."""
    env = dict(os.environ, PYTHONPATH=str(BACKEND_ROOT))
    r = subprocess.run([str(python), "-m", "backend", "doctor", "--json"], capture_output=True, text=True,
                       timeout=timeout, cwd=str(BACKEND_ROOT), env=env)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SetupError("setup_failed", f"the new environment's Python does not run ({python}): "
                         f"{(r.stderr or r.stdout).strip()[-500:]}") from None


PREPARE_SETTINGS = ("device", "precision", "compile", "vram", "low_vram", "weights", "accept_licence", "image_size",
                    "model_config")  # what decides the graphs and kernels prepare builds


def settings_flags(settings: dict) -> list[str]:
    """``settings`` (job settings) as the backend's command-line flags (backend/settings.add_flags
    makes them from the same schema); unknown or unset settings are left out."""
    from .jobfolder import settings as schema

    flags: list[str] = []
    for name, value in settings.items():
        s = schema.BY_NAME.get(name)
        if s is None or value is None or s.stage != "generate":
            continue
        flag = s.flag or "--" + name.replace("_", "-")
        if s.kind == "bool":
            if value is not s.default:
                flags.append(flag if not s.default else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def prepare_backend(python: str | Path, settings: dict, on_line: Callable[[str], None] = lambda s: None,
                    cancel: threading.Event | None = None, env: dict | None = None) -> dict:
    """Set Up's last step: ``python -m backend prepare`` with ``settings`` (the PREPARE_SETTINGS of
    the user's job settings), its progress lines to ``on_line``. Never raises: returns prepare's
    record ({ran, seconds, compiled, tier, …}; ran False with its reason on the CPU), or {ran:
    False, error: {code, message}} when it failed, or {ran: False, cancelled: True}."""
    cmd = [str(python), "-m", "backend", "prepare", *settings_flags({k: settings.get(k) for k in PREPARE_SETTINGS})]
    on_line("$ " + " ".join(cmd))
    on_line("preparing the first job: the model runs once, so that its compiled graphs and tuned kernels are on disk")
    run_env = dict(os.environ if env is None else env, PYTHONPATH=str(BACKEND_ROOT))
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(BACKEND_ROOT),
                                env=run_env)
    except OSError as exc:
        return _prepare_said(on_line, {"ran": False, "error": {"code": "setup_failed", "message": str(exc)}})
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    _watch(proc, cancel)
    tail: list[str] = []
    for line in proc.stderr:  # the backend's progress lines and its error line
        on_line(line.rstrip())
        tail = (tail + [line.rstrip()])[-6:]
    proc.wait()
    reader.join()
    if cancel is not None and cancel.is_set():
        return _prepare_said(on_line, {"ran": False, "cancelled": True})
    if proc.returncode == 0:
        try:
            return _prepare_said(on_line, json.loads(out[0] if out else ""))
        except ValueError:
            pass
    said = next((m for t in reversed(tail) if (m := re.match(r"error \[(\w+)\]: (.*)", t))), None)
    error = ({"code": said.group(1), "message": said.group(2)} if said else
             {"code": "setup_failed", "message": f"prepare exited with {proc.returncode}: "
              + next((t for t in reversed(tail) if t.strip()), "no output")})
    return _prepare_said(on_line, {"ran": False, "error": error})


def _prepare_said(on_line: Callable[[str], None], record: dict) -> dict:
    on_line(prepare_line(record))
    return record


def prepare_line(record: dict | None) -> str:
    """What prepare's record means, in one line (the Set Up log, the preferences)."""
    if not record:
        return ""
    if record.get("ran"):
        what = "compiled graphs and tuned kernels" if record.get("compiled") else "tuned kernels"
        return f"First job prepared: {what} on disk ({record.get('seconds', 0):.0f} s)"
    if record.get("cancelled"):
        return "Prepare was cancelled: the backend is set up; the first job builds its kernels itself (slower)"
    if record.get("error"):
        e = record["error"]
        return (f"Prepare failed [{e['code']}]: {e['message'][:200]} — the backend is set up and usable; the first "
                "job builds its kernels itself (slower)")
    return f"Prepare skipped: {record.get('reason', 'nothing to prepare')}"


def setup_backend(target: str | Path, base_python: str | None = None, on_line: Callable[[str], None] = lambda s: None,
                  source: str | Path = BACKEND_ROOT, package_index: str = "", find_links: str = "",
                  gpu: Gpu | None | bool = True, uv: str | None | bool = True, cancel: threading.Event | None = None,
                  prepare_settings: dict | None = None, env: dict | None = None) -> tuple[Path, dict]:
    """Make the environment at ``target`` and install torch and the backend from ``source`` (the
    extension's folder, left untouched); then, with ``prepare_settings`` (the user's job
    settings), prepare the first job (prepare_backend; ``env``: what the backend inherits, e.g.
    HF_HUB_OFFLINE); returns its interpreter and its verified report (prepare's record under
    'prepare'). ``gpu``/``uv`` True: detect them. ``cancel`` set stops the running step.
    SetupError (``setup_failed``, ``missing_dependency``, ``cancelled``); prepare's failure is
    reported, not raised: the environment is complete by then."""
    target = Path(target)
    gpu = detect_nvidia() if gpu is True else gpu
    uv = shutil.which("uv") if uv is True else uv
    with tempfile.TemporaryDirectory(prefix="sp4d-setup-") as tmp:
        src = _source_copy(Path(source), Path(tmp) / "backend-src")
        p = plan(target, src, gpu=gpu or None, uv=uv or None, base_python=base_python, package_index=package_index,
                 find_links=find_links)
        on_line(f"torch from {p.torch_source}")
        for cmd in p.commands:
            _run(cmd, on_line, tmp, cancel)
    report = verify(p.python)
    report["torch_source"] = p.torch_source
    if report.get("missing"):
        raise SetupError("missing_dependency", f"the new environment lacks {', '.join(report['missing'])}")
    if prepare_settings is not None:
        report["prepare"] = prepare_backend(p.python, prepare_settings, on_line, cancel, env)
    on_line(summary(report))
    return p.python, report


def describe(report: dict | None, platform: str = sys.platform) -> list[str]:
    """The preferences' lines about the backend's environment and what runs on this machine."""
    if not report:
        lines = ["Backend not verified yet: press Set Up Backend."]
        if platform == "darwin":
            lines.append("macOS: SP4D generation needs an NVIDIA GPU (CUDA); the rig stages, the parts oracle and "
                         "Recompute Weights run here.")
        return lines
    if report.get("missing"):
        return [f"Missing in the backend's Python: {', '.join(report['missing'])} — press Set Up Backend."]
    lines = [f"torch {report.get('torch')}" + (f" (CUDA {report['cuda_build']})" if report.get("cuda_build") else "")
             + f", Python {report.get('python')}"]
    for g in report.get("gpus") or []:
        lines.append(f"GPU {g['index']}: {g['name']}, {g['vram_gib']:.1f} GB, compute capability {g['capability']}"
                     + ("" if g.get("supported", True) else " — this torch has no kernels for it: update the "
                        "NVIDIA driver and press Set Up Backend again"))
    if not report.get("cuda"):
        where = "macOS" if report.get("platform") == "darwin" else "No CUDA GPU usable here"
        lines.append(f"{where}: SP4D generation needs an NVIDIA GPU with CUDA. The rig stages, the parts oracle "
                     "(meshes with known parts), Recompute Weights and rigs from existing views work.")
        if report.get("error"):
            lines.append(f"torch said: {report['error'][:200]}")
    if report.get("prepare"):
        lines.append(prepare_line(report["prepare"]))
    return lines


def summary(report: dict) -> str:
    return "SP4D backend ready: " + "; ".join(describe(report))


SOURCES = ("pyproject.toml", "README.md", "LICENSE", "backend", "sp4d_job")  # what pip needs to build the backend


def _source_copy(root: Path, dst: Path) -> Path:
    """The backend's sources (SOURCES) copied to ``dst``, caches left out."""
    dst.mkdir(parents=True)
    for name in SOURCES:
        p = root / name
        if p.is_dir():
            shutil.copytree(p, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif p.is_file():
            shutil.copy2(p, dst / name)
        elif name == "README.md":  # pyproject names it
            (dst / name).write_text("sp4d-blender backend\n")
    return dst
