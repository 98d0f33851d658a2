"""Warm Up: when the SP4D panel is first shown in a session, the backend starts and loads the model
at the artist's settings in the background (the ``warm`` request, docs/protocol.md), so that the
first Generate Rig does not wait for the process, the weights' load and (with Compile) the
compiled graphs. Once per backend process; never downloads; off with the Warm Up preference.
The panel shows how it went (``WindowManager.sp4d_model``); a backend that lacks its packages is
answered with Set Up there before any job fails."""

from __future__ import annotations

import bpy

from .client import RigJob

POLL_S = 0.5

_job: RigJob | None = None
_scheduled = False


def start(context=None) -> RigJob | None:
    """Send ``warm`` to the session's backend at ``context``'s job settings; None when the
    preference is off, no backend is set up, the part source is the oracle, or one was sent to
    this backend process already (a restarted backend is warmed again)."""
    global _job
    from .prefs import get_prefs, job_settings
    from .session import backend_python, get_backend

    context = context or bpy.context
    if not getattr(get_prefs(context), "warm_up", False):
        return None
    python = backend_python(context)
    if python is None:
        return None
    settings = job_settings(context)
    if settings["part_source"] == "oracle":
        return None
    backend = get_backend(python)
    if _job is not None and _job.backend is backend and backend.alive and _job.state != "failed":
        return None
    _job = RigJob(backend, None, "warm", {"settings": settings})
    _job.start()
    return _job


def status_text(job: RigJob) -> str:
    """One line for the panel: how the warm-up went, or what it is doing."""
    if job.state == "running":
        return "Model: " + (job.progress.get("message") or "starting the backend") + "…"
    if job.state == "done":
        r = job.result or {}
        if not r.get("warmed"):
            return f"Model loads with the first job: {r.get('reason', '')}"
        took = f"in {r['seconds']:.0f} s" if r.get("loaded") else "already loaded"
        return f"Model ready ({took})"
    return f"Model warm-up failed: {(job.error or {}).get('message', '')[:200]}"


def poll() -> float | None:
    """Timer: follow the warm-up, show its state in the panel (and a missing backend package as
    the panel's Set Up prompt); None (stop) once it has ended."""
    from .operators import remember_failure

    context = bpy.context
    wm = getattr(context, "window_manager", None)
    if _job is None:
        return None
    _job.poll()
    if wm is not None and hasattr(wm, "sp4d_model"):
        wm.sp4d_model = status_text(_job)
        if _job.state == "failed":
            remember_failure(context, (_job.error or {}).get("code"), (_job.error or {}).get("message", ""))
        for area in getattr(getattr(context, "screen", None), "areas", []):
            if area.type == "VIEW_3D":
                area.tag_redraw()
    return None if _job.finished else POLL_S


def _begin() -> None:
    try:
        if start() is not None:
            bpy.app.timers.register(poll, first_interval=POLL_S)
    except Exception as exc:  # noqa: BLE001 - a timer must not raise; the first job reports the same problem
        print(f"SP4D warm-up: {exc}")


def schedule() -> None:
    """Called by the panel's draw, which must not start processes: the first call of a session
    starts the warm-up on a timer."""
    global _scheduled
    if _scheduled:
        return
    _scheduled = True
    bpy.app.timers.register(_begin, first_interval=0.1)


def stop() -> None:
    """Forget the warm-up and its timers (the add-on is unregistered); the next session's panel
    starts another."""
    global _job, _scheduled
    for fn in (_begin, poll):
        if bpy.app.timers.is_registered(fn):
            bpy.app.timers.unregister(fn)
    _job, _scheduled = None, False
