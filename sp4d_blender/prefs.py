"""Add-on preferences and per-scene settings.

Tokens are never stored here or in the .blend: Hugging Face downloads use the hub's own token
store (``hf auth login`` / ``huggingface-cli login``) or the HF_TOKEN environment variable of the
backend. The preferences live in Blender's userpref.blend, not in scene files: the licence's
acceptance and the backend's verified report are kept there.
"""

from __future__ import annotations

import json

import bpy

ADDON_ID = __package__.rpartition(".")[0] or __package__  # the extension's top-level module


class SP4DPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend_python: bpy.props.StringProperty(
        name="Backend Python", subtype="FILE_PATH", default="",
        description="Interpreter with the backend's packages (empty: the environment Set Up Backend made, "
                    "SP4D_BACKEND_PYTHON, or a development checkout's .venv)")
    package_index: bpy.props.StringProperty(
        name="Package Index", default="",
        description="Set Up Backend installs from this package index (a URL or a folder) instead of PyPI and the "
                    "PyTorch index: a mirror, or a company index")
    find_links: bpy.props.StringProperty(
        name="Wheel Folder", subtype="DIR_PATH", default="",
        description="A folder of wheels (pip --find-links) Set Up Backend installs from; without a package index, "
                    "only from this folder (offline install)")
    backend_report: bpy.props.StringProperty(
        name="Backend Report", default="", options={"HIDDEN"},
        description="What Set Up Backend verified (JSON: torch, CUDA, GPUs); shown in these preferences")
    licence_accepted: bpy.props.BoolProperty(
        name="SP4D Licence Accepted", default=False, options={"HIDDEN"},
        description="The Stability AI Community License of the SP4D weights was accepted (Accept Licence)")
    weights_source: bpy.props.EnumProperty(
        name="Weights", default="HUB",
        items=[("HUB", "Hugging Face", "stabilityai/sp4d, using the hub's own token store"),
               ("LOCAL", "Local file", "a local sp4d.safetensors")])
    weights_path: bpy.props.StringProperty(name="Weights File", subtype="FILE_PATH", default="")
    # SVD-XT 1.1, the front stage of Rig Image and Animate Still Mesh First (docs/svd.md): its own repository,
    # licence acceptance and download, as SP4D's
    svd_licence_accepted: bpy.props.BoolProperty(
        name="SVD Licence Accepted", default=False, options={"HIDDEN"},
        description="The Stability AI Community License of the SVD-XT 1.1 weights was accepted (Accept SVD Licence)")
    svd_weights_source: bpy.props.EnumProperty(
        name="SVD Weights", default="HUB",
        items=[("HUB", "Hugging Face", "stabilityai/stable-video-diffusion-img2vid-xt-1-1, using the hub's own "
                "token store"),
               ("LOCAL", "Local file", "a local svd_xt_1_1.safetensors")])
    svd_weights_path: bpy.props.StringProperty(name="SVD Weights File", subtype="FILE_PATH", default="")
    device: bpy.props.EnumProperty(
        name="Device", default="AUTO",
        items=[("AUTO", "Auto", "CUDA when present"), ("CUDA", "CUDA", ""),
               ("CUDA2", "Two GPUs", "guided steps split over cuda:0 and cuda:1 (a UNet copy on each, ~1.9x faster)"),
               ("CPU", "CPU", "very slow")])
    precision: bpy.props.EnumProperty(
        name="Precision", default="FP16",
        items=[("FP16", "float16", "as close to float32 as the official fp16 autocast; a job that overflows it "
                "runs again in bfloat16 by itself"),
               ("BF16", "bfloat16", "float32's range, twice fp16's error"), ("FP32", "float32", "slow")])
    compile: bpy.props.EnumProperty(
        name="Compile", default="AUTO",
        description="torch.compile the UNet and the decoder: each denoising step ~35 % faster, decoding ~2x. "
                    "The compile runs once per machine at Set Up (2-3.5 minutes); each new backend then loads its "
                    "graphs in ~1 minute, which Warm Up does in the background when the panel is first shown",
        items=[("AUTO", "Auto", "the layers on a CUDA GPU where Triton is installed (Linux; Windows with "
                "triton-windows) and the memory tier allows it; eager elsewhere"),
               ("OFF", "Off", "eager PyTorch"), ("BLOCKS", "Blocks", "the repeated blocks (shorter compile)"),
               ("LAYERS", "Layers", "whole UNet layers (fastest steps)")])
    vram: bpy.props.EnumProperty(
        name="GPU Memory", default="AUTO",
        description="The memory tier SP4D runs in (docs/generation.md): how much of the GPU a generation may use",
        items=[("AUTO", "Auto", "the largest tier the GPU's free memory holds, chosen for each job"),
               ("24", "24 GB", "everything on the GPU (17.6 GiB at 576 px)"),
               ("16", "16 GB", "image encoders off the GPU while sampling, guidance halves one after the other "
                "(11.2 GiB; ~4 % slower)"),
               ("12", "12 GB", "also the largest UNet blocks streamed from system memory (9.6 GiB; ~15 % slower, "
                "no compile)")])
    warm_up: bpy.props.BoolProperty(
        name="Warm Up", default=True,
        description="When the SP4D panel is first shown in a session, start the backend and load the model (with "
                    "Compile, its compiled graphs too) in the background, so the first job does not wait for them. "
                    "Never downloads. The model then holds its memory tier's GPU memory while Blender runs, as it "
                    "does after a job")
    cache_dir: bpy.props.StringProperty(
        name="Cache Folder", subtype="DIR_PATH", default="",
        description="Where job folders live (empty: sp4d_jobs beside the saved .blend, or the add-on's user folder "
                    "for files never saved)")

    def draw(self, context):
        from .session import backend_python
        from .setup_backend import describe

        layout = self.layout
        box = layout.box()
        box.label(text="Backend", icon="CONSOLE")
        box.prop(self, "backend_python")
        py = backend_python(context)
        box.label(text=f"In use: {py}" if py else "In use: none — press Set Up Backend", icon="NONE" if py else "ERROR")
        for line in describe(backend_report(self)):
            box.label(text=line)
        row = box.row()
        row.operator("sp4d.setup_backend", icon="IMPORT")
        status = context.window_manager.sp4d_status
        if status:
            box.label(text=status)
        sub = box.column()
        sub.prop(self, "package_index")
        sub.prop(self, "find_links")
        box = layout.box()
        box.label(text="Weights", icon="FILE_BLEND")
        box.prop(self, "weights_source")
        if self.weights_source == "LOCAL":
            box.prop(self, "weights_path")
        else:
            draw_licence(box, self)
        box = layout.box()
        box.label(text="SVD Weights (Rig Image, Animate Still Mesh First)", icon="FILE_MOVIE")
        box.prop(self, "svd_weights_source")
        if self.svd_weights_source == "LOCAL":
            box.prop(self, "svd_weights_path")
        else:
            draw_licence(box, self, "svd")
        col = layout.column()
        col.prop(self, "device")
        col.prop(self, "precision")
        col.prop(self, "compile")
        col.prop(self, "vram")
        col.prop(self, "warm_up")
        col.prop(self, "cache_dir")


