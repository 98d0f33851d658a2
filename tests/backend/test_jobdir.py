import json
import os

import numpy as np
import pytest

from backend.errors import BackendError
from backend.jobdir import JobDir, digest, write_bytes_atomic, write_json_atomic


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "x.json"
    write_json_atomic(p, {"v": 1})
    write_json_atomic(p, {"v": 2})
    assert json.loads(p.read_text()) == {"v": 2}
    assert os.listdir(p.parent) == ["x.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "x.bin"
    write_bytes_atomic(p, b"old")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_bytes_atomic(p, b"new")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.bin"]


def test_stage_records_resume_and_invalidate(tmp_path):
    job = JobDir(tmp_path)
    job.create({"kind": "mesh"}, {})
    assert not job.stage_done("generate", "k1")
    job.mark_stage("generate", "k1", source="oracle")
    job.mark_stage("parts", "k2")
    assert job.stage_done("generate", "k1") and not job.stage_done("generate", "other")
    job.invalidate_from("parts", ("generate", "parts", "rig"))
    assert job.stage_done("generate", "k1") and not job.stage_done("parts", "k2")


def test_readers_tolerate_extra_keys_and_broken_status(tmp_path):
    job = JobDir(tmp_path)
    job.job_json.write_text(json.dumps({"source": {}, "settings": {"frames": 4}, "future": {"x": 1}}))
    assert job.read_job()["settings"]["frames"] == 4
    job.status_json.write_text("{broken")
    assert job.read_status() == {"stages": {}}


def test_bad_job_json_is_a_clear_error(tmp_path):
    job = JobDir(tmp_path)
    with pytest.raises(BackendError, match="no job.json"):
        job.read_job()
    job.job_json.write_text("[1, 2]")
    with pytest.raises(BackendError, match="not an object"):
        job.read_job()


@pytest.mark.parametrize("verts,faces,msg", [
    (np.zeros((0, 3)), np.zeros((0, 3), int), "N>0"),
    (np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), np.array([[0, 1, 2]]), "NaN"),
    (np.eye(3), np.array([[0, 1, 5]]), "outside"),
    (np.eye(3), np.array([[0, 1, 1]]), "no \\(non-degenerate\\) faces"),
    (np.eye(3), np.array([[0.0, 1, 2]]), "integers"),
])
def test_broken_meshes_are_rejected_with_reasons(tmp_path, verts, faces, msg):
    job = JobDir(tmp_path)
    job.write_mesh(verts, faces.astype(np.int32) if faces.dtype.kind == "i" else faces)
    if faces.dtype.kind != "i":  # write_mesh casts; write the float faces by hand
        np.savez(job.mesh_npz, vertices=verts, faces=faces)
    with pytest.raises(BackendError, match=msg) as e:
        job.read_mesh()
    assert e.value.code == "bad_input"


def test_unreadable_mesh_file(tmp_path):
    job = JobDir(tmp_path)
    job.mesh_npz.write_bytes(b"not a zip")
    with pytest.raises(BackendError, match="unreadable"):
        job.read_mesh()


def test_digest_changes_with_array_content():
    a = np.arange(6.0)
    b = a.copy()
    b[3] += 1e-3
    assert digest(a) != digest(b) and digest(a) == digest(a.copy())


def test_time_left_follows_the_recent_pace():
    """A slow first step (a compile, a model load) must not inflate the estimate for the rest."""
    from backend.context import StageContext

    clock = [0.0]
    events = []
    ctx = StageContext(events.append, clock=lambda: clock[0])
    ctx.progress("generate", 0, 1, "compiling the UNet")  # a message before the steps, another count
    for step, t in enumerate([120.0, 121.5, 123.0, 124.5], start=1):  # 120 s, then 1.5 s a step
        clock[0] = t
        ctx.progress("generate", step, 50)
    etas = [e["eta_s"] for e in events]
    assert etas[0] is None
    assert etas[1] == 49 * 120.0  # one step: nothing better to go on
    assert etas[2:] == [48 * 1.5, 47 * 1.5, 46 * 1.5]
    clock[0] = 130.0
    ctx.progress("rig", 0, 4)  # stages have their own clocks
    clock[0] = 132.0
    ctx.progress("rig", 1, 4)
    assert events[-1]["eta_s"] == 3 * 2.0


def test_the_job_schema_imports_without_torch_or_the_backend():
    """Blender imports sp4d_job (through sp4d_blender/jobfolder.py): standard library and numpy only."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, sp4d_job.layout, sp4d_job.arrays, sp4d_job.settings\n"
            "print(sorted(m for m in ('torch', 'backend', 'cv2', 'scipy', 'bpy') if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_settings_are_checked_once_with_the_setting_and_its_allowed_values():
    from backend.settings import checked
    from sp4d_job.settings import DEFAULTS

    s = checked({"frames": "7", "cfg": 2, "compile": "on", "device": "CUDA:0, cuda:1", "steps": None, "mine": 1})
    assert s["frames"] == 7 and s["cfg"] == 2.0 and s["compile"] == "layers" and s["device"] == "cuda:0,cuda:1"
    assert s["steps"] == DEFAULTS["steps"] and s["mine"] == 1  # null: the default; unknown keys kept
    cases = {"precision": ("fp8", "one of bf16, fp16, fp32"), "frames": (0, "from 1 to 64"),
             "image_size": (100, "a multiple of 8"), "low_vram": ("yes", "true or false"),
             "device": ("cuda:0,cuda:1,cpu", "two of them"), "compile": ("fastest", "'blocks' or 'layers'"),
             "part_source": ("sam", "one of auto, sp4d, oracle"), "steps": (2.5, "an integer")}
    for name, (value, allowed) in cases.items():
        with pytest.raises(BackendError) as e:
            checked({name: value})
        assert e.value.code == "bad_input" and e.value.message.startswith(f"settings.{name} must be ")
        assert allowed in e.value.message and repr(value) in e.value.message


def test_npz_schemas_name_the_file_key_and_shape():
    from sp4d_job import arrays

    w = {"weights": np.ones((5, 2), np.float32), "bone_names": np.array(["a", "b"])}
    assert arrays.check(w, arrays.WEIGHTS, "rig/weights.npz") == {"N": 5, "B": 2}
    with pytest.raises(ValueError, match=r"rig/weights.npz 'bone_names' must have shape \('B',\)"):
        arrays.check({**w, "bone_names": np.array(["a", "b", "c"])}, arrays.WEIGHTS, "rig/weights.npz")
    with pytest.raises(ValueError, match="has no 'weights'"):
        arrays.check({"bone_names": w["bone_names"]}, arrays.WEIGHTS, "rig/weights.npz")
    with pytest.raises(ValueError, match="'faces' must be int32"):
        arrays.check(arrays.mesh_arrays(np.eye(3), np.array([[0, 1, 2]])) | {"faces": np.zeros((1, 3))},
                     arrays.MESH, "mesh.npz")


def test_stage_registry_runs_the_job_folders_stages_in_order(job_copy):
    from backend.context import StageContext
    from backend.stages import COMMANDS, REGISTRY, run_command
    from sp4d_job.layout import STAGES

    assert tuple(REGISTRY) == STAGES and COMMANDS["run"] == STAGES
    out = run_command("rig", job_copy, StageContext())
    assert list(out) == ["parts", "rig"] and job_copy.stage_done("rig", out["rig"]["key"])
    with pytest.raises(BackendError) as e:
        run_command("render", job_copy, StageContext())
    assert e.value.code == "bad_request"
