"""Operators and the sidebar panel (View3D > Sidebar > SP4D)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import bpy

from . import api, warmup
from .build import build_rig, job_path
from .jobfolder import hub

# failures the panel answers with a button: the backend is not set up, the licence, the hub's refusal
NEEDS = ("no_backend", "missing_dependency", "licence_required", "gated")


def _code_of(exc: BaseException) -> str | None:
    """The stable code of a failure: RigError's, or a ``[code] message`` text's."""
    code = getattr(exc, "code", None)
    if code:
        return code
    m = re.match(r"^\[(\w+)\]", str(exc))
    return m.group(1) if m else None


def remember_failure(context, code: str | None, message: str) -> None:
    """Keep a failure the panel answers with a button (NEEDS); any other outcome clears it."""
    wm = context.window_manager
    if not hasattr(wm, "sp4d_needs"):
        return
    wm.sp4d_needs = code if code in NEEDS else ""
    wm.sp4d_needs_message = message if code in NEEDS else ""


def setup_prompt(context) -> tuple[str, str, str] | None:
    """What the panel asks of the artist before anything can run, or None: (text, operator id,
    url or ''). No backend interpreter at all: Set Up (asked before the first job fails); a
    job's missing_dependency: Set Up; licence_required: Accept Licence (SP4D's or SVD's, by the
    repository the message names); gated: that model page."""
    from .jobfolder import hub
    from .session import backend_python

    wm = context.window_manager
    needs = getattr(wm, "sp4d_needs", "")
    svd = hub.SVD_REPO in getattr(wm, "sp4d_needs_message", "")  # SVD-XT 1.1's weights (Rig Image), not SP4D's
    if needs == "licence_required":
        if svd:
            return (f"The SVD-XT 1.1 weights are under the {hub.LICENCE_NAME}: read and accept it first.",
                    "sp4d.accept_svd_licence", hub.SVD_LICENCE_URL)
        return (f"The SP4D weights are under the {hub.LICENCE_NAME}: read and accept it first.",
                "sp4d.accept_licence", hub.LICENCE_URL)
    if needs == "gated":
        return ("Hugging Face refused the gated weights: accept the licence on the model page, then log in "
                "(hf auth login, or HF_TOKEN).", "", hub.SVD_MODEL_PAGE if svd else hub.MODEL_PAGE)
    if needs in ("no_backend", "missing_dependency"):
        return (wm.sp4d_needs_message or "The backend is not set up.", "sp4d.setup_backend", "")
    if not backend_python(context):
        return ("The backend is not set up yet: Set Up Backend installs it (PyTorch for this machine, a few GB).",
                "sp4d.setup_backend", "")
    return None


def _mesh_poll(context) -> bool:
    obj = context.active_object
    return obj is not None and obj.type == "MESH"


class _BackendJobModal:
    """What the rig operators share: blocking ``execute`` (headless, scripts, redo) around
    ``_run``; modal ``invoke`` that starts a backend job (``_start``), follows its progress in the
    status bar (Esc cancels), then builds the result (``_build``)."""

    _timer = None
    _job = None

    def execute(self, context):
        try:
            message = self._run(context)
        except (api.RigError, ValueError, RuntimeError) as exc:
            remember_failure(context, _code_of(exc), getattr(exc, "message", str(exc)))
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        remember_failure(context, None, "")
        self.report({"INFO"}, message)
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        try:
            self._job = self._start(context)
        except (api.RigError, ValueError, RuntimeError) as exc:
            remember_failure(context, _code_of(exc), getattr(exc, "message", str(exc)))
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if self._job.finished and self._job.state != "done":  # ended at once (no backend)
            remember_failure(context, self._job.error["code"], self._job.error["message"])
            self.report({"ERROR"}, f"SP4D: {self._job.error['message']}")
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 1)
        self._status(context, "SP4D: starting the backend…")
        return {"RUNNING_MODAL"}

    def _status(self, context, text: str | None, frac: float | None = None) -> None:
        wm = context.window_manager
        wm.sp4d_status = text or ""
        if frac is not None:
            wm.sp4d_progress = frac
            wm.progress_update(frac)
        if context.workspace:
            context.workspace.status_text_set(text)
        for area in context.screen.areas if context.screen else ():
            if area.type == "VIEW_3D":
                area.tag_redraw()

    def _finish(self, context):
        wm = context.window_manager
        if self._timer:
            wm.event_timer_remove(self._timer)
        wm.progress_end()
        self._status(context, None, 0.0)

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and job.state == "running":
            job.cancel()
            self._status(context, "SP4D: cancelling…")
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        job.poll()
        p = job.progress
        if p and job.state == "running":
            from .client import progress_text

            self._status(context, progress_text(p), p["step"] / max(p["total"], 1))
        if not job.finished:
            return {"RUNNING_MODAL"}
        self._finish(context)
        remember_failure(context, job.error["code"] if job.error else None, job.error["message"] if job.error else "")
        if job.state != "done":
            level = {"WARNING"} if job.state == "cancelled" else {"ERROR"}
            self.report(level, f"SP4D: {job.error['message']}")
            return {"CANCELLED"}
        try:
            message = self._build(job)
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            self.report({"ERROR"}, f"SP4D: could not build the rig: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, message)
        return {"FINISHED"}


class SP4D_OT_generate_rig(_BackendJobModal, bpy.types.Operator):
    """Generate an armature and skinning weights for the active mesh with SP4D"""

    bl_idname = "sp4d.generate_rig"
    bl_label = "Generate Rig"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _mesh_poll(context)

    def _run(self, context) -> str:
        arm = api.generate_rig(context.active_object)
        return f"SP4D: created '{arm.name}' with {len(arm.data.bones) - 1} deform bones"

    def _start(self, context):
        obj = context.active_object
        job = api.start_job(obj)
        self._obj_id = obj.get("sp4d_id")  # found again by id: renamed during the job or not
        self._obj_name = obj.name  # (a linked object has no id of its own: by name)
        return job

    def _build(self, job) -> str:
        from .identity import find_object

        obj = find_object(self._obj_id) if self._obj_id else bpy.data.objects.get(self._obj_name)
        if obj is None:
            raise ValueError("the object was deleted while its rig was generated; the results stay in "
                             f"{job.job_dir}")
        arm = build_rig(obj, job.job_dir)
        return f"SP4D: created '{arm.name}'"


class SP4D_OT_rig_clip(_BackendJobModal, bpy.types.Operator):
    """Rig an object seen only in a clip: SP4D views, the visual hull of their silhouettes as a
    new mesh, and its armature (no mesh needs to be selected)"""

    bl_idname = "sp4d.rig_clip"
    bl_label = "Rig Clip"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return bool(context.scene.sp4d.clip_path)

    def _run(self, context) -> str:
        obj, arm = api.rig_clip(context.scene.sp4d.clip_path)
        return f"SP4D: created '{obj.name}' and '{arm.name}'"

    def _start(self, context):
        self._clip = context.scene.sp4d.clip_path
        return api.start_clip_job(self._clip)

    def _build(self, job) -> str:
        obj, arm = api.build_clip_rig(job.job_dir, Path(bpy.path.abspath(self._clip)).stem)
        return f"SP4D: created '{obj.name}' and '{arm.name}'"


def chosen_image(context):
    """Rig Image's picture: the scene's Blender image, else its image file, else None."""
    s = context.scene.sp4d
    return s.image if s.image is not None else (s.image_path or None)


class SP4D_OT_rig_image(_BackendJobModal, bpy.types.Operator):
    """Rig an object from one picture: Stable Video Diffusion animates it, SP4D generates the
    views of the chosen frames, the visual hull of their silhouettes becomes a new mesh, rigged
    and keyed with the generated motion"""

    bl_idname = "sp4d.rig_image"
    bl_label = "Rig Image"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return chosen_image(context) is not None

    def _run(self, context) -> str:
        obj, arm = api.rig_image(chosen_image(context))
        return f"SP4D: created '{obj.name}' and '{arm.name}'"

    def _start(self, context):
        self._image = chosen_image(context)
        self._name = api.image_name(self._image)
        return api.start_image_job(self._image)

    def _build(self, job) -> str:
        obj, arm = api.build_clip_rig(job.job_dir, self._name)
        api.load_generated_clip(job.job_dir)
        return f"SP4D: created '{obj.name}' and '{arm.name}'"


class SP4D_OT_add_sample(bpy.types.Operator):
    """Add the procedural sample creature (with ground-truth parts for the oracle)"""

    bl_idname = "sp4d.add_sample"
    bl_label = "Add Sample Creature"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        from .sample import import_sample

        try:
            obj = import_sample()
        except (RuntimeError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for o in context.view_layer.objects:
            o.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        return {"FINISHED"}


class SP4D_OT_setup_backend(bpy.types.Operator):
    """Install the backend in the add-on's user folder: a Python environment with PyTorch for this
    machine's GPU and the backend's packages (a few GB from the internet), check the GPU, then run
    the model once so that the first job finds its compiled graphs and tuned kernels (Esc cancels)"""

    bl_idname = "sp4d.setup_backend"
    bl_label = "Set Up Backend"

    _thread = None
    _timer = None

    def _args(self, context) -> dict:
        """Where and from what to install; stops this session's backend first (its interpreter may be
        the one being replaced, and Windows does not replace a running python.exe)."""
        from . import session
        from .paths import backend_env
        from .prefs import get_prefs, job_settings

        session.shutdown()

        prefs = get_prefs(context)
        return {"target": backend_env(), "package_index": bpy.path.abspath(prefs.package_index)
                if prefs.package_index and "://" not in prefs.package_index else prefs.package_index,
                "find_links": bpy.path.abspath(prefs.find_links) if prefs.find_links else "",
                # the last step prepares the first job with the user's settings (device, precision, compile, tier,
                # weights, the licence), with Blender's online access (session._environment)
                "prepare_settings": job_settings(context), "env": {**os.environ, **session._environment()}}

    def _refuse_offline(self, context) -> bool:
        """Blender's online access off and nothing local to install from: say so, do nothing."""
        from .prefs import get_prefs

        prefs = get_prefs(context)
        if getattr(bpy.app, "online_access", True) or prefs.find_links or (
                prefs.package_index and "://" not in prefs.package_index):
            return False
        self.report({"ERROR"}, "SP4D: Set Up Backend downloads PyTorch and the backend's packages, but online access "
                    "is off (Preferences > System > Network); allow it, or set a Wheel Folder to install from")
        return True

    def execute(self, context):  # blocking (headless)
        from .setup_backend import SetupError, setup_backend

        if self._refuse_offline(context):
            return {"CANCELLED"}
        try:
            py, report = setup_backend(**self._args(context), on_line=print)
        except (SetupError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return self._done(context, py, report)

    def _done(self, context, py, report):
        """Keep the verified report in the preferences; the next job runs with the new environment."""
        import json

        from . import session
        from .prefs import get_prefs
        from .setup_backend import summary

        prefs = get_prefs(context)
        prefs.backend_report = json.dumps(report)
        prefs.backend_python = ""  # the environment made here (session.backend_python finds it)
        session.shutdown()
        remember_failure(context, None, "")
        self.report({"INFO"}, f"{summary(report)} ({py})")
        return {"FINISHED"}

    def invoke(self, context, event):
        import threading

        from .setup_backend import SetupError, setup_backend

        if bpy.app.background:
            return self.execute(context)
        if self._refuse_offline(context):
            return {"CANCELLED"}
        self._lines, self._result = [], {}
        self._cancel = threading.Event()
        args = self._args(context)

        def work():
            try:
                self._result["python"], self._result["report"] = setup_backend(**args, on_line=self._lines.append,
                                                                               cancel=self._cancel)
            except (SetupError, OSError) as exc:
                self._result["error"] = str(exc)
                self._result["code"] = getattr(exc, "code", "setup_failed")

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()
        self._timer = context.window_manager.event_timer_add(0.5, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        wm = context.window_manager
        if event.type == "ESC" and self._thread.is_alive() and not self._cancel.is_set():
            self._cancel.set()  # the running step is stopped; a cancelled prepare keeps the good environment
            self._lines.append("cancelling…")
        if self._lines:
            wm.sp4d_status = "Set Up: " + self._lines[-1][:110] + ("" if self._cancel.is_set() else " (Esc cancels)")
            if context.workspace:
                context.workspace.status_text_set(wm.sp4d_status)
        if event.type != "TIMER" or self._thread.is_alive():
            return {"PASS_THROUGH"}
        wm.event_timer_remove(self._timer)
        wm.sp4d_status = ""
        if context.workspace:
            context.workspace.status_text_set(None)
        if "error" in self._result:
            self.report({"WARNING"} if self._result["code"] == "cancelled" else {"ERROR"}, self._result["error"])
            return {"CANCELLED"}
        return self._done(context, self._result["python"], self._result["report"])


class _AcceptLicence:
    """Accept a model's licence (``_pref``: its preference flag; ``_accepted``: what the report
    says was accepted); remembered in the preferences, never in a .blend file."""

    _pref = ""
    _accepted = ""
    _weights = ""

    def execute(self, context):
        from .prefs import get_prefs

        setattr(get_prefs(context), self._pref, True)
        remember_failure(context, None, "")
        self.report({"INFO"}, f"SP4D: {self._accepted} accepted; {self._weights} may be downloaded")
        return {"FINISHED"}

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)


class SP4D_OT_accept_licence(_AcceptLicence, bpy.types.Operator):
    """Accept the Stability AI Community License of the SP4D weights (read it first: Read the
    licence); remembered in the preferences, never in a .blend file"""

    bl_idname = "sp4d.accept_licence"
    bl_label = "Accept Licence"
    _pref = "licence_accepted"
    _accepted = hub.LICENCE_NAME
    _weights = "the weights"


class SP4D_OT_accept_svd_licence(_AcceptLicence, bpy.types.Operator):
    """Accept the Stability AI Community License of the SVD-XT 1.1 weights (Rig Image's front stage;
    read it first: Read the licence); remembered in the preferences, never in a .blend file"""

    bl_idname = "sp4d.accept_svd_licence"
    bl_label = "Accept SVD Licence"
    _pref = "svd_licence_accepted"
    _accepted = f"{hub.LICENCE_NAME} of SVD-XT 1.1"
    _weights = "its weights"


class _DownloadWeights(_BackendJobModal):
    """A model's weights (``_model``: sp4d or svd) into the Hugging Face cache through the backend's
    'weights' request, with that model's licence acceptance from the preferences."""

    _model = "sp4d"

    def _start(self, context):
        from . import session
        from .client import RigJob
        from .prefs import LICENCE_UI, get_prefs

        accepted = bool(getattr(get_prefs(context), LICENCE_UI[self._model][0]))
        fields = {"accept_licence": accepted, **({"model": self._model} if self._model != "sp4d" else {})}
        job = RigJob(session.get_backend(), None, cmd="weights", fields=fields)
        job.start()
        return job

    def _run(self, context) -> str:
        job = self._start(context)
        job.wait()
        if job.state != "done":
            raise api.RigError(job.error["code"], job.error["message"])
        return self._build(job)

    def _build(self, job) -> str:
        return f"SP4D: weights ready at {job.result['weights']}"


class SP4D_OT_download_weights(_DownloadWeights, bpy.types.Operator):
    """Download the SP4D weights (about 10 GB) into the Hugging Face cache: progress in the status
    bar, Esc cancels, a later download continues where this one stopped"""

    bl_idname = "sp4d.download_weights"
    bl_label = "Download Weights"
    _model = "sp4d"


class SP4D_OT_download_svd_weights(_DownloadWeights, bpy.types.Operator):
    """Download the SVD-XT 1.1 weights (about 4.8 GB; Rig Image's front stage) into the Hugging Face
    cache: progress in the status bar, Esc cancels, a later download continues where this one stopped"""

    bl_idname = "sp4d.download_svd_weights"
    bl_label = "Download SVD Weights"
    _model = "svd"


def _rigged(context):
    from .refine import rig_of

    obj = context.active_object
    arm = rig_of(obj) if obj is not None else None
    return obj, arm


def _part_items(self, context):
    obj, arm = _rigged(context)
    if arm is None:
        return [("NONE", "(no rig)", "")]
    return [(b.name, b.name, "") for b in arm.data.bones if b.use_deform and obj.vertex_groups.get(b.name)]


class _RigOperator:
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _rigged(context)[1] is not None


class SP4D_OT_merge_parts(_RigOperator, bpy.types.Operator):
    """Merge one part into another: weights added, bone removed, its children re-parented"""

    bl_idname = "sp4d.merge_parts"
    bl_label = "Merge Parts"
    keep: bpy.props.EnumProperty(name="Keep", items=_part_items)
    remove: bpy.props.EnumProperty(name="Merge Into Keep", items=_part_items)

    def execute(self, context):
        from .refine import merge_parts

        obj, arm = _rigged(context)
        try:
            merge_parts(obj, arm, self.keep, self.remove)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)


