"""The generation stage with the SP4D model: input frames -> views/rgb, views/parts."""

from __future__ import annotations

import threading

import numpy as np

from sp4d_job.arrays import world_vertices

from .cameras import cameras_record, normalisation, orbit_cameras
from .clip_input import prepare_frames, read_clip
from .context import StageContext
from .errors import BackendError
from .jobdir import JobDir, digest, read_png, write_json_atomic, write_png_atomic

STAGE = "generate"
MODEL_LOCK = threading.Lock()  # one generation at a time in a backend process (one model, one GPU)


def clip_length(s: dict) -> int:
    """Input frames the job's model generates: ``frames`` for SP4D, ``sv4d2_frames`` (the official
    21) for SV4D 2.0's recipe."""
    return s["sv4d2_frames"] if s["model"] == "sv4d2" else s["frames"]


def input_frames(job: JobDir, spec: dict, s: dict, ctx: StageContext | None = None
                 ) -> tuple[np.ndarray, list[str]]:
    """The model-ready frames (T, S, S, 3) uint8 of this job, written to input/. A picture, or
    with animate_still frames that do not move, are animated by SVD first (generate_svd.py)."""
    from .generate_svd import svd_input

    src = spec["source"]
    size, t = s["image_size"], clip_length(s)
    warnings: list[str] = []
    animated = svd_input(job, ctx or StageContext(), spec, s)
    clip = src.get("path") if src.get("kind") == "clip" else (job.root / src["clip"] if src.get("clip") else None)
    if animated is not None or clip is not None:  # a clip file, frames Blender rendered (source.clip), SVD's
        frames = animated if animated is not None else read_clip(clip)
        if s["preprocess"] or animated is not None:  # SVD's 16:9 frames are never model-ready
            prep = prepare_frames(frames, t, size)
            out, masks, warnings = prep.frames, prep.masks, prep.warnings
        else:  # frames are already model-ready: check, composite on white
            from .clip_input import frames_at, pick_frames

            chosen = list(frames_at(frames, pick_frames(len(frames), t)))
            if chosen[0].shape[:2] != (size, size):
                raise BackendError("bad_input", f"with preprocess off the frames must be {size}×{size}, "
                                   f"got {chosen[0].shape[1]}×{chosen[0].shape[0]}")
            a = np.stack([f[:, :, 3:] for f in chosen]).astype(np.float32) / 255
            out = np.round(np.stack([f[:, :, :3] for f in chosen]) * a + 255 * (1 - a)).astype(np.uint8)
            masks = a[..., 0] > 0.5
        for i, (f, m) in enumerate(zip(out, masks, strict=True)):
            write_png_atomic(job.input_frame(i), f)
            write_png_atomic(job.input_mask(i), (m * 255).astype(np.uint8))
        return out, warnings
    paths = sorted((job.root / "input").glob("frame_*.png"))
    if not paths:
        raise BackendError("bad_input", "the job has no input frames (input/frame_TTT.png) and no clip")
    out = np.stack([read_png(p) for p in paths])
    if out.shape[1:3] != (size, size):
        raise BackendError("bad_input", f"input frames are {out.shape[2]}×{out.shape[1]}, expected {size}×{size}")
    return out, warnings


def _load_noise(path: str | None):
    """Optional fixed noise (safetensors: sampler.randn, cond.noise.*) for exact reproduction."""
    if not path:
        return None, None
    from safetensors.torch import load_file

    z = load_file(str(path))
    cond = {k[len("cond.noise."):]: v.float() for k, v in z.items() if k.startswith("cond.noise.")}
    return z["sampler.randn"].float(), cond or None


def _generate(ctx: StageContext, s: dict, options, frames: np.ndarray, warnings: list[str]):
    """The model's views of ``frames``: (rgb, parts) tensors (frames, views, 3, H, W) in [0, 1]."""
    import torch
    import torch._dynamo

    from .sp4d.memory import TIERS, describe_tier
    from .sp4d.runtime import get_pipeline

    if options.tier:
        ctx.progress(STAGE, 0, 1, f"memory: {describe_tier(TIERS[options.tier])}")
        if s["compile"] not in (None, "auto") and not options.compile:
            warnings.append(f"compile is off in the {options.tier} GB tier (its streamed UNet blocks run eager)")
            ctx.progress(STAGE, 0, 1, f"warning: {warnings[-1]}")
    pipe = get_pipeline(s["weights"], s["model_config"], options, s["model"])
    if s["image_size"] % pipe.image_multiple:
        raise BackendError("bad_input", f"image_size must be a multiple of {pipe.image_multiple} for this model")
    if pipe.apply(options):  # a compile was set up: its graphs are kept for the process's later jobs
        ctx.progress(STAGE, 0, 1, f"compiling the UNet ({options.compile}) during the first step and the decoder "
                     "when decoding: about 3 minutes the first time on this machine, ~30 s when inductor's cache "
                     "holds the graphs; once per backend process (its later jobs reuse them)")
    noise, cond_noise = _load_noise(s["noise_file"])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 * 2 - 1

    def on_step(done, total):
        ctx.progress(STAGE, done, total, f"denoising step {done}/{total}")

    def run():
        with torch.inference_mode():
            cfg, min_cfg = (s["sv4d2_cfg"], s["sv4d2_min_cfg"]) if s["model"] == "sv4d2" else (s["cfg"], s["min_cfg"])
            return pipe.views(x, steps=s["steps"], cfg=cfg, min_cfg=min_cfg, seed=s["seed"], noise=noise,
                              cond_noise=cond_noise, on_step=on_step)

    try:
        try:
            rgb, parts = run()
        except torch._dynamo.exc.TorchDynamoException as exc:
            if not options.compile:
                raise
            # no working compiler toolchain (or a compiler bug): the same job, eager
            pipe.apply(options.replace(compile=None))
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.append(f"torch.compile failed ({first[:200]}); generated without it")
            ctx.progress(STAGE, 0, 1, f"warning: {warnings[-1]}")
            rgb, parts = run()
        except BackendError as exc:
            if exc.code != "numeric_overflow" or options.dtype != torch.float16:
                raise
            # fp16's range exceeded (weights or inputs the measurements never saw): the same job in
            # bf16, whose range is float32's; the model is loaded again in that precision
            options = options.replace(dtype=torch.bfloat16)
            warnings.append("fp16 overflowed; generated in bf16 (set precision to bf16 to skip the first try)")
            ctx.progress(STAGE, 0, 1, f"warning: {warnings[-1]}")
            pipe = get_pipeline(s["weights"], s["model_config"], options, s["model"])
            pipe.apply(options)
            rgb, parts = run()
    except torch.OutOfMemoryError as exc:
        smaller = {"24": "16", "16": "12"}.get(options.tier or "")
        lower = f"set vram to {smaller} (a smaller memory tier)" if smaller else "lower image_size"
        raise BackendError("out_of_memory", f"the GPU ran out of memory while generating ({options.tier} GB tier): "
                           f"{lower}, close other programs using the GPU, or lower decode_chunk") from exc
    return rgb, parts


