"""Generate Rig in real headless Blender against the real backend subprocess."""

import json

import bpy
import numpy as np
import pytest

from sp4d_blender import api, session
from sp4d_blender.build import MODIFIER_NAME, build_rig, read_weights
from sp4d_blender.client import BackendProcess
from sp4d_blender.mesh_data import group_weights


def test_generate_rig_builds_armature_groups_and_modifier(creature, tmp_path, weights_of):
    arm = api.generate_rig(creature, job_dir=tmp_path / "job", settings={"part_source": "oracle"})
    skel = json.loads((tmp_path / "job" / "rig" / "skeleton.json").read_text())
    assert arm.type == "ARMATURE" and skel["part_source"] == "oracle"
    bones = arm.data.bones
    assert len(bones) == len(skel["bones"]) == 14  # 13 parts + root
    assert bones["root"].parent is None and not bones["root"].use_deform
    deform = [b.name for b in bones if b.use_deform]
    assert sorted(g.name for g in creature.vertex_groups) == sorted(deform)
    assert all(b.parent is not None for b in bones if b.name != "root")
    w = weights_of(creature)
    assert np.allclose(w.sum(1), 1, atol=1e-3) and w.min() >= 0
    # the add-on reads the groups in bulk (mesh_data.group_weights): the same weights as vertex by vertex
    names = [g.name for g in creature.vertex_groups]
    assert np.array_equal(group_weights(creature, names), w.astype(np.float32))
    assert np.abs(w[:, [names.index(n) for n in read_weights(tmp_path / "job")[1]]]
                  - read_weights(tmp_path / "job")[0]).max() <= 1e-5  # the job's weights, rounded to 1e-5
    mods = [m for m in creature.modifiers if m.type == "ARMATURE"]
    assert len(mods) == 1 and mods[0].name == MODIFIER_NAME and mods[0].object == arm
    assert creature.parent == arm
    assert np.allclose(np.array(arm.matrix_world), np.array(creature.matrix_world))
    # the rig deforms the mesh: bending a leg moves its vertices, not the head's
    dg = bpy.context.evaluated_depsgraph_get()
    rest = np.array([v.co for v in creature.evaluated_get(dg).to_mesh().vertices])
    leg = next(b for b in arm.pose.bones if b.name.endswith(".L") and b.parent.name == "torso")
    leg.rotation_mode = "XYZ"
    leg.rotation_euler = (0.8, 0, 0)
    dg.update()
    posed = np.array([v.co for v in creature.evaluated_get(dg).to_mesh().vertices])
    moved = np.linalg.norm(posed - rest, axis=1) > 1e-3
    leg_group = creature.vertex_groups[leg.name].index
    below = [creature.vertex_groups[b.name].index for b in leg.children_recursive]
    assert moved.any() and (w[moved, leg_group] + w[moved][:, below].sum(1) > 0).all()


def test_hinge_bones_bend_about_their_x_axis(creature, tmp_path):
    """Bones whose joint bends about one axis in the clip are rolled so that their local X axis is
    that axis (Rigify's convention): the backend's roll agrees with Blender's bone matrices."""
    arm = api.generate_rig(creature, job_dir=tmp_path / "job", settings={"part_source": "oracle"})
    skel = json.loads((tmp_path / "job" / "rig" / "skeleton.json").read_text())
    bone_of = {b["part"]: b["name"] for b in skel["bones"] if b["deform"]}
    hinges = [j for j in skel["joints"] if "bend_axis" in j]
    assert hinges  # the oracle swings some parts about fixed axes
    for j in hinges:
        m = np.array(arm.data.bones[bone_of[j["part"]]].matrix_local)[:3, :3]  # armature space = the mesh's
        x, y = m[:, 0], m[:, 1]
        axis = np.array(j["bend_axis"]) - (np.array(j["bend_axis"]) @ y) * y
        if np.linalg.norm(axis) < 0.3:  # the bend axis runs along the bone: no roll can show it
            continue
        assert abs(x @ axis / np.linalg.norm(axis)) > 0.999, bone_of[j["part"]]


def test_operator_runs_headless_and_reuses_finished_stages(creature, tmp_path, monkeypatch):
    monkeypatch.setattr(api, "job_dir_for", lambda obj, root=None: tmp_path / "job")
    bpy.context.scene.sp4d.part_source = "ORACLE"
    assert bpy.ops.sp4d.generate_rig() == {"FINISHED"}
    status1 = json.loads((tmp_path / "job" / "status.json").read_text())
    # undo is not available headless: remove the result by hand and run again
    arm = creature.parent
    creature.parent = None
    creature.modifiers.clear()
    creature.vertex_groups.clear()
    bpy.data.objects.remove(arm)
    assert bpy.ops.sp4d.generate_rig() == {"FINISHED"}
    status2 = json.loads((tmp_path / "job" / "status.json").read_text())
    assert status2["stages"] == status1["stages"]  # nothing regenerated
    assert creature.parent is not None and creature.parent.type == "ARMATURE"