def backend_report(prefs) -> dict | None:
    """The report Set Up Backend stored (torch, CUDA, GPUs), or None."""
    try:
        return json.loads(prefs.backend_report) if getattr(prefs, "backend_report", "") else None
    except ValueError:
        return None


LICENCE_UI = {  # per model: the preference that remembers the acceptance, the operators that accept and download
    "sp4d": ("licence_accepted", "sp4d.accept_licence", "sp4d.download_weights"),
    "svd": ("svd_licence_accepted", "sp4d.accept_svd_licence", "sp4d.download_svd_weights"),
}


def draw_licence(layout, prefs, model: str = "sp4d") -> None:
    """The licence of a model's weights (SP4D's, or SVD-XT 1.1's), its link, and Accept (before
    the first download) or Download (after)."""
    from .jobfolder import hub

    m = hub.MODELS[model]
    accepted, accept_op, download_op = LICENCE_UI[model]
    layout.label(text=f"{m['repo']} is under the {hub.LICENCE_NAME}.")
    layout.operator("wm.url_open", text="Read the licence", icon="URL").url = m["licence_url"]
    if not getattr(prefs, accepted):
        layout.label(text=f"Accept it before the weights ({m['size']}) are downloaded.")
        layout.operator(accept_op, icon="CHECKMARK")
    else:
        layout.label(text="Licence accepted. Gated repository: accept it on the model page too and log in "
                          "(hf auth login, or HF_TOKEN).")
        layout.operator("wm.url_open", text="Open the model page", icon="URL").url = m["page"]
        layout.operator(download_op, icon="IMPORT")


class _Defaults:
    backend_python = ""
    package_index = ""
    find_links = ""
    backend_report = ""
    licence_accepted = False
    weights_source = "HUB"
    weights_path = ""
    svd_licence_accepted = False
    svd_weights_source = "HUB"
    svd_weights_path = ""
    device = "AUTO"
    precision = "FP16"
    compile = "AUTO"
    vram = "AUTO"
    warm_up = True
    cache_dir = ""


_DEFAULTS = _Defaults()  # one instance: what a script sets on it (the licence accepted) holds for the process


def get_prefs(context=None):
    """The add-on preferences, or the defaults when loaded without the add-on system (tests)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None and addon.preferences is not None else _DEFAULTS


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
            "compile": None if p.compile == "OFF" else p.compile.lower(), "vram": p.vram.lower(),
            "accept_licence": bool(p.licence_accepted),  # the preferences' Accept Licence (never in the .blend)
            "weights": bpy.path.abspath(p.weights_path) if p.weights_source == "LOCAL" and p.weights_path else "hub",
            "accept_svd_licence": bool(p.svd_licence_accepted),
            "svd_weights": bpy.path.abspath(p.svd_weights_path)
            if p.svd_weights_source == "LOCAL" and p.svd_weights_path else "hub"}


CLASSES = (SP4DPreferences, SP4DSettings)


def register_props() -> None:
    bpy.types.Scene.sp4d = bpy.props.PointerProperty(type=SP4DSettings)
    bpy.types.WindowManager.sp4d_status = bpy.props.StringProperty(default="")
    bpy.types.WindowManager.sp4d_progress = bpy.props.FloatProperty(default=0.0, min=0, max=1, subtype="FACTOR")
    bpy.types.WindowManager.sp4d_model = bpy.props.StringProperty(default="")  # the warm-up's state (warmup.py)
    # the last job's failure that the panel answers with a button (Set Up, Accept Licence): its code and message
    bpy.types.WindowManager.sp4d_needs = bpy.props.StringProperty(default="")
    bpy.types.WindowManager.sp4d_needs_message = bpy.props.StringProperty(default="")


def unregister_props() -> None:
    for owner, name in ((bpy.types.Scene, "sp4d"), (bpy.types.WindowManager, "sp4d_status"),
                        (bpy.types.WindowManager, "sp4d_progress"), (bpy.types.WindowManager, "sp4d_model"),
                        (bpy.types.WindowManager, "sp4d_needs"),
                        (bpy.types.WindowManager, "sp4d_needs_message")):
        if hasattr(owner, name):
            delattr(owner, name)
