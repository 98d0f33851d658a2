"""The extension as Blender sees it: manifest, package, install from the zip, enable, use."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def test_manifest_validates():
    res = subprocess.run([sys.executable, str(CLI), "validate", str(ROOT)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "FATAL" not in res.stdout + res.stderr, res.stdout + res.stderr


def test_package_bundles_addon_backend_and_job_schema_only(package):
    import zipfile

    names = zipfile.ZipFile(package).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "sp4d_blender/operators.py" in names and "backend/server.py" in names and "sp4d_job/layout.py" in names
    assert not [n for n in names if n.startswith(("tests/", ".venv", ".git", "docs/", "scripts/", "build/", ".ruff"))
                or "__pycache__" in n or ".egg-info" in n]


def test_install_enable_and_generate_rig_from_the_zip(package, tmp_path, sample_npz):
    """A fresh Blender installs the zip, enables it and rigs the sample with its bundled backend."""
    script = textwrap.dedent(f"""
        import bpy, importlib, sys
        r = bpy.ops.extensions.package_install_files(filepath={str(package)!r}, repo="user_default",
                                                     enable_on_install=True)
        assert r == {{"FINISHED"}}, r
        mod = "bl_ext.user_default.sp4d_blender"
        assert mod in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
        prefs = bpy.context.preferences.addons[mod].preferences
        assert prefs.device == "AUTO" and prefs.precision == "FP16" and prefs.compile == "AUTO"
        assert prefs.vram == "AUTO"
        job_settings = importlib.import_module(mod + ".sp4d_blender.prefs").job_settings
        assert job_settings()["compile"] == "auto"
        prefs.device, prefs.compile, prefs.vram = "CUDA2", "LAYERS", "12"
        s = job_settings()
        assert s["device"] == "cuda:0,cuda:1" and s["compile"] == "layers" and s["vram"] == "12", s
        assert s["precision"] == "fp16", s
        prefs.device, prefs.compile, prefs.vram = "AUTO", "OFF", "AUTO"
        s = job_settings()
        assert s["device"] == "auto" and s["compile"] is None and s["vram"] == "auto", s
        sample = importlib.import_module(mod + ".sp4d_blender.sample")
        bpy.ops.wm.read_homefile(use_empty=True)
        obj = sample.import_sample({str(sample_npz)!r})
        bpy.context.view_layer.objects.active = obj
        bpy.context.scene.sp4d.part_source = "ORACLE"
        assert bpy.ops.sp4d.generate_rig() == {{"FINISHED"}}
        arm = obj.parent
        print("BONES", len(arm.data.bones), "GROUPS", len(obj.vertex_groups))
    """)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender"))
    env.pop("PYTHONPATH", None)
    res = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "BONES 14 GROUPS 13" in res.stdout
    assert (tmp_path / "blender" / "extensions" / "user_default" / "sp4d_blender" / "backend" / "server.py").exists()


def test_register_exposes_operator_panel_and_settings():
    assert hasattr(bpy.types, "SP4D_PT_panel")
    assert bpy.types.SP4D_PT_panel.bl_category == "SP4D"
    assert bpy.context.scene.sp4d.frames == 4
    assert not bpy.ops.sp4d.generate_rig.poll()  # nothing selected in an empty scene
