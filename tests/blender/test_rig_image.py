"""Rig Image and "Animate Still Mesh First" in headless bpy against the real backend subprocess
with tiny configs (SVD: the official fixture's weights; SP4D: its fixture's)."""

import json
from pathlib import Path

import bpy
import numpy as np
import pytest

from sp4d_blender import api
from sp4d_blender.prefs import job_settings

ROOT = Path(__file__).resolve().parents[2]
SVD_FIX = ROOT / "tests" / "fixtures" / "svd" / "svd_tiny"
SP4D_FIX = ROOT / "tests" / "fixtures" / "sp4d_tiny"
TINY = {"part_source": "sp4d", "weights": str(SP4D_FIX / "weights.safetensors"),
        "model_config": str(SP4D_FIX / "config.yaml"), "device": "cpu", "steps": 2, "image_size": 48,
        "svd_weights": str(SVD_FIX / "weights.safetensors"), "svd_config": str(SVD_FIX / "config.yaml"),
        "svd_steps": 2, "svd_frames": 6, "svd_width": 48, "svd_height": 32}


def blender_image(name="figure") -> bpy.types.Image:
    """A generated 40×60 image: a figure on a transparent background."""
    img = bpy.data.images.new(name, 40, 60, alpha=True)
    px = np.zeros((60, 40, 4), np.float32)
    px[10:50, 14:26] = (0.7, 0.4, 0.2, 1.0)
    px[20:26, 4:36] = (0.3, 0.6, 0.2, 1.0)
    img.pixels.foreach_set(px.ravel())
    return img


def test_rig_image_runs_svd_and_sp4d_through_the_backend(tmp_path, scene_snapshot):
    """A Blender image -> job folder (kind 'image') -> SVD clip -> SP4D views; the tiny random
    weights make noise views, so the rig step fails with the backend's error and the scene stays
    as it was (a rig needs the released weights)."""
    img = blender_image()
    job = tmp_path / "job"
    before = scene_snapshot()
    with pytest.raises(api.RigError) as e:
        api.rig_image(img, job_dir=job, settings={**TINY, "motion_bucket": 180, "svd_seed": 3}, timeout=600)
    assert e.value.code == "bad_input" and "part images" in e.value.message
    assert scene_snapshot() == before and img.name in bpy.data.images and img.filepath == ""
    spec = json.loads((job / "job.json").read_text())
    assert spec["source"] == {"kind": "image", "path": str((job / "picture.png").resolve())}
    rec = json.loads((job / "input" / "svd" / "svd.json").read_text())
    assert rec["frames"] == 6 and rec["motion_bucket"] == 180 and rec["seed"] == 3 and len(rec["chosen"]) == 4
    assert (job / "views" / "parts" / "v12_t003.png").is_file()  # SP4D ran on the chosen frames
    clip = api.load_generated_clip(job)  # the generated motion, viewable in the Movie Clip editor
    assert clip is not None and clip.frame_duration == 6 and api.load_generated_clip(job) == clip


def test_rig_image_end_to_end_with_the_parts_oracle(creature, sample_npz, tmp_path, scene_snapshot, weights_of):
    """Rig Image the whole way on a machine without SP4D: the picture is a Blender render of the
    sample creature; the real tiny SVD animates it and its frames are chosen; the parts oracle
    (settings.oracle_mesh: the creature's ground truth, as a batch user can give it) stands in for
    SP4D's views; then the real parts decode, the visual hull (the picture has no mesh), the rig and
    the scene: a new mesh object, an armature, every vertex weighted, keys from the motion."""
    from sp4d_blender.capture import render_input_frames

    (render,) = render_input_frames(creature, tmp_path / "render", 1, size=192)
    pic = render.rename(tmp_path / "creature.png")
    me = creature.data
    bpy.data.objects.remove(creature)  # the artist has the picture only
    bpy.data.meshes.remove(me)
    img = bpy.data.images.load(str(pic))
    alpha = np.array(img.pixels[:], np.float32).reshape(img.size[1], img.size[0], 4)[..., 3] > 0.5
    bpy.data.images.remove(img)
    ys, xs = np.nonzero(alpha)
    picture_aspect = (np.ptp(xs) + 1) / (np.ptp(ys) + 1)  # width / height of the creature in the picture
    before = scene_snapshot()
    job = tmp_path / "job"
    settings = {k: v for k, v in TINY.items() if k not in ("weights", "model_config", "steps", "image_size")}
    obj, arm = api.rig_image(str(pic), job_dir=job, settings={**settings, "part_source": "oracle",
                                                             "oracle_mesh": str(sample_npz)}, timeout=600)
    after = scene_snapshot()
    assert sorted(set(after["objects"]) - set(before["objects"])) == sorted([obj.name, arm.name])
    assert obj.type == "MESH" and arm.type == "ARMATURE" and obj.name.startswith("creature")
    rec = json.loads((job / "input" / "svd" / "svd.json").read_text())  # the real SVD front stage ran
    assert rec["frames"] == 6 and len(rec["chosen"]) == 4 and (job / "input" / "svd" / "frame_005.png").is_file()
    assert json.loads((job / "status.json").read_text())["stages"]["generate"]["source"] == "oracle"
    skel = json.loads((job / "rig" / "skeleton.json").read_text())
    assert skel["part_source"] == "oracle" and len(skel["frames"]) == 4
    # the mesh is the visual hull, its proportions those of the picture's creature
    v = np.array([obj.matrix_world @ x.co for x in obj.data.vertices])
    assert len(v) > 200 and len(obj.data.polygons) > 200
    ext = np.ptp(v, axis=0)
    assert abs(ext[0] / ext[2] - picture_aspect) < 0.08 * picture_aspect, (ext, picture_aspect)
    # the rig: several bones, every vertex weighted to deform bones, the modifier on the new mesh
    deform = [b.name for b in arm.data.bones if b.use_deform]
    assert len(arm.data.bones) > 1 and len(deform) > 1
    w = weights_of(obj)
    assert (w.sum(axis=1) > 0.99).all() and {g.name for g in obj.vertex_groups} <= set(deform)
    assert any(m.type == "ARMATURE" and m.object == arm for m in obj.modifiers)
    # keyframes from the generated motion: each frame's pose is the skeleton's frame
    scene = bpy.context.scene
    moved = 0
    for fr in skel["frames"]:
        scene.frame_set(scene.frame_start + fr["frame"])
        for name, m in fr["bones"].items():
            pb = arm.pose.bones[name]
            assert np.allclose(np.array(pb.matrix), np.array(m) @ np.array(pb.bone.matrix_local), atol=1e-4)
            moved += not np.allclose(np.array(pb.matrix_basis), np.eye(4), atol=1e-3)
    assert moved > 0 and arm.animation_data and arm.animation_data.action
    assert api.load_generated_clip(job) is not None  # the generated clip, viewable


