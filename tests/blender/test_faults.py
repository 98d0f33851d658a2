"""Faults seen from Blender, in real headless bpy against the real backend: no work lost or
overwritten, nothing crashes, every failure a clear error with a stable code."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import bpy
import numpy as np
import pytest

from sp4d_blender import api, identity, session
from sp4d_blender.build import MODIFIER_NAME, build_rig
from sp4d_blender.client import BackendProcess, RigJob, prune_logs
from sp4d_blender.refine import recompute_weights, rig_of

ROOT = Path(__file__).resolve().parents[2]
ORACLE = {"part_source": "oracle"}


def _copy(creature, name):
    obj = creature.copy()
    obj.data = creature.data.copy()
    obj.name = name
    for key in list(obj.keys()):
        if key == identity.ID_PROP:
            del obj[key]
    bpy.context.scene.collection.objects.link(obj)
    return obj


# --- job identity ---

def test_names_that_sanitise_alike_get_their_own_job_folders(creature, tmp_path):
    objs = [_copy(creature, n) for n in ("Кот", "Пёс", "Cat 1", "Cat_1", "a/b", "a_b")]
    dirs = [api.job_dir_for(o, tmp_path) for o in objs]
    assert len(set(dirs)) == len(dirs)
    assert dirs[0].name.startswith("Кот-") and dirs[2].name.startswith("Cat_1-")  # readable
    assert all(d.parent == tmp_path / "jobs" for d in dirs)  # no name escapes the jobs folder
    objs[0].name = "Кошка"  # a renamed object keeps its folder (and its finished stages)
    assert api.job_dir_for(objs[0], tmp_path) == dirs[0]


def test_objects_of_same_named_blend_files_get_their_own_job_folders(creature, tmp_path):
    dirs = []
    for sub in ("a", "b"):
        bpy.ops.wm.read_homefile(use_empty=True)
        me = bpy.data.meshes.new("Cube")
        me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
        obj = bpy.data.objects.new("Cube", me)
        bpy.context.scene.collection.objects.link(obj)
        (tmp_path / sub).mkdir()
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / sub / "scene.blend"))
        dirs.append(api.job_dir_for(obj, tmp_path))
    assert dirs[0] != dirs[1]


def test_two_objects_rigged_keep_their_own_results_and_recompute_uses_its_own_mesh(creature, tmp_path):
    cat, dog = _copy(creature, "Кот"), _copy(creature, "Пёс")
    dog.data.vertices.foreach_set("co", (np.array([v.co for v in dog.data.vertices]) * 1.3).ravel())
    prefs_cache = tmp_path / "cache"
    a1 = api.generate_rig(cat, job_dir=api.job_dir_for(cat, prefs_cache), settings=ORACLE)
    a2 = api.generate_rig(dog, job_dir=api.job_dir_for(dog, prefs_cache), settings=ORACLE)
    j1, j2 = Path(a1["sp4d_job"]), Path(a2["sp4d_job"])
    assert j1 != j2
    for obj, job in ((cat, j1), (dog, j2)):
        spec = json.loads((job / "job.json").read_text())
        assert spec["source"]["object"] == obj.name and spec["source"]["id"] == obj[identity.ID_PROP]
    # the animator moves the cat's vertices after rigging; recompute weights works on the cat's mesh
    moved = np.array([v.co for v in cat.data.vertices]) + (0.0, 0.0, 0.05)
    cat.data.vertices.foreach_set("co", moved.ravel())
    assert recompute_weights(cat, a1, timeout=120) >= 10
    with np.load(j1 / "mesh.npz") as z:
        assert np.allclose(z["vertices"], moved, atol=1e-6)
    with np.load(j2 / "mesh.npz") as z:  # the dog's folder is untouched
        assert np.allclose(z["vertices"], [v.co for v in dog.data.vertices], atol=1e-6)
    # an armature is never recomputed against another object's mesh
    with pytest.raises(ValueError, match="another object"):
        recompute_weights(dog, a1, timeout=120)


def test_a_duplicate_of_a_rigged_object_gets_its_own_folder(creature, tmp_path):
    api.generate_rig(creature, job_dir=api.job_dir_for(creature, tmp_path), settings=ORACLE)
    dup = creature.copy()  # Shift+D copies the custom properties, the id among them
    dup.data = creature.data.copy()
    bpy.context.scene.collection.objects.link(dup)
    assert dup[identity.ID_PROP] == creature[identity.ID_PROP]
    assert api.job_dir_for(dup, tmp_path) != api.job_dir_for(creature, tmp_path)
    assert dup[identity.ID_PROP] != creature[identity.ID_PROP]


# --- jobs at once, busy folders ---

def test_many_jobs_at_once_each_get_their_own_result(creature, tmp_path):
    """Two Generate Rigs and a Recompute Weights at once on one backend: no event is lost."""
    rigged = _copy(creature, "Rigged")
    arm = api.generate_rig(rigged, job_dir=tmp_path / "r", settings=ORACLE)
    a, b = _copy(creature, "A"), _copy(creature, "B")
    backend = session.get_backend()
    ja = api.start_job(a, tmp_path / "a", ORACLE, backend)
    jb = api.start_job(b, tmp_path / "b", ORACLE, backend)
    while not ja.progress and not ja.finished:  # the backend has taken the folder
        ja.poll()
        time.sleep(0.02)
    with pytest.raises(api.RigError) as e:  # the same folder again while its job runs: busy, nothing written
        api.start_job(a, tmp_path / "a", ORACLE, backend)
    assert e.value.code == "busy"
    n = recompute_weights(rigged, arm, backend=backend, timeout=120)  # blocks while the others run
    assert n >= 10
    for job in (ja, jb):
        assert job.wait(timeout=300) == "done", job.error
        assert job.result["job"] == str(job.job_dir)
    assert build_rig(a, ja.job_dir).type == "ARMATURE" and build_rig(b, jb.job_dir).type == "ARMATURE"


def test_a_timeout_is_reported_as_timeout_not_as_a_cancel(creature, tmp_path, scene_snapshot):
    before = scene_snapshot()
    with pytest.raises(api.RigError) as e:
        api.generate_rig(creature, job_dir=tmp_path / "job", settings=ORACLE, timeout=0.3)
    assert e.value.code == "timeout" and "0.3 s" in e.value.message
    assert scene_snapshot() == before


def test_settings_of_the_wrong_type_are_bad_input_before_anything_is_written(creature, tmp_path, scene_snapshot):
    before = scene_snapshot()
    for bad, field in (({"frames": "abc"}, "frames"), ({"max_influences": [2]}, "max_influences"),
                       ({"part_source": "magic"}, "part_source")):
        with pytest.raises(api.RigError) as e:
            api.generate_rig(creature, job_dir=tmp_path / "job", settings=bad)
        assert e.value.code == "bad_input" and f"settings.{field} must be" in e.value.message
        assert not (tmp_path / "job" / "job.json").exists()
    assert scene_snapshot() == before
    arm = api.generate_rig(creature, job_dir=tmp_path / "job", settings={**ORACLE, "frames": None})  # the default
    assert arm.type == "ARMATURE"


# --- re-running Generate Rig ---

def test_rerunning_replaces_the_previous_rig_and_keeps_the_users_things(creature, tmp_path):
    mine = creature.vertex_groups.new(name="torso")  # the user's own group, named like a bone
    mine.add([0, 1], 0.25, "REPLACE")
    creature.modifiers.new("Subsurf after", "SUBSURF")
    first = api.generate_rig(creature, job_dir=tmp_path / "job", settings=ORACLE)
    creature.modifiers.move(1, 0)  # the user put the subsurf before the armature
    order = [m.name for m in creature.modifiers]
    groups = sorted(g.name for g in creature.vertex_groups)
    names = (first.name, first.data.name)
    second = api.generate_rig(creature, job_dir=tmp_path / "job", settings=ORACLE)
    assert [o for o in bpy.data.objects if o.type == "ARMATURE"] == [second]
    assert len(bpy.data.armatures) == 1 and len(bpy.data.actions) == 1  # the old data and action are gone
    assert (second.name, second.data.name) == names  # the new rig under the old one's names
    assert [m.name for m in creature.modifiers] == order  # same stack, same place
    assert creature.modifiers[MODIFIER_NAME].object == second and rig_of(creature) == second
    assert sorted(g.name for g in creature.vertex_groups) == groups  # no .001 copies
    assert creature.vertex_groups["torso"].weight(0) == 0.25  # the user's group untouched
    assert creature.parent == second


def test_keyframes_follow_a_bone_renamed_for_a_clashing_group(creature, tmp_path):
    creature.vertex_groups.new(name="torso")
    arm = api.generate_rig(creature, job_dir=tmp_path / "job", settings=ORACLE)
    assert "torso.001" in arm.data.bones
    skel = json.loads((tmp_path / "job" / "rig" / "skeleton.json").read_text())
    assert "torso" in skel["frames"][1]["bones"]
    scene = bpy.context.scene
    scene.frame_set(scene.frame_start + 1)
    pb = arm.pose.bones["torso.001"]
    want = np.array(skel["frames"][1]["bones"]["torso"]) @ np.array(pb.bone.matrix_local)
    assert np.allclose(np.array(pb.matrix), want, atol=1e-4)
    assert not np.allclose(np.array(pb.matrix_basis), np.eye(4), atol=1e-3)  # it moves: keyed


def test_a_failed_rerun_leaves_the_previous_rig_as_it_was(creature, tmp_path, scene_snapshot):
    api.generate_rig(creature, job_dir=tmp_path / "job", settings=ORACLE)
    (tmp_path / "job" / "rig" / "weights.npz").write_bytes(b"broken")
    before = scene_snapshot()
    with pytest.raises(ValueError, match="unreadable"):
        build_rig(creature, tmp_path / "job")
    assert scene_snapshot() == before


# --- outputs that went missing ---

def test_deleted_outputs_are_recomputed_and_never_raise(creature, tmp_path):
    job = tmp_path / "job"
    api.generate_rig(creature, job_dir=job, settings=ORACLE)
    for name in ("rig/weights.npz", "rig/skeleton.json", "parts/labels.npz"):
        (job / name).unlink()
        arm = api.generate_rig(creature, job_dir=job, settings=ORACLE)  # recomputed, built
        assert (job / name).exists() and rig_of(creature) == arm
    for name in ("rig/weights.npz", "rig/skeleton.json"):  # building alone: a clear error, no crash
        saved = (job / name).read_bytes()
        (job / name).unlink()
        with pytest.raises(ValueError, match="run Generate Rig again"):
            build_rig(creature, job)
        (job / name).write_bytes(saved)
    shutil.rmtree(job)  # the folder is gone: the panel's operators report it
    bpy.context.view_layer.objects.active = creature
    with pytest.raises(RuntimeError, match="no generated views"):
        bpy.ops.sp4d.import_views()
    with pytest.raises(RuntimeError, match="no SP4D job folder"):
        bpy.ops.sp4d.recompute_weights()


def test_the_object_renamed_or_deleted_during_a_modal_job(creature, tmp_path):
    from sp4d_blender.operators import SP4D_OT_generate_rig

    rj = api.start_job(creature, tmp_path / "job", ORACLE)
    op = types.SimpleNamespace(_obj_id=creature[identity.ID_PROP], _obj_name=creature.name)
    creature.name = "Renamed while rigging"
    assert rj.wait(timeout=300) == "done"
    assert "Renamed while rigging" in SP4D_OT_generate_rig._build(op, rj)
    bpy.data.objects.remove(creature)
    with pytest.raises(ValueError, match="deleted while"):
        SP4D_OT_generate_rig._build(op, rj)


# --- the backend process: deaths, logs, offline ---

def test_a_backend_killed_by_the_system_says_it_probably_ran_out_of_memory(creature, tmp_path):
    backend = BackendProcess(log_dir=tmp_path / "logs")
    rj = api.start_job(creature, tmp_path / "job", ORACLE, backend)
    os.kill(backend.proc.pid, signal.SIGKILL)
    assert rj.wait(timeout=60) == "failed"
    assert rj.error["code"] == "backend_died" and "out of memory" in rj.error["message"]
    backend.stop()


def test_backend_logs_are_kept_in_their_folder_and_pruned(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(8):
        (logs / f"backend-old-{i}.log").write_text("x")
        os.utime(logs / f"backend-old-{i}.log", (i, i))
    b = BackendProcess(log_dir=logs)
    b.start()
    assert Path(b.log_path).parent == logs
    assert len(list(logs.glob("backend-*.log"))) <= 5 and (logs / "backend-old-7.log").exists()
    b.stop()
    assert not Path(b.log_path).exists()  # a clean exit leaves no log behind
    prune_logs(logs, 2)
    assert len(list(logs.glob("backend-*.log"))) == 2


def test_blenders_online_access_off_means_offline_for_the_backend():
    b = session.get_backend()
    assert b.env == ({} if bpy.app.online_access else {"HF_HUB_OFFLINE": "1"})
    session.shutdown()


def test_a_job_id_per_request_even_after_a_restart(tmp_path):
    b = BackendProcess(log_dir=tmp_path)
    b.start()
    rid = b.send("ping")
    ev = b.queue_for(rid).get(timeout=60)
    assert ev["id"] == rid and ev["data"]["pong"]
    b.proc.kill()
    b.proc.wait()
    rj = RigJob(b, tmp_path, "rig")
    rj.start()  # restarted
    assert rj.rid != rid and rj.wait(timeout=120) == "failed" and rj.error["code"] == "bad_input"
    b.stop()


# --- the extension's files, the README's commands, the batch script ---

def _readme_block(lang: str, after: str) -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(rf"{re.escape(after)}.*?```{lang}\n(.*?)```", text, re.S).group(1)


def test_the_readmes_use_without_the_ui_snippet_runs_and_exits(tmp_path):
    code = _readme_block("python", "## Use without the UI")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Creature_rig 14" in r.stdout
    assert time.monotonic() - t0 < 240


def test_the_readmes_build_command_works_from_a_fresh_checkout(tmp_path):
    command = _readme_block("bash", "## Install in Blender").split("#")[0].strip()
    assert command == "bash scripts/build_extension.sh"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    fresh = tmp_path / "checkout"
    for f in files:
        if (ROOT / f).is_file():
            (fresh / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, fresh / f)
    assert not (fresh / "dist").exists()
    r = subprocess.run(command.split(), cwd=fresh, env=dict(os.environ, BLENDER_PYTHON=sys.executable),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    import zipfile

    (zip_path,) = (fresh / "dist").glob("sp4d_blender-*.zip")
    names = zipfile.ZipFile(zip_path).namelist()
    assert "backend/server.py" in names and not [n for n in names if n.startswith(("docs/", "tests/"))]


def test_the_manifest_minimum_is_a_tested_version():
    import tomllib

    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    tested = (ROOT / "scripts" / "test.sh").read_text()
    major_minor = ".".join(manifest["blender_version_min"].split(".")[:2])
    assert re.search(rf"for v in [^;]*\b{re.escape(major_minor)}\b", tested), major_minor


def test_batch_exit_codes_and_failed_items_write_nothing(tmp_path):
    me = bpy.data.meshes.new("Broken")
    me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 1)], [])
    bpy.context.scene.collection.objects.link(bpy.data.objects.new("Broken", me))
    path = tmp_path / "broken.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    out = tmp_path / "out"
    run = [sys.executable, str(ROOT / "scripts" / "batch_rig.py")]
    r = subprocess.run(run + ["--files", str(path), "--out", str(out), "--export", "glb"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 3, r.stdout + r.stderr  # nothing rigged
    assert not list(out.glob("*_rigged.*"))
    report = json.loads((out / "report.json").read_text())
    assert [x["ok"] for x in report] == [False] and "no faces" in report[0]["error"]
    r = subprocess.run(run + ["--files", str(tmp_path / "missing.blend"), "--out", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 3 and not list(out.glob("*_rigged.*"))
    r = subprocess.run(run + ["--no-such-flag"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
