"""Create the backend's own Python environment from Blender (the preferences' Set up button).

A virtual environment next to the cache folder, then pip installs the backend bundled in the
extension (its pyproject lists torch, safetensors, huggingface_hub, …). Runs as a subprocess
(no shell); each output line is reported so the UI can show progress.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

from .client import BACKEND_ROOT


def venv_python(target: Path) -> Path:
    return target / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def setup_backend(target: str | Path, base_python: str | None = None, pip_args: tuple[str, ...] = (),
                  on_line: Callable[[str], None] = lambda s: None) -> Path:
    """Make the environment at ``target`` and install the backend; returns its interpreter."""
    target = Path(target)
    steps = [[base_python or sys.executable, "-m", "venv", str(target)],
             [str(venv_python(target)), "-m", "pip", "install", "--disable-pip-version-check", *pip_args,
              str(BACKEND_ROOT)]]
    for cmd in steps:
        on_line("$ " + " ".join(cmd))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            on_line(line.rstrip())
        if proc.wait() != 0:
            raise RuntimeError(f"setting up the backend failed at: {' '.join(cmd[:4])} (exit {proc.returncode})")
    return venv_python(target)