def test_rig_image_operator_polls_and_refuses_a_missing_file(tmp_path, scene_snapshot):
    s = bpy.context.scene.sp4d
    assert not bpy.ops.sp4d.rig_image.poll()
    s.image_path = str(tmp_path / "missing.png")
    assert bpy.ops.sp4d.rig_image.poll()
    before = scene_snapshot()
    with pytest.raises(ValueError, match="does not exist"):
        api.rig_image(s.image_path, job_dir=tmp_path / "job")
    assert scene_snapshot() == before


def test_animate_still_goes_into_the_job_settings():
    s = bpy.context.scene.sp4d
    assert job_settings()["animate_still"] is False
    s.animate_still, s.motion_bucket, s.svd_seed = True, 40, 7
    got = job_settings()
    assert (got["animate_still"], got["motion_bucket"], got["svd_seed"]) == (True, 40, 7)


def test_generate_rig_animates_a_still_mesh_first(creature, tmp_path):
    """The creature does not move: Blender renders one frame (repeated), the backend sees a still
    clip and animates it with SVD before SP4D (then the tiny weights' noise views stop the rig)."""
    job = tmp_path / "job"
    with pytest.raises(api.RigError) as e:
        api.generate_rig(creature, job_dir=job, settings={**TINY, "animate_still": True}, timeout=600)
    assert e.value.code == "bad_input"
    rec = json.loads((job / "input" / "svd" / "svd.json").read_text())
    assert rec["frames"] == 6 and len(rec["chosen"]) == 4
    assert (job / "views" / "rgb" / "v01_t003.png").is_file()


def test_batch_images_report_each_picture(tmp_path):
    """batch_rig.py --images: one report item a picture; a missing file fails alone, and without a GPU
    or weights the backend's code is reported (a rig needs the released weights)."""
    import os
    import subprocess
    import sys

    pic = tmp_path / "figure.png"
    _save(blender_image(), pic)
    out = tmp_path / "out"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch_rig.py"), "--images", str(pic),
                        str(tmp_path / "missing.png"), "--out", str(out), "--motion-bucket", "90"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 3, r.stdout + r.stderr
    report = json.loads((out / "report.json").read_text())
    assert [x["ok"] for x in report] == [False, False] and "does not exist" in report[1]["error"]
    assert report[0]["code"] in ("no_gpu", "missing_weights", "offline")
    spec = json.loads(next((out / "jobs").glob("image-figure-*/job.json")).read_text())
    assert spec["source"]["kind"] == "image" and spec["settings"]["motion_bucket"] == 90
    assert not list(out.glob("*_rigged.*"))


def test_batch_images_on_ray_make_a_request_of_pictures(tmp_path):
    """batch_rig.py --ray --images: the request the Ray driver reads (tests/backend/test_batch_ray.py
    runs such a request on a local cluster) has the pictures and the plain batch's SVD settings."""
    import importlib.util

    from sp4d_blender.batch_ray import request_of

    spec = importlib.util.spec_from_file_location("batch_rig_script", ROOT / "scripts" / "batch_rig.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = script.parse(["--ray", "--images", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                         "--motion-bucket", "90", "--part-source", "oracle", "--oracle-mesh", "creature.npz"])
    req = request_of(args)
    assert req["images"] == [str(tmp_path / "a.png")] and req["files"] == [] and req["blender"]
    assert req["settings"]["motion_bucket"] == 90
    assert req["settings"]["oracle_mesh"] == str(Path("creature.npz").resolve())


def _save(img, path):
    copy = img.copy()
    copy.filepath_raw, copy.file_format = str(path), "PNG"
    copy.save()


def test_export_orbit_videos_from_blender(creature, tmp_path):
    """A generated job's orbit videos through the backend ('orbits'), from the API and the operator."""
    job = tmp_path / "job"
    api.generate_rig(creature, job_dir=job, settings={"part_source": "oracle"})
    videos = api.export_orbits(job)
    assert len(videos) == 14 and all(v.is_file() and v.stat().st_size > 0 for v in videos)
    assert {v.name for v in videos} >= {"v00.mp4", "v12.mp4", "grid.mp4"}
    assert bpy.ops.sp4d.export_orbits(directory=str(job)) == {"FINISHED"}
    with pytest.raises(api.RigError) as e:
        api.export_orbits(tmp_path / "empty")
    assert e.value.code == "bad_input"
