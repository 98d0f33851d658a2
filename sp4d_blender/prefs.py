"""Add-on preferences and per-scene settings.

Tokens are never stored here or in the .blend: Hugging Face downloads use the hub's own token
store (``huggingface-cli login``) or the HF_TOKEN environment variable of the backend.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from .client import default_backend_python

ADDON_ID = __package__.rpartition(".")[0] or __package__  # the extension's top-level module


class SP4DPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend_python: bpy.props.StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Interpreter with the backend's packages (empty: SP4D_BACKEND_PYTHON or the repository .venv)")
    weights_source: bpy.props.EnumProperty(
        name="Weights", default="HUB",
        items=[("HUB", "Hugging Face", "stabilityai/sp4d, using the hub's own token store"),
               ("LOCAL", "Local file", "a local sp4d.safetensors")])
    weights_path: bpy.props.StringProperty(name="Weights File", subtype="FILE_PATH", default="")
    device: bpy.props.EnumProperty(
        name="Device", default="AUTO",
        items=[("AUTO", "Auto", "CUDA when present"), ("CUDA", "CUDA", ""),
               ("CUDA2", "Two GPUs", "guided steps split over cuda:0 and cuda:1 (a UNet copy on each, ~1.9x faster)"),
               ("CPU", "CPU", "very slow")])
    precision: bpy.props.EnumProperty(
        name="Precision", default="BF16",
        items=[("BF16", "bfloat16", ""), ("FP16", "float16", ""), ("FP32", "float32", "")])
    compile: bpy.props.EnumProperty(
        name="Compile", default="OFF",
        description="torch.compile the UNet and the decoder: 2-3.5 minutes the first time on a machine, ~30 s "
                    "when a later backend starts (inductor's cache); each denoising step is then ~35 % faster, "
                    "decoding ~2x",
        items=[("OFF", "Off", "eager PyTorch"), ("BLOCKS", "Blocks", "the repeated blocks (shorter compile)"),
               ("LAYERS", "Layers", "whole UNet layers (fastest steps)")])
    low_vram: bpy.props.BoolProperty(
        name="Low VRAM", default=False,
        description="Keep the image encoders off the GPU while sampling (about 14 GiB instead of 16 at 576 px)")
    cache_dir: bpy.props.StringProperty(name="Cache Folder", subtype="DIR_PATH", default="",
                                        description="Where job folders live (empty: the temporary folder)")

    def draw(self, context):
        col = self.layout.column()
        col.prop(self, "backend_python")
        col.label(text=f"In use: {self.backend_python or default_backend_python()}")
        col.operator("sp4d.setup_backend", icon="CONSOLE")
        status = context.window_manager.sp4d_status
        if status:
            col.label(text=status)
        col.prop(self, "weights_source")
        if self.weights_source == "LOCAL":
            col.prop(self, "weights_path")
        col.prop(self, "device")
        col.prop(self, "precision")
        col.prop(self, "compile")
        col.prop(self, "low_vram")
        col.prop(self, "cache_dir")


class _Defaults:
    backend_python = ""
    weights_source = "HUB"
    weights_path = ""
    device = "AUTO"
    precision = "BF16"
    compile = "OFF"
    low_vram = False
    cache_dir = ""


def get_prefs(context=None):
    """The add-on preferences, or the defaults when loaded without the add-on system (tests)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None and addon.preferences is not None else _Defaults()


def cache_dir(context=None) -> Path:
    p = get_prefs(context).cache_dir
    return Path(bpy.path.abspath(p)) if p else Path(bpy.app.tempdir or "/tmp") / "sp4d"


class SP4DSettings(bpy.types.PropertyGroup):
    part_source: bpy.props.EnumProperty(
        name="Part Source", default="AUTO",
        items=[("AUTO", "Auto", "SP4D when it can run, else the oracle for meshes with ground truth"),
               ("SP4D", "SP4D", "Stable Part Diffusion 4D (weights and a GPU)"),
               ("ORACLE", "Oracle", "render known parts (the bundled sample)")])
    frames: bpy.props.IntProperty(name="Frames", default=4, min=1, max=64)
    max_influences: bpy.props.IntProperty(name="Max Influences", default=4, min=0, max=16,
                                          description="Bones per vertex (0: no limit)")
    clip_path: bpy.props.StringProperty(
        name="Clip", subtype="FILE_PATH", default="",
        description="A video, GIF or image folder of the object moving (empty: render the object)")
    image_path: bpy.props.StringProperty(
        name="Image File", subtype="FILE_PATH", default="",
        description="One picture of the object for Rig Image (used when no Blender image is chosen)")
    image: bpy.props.PointerProperty(
        name="Image", type=bpy.types.Image,
        description="A Blender image of the object for Rig Image (before the image file)")
    animate_still: bpy.props.BoolProperty(
        name="Animate Still Mesh First", default=False,
        description="When the mesh does not move, animate a render of it with Stable Video Diffusion so that "
                    "joints can be fitted from motion")
    motion_bucket: bpy.props.IntProperty(
        name="Motion Amount", default=127, min=1, max=255,
        description="How much Stable Video Diffusion moves the picture (its motion bucket: 1 calm, 255 wild)")
    svd_seed: bpy.props.IntProperty(name="Motion Seed", default=42, min=0,
                                    description="Seed of the generated motion")


DEVICES = {"CUDA2": "cuda:0,cuda:1"}


def job_settings(context=None) -> dict:
    """The settings dict written to job.json (docs/job-folder.md)."""
    context = context or bpy.context
    s = context.scene.sp4d
    p = get_prefs(context)
    return {"part_source": s.part_source.lower(), "frames": s.frames, "max_influences": s.max_influences,
            "clip": bpy.path.abspath(s.clip_path) if s.clip_path else None,
            "animate_still": bool(s.animate_still), "motion_bucket": s.motion_bucket, "svd_seed": s.svd_seed,
            "device": DEVICES.get(p.device, p.device.lower()), "precision": p.precision.lower(),
            "compile": None if p.compile == "OFF" else p.compile.lower(), "low_vram": bool(p.low_vram),
            "weights": bpy.path.abspath(p.weights_path) if p.weights_source == "LOCAL" and p.weights_path else "hub"}


CLASSES = (SP4DPreferences, SP4DSettings)


def register_props() -> None:
    bpy.types.Scene.sp4d = bpy.props.PointerProperty(type=SP4DSettings)
    bpy.types.WindowManager.sp4d_status = bpy.props.StringProperty(default="")
    bpy.types.WindowManager.sp4d_progress = bpy.props.FloatProperty(default=0.0, min=0, max=1, subtype="FACTOR")


def unregister_props() -> None:
    for owner, name in ((bpy.types.Scene, "sp4d"), (bpy.types.WindowManager, "sp4d_status"),
                        (bpy.types.WindowManager, "sp4d_progress")):
        if hasattr(owner, name):
            delattr(owner, name)
