"""Warm Up (sp4d_blender/warmup.py) in headless bpy against the real backend subprocess: the
panel's first draw asks the backend to load the model in the background, once per backend."""

import os
import subprocess
import sys

import bpy
import pytest

from sp4d_blender import operators, session, warmup
from sp4d_blender.prefs import get_prefs


@pytest.fixture(autouse=True)
def fresh():
    warmup.stop()
    session.shutdown()
    yield
    warmup.stop()
    session.shutdown()
    wm = bpy.context.window_manager
    wm.sp4d_model = wm.sp4d_needs = wm.sp4d_needs_message = ""


def _follow(job):
    assert job.wait(timeout=120) in ("done", "failed")
    while warmup.poll() is not None:  # what the timer does, to its end
        pass


def test_warm_up_goes_once_to_each_backend_and_says_why_the_model_waits(monkeypatch, tmp_path):
    """No GPU here (and no such weights file): the backend answers at once why the model loads
    with the first job instead, the panel shows it, and no second request goes to that backend;
    a restarted backend is asked again."""
    monkeypatch.setattr(get_prefs(), "weights_source", "LOCAL")
    monkeypatch.setattr(get_prefs(), "weights_path", str(tmp_path / "sp4d.safetensors"))
    bpy.context.scene.sp4d.part_source = "SP4D"
    job = warmup.start()
    assert job is not None and job.cmd == "warm" and job.fields["settings"]["part_source"] == "sp4d"
    _follow(job)
    assert job.state == "done" and job.result["warmed"] is False
    reason = job.result["reason"]
    assert ("no CUDA GPU" in reason) or ("does not exist" in reason), reason
    text = bpy.context.window_manager.sp4d_model
    assert text.startswith("Model loads with the first job:") and reason in text
    assert warmup.start() is None  # once per backend process
    session.get_backend().proc.kill()
    session.get_backend().proc.wait()
    again = warmup.start()  # the backend restarts with it
    assert again is not None and again is not job and session.get_backend().alive
    _follow(again)


def test_no_warm_up_for_the_oracle_or_when_switched_off(monkeypatch):
    bpy.context.scene.sp4d.part_source = "ORACLE"
    assert warmup.start() is None
    bpy.context.scene.sp4d.part_source = "AUTO"
    monkeypatch.setattr(get_prefs(), "warm_up", False)
    assert warmup.start() is None
    assert session._backend is None  # no backend process was started for it


def test_panel_schedules_the_warm_up_once_on_a_timer():
    """Drawing must not start processes: the panel's first draw registers a one-shot timer."""
    warmup.schedule()
    assert bpy.app.timers.is_registered(warmup._begin)
    bpy.app.timers.unregister(warmup._begin)
    warmup.schedule()  # later draws: nothing more
    assert not bpy.app.timers.is_registered(warmup._begin)


def test_a_backend_without_its_packages_asks_for_set_up_before_any_job(monkeypatch, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    python = bare / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    monkeypatch.setattr(get_prefs(), "backend_python", str(python))
    bpy.context.scene.sp4d.part_source = "AUTO"
    job = warmup.start()
    _follow(job)
    wm = bpy.context.window_manager
    assert job.state == "failed" and job.error["code"] == "missing_dependency"
    assert wm.sp4d_model.startswith("Model warm-up failed") and wm.sp4d_needs == "missing_dependency"
    assert operators.setup_prompt(bpy.context)[1] == "sp4d.setup_backend"