class SP4D_OT_limit_influences(_RigOperator, bpy.types.Operator):
    """Keep the strongest bones per vertex and renormalise"""

    bl_idname = "sp4d.limit_influences"
    bl_label = "Limit Influences"
    limit: bpy.props.IntProperty(name="Bones per Vertex", default=4, min=1, max=16)

    def execute(self, context):
        from .refine import limit_influences

        limit_influences(*_rigged(context), self.limit)
        return {"FINISHED"}


class SP4D_OT_recompute_weights(_RigOperator, bpy.types.Operator):
    """Recompute the skinning weights for the edited bones (moved, added, deleted, renamed)"""

    bl_idname = "sp4d.recompute_weights"
    bl_label = "Recompute Weights"

    def execute(self, context):
        from .refine import recompute_weights

        try:
            n = recompute_weights(*_rigged(context))
        except (ValueError, RuntimeError) as exc:
            remember_failure(context, _code_of(exc), re.sub(r"^\[\w+\] ", "", str(exc)))
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        remember_failure(context, None, "")
        self.report({"INFO"}, f"SP4D: weights recomputed for {n} bones")
        return {"FINISHED"}


class SP4D_OT_import_views(_RigOperator, bpy.types.Operator):
    """Add cameras around the object showing each generated view as a background"""

    bl_idname = "sp4d.import_views"
    bl_label = "Import Generated Views"

    def execute(self, context):
        from .inspect_views import import_views

        arm = _rigged(context)[1]
        try:
            coll = import_views(job_path(arm))
        except (KeyError, OSError, ValueError, TypeError) as exc:
            self.report({"ERROR"}, f"SP4D: no generated views to import ({exc})")
            return {"CANCELLED"}
        self.report({"INFO"}, f"SP4D: {len(coll.objects)} view cameras in '{coll.name}'")
        return {"FINISHED"}


