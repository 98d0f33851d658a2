"""The stages of a job, in order (generate → parts → rig), and the commands that run them.

The one registry the command line (``python -m backend``), the server and the tests run jobs
through. A stage is ``run(job, ctx) -> record``: it reuses its finished record when its inputs'
digest matches and its files are intact (jobdir.JobDir.stage_done), and otherwise recomputes
itself; the stages after it see other inputs and recompute too. A command holds the folder's lock
(sp4d_job.lock) while it runs: a second job on the same folder gets ``busy``.
"""

from __future__ import annotations

from typing import Callable

from sp4d_job.layout import STAGES

from .context import StageContext
from .errors import BackendError
from .generate import run_generate
from .jobdir import JobDir
from .rig.pipeline import run_parts, run_rig

Stage = Callable[[JobDir, StageContext], dict]
REGISTRY: dict[str, Stage] = {"generate": run_generate, "parts": run_parts, "rig": run_rig}
assert tuple(REGISTRY) == STAGES, "the registry lists the job folder's stages in their order"
# command -> the stages it runs, in order ('reweight' is no stage: it recomputes rig/weights.npz; 'orbits'
# writes the orbit videos of the generated views, video.py)
COMMANDS: dict[str, tuple[str, ...]] = {"generate": ("generate",), "rig": ("parts", "rig"), "run": STAGES}
JOB_COMMANDS = (*COMMANDS, "reweight", "orbits")


def run_command(cmd: str, job: JobDir, ctx: StageContext) -> dict:
    """Run the stages of ``cmd`` (COMMANDS), ``reweight`` or ``orbits`` on ``job`` under its lock;
    their records by stage. The folder must exist (BackendError 'bad_input'; it is never created here)."""
    if cmd not in JOB_COMMANDS:
        raise BackendError("bad_request", f"unknown command {cmd!r}; expected one of {', '.join(JOB_COMMANDS)}")
    with job.lock(f"'{cmd}'"):
        if cmd == "reweight":
            from sp4d_job.layout import SKELETON_EDITED_JSON

            from .rig.reweight import reweight_from_file
            from .settings import settings_of

            top_k = settings_of(job.read_job())["max_influences"]
            return {"reweight": reweight_from_file(job.root, job.root / SKELETON_EDITED_JSON, top_k)}
        if cmd == "orbits":
            from .video import export_orbits

            return {"orbits": export_orbits(job)}
        return {stage: REGISTRY[stage](job, ctx) for stage in COMMANDS[cmd]}
