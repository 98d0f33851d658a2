"""Blender's side of a Ray batch (backend/batch): one .blend file's capture or build, in a bpy process.

The batch's workers start it (backend/batch/work.py run_bpy); the backend never imports bpy.

  python batch_bpy.py capture FILE --jobs DIR --stem STEM [--objects A B] --settings JSON
      write a job folder per object (every mesh without --objects): DIR/<STEM>-<object>/
  python batch_bpy.py build FILE --out OUT --stem STEM --items JSON [--export glb|gltf|fbx]
      build each item's rig from its job folder, save OUT/<STEM>_rigged.blend (and export it)
  python batch_bpy.py build-images OUT/images_rigged.blend --out OUT --stem images --items JSON [--export …]
      a new file with each picture's rig (Rig Image's build: the visual hull as a new mesh, its
      armature and keys, the SVD clip loaded): items [{key, image, job}]
  python batch_bpy.py sample DIR --files N --per-file K [--broken]
      N .blend files with K sample creatures each (tests and benchmarks); --broken adds a mesh
      without faces to the last file

With the blender executable: blender -b --factory-startup -P batch_bpy.py -- capture FILE ...
The last line on stdout is "batch-result: " and the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))

import bpy  # noqa: E402

RESULT_MARK = "batch-result: "  # backend/batch/work.py reads it


def die_with_parent() -> None:
    """Ask Linux to end this process when the worker that started it dies, so that a killed
    worker leaves no Blender process writing its file beside the retry's."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def capture(args) -> dict:
    """A job folder per object: job.json, mesh.npz and, for SP4D, the rendered frames."""
    from sp4d_blender.capture import write_job

    settings = json.loads(args.settings)
    names = args.objects or [o.name for o in bpy.data.objects if o.type == "MESH"]
    items, used = [], set()
    for name in names:
        key = base = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{args.stem}-{name}")  # as api.job_dir_for names them
        n = 1
        while key in used:
            n += 1
            key = f"{base}-{n}"
        used.add(key)
        obj = bpy.data.objects.get(name)
        try:
            if obj is None:
                raise ValueError(f"no object named '{name}'")
            job = write_job(obj, Path(args.jobs) / key, settings)
            items.append({"object": name, "key": key, "job": str(job)})
        except Exception as exc:  # noqa: BLE001 - the item fails, the file goes on
            items.append({"object": name, "key": key, "error": str(exc)})
    return {"items": items}


def build(args) -> dict:
    """Each item's armature from its job folder; the file saved rigged (and exported)."""
    from batch_rig import export

    from sp4d_blender.build import build_rig

    out = Path(args.out)
    items = []
    for it in json.loads(args.items):
        obj = bpy.data.objects.get(it["object"])
        try:
            if obj is None:
                raise ValueError(f"no object named '{it['object']}'")
            arm = build_rig(obj, it["job"])
            items.append({"object": it["object"], "armature": arm.name, "bones": len(arm.data.bones)})
        except Exception as exc:  # noqa: BLE001 - one item fails, the others are saved
            items.append({"object": it["object"], "error": str(exc)})
    target = out / f"{args.stem}_rigged.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(target), copy=True)
    if args.export:
        export(out / f"{args.stem}_rigged", args.export)
    return {"items": items, "saved": str(target)}


def build_images(args) -> dict:
    """Rig Image's build for each picture's job folder into a new file (``args.file``), as
    scripts/batch_rig.py --images does locally; one failed item leaves the others."""
    from batch_rig import export

    from sp4d_blender import api
    from sp4d_blender.identity import readable

    items = []
    for it in json.loads(args.items):
        try:
            obj, arm = api.build_clip_rig(it["job"], readable(Path(it["image"]).stem))
            api.load_generated_clip(it["job"])
            items.append({"key": it["key"], "object": obj.name, "armature": arm.name, "bones": len(arm.data.bones)})
        except Exception as exc:  # noqa: BLE001 - one item fails, the others are saved
            items.append({"key": it["key"], "object": None, "error": str(exc)})
    target = Path(args.file)
    if any("error" not in it for it in items):
        bpy.ops.wm.save_as_mainfile(filepath=str(target), copy=True)
        if args.export:
            export(target.with_suffix(""), args.export)
    return {"items": items, "saved": str(target)}


def sample(args) -> dict:
    from sp4d_blender.sample import generate_sample_npz, import_sample

    out = Path(args.file).resolve()
    out.mkdir(parents=True, exist_ok=True)
    npz = generate_sample_npz(out / "creature.npz")
    files = []
    for i in range(args.files):
        bpy.ops.wm.read_homefile(use_empty=True)
        for k in range(args.per_file):
            obj = import_sample(npz, name=f"Creature{k}")
            obj.location.x = 3.0 * k
        if args.broken and i == args.files - 1:
            me = bpy.data.meshes.new("Broken")
            me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 1)], [])
            bpy.context.scene.collection.objects.link(bpy.data.objects.new("Broken", me))
        path = out / f"asset{i:03d}.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(path))
        files.append(str(path))
    return {"files": files}


def parse(argv: list[str]) -> argparse.Namespace:
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    ap = argparse.ArgumentParser(prog="batch_bpy.py")
    ap.add_argument("action", choices=["capture", "build", "build-images", "sample"])
    ap.add_argument("file", help=".blend file (sample: the output folder)")
    ap.add_argument("--jobs")
    ap.add_argument("--stem")
    ap.add_argument("--objects", nargs="*", default=[])
    ap.add_argument("--settings", default="{}")
    ap.add_argument("--out")
    ap.add_argument("--items", default="[]")
    ap.add_argument("--export", choices=["glb", "gltf", "fbx"])
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--per-file", type=int, default=1)
    ap.add_argument("--broken", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    die_with_parent()
    if args.action == "sample":
        result = sample(args)
    else:
        import sp4d_blender

        try:
            if args.action == "build-images":  # a new file
                bpy.ops.wm.read_homefile(use_empty=True)
            else:
                bpy.ops.wm.open_mainfile(filepath=str(Path(args.file).resolve()))
        except Exception as exc:  # noqa: BLE001 - an unreadable file: every item of it fails, no retry
            print(RESULT_MARK + json.dumps({"error": f"cannot open {args.file}: {exc}"}), flush=True)
            return 0
        sp4d_blender.register()
        try:
            result = {"capture": capture, "build": build, "build-images": build_images}[args.action](args)
        finally:
            sp4d_blender.unregister()
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
