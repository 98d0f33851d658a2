"""Create the backend's own Python environment from Blender (the preferences' Set up button).

A virtual environment next to the cache folder, then pip installs the backend bundled in the
extension (its pyproject lists torch, safetensors, huggingface_hub, …). pip builds from a copy of
the backend's sources in a temporary folder, so that nothing (build/, *.egg-info) is written into
the installed extension's folder. Runs as a subprocess (no shell); each output line is reported so
the UI can show progress.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from .client import BACKEND_ROOT


def venv_python(target: Path) -> Path:
    return target / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def setup_backend(target: str | Path, base_python: str | None = None, pip_args: tuple[str, ...] = (),
                  on_line: Callable[[str], None] = lambda s: None, source: str | Path = BACKEND_ROOT) -> Path:
    """Make the environment at ``target`` and install the backend from ``source`` (the extension's
    folder, left untouched); returns its interpreter."""
    target = Path(target)
    with tempfile.TemporaryDirectory(prefix="sp4d-setup-") as tmp:
        src = _source_copy(Path(source), Path(tmp) / "backend-src")
        steps = [[base_python or sys.executable, "-m", "venv", str(target)],
                 [str(venv_python(target)), "-m", "pip", "install", "--disable-pip-version-check", *pip_args,
                  str(src)]]
        for cmd in steps:
            on_line("$ " + " ".join(cmd))
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp)
            for line in proc.stdout:
                on_line(line.rstrip())
            if proc.wait() != 0:
                raise RuntimeError(f"setting up the backend failed at: {' '.join(cmd[:4])} (exit {proc.returncode})")
    return venv_python(target)


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
