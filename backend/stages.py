"""The stages of a job, in order (generate → parts → rig), and the commands that run them.

The one registry the command line (``python -m backend``), the server and the tests run jobs
through. A stage is ``run(job, ctx) -> record``: it reuses its finished record when its inputs'
digest matches (jobdir.JobDir.stage_done) and otherwise recomputes itself and forgets the stages
after it.
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
# command -> the stages it runs, in order ('reweight' is no stage: it recomputes rig/weights.npz)
COMMANDS: dict[str, tuple[str, ...]] = {"generate": ("generate",), "rig": ("parts", "rig"), "run": STAGES}
JOB_COMMANDS = (*COMMANDS, "reweight")


def run_command(cmd: str, job: JobDir, ctx: StageContext) -> dict:
    """Run the stages of ``cmd`` (COMMANDS) or ``reweight`` on ``job``; their records by stage."""
    if cmd == "reweight":
        from sp4d_job.layout import SKELETON_EDITED_JSON

        from .rig.reweight import reweight_from_file
        from .settings import settings_of

        top_k = settings_of(job.read_job())["max_influences"]
        return {"reweight": reweight_from_file(job.root, job.root / SKELETON_EDITED_JSON, top_k)}
    if cmd not in COMMANDS:
        raise BackendError("bad_request", f"unknown command {cmd!r}; expected one of {', '.join(JOB_COMMANDS)}")
    return {stage: REGISTRY[stage](job, ctx) for stage in COMMANDS[cmd]}
