"""scripts/rigged_asset_from_gltf.py on a rig we build, export to glTF and convert back in real headless Blender.

The round trip goes through Blender's own exporter and importer, as an artist's file would, so the
checks hold the script to what the importer makes: the mesh as imported (never fewer vertices than
we built), bone heads and parents as we built them in world space, and the weights we painted.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "rigged_asset_from_gltf.py"

RINGS, SIDES, HEIGHT = 13, 12, 3.0
BONES = [("Root", None, (0, 0, 0), (0, 0, 1)), ("Mid", "Root", (0, 0, 1), (0, 0, 2)),
         ("Tip", "Mid", (0, 0, 2), (0, 0, 3))]
OFFSET = (0.3, -0.2, 0.1)  # the armature object's location, so world space differs from armature space


def painted_weights(z: np.ndarray) -> np.ndarray:
    """Hand-made weights along the cylinder's height: each bone full at its middle, blended at its ends."""
    centres = np.array([0.5, 1.5, 2.5])
    w = np.clip(1.0 - np.abs(z[:, None] - centres[None]), 0.0, 1.0)
    w[z < 0.5, 0] = 1.0
    w[z > 2.5, 2] = 1.0
    return w / w.sum(1, keepdims=True)


def build_rig() -> dict:
    """A flat-shaded cylinder skinned to a three-bone chain, plus a cube hanging from the tip bone."""
    ang = np.linspace(0, 2 * np.pi, SIDES, endpoint=False)
    zs = np.linspace(0, HEIGHT, RINGS)
    verts = [(0.4 * np.cos(a), 0.4 * np.sin(a), z) for z in zs for a in ang]
    faces = [(r * SIDES + i, r * SIDES + (i + 1) % SIDES, (r + 1) * SIDES + (i + 1) % SIDES, (r + 1) * SIDES + i)
             for r in range(RINGS - 1) for i in range(SIDES)]
    faces += [tuple(reversed(range(SIDES))), tuple((RINGS - 1) * SIDES + i for i in range(SIDES))]
    me = bpy.data.meshes.new("tube")
    me.from_pydata(verts, [], faces)
    me.update()
    tube = bpy.data.objects.new("tube", me)

    arm = bpy.data.objects.new("rig", bpy.data.armatures.new("rig"))
    scene = bpy.context.scene
    for obj in (arm, tube):
        scene.collection.objects.link(obj)
    arm.location = OFFSET
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    for name, parent, head, tail in BONES:
        eb = arm.data.edit_bones.new(name)
        eb.head, eb.tail = head, tail
        if parent:
            eb.parent = arm.data.edit_bones[parent]
            eb.use_connect = True
    bpy.ops.object.mode_set(mode="OBJECT")

    tube.parent = arm
    tube.modifiers.new("Armature", "ARMATURE").object = arm
    w = painted_weights(np.array(verts)[:, 2])
    for j, (name, *_) in enumerate(BONES):
        group = tube.vertex_groups.new(name=name)
        for i in np.flatnonzero(w[:, j] > 0):
            group.add([int(i)], float(w[i, j]), "REPLACE")

    bpy.ops.mesh.primitive_cube_add(size=0.2)
    cube = bpy.context.object
    cube.name = "prop"
    cube.parent, cube.parent_type, cube.parent_bone = arm, "BONE", "Tip"
    bpy.context.view_layer.update()
    mw = np.array(arm.matrix_world)
    heads = {b.name: (mw @ np.r_[np.array(b.head_local), 1.0])[:3] for b in arm.data.bones}
    parents = {b.name: (b.parent.name if b.parent else None) for b in arm.data.bones}
    world = np.array(verts) + np.array(OFFSET)
    return {"heads": heads, "parents": parents, "vertices": world, "weights": w}


def export_glb(path: Path) -> None:
    bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB")
    assert path.is_file()


