"""An artist-rigged glTF/GLB as a rig-benchmark asset: mesh, skeleton and skinning weights in one npz.

Runs with bpy (the Blender environment): python scripts/rigged_asset_from_gltf.py IN.glb OUT.npz

The file goes through Blender's own glTF importer, so the benchmark sees the mesh exactly as an
artist would get it in Blender (split at UV seams and hard normals, nothing welded) and the
skeleton as Blender builds it (bone heads at the joints, tails from the importer's heuristic).
Everything is written in Blender world space (Z up) at the rest/bind pose, never an animation
frame:

- vertices (N, 3) float32, faces (M, 3) int32 (triangulated), of the armature's skinned meshes
  joined into one (meshes without an Armature modifier on it, such as rigid props, are left out);
- bone_names (B,), bone_parents (B,) int32 (-1 for a root), bone_heads, bone_tails (B, 3) float32;
- weights (N, B) float32 from the vertex groups named after bones, rows summing to 1; a vertex
  without any weight takes the row of the nearest weighted vertex (counted in the summary);
- source: the input's file name.

With --bone-parented, mesh objects hanging from a bone of the armature (parented to it, maybe
through empties: rigid parts, as in segmented robots) join the mesh too, weighted wholly to that
bone.

Exit code 2, with the reason on stderr, for a file without an armature or without a mesh skinned
by one.
"""

import sys
from pathlib import Path

import bpy
import numpy as np
from mathutils.kdtree import KDTree


class AssetError(Exception):
    """The file cannot give a rigged asset (no armature, no skinned mesh); exit code 2."""


def _armature_of(obj) -> "bpy.types.Object | None":
    """The armature object an Armature modifier of ``obj`` deforms it with, if any."""
    for mod in obj.modifiers:
        if mod.type == "ARMATURE" and mod.object is not None and mod.object.type == "ARMATURE":
            return mod.object
    return None


def _bone_ancestor(obj) -> tuple:
    """(armature, bone name) of the bone that ``obj`` hangs from, through any plain parents; (None, None) if none."""
    while obj.parent is not None:
        if obj.parent.type == "ARMATURE":
            if obj.parent_type == "BONE" and obj.parent_bone in obj.parent.data.bones:
                return obj.parent, obj.parent_bone
            return None, None
        obj = obj.parent
    return None, None


def _pick_rig(problems: list[str], bone_parented: bool) -> tuple:
    """The armature with the most skinned vertices and the mesh objects it deforms.

    Several armatures happen when a file has unrelated skeletons; the benchmark wants one
    creature, so the biggest wins and the others are named in ``problems``. With
    ``bone_parented``, meshes hanging from one of its bones (parented to it, maybe through
    empties: rigid parts, as in segmented robots) count as skinned by it, wholly to that bone.
    """
    armatures = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    if not armatures:
        raise AssetError("no armature in the file")
    skinned: dict = {a.name: [] for a in armatures}
    props = []
    for obj in bpy.context.scene.objects:
        if obj.type != "MESH":
            continue
        arm = _armature_of(obj)
        if not len(obj.data.vertices):
            props.append(obj.name)
        elif arm is not None and len(obj.vertex_groups):
            skinned[arm.name].append(obj)
        elif bone_parented and arm is None and _bone_ancestor(obj)[0] is not None:
            skinned[_bone_ancestor(obj)[0].name].append(obj)
        else:
            props.append(obj.name)
    counts = {name: sum(len(o.data.vertices) for o in objs) for name, objs in skinned.items()}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise AssetError(f"no mesh skinned by an armature (armatures: {', '.join(sorted(skinned))})")
    others = [n for n in skinned if n != best and counts[n]]
    if others:
        problems.append(f"other skinned armatures ignored: {', '.join(sorted(others))}")
    if props:
        problems.append(f"{len(props)} unskinned mesh(es) ignored: {', '.join(sorted(props)[:5])}"
                        + (" ..." if len(props) > 5 else ""))
    return bpy.data.objects[best], sorted(skinned[best], key=lambda o: o.name)


def _mesh_arrays(obj, bone_index: dict, n_bones: int) -> tuple:
    """World-space vertices, triangles and the (n, B) bone weights of one mesh object.

    Reads the mesh data itself (no modifiers, no shape keys but the basis), which is the bind
    pose, and applies the object's world matrix taken with the armature in rest position.
    """
    me = obj.data
    n = len(me.vertices)
    co = np.empty(n * 3, np.float32)
    me.vertices.foreach_get("co", co)
    mw = np.array(obj.matrix_world, np.float64)
    v = co.reshape(n, 3).astype(np.float64) @ mw[:3, :3].T + mw[:3, 3]
    me.calc_loop_triangles()
    tri = np.empty(len(me.loop_triangles) * 3, np.int32)
    me.loop_triangles.foreach_get("vertices", tri)
    w = np.zeros((n, n_bones), np.float32)
    if _armature_of(obj) is None:  # a rigid part parented to a bone (--bone-parented)
        w[:, bone_index[_bone_ancestor(obj)[1]]] = 1.0
        return v.astype(np.float32), tri.reshape(-1, 3), w
    column = {g.index: bone_index[g.name] for g in obj.vertex_groups if g.name in bone_index}
    for vert in me.vertices:
        for g in vert.groups:
            col = column.get(g.group)
            if col is not None:
                w[vert.index, col] += g.weight
    return v.astype(np.float32), tri.reshape(-1, 3), w


