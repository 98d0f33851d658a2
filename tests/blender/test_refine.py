"""Keyframes, inspection, refinement, scene capture and the batch script in real headless Blender."""

import json
import os
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

from sp4d_blender import api
from sp4d_blender.build import MODIFIER_NAME
from sp4d_blender.refine import limit_influences, merge_parts, parts_summary, recompute_weights

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def rigged(creature, tmp_path):
    arm = api.generate_rig(creature, job_dir=tmp_path / "job", settings={"part_source": "oracle"})
    return creature, arm, tmp_path / "job"


def test_clip_motion_becomes_keyframes(rigged):
    obj, arm, job = rigged
    skel = json.loads((job / "rig" / "skeleton.json").read_text())
    assert arm.animation_data and arm.animation_data.action
    scene = bpy.context.scene
    start = scene.frame_start
    leg = next(b["name"] for b in skel["bones"] if b["name"].endswith(".L") and b["parent"] == "torso")
    w_expected = {fr["frame"]: np.array(fr["bones"][leg]) for fr in skel["frames"]}
    for t in range(4):
        scene.frame_set(start + t)
        pb = arm.pose.bones[leg]
        # the pose matrix (armature space) equals the frame's deformation applied to the rest matrix
        got = np.array(pb.matrix)
        want = w_expected[t] @ np.array(pb.bone.matrix_local)
        assert np.allclose(got, want, atol=1e-4), t
    scene.frame_set(start)
    assert np.allclose(np.array(arm.pose.bones[leg].matrix_basis), np.eye(4), atol=1e-5)  # frame 0 = rest


def test_import_views_makes_an_orbit_of_cameras(rigged):
    obj, arm, job = rigged
    bpy.context.view_layer.objects.active = None
    assert not bpy.ops.sp4d.import_views.poll()  # needs a rigged mesh
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.sp4d.import_views() == {"FINISHED"}
    coll = bpy.data.collections["SP4D Views"]
    cams = sorted(coll.objects, key=lambda o: o.name)
    assert len(cams) == 13 and all(c.type == "CAMERA" for c in cams)
    assert len(cams[1].data.background_images) == 2  # RGB and parts
    centre = np.mean([np.array(c.matrix_world.translation) for c in cams], 0)
    dists = [np.linalg.norm(np.array(c.matrix_world.translation) - centre) for c in cams]
    assert np.ptp(dists) < 1e-3  # on a circle
    # each camera looks at the object: its -Z axis points at the circle's centre
    for c in cams:
        fwd = -np.array(c.matrix_world.to_3x3().col[2])
        to_c = centre - np.array(c.matrix_world.translation)
        assert np.dot(fwd, to_c / np.linalg.norm(to_c)) > 0.999
    assert bpy.ops.sp4d.import_views() == {"FINISHED"}  # again: replaced, not duplicated
    assert len(bpy.data.collections["SP4D Views"].objects) == 13


def test_merge_limit_and_recompute(rigged, weights_of):
    obj, arm, job = rigged
    parts = parts_summary(obj, arm)
    assert len(parts) == 13 and sum(p["vertices"] for p in parts) == len(obj.data.vertices)
    assert all(p["colour"] is not None for p in parts)
    skel = json.loads((job / "rig" / "skeleton.json").read_text())
    tail = next(b for b in skel["bones"] if b["deform"] and b["parent"] not in (None, "root", "torso")
                and b["head"][0] < -0.8)
    parent = tail["parent"]
    merge_parts(obj, arm, parent, tail["name"])
    assert tail["name"] not in arm.data.bones and obj.vertex_groups.get(tail["name"]) is None
    w = weights_of(obj)
    assert np.allclose(w.sum(1), 1, atol=1e-3)
    with pytest.raises(ValueError, match="two different"):
        merge_parts(obj, arm, parent, parent)
    limit_influences(obj, arm, 2)
    w = weights_of(obj)
    assert ((w > 0).sum(1) <= 2).all() and np.allclose(w.sum(1), 1, atol=1e-3)
    # the animator moves a bone and deletes nothing else: recompute through the backend
    user_group = obj.vertex_groups.new(name="user paint")
    user_group.add([0], 0.3, "REPLACE")
    n = recompute_weights(obj, arm, timeout=120)
    assert n == 12 and obj.vertex_groups["user paint"].weight(0) == pytest.approx(0.3)
    w = weights_of(obj)
    deform = [obj.vertex_groups[b.name].index for b in arm.data.bones if b.use_deform]
    assert np.allclose(w[:, deform].sum(1), 1, atol=1e-3)
    assert obj.modifiers.get(MODIFIER_NAME).object == arm


