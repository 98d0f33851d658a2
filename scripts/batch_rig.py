"""Rig many objects in many .blend files with the same code path as Generate Rig.

Inside Blender:   blender -b file.blend -P scripts/batch_rig.py -- --objects A B --out OUT [--export glb]
With bpy (PyPI):  python scripts/batch_rig.py --files a.blend b.blend --objects A --out OUT [--export fbx]

With --images the pictures are rigged instead (Rig Image: SVD clip, SP4D views, the visual hull as a
new mesh rigged) into OUT/images_rigged.blend, locally or with --ray (docs/batch.md).

Without --objects every mesh object is rigged. Each file in which at least one object was rigged
is saved as OUT/<name>_rigged.blend (and exported when asked); a failed item adds nothing to it, and
a file with no rigged object writes no file at all. OUT/report.json lists every item with its
result or error (its stable code when the backend gave one), and the batch continues after a
failed item. Job folders: OUT/jobs/<file>-<object>-<digest of both> (never shared by two objects).

Exit codes: 0 every item rigged; 1 some items failed, others were rigged; 2 bad arguments;
3 nothing was rigged (every item failed, or there was nothing to rig).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bpy  # noqa: E402


def parse(argv: list[str]) -> argparse.Namespace:
    if "--" in argv:  # blender -b ... -P batch_rig.py -- args
        argv = argv[argv.index("--") + 1:]
    ap = argparse.ArgumentParser(prog="batch_rig.py")
    ap.add_argument("--files", nargs="*", default=[], help=".blend files (default: the open file)")
    ap.add_argument("--objects", nargs="*", default=[], help="object names (default: every mesh)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--export", choices=["glb", "gltf", "fbx"])
    ap.add_argument("--part-source", default="auto", choices=["auto", "sp4d", "oracle"])
    ap.add_argument("--max-influences", type=int, default=4)
    ap.add_argument("--device", help="auto, cuda, cpu, or cuda:0,cuda:1 (CFG split over two GPUs)")
    ap.add_argument("--compile", choices=["blocks", "layers"],
                    help="torch.compile the UNet once for the whole batch (one backend process)")
    ap.add_argument("--low-vram", action="store_true", help="at most the 16 GB memory tier")
    ap.add_argument("--vram", choices=("auto", "24", "16", "12"), default="auto",
                    help="the GPU memory tier (docs/generation.md; auto: from the GPU's free memory)")
    ap.add_argument("--images", nargs="*", default=[], help="pictures to rig with Rig Image (instead of .blend files)")
    ap.add_argument("--animate-still", action="store_true",
                    help="animate meshes that do not move with SVD first (Generate Rig's 'Animate Still Mesh First')")
    ap.add_argument("--motion-bucket", type=int, help="SVD's motion amount, 1-255 (default 127)")
    ap.add_argument("--oracle-mesh", help="with --part-source oracle and --images: the mesh with ground-truth parts "
                    "the oracle renders in place of SP4D's views (e.g. `python -m backend sample creature.npz`)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per object")
    ap.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="on Ray (docs/batch.md): a local "
                    "cluster, or ADDRESS ('auto': the one `ray start` runs here, host:port, ray://host:10001)")
    return ap.parse_args(argv)


def export(path: Path, kind: str) -> None:
    if kind == "fbx":
        bpy.ops.export_scene.fbx(filepath=str(path.with_suffix(".fbx")), add_leaf_bones=False)
    else:
        bpy.ops.export_scene.gltf(filepath=str(path.with_suffix("." + kind)),
                                  export_format="GLB" if kind == "glb" else "GLTF_SEPARATE")


def job_dir(out: Path, blend: str, name: str) -> Path:
    """The item's job folder: readable, and distinct for every (file, object) pair."""
    from sp4d_blender.identity import readable

    tag = hashlib.sha1(f"{blend}|{name}".encode()).hexdigest()[:10]
    return out / "jobs" / f"{readable(Path(blend).stem or 'untitled')}-{readable(name)}-{tag}"


def batch_settings(args) -> dict:
    """The job settings the flags give (unset: the backend's defaults)."""
    settings = {"part_source": args.part_source, "frames": 4, "max_influences": args.max_influences,
                "device": args.device, "compile": args.compile, "low_vram": args.low_vram, "vram": args.vram,
                "animate_still": args.animate_still or None, "motion_bucket": args.motion_bucket,
                "oracle_mesh": str(Path(args.oracle_mesh).resolve()) if args.oracle_mesh else None}
    return {k: v for k, v in settings.items() if v is not None}


