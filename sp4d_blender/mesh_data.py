"""numpy ↔ bpy: mesh geometry and vertex-group weights as arrays, in bulk (foreach_get/set).

Blender has no bulk accessor for vertex-group weights: ``group_weights`` reads them through a
temporary Geometry Nodes modifier that stores each group as a float point attribute, which the
evaluated mesh then gives back with foreach_get. It creates (and removes) data-blocks, so it
cannot run while the UI draws.
"""

from __future__ import annotations

import bpy
import numpy as np


def vertices(mesh: bpy.types.Mesh) -> np.ndarray:
    """Object-space vertex positions (N, 3) float32."""
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def triangles(mesh: bpy.types.Mesh) -> np.ndarray:
    """The mesh's faces as triangles (M, 3) int32 (Blender's loop triangles)."""
    mesh.calc_loop_triangles()
    tri = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", tri)
    return tri.reshape(-1, 3)


def point_ints(mesh: bpy.types.Mesh, name: str) -> np.ndarray | None:
    """An integer point attribute (N,) int32, or None when the mesh has no such attribute."""
    attr = mesh.attributes.get(name)
    if attr is None or attr.domain != "POINT" or attr.data_type != "INT":
        return None
    out = np.empty(len(mesh.vertices), np.int32)
    attr.data.foreach_get("value", out)
    return out


def new_mesh(name: str, verts: np.ndarray, faces: np.ndarray) -> bpy.types.Mesh:
    """A mesh data-block from vertices (N, 3) and triangles (M, 3), vertex order kept."""
    verts, faces = np.asarray(verts, np.float32), np.asarray(faces, np.int32)
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(verts))
    me.vertices.foreach_set("co", verts.ravel())
    me.loops.add(faces.size)
    me.loops.foreach_set("vertex_index", faces.ravel())
    me.polygons.add(len(faces))
    me.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    me.polygons.foreach_set("loop_total", np.full(len(faces), 3, np.int32))
    me.update(calc_edges=True)
    me.validate()
    return me


def set_group_weights(group: bpy.types.VertexGroup, w: np.ndarray) -> None:
    """Assign one column of weights (N,): one ``add`` call per distinct (rounded) value, the
    vertices of that value at once. Zero weights are not assigned."""
    q = np.round(w, 5)
    nz = np.nonzero(q > 0)[0]
    vals, inv = np.unique(q[nz], return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.searchsorted(inv[order], np.arange(len(vals) + 1))
    for k, val in enumerate(vals):
        group.add(nz[order[bounds[k]:bounds[k + 1]]].tolist(), float(val), "REPLACE")


def group_weights(obj: bpy.types.Object, names: list[str]) -> np.ndarray:
    """The weights (N, len(names)) float32 of ``obj``'s vertex groups ``names`` (0 where a
    vertex is not in a group), read from a temporary object that shares the mesh (its vertex
    groups with it) and stores each group as an attribute (Geometry Nodes)."""
    me = obj.data
    if not names:
        return np.zeros((len(me.vertices), 0), np.float32)
    tree = bpy.data.node_groups.new("sp4d_group_weights", "GeometryNodeTree")
    tmp = bpy.data.objects.new("sp4d_group_weights", me)
    try:
        tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
        tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
        geometry = tree.nodes.new("NodeGroupInput").outputs[0]
        for j, name in enumerate(names):
            read = tree.nodes.new("GeometryNodeInputNamedAttribute")
            read.data_type = "FLOAT"
            read.inputs["Name"].default_value = name
            store = tree.nodes.new("GeometryNodeStoreNamedAttribute")
            store.data_type, store.domain = "FLOAT", "POINT"
            store.inputs["Name"].default_value = f"sp4d_w{j}"
            tree.links.new(geometry, store.inputs["Geometry"])
            tree.links.new(read.outputs["Attribute"], store.inputs["Value"])
            geometry = store.outputs["Geometry"]
        tree.links.new(geometry, tree.nodes.new("NodeGroupOutput").inputs[0])
        tmp.modifiers.new("sp4d_group_weights", "NODES").node_group = tree
        bpy.context.scene.collection.objects.link(tmp)
        evaluated = tmp.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = evaluated.to_mesh()
        try:
            out = np.empty((len(names), len(mesh.vertices)), np.float32)
            for j in range(len(names)):
                mesh.attributes[f"sp4d_w{j}"].data.foreach_get("value", out[j])
        finally:
            evaluated.to_mesh_clear()
    finally:
        bpy.data.objects.remove(tmp)
        bpy.data.node_groups.remove(tree)
    return np.ascontiguousarray(out.T)