def test_backend_killed_mid_job_leaves_scene_unchanged(creature, tmp_path, scene_snapshot):
    before = scene_snapshot()
    backend = BackendProcess()
    killed = []

    def kill_on_first_progress(ev):
        if ev.get("event") == "progress" and not killed:
            backend.proc.kill()
            killed.append(ev)

    with pytest.raises(api.RigError) as e:
        api.generate_rig(creature, job_dir=tmp_path / "job", settings={"part_source": "oracle"},
                         backend=backend, on_event=kill_on_first_progress)
    assert killed and e.value.code == "backend_died"
    assert scene_snapshot() == before
    backend.stop()


def test_bad_input_is_reported_and_scene_unchanged(creature, tmp_path, scene_snapshot):
    creature.data.vertices[5].co = (float("nan"), 0.0, 0.0)
    before = scene_snapshot()
    with pytest.raises(api.RigError) as e:
        api.generate_rig(creature, job_dir=tmp_path / "job", settings={"part_source": "oracle"})
    assert e.value.code == "bad_input" and "NaN" in e.value.message
    assert scene_snapshot() == before
    # the operator reports the same failure as an error (headless, reports raise)
    with pytest.raises(RuntimeError, match=r"\[bad_input\] mesh has 1 vertices with NaN"):
        bpy.ops.sp4d.generate_rig()
    assert scene_snapshot() == before


def test_no_ground_truth_and_no_weights_is_a_clear_error(creature, tmp_path, scene_snapshot):
    del creature["sp4d_gt_rig"]
    before = scene_snapshot()
    with pytest.raises(api.RigError) as e:
        api.generate_rig(creature, job_dir=tmp_path / "job", settings={"part_source": "auto"})
    assert e.value.code == "no_gpu"  # no GPU here: the weights are not what is missing
    assert scene_snapshot() == before


def test_broken_backend_interpreter_is_reported(creature, tmp_path, scene_snapshot):
    before = scene_snapshot()
    with pytest.raises(RuntimeError, match="cannot start the backend"):
        api.generate_rig(creature, job_dir=tmp_path / "job", backend=BackendProcess("/nonexistent/python"))
    assert scene_snapshot() == before


def test_build_rolls_back_on_a_changed_mesh(creature, tmp_path, scene_snapshot):
    job = tmp_path / "job"
    arm = api.generate_rig(creature, job_dir=job, settings={"part_source": "oracle"})
    bpy.data.objects.remove(arm)
    creature.modifiers.clear()
    creature.vertex_groups.clear()
    # a different mesh with fewer vertices cannot take these weights
    me = bpy.data.meshes.new("small")
    me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    other = bpy.data.objects.new("small", me)
    bpy.context.scene.collection.objects.link(other)
    before = scene_snapshot()
    with pytest.raises(ValueError, match="mesh changed"):
        build_rig(other, job)
    assert scene_snapshot() == before


def test_existing_groups_and_modifiers_are_kept(creature, tmp_path):
    g = creature.vertex_groups.new(name="torso")
    g.add([0, 1, 2], 0.5, "REPLACE")
    creature.modifiers.new("Keep me", "SUBSURF")
    arm = api.generate_rig(creature, job_dir=tmp_path / "job", settings={"part_source": "oracle"})
    assert creature.vertex_groups["torso"].weight(0) == 0.5  # user's group untouched
    assert "torso.001" in creature.vertex_groups and "torso.001" in arm.data.bones
    assert [m.name for m in creature.modifiers] == ["Keep me", MODIFIER_NAME]


def test_session_backend_restarts_after_death():
    b = session.get_backend()
    b.start()
    b.proc.kill()
    b.proc.wait()
    assert not session.get_backend().alive
    session.get_backend().start()
    assert session.get_backend().alive
    session.shutdown()


def test_cancel_stops_the_job_and_leaves_the_scene_unchanged(creature, tmp_path, scene_snapshot):
    """What Esc does in the UI: cancel the running job; nothing is built."""
    before = scene_snapshot()
    rj = api.start_job(creature, tmp_path / "job", {"part_source": "oracle"})
    events = []

    def on_event(ev):
        events.append(ev)
        if ev.get("event") == "progress" and len(events) == 1:
            rj.cancel()

    state = rj.wait(timeout=120, on_event=on_event)
    assert state == "cancelled" and rj.error["code"] == "cancelled"
    assert scene_snapshot() == before
    status = json.loads((tmp_path / "job" / "status.json").read_text())
    assert status["error"]["code"] == "cancelled" and "generate" not in status["stages"]