def run_sp4d(job: JobDir, ctx: StageContext, spec: dict, s: dict, mesh: dict | None) -> dict:
    """Generate the views of ``job`` with SP4D (``s``: its checked settings); returns the stage record."""
    from .sp4d.runtime import use_compile_cache_dir

    # compiled graphs in the user's cache folder, kept for later backend processes: set before
    # torch._dynamo's first import, which fixes inductor's folder for the process
    cache = use_compile_cache_dir()
    from .sp4d.options import RunOptions
    from .sp4d.runtime import with_saved_graphs

    options = with_saved_graphs(RunOptions.from_settings(s), s, cache)  # devices checked before the model loads
    frames, warnings = input_frames(job, spec, s, ctx)
    for w in warnings:
        ctx.progress(STAGE, 0, 1, f"warning: {w}")
    keep = ("steps", "cfg", "min_cfg", "seed", "weights", "model_config", "precision", "device", "model")
    if s["model"] == "sv4d2":  # SP4D's keys (and so its stage digests) stay as they were
        keep += ("sv4d2_cfg", "sv4d2_min_cfg")
    key = digest(STAGE, "sp4d", frames, {k: s[k] for k in keep}, s["noise_file"])
    if job.stage_done(STAGE, key):
        return job.stage_info(STAGE)
    ctx.wait_for(MODEL_LOCK, STAGE, "the model: another job's generation or the warm-up (one at a time)")
    try:
        if s["weights"] in (None, "", "hub"):  # downloaded here with progress, cancellable and resumable;
            from .sp4d import sv4d2  # the pipeline then finds the file in the hub cache
            from .weights import fetch_weights

            repo, name = sv4d2.hub_file(s["model"])
            fetch_weights(ctx, repo=repo, filename=name, accepted=s["accept_licence"])
        rgb, parts = _generate(ctx, s, options, frames, warnings)
    finally:
        MODEL_LOCK.release()
    to_u8 = lambda t: (t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # noqa: E731 (truncation as official)
    n, v = rgb.shape[:2]
    for t in range(n):
        write_png_atomic(job.view_image("rgb", 0, t), frames[t])
        for k in range(v):
            write_png_atomic(job.view_image("rgb", k + 1, t), to_u8(rgb[t, k]))
            if parts is not None:  # SV4D 2.0 (model sv4d2) generates RGB views only
                write_png_atomic(job.view_image("parts", k + 1, t), to_u8(parts[t, k]))
    centre, scale = normalisation(world_vertices(mesh)) if mesh is not None else (np.zeros(3), 1.0)
    source = s["model"]  # 'sp4d' or 'sv4d2'
    azimuths = None
    if parts is None:  # SV4D 2.0's recipe: views at its own azimuths (sv4d2_recipe.py)
        from .sp4d.sv4d2_recipe import SV4D2_RECIPE, relative_angles

        azimuths = [0.0] + [float(np.degrees(a)) for a in relative_angles(SV4D2_RECIPE)[1]]
    cams = orbit_cameras(size=s["image_size"], n_views=v + 1, azimuths_deg=azimuths)
    write_json_atomic(job.cameras_json, cameras_record(cams, n, source, centre, scale, warnings=warnings))
    from .preview import write_preview

    write_preview(job, n, v + 1)
    from .generate import generated_files

    orbits = None
    if parts is None:  # orbit videos are what SV4D 2.0's views are for (views/orbit, video.py)
        from .video import export_orbits

        orbits = export_orbits(job)["videos"]
    job.mark_stage(STAGE, key, outputs=generated_files(job), source=source, frames=n, views=v + 1, warnings=warnings,
                   **({"orbits": orbits} if orbits else {}))
    return job.stage_info(STAGE)