def test_capture_renders_the_object_alone_on_transparent_background(creature, tmp_path):
    from sp4d_blender.capture import render_input_frames

    me = bpy.data.meshes.new("other")
    me.from_pydata([(5, 0, 0), (6, 0, 0), (5, 0, 1)], [], [(0, 1, 2)])
    other = bpy.data.objects.new("other", me)
    bpy.context.scene.collection.objects.link(other)
    paths = render_input_frames(creature, tmp_path / "capture", 4, size=128)
    assert [p.name for p in paths] == [f"frame_{i:03d}.png" for i in range(4)]
    im = bpy.data.images.load(str(paths[0]))
    img = np.array(im.pixels[:]).reshape(im.size[1], im.size[0], 4)
    assert img.shape == (128, 128, 4)
    alpha = img[:, :, 3] > 0
    assert 0.05 < alpha.mean() < 0.8 and not alpha[0].any() and not alpha[:, 0].any()
    assert open(paths[0], "rb").read() == open(paths[3], "rb").read()  # still object: equal frames
    assert not other.hide_render and bpy.context.scene.camera is None  # scene restored
    assert not [o for o in bpy.data.objects if o.name.startswith("sp4d_capture")]


def test_batch_script_on_two_files_continues_after_a_failure(sample_npz, tmp_path):
    from sp4d_blender.sample import import_sample

    files = []
    for i in range(2):
        bpy.ops.wm.read_homefile(use_empty=True)
        import_sample(sample_npz, name=f"Creature{i}")
        if i == 1:  # a second object that cannot be rigged
            me = bpy.data.meshes.new("Broken")
            me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 1)], [])
            bpy.context.scene.collection.objects.link(bpy.data.objects.new("Broken", me))
        path = tmp_path / f"file{i}.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(path))
        files.append(path)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch_rig.py"), "--files", *map(str, files),
                        "--out", str(out), "--part-source", "oracle", "--export", "glb", "--low-vram",
                        "--compile", "blocks"],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert r.returncode == 1, r.stdout + r.stderr  # one item failed
    report = json.loads((out / "report.json").read_text())
    got = {x["object"]: x for x in report}
    assert {k: v["ok"] for k, v in got.items()} == {"Creature0": True, "Creature1": True, "Broken": False}
    assert "no faces" in got["Broken"]["error"]
    (job0,) = (out / "jobs").glob("file0-Creature0-*")
    settings = json.loads((job0 / "job.json").read_text())["settings"]
    assert settings["low_vram"] is True and settings["compile"] == "blocks" and "device" not in settings
    for i in range(2):
        assert (out / f"file{i}_rigged.blend").exists() and (out / f"file{i}_rigged.glb").stat().st_size > 10_000


def test_preview_screenshot_renders(rigged, tmp_path):
    """The README's picture comes from this renderer (scripts/demo.sh); it must draw the rig."""
    from sp4d_blender.preview import render_rig_preview

    obj, arm, _ = rigged
    png = render_rig_preview(obj, arm, tmp_path / "shot.png", size=(320, 240))
    im = bpy.data.images.load(str(png))
    px = np.array(im.pixels[:]).reshape(im.size[1], im.size[0], 4)[:, :, :3]
    assert im.size[:] == (320, 240) and px.std() > 0.05
    assert not [o for o in bpy.data.objects if o.name.startswith("sp4d_preview")]
    assert not obj.data.color_attributes  # the weight colours were temporary