def test_unapplied_transforms_are_respected(creature, tmp_path):
    """A moved, rotated and scaled object: bones sit on its parts, in its object space."""
    from mathutils import Euler, Matrix

    creature.matrix_world = (Matrix.Translation((3, -2, 1)) @ Euler((0.3, 0.0, 1.1)).to_matrix().to_4x4()
                             @ Matrix.Diagonal((2.0, 2.0, 2.0, 1.0)))
    gt = json.loads(creature["sp4d_gt_rig"])
    arm = api.generate_rig(creature, job_dir=tmp_path / "job", settings={"part_source": "oracle"})
    assert np.allclose(np.array(arm.matrix_world), np.array(creature.matrix_world), atol=1e-5)
    skel = json.loads((tmp_path / "job" / "rig" / "skeleton.json").read_text())
    est = np.array([j["position"] for j in skel["joints"]])
    truth = np.array(gt["joints"])[np.array(gt["parents"]) >= 0]
    diag = np.linalg.norm(np.ptp(np.array([v.co for v in creature.data.vertices]), 0))
    d = np.linalg.norm(truth[:, None] - est[None], axis=2)
    assert 0.5 * (d.min(1).mean() + d.min(0).mean()) / diag < 0.03


def _clip_job_from_views(creature, tmp_path):
    """A clip-only job whose views are already generated: the oracle's views of the creature
    stand in for SP4D's output on a clip of it (no weights here). Returns (clip, job folder)."""
    import shutil

    api.generate_rig(creature, job_dir=tmp_path / "mesh_job", settings={"part_source": "oracle"})
    job = tmp_path / "clip_job"
    shutil.copytree(tmp_path / "mesh_job" / "views", job / "views")
    status = json.loads((tmp_path / "mesh_job" / "status.json").read_text())
    status["stages"] = {"generate": status["stages"]["generate"]}
    (job / "status.json").write_text(json.dumps(status))
    clip = tmp_path / "clip"
    clip.mkdir()
    shutil.copy(job / "views" / "rgb" / "v00_t000.png", clip / "000.png")
    return clip, job


def test_rig_clip_imports_the_hull_mesh_and_rigs_it(creature, tmp_path, weights_of):
    clip, job = _clip_job_from_views(creature, tmp_path)
    truth = np.array([creature.matrix_world @ v.co for v in creature.data.vertices])
    size = np.linalg.norm(truth.max(0) - truth.min(0))
    bpy.data.objects.remove(creature.parent)  # leave only the clip's result to look at
    before = set(bpy.data.objects.keys())
    obj, arm = api.rig_clip(clip, job_dir=job, settings={"part_source": "oracle"}, cmd="rig")
    assert obj.name not in before and arm.name not in before and obj.name.startswith("clip")
    spec = json.loads((job / "job.json").read_text())
    assert spec["source"] == {"kind": "clip", "path": str(clip.resolve())}
    with np.load(job / "mesh.npz") as z:
        assert bool(z["from_hull"]) and len(z["vertices"]) == len(obj.data.vertices)
    hull = np.array([obj.matrix_world @ v.co for v in obj.data.vertices])
    nearest = np.array([np.linalg.norm(truth - p, axis=1).min() for p in hull])
    assert nearest.mean() < 0.05 * size  # the hull hugs the creature
    w = weights_of(obj)
    assert np.allclose(w.sum(1), 1, atol=1e-3)
    assert obj.parent == arm and any(m.type == "ARMATURE" and m.object == arm for m in obj.modifiers)
    assert sum(b.use_deform for b in arm.data.bones) >= 10


def test_rig_clip_failures_add_nothing(tmp_path, scene_snapshot):
    before = scene_snapshot()
    assert not bpy.ops.sp4d.rig_clip.poll()  # no clip chosen
    with pytest.raises(ValueError, match="does not exist"):
        api.rig_clip(tmp_path / "missing.mp4", job_dir=tmp_path / "a")
    clip = tmp_path / "clip"
    clip.mkdir()
    px = np.ones((64, 64, 4), np.float32)
    px[16:48, 20:44, :3] = (0.8, 0.15, 0.15)
    img = bpy.data.images.new("frame", 64, 64)
    img.pixels.foreach_set(px.ravel())
    img.filepath_raw, img.file_format = str(clip / "000.png"), "PNG"
    img.save()
    bpy.data.images.remove(img)
    with pytest.raises(api.RigError) as e:  # SP4D is needed for a clip and cannot run here
        api.rig_clip(clip, job_dir=tmp_path / "b", settings={"part_source": "auto"})
    assert e.value.code == "no_gpu", e.value
    broken = tmp_path / "c"
    broken.mkdir()
    (broken / "mesh.npz").write_bytes(b"not a zip")  # a finished job whose hull mesh is unreadable
    with pytest.raises(ValueError, match="no readable mesh.npz"):
        api.build_clip_rig(broken, "hull")
    with pytest.raises(api.RigError, match="no readable mesh.npz"):  # api.rig_clip's build step: a RigError
        api._built(lambda: api.build_clip_rig(broken, "hull"))
    bpy.context.scene.sp4d.clip_path = str(clip)
    assert bpy.ops.sp4d.rig_clip.poll()
    with pytest.raises(RuntimeError, match="no_gpu"):  # the operator reports the same error
        bpy.ops.sp4d.rig_clip()
    assert scene_snapshot() == before
