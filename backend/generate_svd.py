"""The SVD front stage of generation: one picture -> an SVD clip -> SP4D's input frames.

Two jobs need it: a job whose source is one picture (``source: {kind: image, path}``), and a job
with ``animate_still`` whose captured frames (a clip, or the frames Blender rendered of a mesh)
do not move: SP4D would get the same frame four times and the rig no motion to fit joints from.
The picture (alpha flattened on white, fitted whole on SVD's 16:9 canvas: svd.preprocess.fit_on_canvas)
is animated by SVD-XT 1.1 (backend/svd) with the job's motion amount and seed; the clip goes to
input/svd/ (frame_TTT.png, clip.mp4 at fps_id + 1 = 7 fps as the demo writes it, svd.json with the
frames chosen) and svd.frames.choose_frames picks SP4D's ``frames`` input frames from it (most
articulation, no blur). A finished clip with the same picture and settings is reused.
"""

from __future__ import annotations

import numpy as np

from .clip_input import frames_at, pick_frames, read_clip
from .context import StageContext
from .errors import BackendError
from .jobdir import JobDir, digest, read_png, write_json_atomic, write_png_atomic
from .video import write_mp4

STAGE = "generate"
SVD_DIR = "input/svd"
PROBE_FRAMES = 8  # frames of a captured clip compared to decide whether it moves


def svd_picture(job: JobDir, spec: dict, s: dict) -> np.ndarray | None:
    """The picture (H, W, 4) uint8 SVD animates for this job, or None when the job needs no SVD
    (module doc)."""
    src = spec["source"]
    if src.get("kind") == "image":
        if not src.get("path"):
            raise BackendError("bad_input", "an image job needs source.path (the picture)")
        return next(iter(frames_at(read_clip(src["path"]), [0])))
    if not s["animate_still"]:
        return None
    clip = src.get("path") if src.get("kind") == "clip" else (job.root / src["clip"] if src.get("clip") else None)
    if clip is None:
        return None
    frames = read_clip(clip)
    probe = list(frames_at(frames, sorted(set(pick_frames(len(frames), PROBE_FRAMES)))))
    from .svd.frames import is_still

    return probe[0] if is_still(probe) else None


def svd_params(s: dict):
    from .svd.pipeline import SVDParams

    return SVDParams(frames=s["svd_frames"], steps=s["svd_steps"], motion_bucket_id=s["motion_bucket"],
                     width=s["svd_width"], height=s["svd_height"])


def svd_clip(job: JobDir, ctx: StageContext, picture: np.ndarray, s: dict) -> tuple[np.ndarray, dict]:
    """The SVD clip (T, H, W, 3) uint8 of ``picture`` and its record (input/svd/svd.json)."""
    from .generate_sp4d import MODEL_LOCK
    from .svd.preprocess import fit_on_canvas

    params = svd_params(s)
    image = fit_on_canvas(picture, params.width, params.height)
    keep = ("svd_seed", "svd_weights", "svd_config", "precision", "device")
    key = digest("svd", image, vars(params), {k: s[k] for k in keep})
    folder = job.root / SVD_DIR
    record_path = folder / "svd.json"
    paths = [folder / f"frame_{t:03d}.png" for t in range(params.frames)]
    if record_path.is_file() and all(p.is_file() for p in paths):
        import json

        record = json.loads(record_path.read_text())
        if record.get("key") == key:
            ctx.progress(STAGE, 0, 1, "reusing the SVD clip")
            return np.stack([read_png(p) for p in paths]), record
    from .sp4d.options import RunOptions
    from .svd import runtime

    options = RunOptions.from_settings(s)
    ctx.wait_for(MODEL_LOCK, STAGE, "the model: another job's generation or the warm-up (one at a time)")
    try:
        if s["svd_weights"] in (None, "", "hub"):  # downloaded with progress first, as SP4D's (its own licence)
            from .svd.checkpoint import HUB_FILE, HUB_REPO
            from .weights import fetch_weights

            fetch_weights(ctx, repo=HUB_REPO, filename=HUB_FILE, accepted=s["accept_svd_licence"])
        clip = _animate(ctx, runtime.get_pipeline(s["svd_weights"], s["svd_config"], options), options, image,
                        params, s["svd_seed"])
    finally:
        MODEL_LOCK.release()
        if options.offload:
            runtime.release()  # low VRAM: SP4D gets the GPU to itself
    folder.mkdir(parents=True, exist_ok=True)
    write_png_atomic(folder / "picture.png", image)
    for p, f in zip(paths, clip, strict=True):
        write_png_atomic(p, f)
    fps = params.fps_id + 1
    record = {"key": key, "frames": params.frames, "fps": fps, "seed": s["svd_seed"],
              "motion_bucket": params.motion_bucket_id, "size": [params.width, params.height],
              "mp4": "clip.mp4" if write_mp4(folder / "clip.mp4", clip, fps) else None}
    write_json_atomic(record_path, record)
    return clip, record


def _animate(ctx: StageContext, pipe, options, image: np.ndarray, params, seed: int) -> np.ndarray:
    """pipe.generate with the job's options; a failed compile falls back to eager (as SP4D's)."""
    import torch
    import torch._dynamo

    def on_step(done, total):
        ctx.progress(STAGE, done, total, f"SVD: animating the picture, step {done}/{total}")

    def run():
        return pipe.generate(image, params, seed=seed, on_step=on_step)

    if pipe.apply(options):
        ctx.progress(STAGE, 0, 1, f"compiling SVD's UNet and decoder ({options.compile}) during the first step")
    try:
        try:
            return run()
        except torch._dynamo.exc.TorchDynamoException as exc:
            if not options.compile:
                raise
            pipe.apply(options.replace(compile=None))
            ctx.progress(STAGE, 0, 1, f"warning: torch.compile failed ({str(exc).strip()[:200]}); SVD runs eager")
            return run()
    except torch.OutOfMemoryError as exc:
        raise BackendError("out_of_memory", "the GPU ran out of memory while SVD animated the picture: use bf16 "
                           "precision, low_vram, or smaller svd_width/svd_height") from exc


def svd_input(job: JobDir, ctx: StageContext, spec: dict, s: dict) -> list[np.ndarray] | None:
    """SP4D's input frames (RGBA (H, W, 4) uint8 each, in time order) chosen from this job's SVD
    clip, or None when the job needs no SVD."""
    picture = svd_picture(job, spec, s)
    if picture is None:
        return None
    from .svd.frames import choose_frames

    clip, record = svd_clip(job, ctx, picture, s)
    from .generate_sp4d import clip_length

    chosen = choose_frames(clip, clip_length(s))
    if record.get("chosen") != chosen:
        record["chosen"] = chosen
        write_json_atomic(job.root / SVD_DIR / "svd.json", record)
    alpha = np.full(clip.shape[1:3] + (1,), 255, np.uint8)
    return [np.concatenate([clip[i], alpha], axis=2) for i in chosen]
