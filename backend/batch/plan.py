"""A batch's request and its items: what to rig, with which settings, where, and their names.

The request is JSON: Blender's side writes it (``sp4d_blender/batch_ray.py`` for
``scripts/batch_rig.py --ray``), the driver reads it (``python -m backend.batch REQUEST.json``), so
a re-run after a crash is the same command. Everything here is checked before a cluster is touched.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from sp4d_job.layout import write_json_atomic

from ..errors import BackendError
from ..stages import COMMANDS

REQUEST_JSON = "batch_request.json"
REPORT_JSON = "report.json"
LOGS = "logs"  # OUT/logs/<item>.log per item, <stem>.capture.log / <stem>.build.log per file
JOBS = "jobs"  # OUT/jobs/<item>/ : the job folders (docs/job-folder.md)
EXPORTS = ("glb", "gltf", "fbx")


def safe_name(text: str) -> str:
    """A file name for ``text`` (the add-on's job folder names: api.job_dir_for)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


@dataclass
class Request:
    """One batch. ``files``: .blend files, each captured and built by a Blender worker; ``jobs``:
    existing job folders (clips, or prepared meshes), run without Blender; ``command``: the
    stages to run (backend.stages.COMMANDS). ``address``: None for a local cluster, else what
    ray.init takes ('auto', 'host:port', 'ray://host:10001'). ``blender``: how a worker starts a
    Blender process: {"python": interpreter with bpy} or {"binary": the blender executable}."""

    out: Path
    files: list[str] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # pictures for Rig Image: built into OUT/images_rigged.blend
    command: str = "run"
    settings: dict = field(default_factory=dict)
    export: str | None = None
    timeout: float | None = None
    address: str | None = None
    blender: dict | None = None
    attempts: int = 2  # tries per item before it is reported failed
    num_cpus: int | None = None  # CPUs of a local cluster (None: all)
    model_workers: int | None = None  # None: one per GPU of the cluster

    @classmethod
    def from_dict(cls, d: dict) -> Request:
        known = set(cls.__dataclass_fields__)
        req = cls(**{k: v for k, v in d.items() if k in known})
        req.out = Path(req.out).resolve()
        req.files = [str(Path(f).resolve()) for f in req.files]
        req.jobs = [str(Path(j).resolve()) for j in req.jobs]
        req.images = [str(Path(i).resolve()) for i in req.images]
        if req.address in ("", "local"):
            req.address = None
        req.check()
        return req

    @classmethod
    def read(cls, path: str | Path) -> Request:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise BackendError("bad_request", f"cannot read the batch request {path}: {exc}") from exc

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}

    def write(self) -> Path:
        path = self.out / REQUEST_JSON
        write_json_atomic(path, self.to_dict())
        return path

    def check(self) -> None:
        if not self.files and not self.jobs and not self.images:
            raise BackendError("bad_request", "the batch has no .blend files, no pictures and no job folders")
        if self.command not in COMMANDS:
            raise BackendError("bad_request", f"command must be one of {', '.join(COMMANDS)}, got {self.command!r}")
        if (self.files or self.images) and self.command != "run":
            raise BackendError("bad_request", ".blend files and pictures are rigged whole: their command is 'run'")
        if (self.files or self.images) and not self.blender:
            raise BackendError("bad_request", "rigging .blend files or pictures needs 'blender' (a Python with bpy, "
                               "or the blender executable) for the Blender workers")
        if self.export not in (None, *EXPORTS):
            raise BackendError("bad_request", f"export must be one of {', '.join(EXPORTS)}, got {self.export!r}")
        if int(self.attempts) < 1:
            raise BackendError("bad_request", "attempts must be at least 1")
        missing = [p for p in self.files if not Path(p).is_file()] + [
            p for p in self.jobs if not (Path(p) / "job.json").is_file()]
        if missing:
            raise BackendError("bad_request", f"not found: {', '.join(missing[:5])}"
                               + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))


def file_stems(files: list[str]) -> dict[str, str]:
    """A unique name per .blend file: its stem, plus a digest of its path where stems repeat
    (libraries often hold many 'model.blend'), so no two files share outputs or job folders."""
    stems = [Path(f).stem or "untitled" for f in files]
    return {f: s if stems.count(s) == 1 else f"{s}-{hashlib.sha1(f.encode()).hexdigest()[:6]}"
            for f, s in zip(files, stems, strict=True)}


@dataclass
class Item:
    """One object to rig (or one job folder). ``key`` names its job folder and its log."""

    key: str
    file: str | None = None
    object: str | None = None
    job: str | None = None
    image: str | None = None  # a picture (Rig Image): its new mesh is built into OUT/images_rigged.blend
    stem: str | None = None
    failures: list = field(default_factory=list)  # why earlier tries failed (a dead worker, …)
    step: int = 0  # index into its steps (driver)
    stages: dict = field(default_factory=dict)  # stage -> 'ran' | 'reused', over its tries
    seconds: float = 0.0
    result: dict | None = None  # what rigged it (the build's armature, bones)

    def entry(self, ok: bool, **extra) -> dict:
        """Its line in report.json (the plain batch's keys first)."""
        out = {"image": self.image} if self.image else {}
        out |= {"file": self.file, "object": self.object, "ok": ok, "attempts": len(self.failures) + 1,
               "stages": self.stages, "seconds": round(self.seconds, 2), "job": self.job, "key": self.key}
        if self.failures:
            out["retried_after"] = self.failures
        out.update(extra)
        return out


def job_items(jobs: list[str]) -> list[Item]:
    """Items for existing job folders, keyed by folder name (made unique)."""
    seen: set[str] = set()
    items = []
    for j in jobs:
        key = base = safe_name(Path(j).name)
        n = 1
        while key in seen:
            n += 1
            key = f"{base}-{n}"
        seen.add(key)
        items.append(Item(key=key, job=j))
    return items


IMAGES_STEM = "images"  # OUT/images_rigged.blend, the pictures' logs images.build.log


def image_items(images: list[str], jobs: Path) -> list[Item]:
    """Items for pictures (Rig Image), keyed as scripts/batch_rig.py --images names their job
    folders: image-<stem>-<digest of the full path>, in ``jobs``."""
    items = []
    for path in images:
        key = f"image-{safe_name(Path(path).stem)}-{hashlib.sha1(path.encode()).hexdigest()[:10]}"
        items.append(Item(key=key, image=path, job=str(jobs / key)))
    return items