def convert(src: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *flags, str(src), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The rig built once and exported; the scene is reset by conftest's empty_scene afterwards."""
    bpy.ops.wm.read_homefile(use_empty=True)
    built = build_rig()
    path = tmp_path_factory.mktemp("rig") / "tube.glb"
    export_glb(path)
    return path, built


def test_round_trip(exported, tmp_path):
    glb, built = exported
    run = convert(glb, tmp_path / "tube.npz")
    assert run.returncode == 0, run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    assert summary.startswith("tube.glb: N=") and "weighted_bones=3" in summary and "prop" in summary, summary

    z = np.load(tmp_path / "tube.npz", allow_pickle=False)
    v, f, w = z["vertices"], z["faces"], z["weights"]
    names = [str(n) for n in z["bone_names"]]
    n_bones = len(BONES)
    assert str(z["source"]) == "tube.glb"
    assert v.dtype == np.float32 and v.ndim == 2 and v.shape[1] == 3
    assert f.dtype == np.int32 and f.ndim == 2 and f.shape[1] == 3 and f.min() >= 0 and f.max() < len(v)
    assert w.dtype == np.float32 and w.shape == (len(v), n_bones)
    assert z["bone_heads"].shape == z["bone_tails"].shape == (n_bones, 3)
    assert z["bone_parents"].dtype == np.int32 and z["bone_parents"].shape == (n_bones,)
    assert sorted(names) == sorted(built["heads"])

    # the importer's mesh: split at the flat shading's hard edges, never welded, the prop left out
    assert len(v) >= len(built["vertices"])
    assert len(f) == (RINGS - 1) * SIDES * 2 + 2 * (SIDES - 2)
    assert v[:, 2].max() <= HEIGHT + OFFSET[2] + 1e-4

    for i, name in enumerate(names):
        assert np.allclose(z["bone_heads"][i], built["heads"][name], atol=1e-4), name
        parent = z["bone_parents"][i]
        assert (names[parent] if parent >= 0 else None) == built["parents"][name], name

    assert np.allclose(w.sum(1), 1.0, atol=1e-5)
    # every imported vertex sits on a vertex we built and carries the weights we painted
    d = np.linalg.norm(v[:, None].astype(np.float64) - built["vertices"][None], axis=2)
    src = d.argmin(1)
    assert d.min(1).max() < 1e-4
    order = [names.index(name) for name, *_ in BONES]
    assert np.allclose(w[:, order], built["weights"][src], atol=1e-3)


def test_bone_parented_parts_join_with_the_flag(exported, tmp_path):
    glb, _ = exported
    plain, rigid = convert(glb, tmp_path / "plain.npz"), convert(glb, tmp_path / "rigid.npz", "--bone-parented")
    assert plain.returncode == 0 and rigid.returncode == 0, plain.stderr + rigid.stderr
    a, b = np.load(tmp_path / "plain.npz"), np.load(tmp_path / "rigid.npz")
    assert len(b["faces"]) == len(a["faces"]) + 12
    # the cube's vertices are the ones the plain conversion does not have
    d = np.linalg.norm(b["vertices"][:, None] - a["vertices"][None], axis=2).min(1)
    cube = d > 1e-6
    assert cube.sum() == len(b["vertices"]) - len(a["vertices"]) >= 8
    names = [str(x) for x in b["bone_names"]]
    assert np.allclose(b["weights"][cube, names.index("Tip")], 1.0)
    # at rest it hangs at the tip bone's tail, (0, 0, 3) in the armature, as Blender puts a bone's child
    tail = np.array([0.0, 0.0, 3.0]) + OFFSET
    assert np.allclose(b["vertices"][cube].min(0), tail - 0.1, atol=1e-4)
    assert np.allclose(b["vertices"][cube].max(0), tail + 0.1, atol=1e-4)


def test_meshes_skinned_by_one_armature_are_joined(exported, tmp_path):
    glb, _ = exported
    build_rig()
    tube = bpy.data.objects["tube"]
    twin = tube.copy()
    twin.data = tube.data.copy()
    twin.name = "twin"
    twin.location.x += 2.0
    bpy.context.scene.collection.objects.link(twin)
    two = tmp_path / "two.glb"
    export_glb(two)
    one, both = convert(glb, tmp_path / "one.npz"), convert(two, tmp_path / "two.npz")
    assert one.returncode == 0 and both.returncode == 0, one.stderr + both.stderr
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert len(b["vertices"]) == 2 * len(a["vertices"]) and len(b["faces"]) == 2 * len(a["faces"])
    assert b["faces"].max() == len(b["vertices"]) - 1
    assert np.allclose(b["weights"].sum(1), 1.0, atol=1e-5)
    assert np.isclose(b["vertices"][:, 0].max() - a["vertices"][:, 0].max(), 2.0, atol=1e-4)


def test_unweighted_vertices_take_the_nearest_weighted_row():
    spec = importlib.util.spec_from_file_location("rigged_asset_from_gltf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    v = np.array([[0, 0, 0], [1, 0, 0], [0.1, 0, 0], [0.9, 0.1, 0]], np.float32)
    w = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], np.float32)
    assert module._fill_unweighted(v, w) == 2
    assert np.array_equal(w, [[1, 0], [0, 1], [1, 0], [0, 1]])


def test_file_without_armature_exits_2(tmp_path):
    bpy.ops.mesh.primitive_cube_add()
    glb = tmp_path / "cube.glb"
    export_glb(glb)
    run = convert(glb, tmp_path / "cube.npz")
    assert run.returncode == 2
    assert "no armature" in run.stderr
    assert not (tmp_path / "cube.npz").exists()


def test_armature_without_skinned_mesh_exits_2(tmp_path):
    arm = bpy.data.objects.new("rig", bpy.data.armatures.new("rig"))
    bpy.context.scene.collection.objects.link(arm)
    bpy.context.view_layer.objects.active = arm
    bpy.ops.object.mode_set(mode="EDIT")
    arm.data.edit_bones.new("b").tail = (0, 0, 1)
    bpy.ops.object.mode_set(mode="OBJECT")
    bpy.ops.mesh.primitive_cube_add()  # a prop, not skinned
    glb = tmp_path / "bones.glb"
    export_glb(glb)
    run = convert(glb, tmp_path / "bones.npz")
    assert run.returncode == 2
    assert "no mesh skinned" in run.stderr