class SP4D_OT_export_orbits(bpy.types.Operator):
    """Write the orbit videos of a generated job: an MP4 per generated view and a grid (views/orbit/)"""

    bl_idname = "sp4d.export_orbits"
    bl_label = "Export Orbit Videos"

    directory: bpy.props.StringProperty(name="Job Folder", subtype="DIR_PATH")

    def invoke(self, context, event):
        arm = _rigged(context)[1]
        if arm is not None and not self.directory:
            self.directory = str(job_path(arm) or "")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        try:
            videos = api.export_orbits(bpy.path.abspath(self.directory))
        except api.RigError as exc:
            self.report({"ERROR"}, f"SP4D: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"SP4D: {len(videos)} videos in {videos[0].parent}")
        return {"FINISHED"}


class SP4D_PT_panel(bpy.types.Panel):
    bl_label = "SP4D Rig"
    bl_idname = "SP4D_PT_panel"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SP4D"

    def draw(self, context):
        layout = self.layout
        s = context.scene.sp4d
        col = layout.column()
        col.prop(s, "part_source")
        col.prop(s, "frames")
        col.prop(s, "max_influences")
        col.prop(s, "clip_path")
        col.prop(s, "image")
        col.prop(s, "image_path")
        col.prop(s, "animate_still")
        row = col.row(align=True)
        row.prop(s, "motion_bucket")
        row.prop(s, "svd_seed")
        row = col.row(align=True)
        row.operator(SP4D_OT_generate_rig.bl_idname, icon="ARMATURE_DATA")
        row.operator(SP4D_OT_rig_clip.bl_idname, icon="FILE_MOVIE")
        row.operator(SP4D_OT_rig_image.bl_idname, icon="IMAGE_DATA")
        wm = context.window_manager
        prompt = setup_prompt(context)
        if prompt:
            text, op, url = prompt
            box = col.box()
            for i in range(0, len(text), 60):
                box.label(text=text[i:i + 60], icon="ERROR" if i == 0 else "NONE")
            if op:
                box.operator(op)
            if url:
                box.operator("wm.url_open", text="Open the page", icon="URL").url = url
        if wm.sp4d_status:
            col.label(text=wm.sp4d_status)
            col.prop(wm, "sp4d_progress", text="")
        if wm.sp4d_model:
            col.label(text=wm.sp4d_model)
        warmup.schedule()
        layout.operator(SP4D_OT_add_sample.bl_idname, icon="MONKEY")
        layout.operator(SP4D_OT_export_orbits.bl_idname, icon="RENDER_ANIMATION")
        obj, arm = _rigged(context)
        if arm is None:
            return
        from .refine import stored_summary

        box = layout.box()
        box.label(text=f"Parts of '{arm.name}'")
        for p in stored_summary(arm):
            row = box.row()
            row.label(text=p["bone"])
            row.label(text=f"{p['vertices']} verts")
        col = layout.column(align=True)
        col.operator(SP4D_OT_merge_parts.bl_idname)
        col.operator(SP4D_OT_limit_influences.bl_idname)
        col.operator(SP4D_OT_recompute_weights.bl_idname)
        col.operator(SP4D_OT_import_views.bl_idname, icon="CAMERA_DATA")


CLASSES = (SP4D_OT_generate_rig, SP4D_OT_rig_clip, SP4D_OT_rig_image, SP4D_OT_add_sample, SP4D_OT_setup_backend,
           SP4D_OT_accept_licence, SP4D_OT_download_weights, SP4D_OT_accept_svd_licence,
           SP4D_OT_download_svd_weights, SP4D_OT_merge_parts, SP4D_OT_limit_influences,
           SP4D_OT_recompute_weights, SP4D_OT_import_views, SP4D_OT_export_orbits, SP4D_PT_panel)