def rig_images(args, out: Path, report: list[dict]) -> None:
    """Rig Image for every picture into one new file, OUT/images_rigged.blend."""
    import sp4d_blender
    from sp4d_blender import api
    from sp4d_blender.identity import readable

    bpy.ops.wm.read_homefile(use_empty=True)
    sp4d_blender.register()
    try:
        settings = batch_settings(args)  # part_source auto: SP4D (a picture has no ground truth of its own)
        rigged = 0
        for image in args.images:
            item = {"image": str(Path(image).resolve()), "object": None}
            t0 = time.monotonic()
            tag = hashlib.sha1(item["image"].encode()).hexdigest()[:10]
            job = out / "jobs" / f"image-{readable(Path(image).stem)}-{tag}"
            try:
                obj, arm = api.rig_image(item["image"], job_dir=job, settings=settings, timeout=args.timeout)
                item.update(ok=True, object=obj.name, armature=arm.name, bones=len(arm.data.bones))
                rigged += 1
            except Exception as exc:  # noqa: BLE001 - the report says what failed, the batch goes on
                item.update(ok=False, error=str(exc), code=getattr(exc, "code", None))
            item["seconds"] = round(time.monotonic() - t0, 2)
            report.append(item)
            result = item.get("error", item.get("armature"))
            print(("ok   " if item["ok"] else "FAIL ") + f"{Path(image).name}: {result}", flush=True)
        if rigged:
            bpy.ops.wm.save_as_mainfile(filepath=str(out / "images_rigged.blend"), copy=True)
            if args.export:
                export(out / "images_rigged", args.export)
    finally:
        sp4d_blender.unregister()


def rig_file(blend: str | None, args, out: Path, report: list[dict]) -> None:
    import sp4d_blender
    from sp4d_blender import api

    if blend:
        bpy.ops.wm.open_mainfile(filepath=str(Path(blend).resolve()))
    sp4d_blender.register()
    try:
        stem = Path(bpy.data.filepath).stem or "untitled"
        names = args.objects or [o.name for o in bpy.data.objects if o.type == "MESH"]
        settings = batch_settings(args)
        rigged = 0
        for name in names:
            item = {"file": bpy.data.filepath or None, "object": name}
            t0 = time.monotonic()
            obj = bpy.data.objects.get(name)
            try:
                if obj is None:
                    raise ValueError(f"no object named '{name}'")
                arm = api.generate_rig(obj, job_dir=job_dir(out, bpy.data.filepath, name), settings=settings,
                                       timeout=args.timeout)
                item.update(ok=True, armature=arm.name, bones=len(arm.data.bones))
                rigged += 1
            except Exception as exc:  # noqa: BLE001 - the report says what failed, the batch goes on
                item.update(ok=False, error=str(exc), code=getattr(exc, "code", None))
            item["seconds"] = round(time.monotonic() - t0, 2)
            report.append(item)
            print(("ok   " if item["ok"] else "FAIL ") + f"{stem}/{name}: {item.get('error', item.get('armature'))}",
                  flush=True)
        if not rigged:  # nothing to save: a failed item writes nothing
            return
        target = out / f"{stem}_rigged.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(target), copy=True)
        if args.export:
            export(out / f"{stem}_rigged", args.export)
    finally:
        sp4d_blender.unregister()


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.ray:  # the whole batch on a Ray cluster: sp4d_blender/batch_ray.py, backend/batch
        from sp4d_blender.batch_ray import run_on_ray
        return run_on_ray(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report: list[dict] = []
    if args.images:
        rig_images(args, out, report)
    for blend in ([] if args.images and not args.files else args.files or [None]):
        try:
            rig_file(blend, args, out, report)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is one failed item
            report.append({"file": blend, "object": None, "ok": False, "error": str(exc)})
            print(f"FAIL {blend}: {exc}", flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    ok = sum(r["ok"] for r in report)
    print(f"{ok} rigged, {len(report) - ok} failed; report: {out / 'report.json'}", flush=True)
    if ok == 0:
        return 3
    return 0 if ok == len(report) else 1


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:  # argparse: 2 for bad arguments
        code = exc.code if isinstance(exc.code, int) else 2
    sys.stdout.flush()
    sys.stderr.flush()
    # leave without Python's and Blender's teardown: its work is saved, the backend exits when its
    # stdin closes, and bpy as a module can hang or crash (SIGSEGV on 4.2) while tearing down,
    # which would hide the exit code that says what happened
    os._exit(code)