def _fill_unweighted(vertices: np.ndarray, weights: np.ndarray) -> int:
    """Give every vertex without weight the row of its nearest weighted vertex; how many there were."""
    total = weights.sum(1)
    empty = np.flatnonzero(total <= 0)
    full = np.flatnonzero(total > 0)
    if len(empty) == 0 or len(full) == 0:
        return len(empty)
    tree = KDTree(len(full))
    for i, idx in enumerate(full):
        tree.insert(vertices[idx].tolist(), i)
    tree.balance()
    for idx in empty:
        weights[idx] = weights[full[tree.find(vertices[idx].tolist())[1]]]
    return len(empty)


def convert(in_path: Path, out_path: Path, bone_parented: bool = False) -> dict:
    """Import ``in_path``, write the npz to ``out_path`` and return the summary figures."""
    bpy.ops.wm.read_homefile(use_empty=True)
    # No bone shapes: the importer would add an Icosphere mesh object for them, not part of the model.
    result = bpy.ops.import_scene.gltf(filepath=str(in_path), disable_bone_shape=True)
    if "FINISHED" not in result:
        raise AssetError(f"the glTF importer failed: {result}")
    problems: list[str] = []
    arm, meshes = _pick_rig(problems, bone_parented)

    # Rest position: bone data is the rest pose anyway, but a mesh object parented to a bone
    # (or to an animated object) must be read where the rest pose puts it.
    arm.data.pose_position = "REST"
    bpy.context.view_layer.update()

    bones = list(arm.data.bones)
    names = [b.name for b in bones]
    bone_index = {name: i for i, name in enumerate(names)}
    parents = np.array([bone_index[b.parent.name] if b.parent else -1 for b in bones], np.int32)
    mw = np.array(arm.matrix_world, np.float64)
    ends = {}
    for attr in ("head_local", "tail_local"):
        buf = np.empty(len(bones) * 3, np.float32)
        arm.data.bones.foreach_get(attr, buf)
        ends[attr] = (buf.reshape(-1, 3).astype(np.float64) @ mw[:3, :3].T + mw[:3, 3]).astype(np.float32)

    parts = [_mesh_arrays(o, bone_index, len(bones)) for o in meshes]
    offsets = np.cumsum([0] + [len(p[0]) for p in parts])
    vertices = np.concatenate([p[0] for p in parts])
    faces = np.concatenate([p[1] + off for p, off in zip(parts, offsets[:-1], strict=True)]).astype(np.int32)
    weights = np.concatenate([p[2] for p in parts])

    other_groups = sorted({g.name for o in meshes for g in o.vertex_groups if g.name not in bone_index})
    if other_groups:
        problems.append(f"{len(other_groups)} vertex group(s) not named after a bone ignored")
    unweighted = _fill_unweighted(vertices, weights)
    if unweighted:
        problems.append(f"{unweighted} unweighted vertices took their nearest weighted neighbour's weights")
    total = weights.sum(1, keepdims=True)
    if np.any(total <= 0):
        raise AssetError("no vertex has any weight from a bone's vertex group")
    weights = (weights / total).astype(np.float32)
    weighted_bones = int(np.count_nonzero(weights.max(0) > 0))
    if weighted_bones < len(bones):
        problems.append(f"{len(bones) - weighted_bones} bone(s) without vertices")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_path,
        vertices=vertices,
        faces=faces,
        bone_names=np.array(names, dtype=str),
        bone_parents=parents,
        bone_heads=ends["head_local"],
        bone_tails=ends["tail_local"],
        weights=weights,
        source=np.array(in_path.name),
    )
    return {
        "source": in_path.name,
        "armature": arm.name,
        "meshes": [o.name for o in meshes],
        "N": len(vertices),
        "M": len(faces),
        "B": len(bones),
        "weighted_bones": weighted_bones,
        "unweighted": unweighted,
        "problems": problems,
    }


def main(argv: list[str]) -> int:
    bone_parented = "--bone-parented" in argv
    args = [a for a in argv if a != "--bone-parented"]
    if len(args) != 2 or any(a.startswith("--") for a in args):
        print("usage: rigged_asset_from_gltf.py [--bone-parented] IN.glb OUT.npz", file=sys.stderr)
        return 2
    in_path, out_path = Path(args[0]), Path(args[1])
    if not in_path.is_file():
        print(f"error: {in_path}: no such file", file=sys.stderr)
        return 2
    try:
        s = convert(in_path, out_path, bone_parented)
    except AssetError as exc:
        print(f"error: {in_path.name}: {exc}", file=sys.stderr)
        return 2
    print(f"{s['source']}: N={s['N']} M={s['M']} B={s['B']} weighted_bones={s['weighted_bones']} "
          f"armature={s['armature']!r} meshes={len(s['meshes'])} unweighted={s['unweighted']}; problems: "
          + ("; ".join(s["problems"]) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
