"""The generation stage with SP4D (tiny fixture model on the CPU) and clip input handling."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from backend.clip_input import prepare_frames, read_clip
from backend.errors import BackendError, Cancelled
from backend.generate import generate
from backend.jobdir import JobDir, read_png
from backend.sp4d.checkpoint import load_config, load_model
from backend.sp4d.compiled import compile_modules, compiled_scope, uncompile_modules
from backend.sp4d.pipeline import SP4DPipeline, match_colours, view_angles, window_starts
from backend.sp4d.split import CFGSplit, replicate

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"  # the official code's outputs (tests/fixtures/README.md)
FIX = FIXTURES / "sp4d_tiny"



@pytest.fixture(scope="module")
def sampling():
    return load_file(FIX / "sampling.safetensors")


@pytest.fixture(scope="module")
def fixture_frames(tmp_path_factory, sampling):
    d = tmp_path_factory.mktemp("frames")
    for i, f in enumerate(sampling["input.frames_u8"].numpy()):
        cv2.imwrite(str(d / f"frame_{i}.png"), f[:, :, ::-1])
    return d


def tiny_settings(**kw):
    s = {"weights": str(FIX / "weights.safetensors"), "model_config": str(FIX / "config.yaml"), "device": "cpu",
         "steps": 3, "image_size": 48, "preprocess": False}
    s.update(kw)
    return s


def expected_images(sampling):
    return ((sampling["decode.out"] + 1) / 2).clamp(0, 1).view(4, 12, 3, 48, 96)


def assert_fixture_images(job: JobDir, sampling) -> None:
    """The job's view PNGs are the fixture's decoded images (±1 level of the official truncation)."""
    ref = (expected_images(sampling) * 255).to(torch.uint8)
    for t in range(4):
        assert np.array_equal(read_png(job.input_frame(t)), sampling["input.frames_u8"][t].numpy())
        assert np.array_equal(read_png(job.view_image("rgb", 0, t)), sampling["input.frames_u8"][t].numpy())
        assert not job.view_image("parts", 0, t).exists()
        for v in range(12):
            rgb = read_png(job.view_image("rgb", v + 1, t)).astype(int)
            parts = read_png(job.view_image("parts", v + 1, t)).astype(int)
            assert np.abs(rgb - ref[t, v, :, :, :48].permute(1, 2, 0).numpy()).max() <= 1
            assert np.abs(parts - ref[t, v, :, :, 48:].permute(1, 2, 0).numpy()).max() <= 1


def test_pipeline_views_reproduce_the_fixture_images(sampling):
    model = load_model(FIX / "weights.safetensors", load_config(FIX / "config.yaml"))
    frames = sampling["input.frames_u8"].permute(0, 3, 1, 2).float() / 255 * 2 - 1
    noise = {k: sampling[f"cond.noise.{k}"].float() for k in ("cond_frames", "cond_view", "cond_motion")}
    with torch.inference_mode():
        rgb, parts = SP4DPipeline(model).views(frames, steps=3, noise=sampling["sampler.randn"], cond_noise=noise)
    ref = expected_images(sampling)
    for got, want in ((rgb, ref[..., :48]), (parts, ref[..., 48:])):
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_generate_writes_the_job_folder_and_resumes(fixture_frames, sampling, tmp_path):
    events = []
    rec = generate(fixture_frames, tmp_path / "job", tiny_settings(noise_file=str(FIX / "sampling.safetensors")),
                   on_event=events.append)
    assert rec["source"] == "sp4d" and rec["frames"] == 4 and rec["views"] == 13
    job = JobDir(tmp_path / "job")
    assert_fixture_images(job, sampling)
    cams = json.loads(job.cameras_json.read_text())
    assert len(cams["views"]) == 13 and cams["part_source"] == "sp4d"
    assert cams["views"][1]["azimuth_deg"] == pytest.approx(360 / 13)
    cap = cv2.VideoCapture(str(job.root / "views" / "preview.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    steps = [e for e in events if e["event"] == "progress" and e["stage"] == "generate"]
    assert [e["step"] for e in steps] == [1, 2, 3] and steps[-1]["eta_s"] == 0
    before = job.stage_info("generate")["finished"]
    generate(fixture_frames, tmp_path / "job", tiny_settings(noise_file=str(FIX / "sampling.safetensors")))
    assert job.stage_info("generate")["finished"] == before


@pytest.mark.parametrize("extra", [{"device": "cpu,cpu"}, {"low_vram": True}], ids=["cfg-split", "low-vram"])
def test_speed_and_memory_modes_reproduce_the_fixture(fixture_frames, sampling, tmp_path, extra):
    """device 'cpu,cpu': the conditional and unconditional halves run in two threads and meet
    for the guidance blend (on two GPUs: 'cuda:0,cuda:1'). low_vram: the conditioner leaves the
    model's device after conditioning. Both give the one-device result."""
    noise = str(FIX / "sampling.safetensors")
    rec = generate(fixture_frames, tmp_path / "job", tiny_settings(noise_file=noise, **extra))
    assert rec["source"] == "sp4d"
    assert_fixture_images(JobDir(tmp_path / "job"), sampling)


def test_replica_on_another_device_is_a_separate_equal_copy():
    unet = load_model(FIX / "weights.safetensors", load_config(FIX / "config.yaml")).model.diffusion_model
    rep = replicate(unet, "cpu")
    pairs = list(zip(unet.state_dict().items(), rep.state_dict().items(), strict=True))
    assert len(pairs) == len(unet.state_dict()) and all(ka == kb for (ka, _), (kb, _) in pairs)
    assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr() for (_, a), (_, b) in pairs)
    # a compiled UNet's copy is eager: its wrappers would call the original's methods
    compile_modules([unet], "layers")
    try:
        assert compiled_scope([replicate(unet, "cpu")]) is None and compiled_scope([unet]) == "layers"
    finally:
        uncompile_modules([unet])


def test_cfg_split_runs_each_new_shape_and_compile_state_one_half_after_the_other(sampling):
    """Compiling is not thread-safe: the first call of a shape, and the first after the compiled
    blocks change, run both halves in the calling thread; later calls in the split's two threads."""
    model = load_model(FIX / "weights.safetensors", load_config(FIX / "config.yaml"))
    frames = sampling["input.frames_u8"].permute(0, 3, 1, 2).float() / 255 * 2 - 1
    polar, az = view_angles(model.n_view)
    threads = []
    plain = model.denoise

    def recording(*args, **kw):
        threads.append(threading.current_thread().name)
        return plain(*args, **kw)

    model.denoise = recording
    split = CFGSplit(model, ["cpu", "cpu"])
    try:
        with torch.inference_mode():
            seen = []

            def guided(size: int):
                angles = torch.from_numpy(np.tile(polar, 4)), torch.from_numpy(np.tile(az, 4))
                c, uc = model.condition(torch.nn.functional.interpolate(frames, size=size), *angles)
                denoise = split.guided(model.batch_cond(c, uc), torch.full((48,), 2.0))
                x = torch.randn(48, 8, size // 8, size // 8)

                def call() -> None:
                    threads.clear()
                    denoise(x, torch.tensor(5.0))
                    seen.append(sorted(set(threads)))

                return call

            call = guided(48)
            call(), call()
            assert compile_modules([model], "blocks") and compiled_scope([model]) == "blocks"
            call(), call()  # compiles, then runs the compiled blocks from two threads
            guided(32)()  # a new shape
    finally:
        uncompile_modules([model])
        split.close()
    one, two = ["MainThread"], [t for t in seen[1] if t.startswith("sp4d-cfg")]
    assert seen[0] == one and len(two) == 2 == len(seen[1])
    assert seen[2:] == [one, two, one]


def test_device_lists_are_checked():
    from backend.sp4d.options import resolve_devices

    assert resolve_devices("cpu, cpu") == ("cpu", "cpu")
    with pytest.raises(BackendError, match="at most two devices"):
        resolve_devices("cpu,cpu,cpu")
    if torch.cuda.device_count() < 2:
        with pytest.raises(BackendError, match="CUDA GPU"):
            resolve_devices("cuda:0,cuda:1")


def test_compiled_graphs_are_kept_in_the_users_cache_folder(tmp_path):
    """The user's TORCHINDUCTOR_CACHE_DIR wins; else XDG_CACHE_HOME (LOCALAPPDATA on Windows),
    else ~/.cache: never the temp folder, which a reboot empties (a 3-minute compile again)."""
    from backend.sp4d.runtime import compile_cache_dir

    assert compile_cache_dir({"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "mine")}) == tmp_path / "mine"
    user = "LOCALAPPDATA" if os.name == "nt" else "XDG_CACHE_HOME"
    assert compile_cache_dir({user: str(tmp_path)}) == tmp_path / "sp4d-blender" / "torchinductor"
    assert compile_cache_dir({}) == Path.home() / ".cache" / "sp4d-blender" / "torchinductor"


def test_a_cache_folder_that_cannot_be_made_leaves_inductors_default(tmp_path):
    """A read-only or broken cache location only loses the cache: the job must still run."""
    from backend.sp4d.runtime import use_compile_cache_dir

    user = "LOCALAPPDATA" if os.name == "nt" else "XDG_CACHE_HOME"
    (tmp_path / "a_file").write_text("not a folder")
    env = {user: str(tmp_path / "a_file")}
    assert use_compile_cache_dir(env) is None and "TORCHINDUCTOR_CACHE_DIR" not in env
    env = {user: str(tmp_path)}
    assert use_compile_cache_dir(env) == tmp_path / "sp4d-blender" / "torchinductor"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "sp4d-blender" / "torchinductor")
    assert (tmp_path / "sp4d-blender" / "torchinductor").is_dir()


def test_compile_true_means_the_fastest_scope():
    from backend.settings import checked

    def compile_scope(value):
        return checked({"compile": value})["compile"]

    assert compile_scope(True) == compile_scope("true") == "layers"  # the scope of docs/perf.md's numbers
    assert compile_scope("blocks") == "blocks" and compile_scope(False) is None and compile_scope(None) is None


def test_unknown_compile_setting_is_a_clear_error(fixture_frames, tmp_path):
    with pytest.raises(BackendError, match="settings.compile must be") as e:
        generate(fixture_frames, tmp_path / "job", tiny_settings(compile="fastest"))
    assert e.value.code == "bad_input"
    assert "generate" not in JobDir(tmp_path / "job").read_status()["stages"]


def test_a_failed_compile_falls_back_to_eager_with_a_warning(fixture_frames, sampling, tmp_path):
    """No working C++ compiler (a real toolchain failure, as on an artist's machine without one):
    the job still runs, uncompiled, reproduces the fixture and records why. Inductor was pointed at
    the user's cache folder (XDG_CACHE_HOME here), not the temp folder a reboot empties."""
    code = ("import sys, json; from backend.generate import generate; "
            "generate(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), on_event=lambda e: print(json.dumps(e))); "
            "import os; print(json.dumps({'TORCHINDUCTOR_CACHE_DIR': os.environ.get('TORCHINDUCTOR_CACHE_DIR')}))")
    settings = tiny_settings(compile="layers", noise_file=str(FIX / "sampling.safetensors"))
    r = subprocess.run([sys.executable, "-c", code, str(fixture_frames), str(tmp_path / "job"), json.dumps(settings)],
                       cwd=ROOT, env={**{k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"},
                                      "PYTHONPATH": str(ROOT), "CXX": "/nonexistent/c++",
                                      "XDG_CACHE_HOME": str(tmp_path / "cache")},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    inductor_dir = json.loads(r.stdout.strip().splitlines()[-1])["TORCHINDUCTOR_CACHE_DIR"]
    assert inductor_dir == str(tmp_path / "cache" / "sp4d-blender" / "torchinductor")
    job = JobDir(tmp_path / "job")
    warnings = job.stage_info("generate")["warnings"]
    assert any("torch.compile failed" in w and "compiler" in w.lower() for w in warnings), warnings
    messages = [json.loads(line).get("message", "") for line in r.stdout.splitlines() if line.startswith("{")]
    assert any(m.startswith("compiling the UNet (layers)") for m in messages), messages
    assert_fixture_images(job, sampling)


def test_long_clip_runs_through_chained_windows(sampling, tmp_path):
    frames = sampling["input.frames_u8"].numpy()
    clip = tmp_path / "long"
    clip.mkdir()
    seq = [frames[i % 4] for i in range(7)]  # 7 frames: windows 0-3 and 3-6 share frame 3
    for i, f in enumerate(seq):
        cv2.imwrite(str(clip / f"{i:02d}.png"), f[:, :, ::-1])
    events = []
    generate(clip, tmp_path / "job", tiny_settings(frames=7, steps=2), on_event=events.append)
    job = JobDir(tmp_path / "job")
    assert all(job.view_image("parts", v, t).exists() for t in range(7) for v in range(1, 13))
    steps = [e["step"] for e in events if e["event"] == "progress" and e["stage"] == "generate"]
    assert steps == [1, 2, 3, 4]  # 2 windows × 2 steps
    assert window_starts(7) == [0, 3] and window_starts(8) == [0, 3, 4]


def test_colour_matching_recovers_gain_and_offset():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 16, 16, generator=g) * 0.8
    gain, off = torch.tensor([1.1, 0.9, 1.0]), torch.tensor([0.02, -0.03, 0.05])
    dst = src * gain.view(1, 3, 1, 1) + off.view(1, 3, 1, 1)
    mask = torch.ones(2, 16, 16, dtype=torch.bool)
    gg, oo = match_colours(src, dst, mask)
    assert torch.allclose(gg, gain, atol=1e-4) and torch.allclose(oo, off, atol=1e-4)


def test_cancel_between_steps_leaves_the_job_consistent(fixture_frames, tmp_path):
    cancel = threading.Event()

    def on_event(e):
        if e["event"] == "progress" and e["stage"] == "generate" and e["step"] >= 1:
            cancel.set()

    with pytest.raises(Cancelled):
        generate(fixture_frames, tmp_path / "job", tiny_settings(), on_event=on_event, cancel=cancel)
    job = JobDir(tmp_path / "job")
    assert "generate" not in job.read_status()["stages"]
    assert not list(job.root.rglob(".*.tmp"))


def _bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00 not a video")
    zero = tmp_path / "zero.png"
    zero.write_bytes(b"")
    return {"no frames": (empty, "has no images"), "unreadable file": (broken, "cannot read any frame"),
            "zero-size image": (zero, "cannot read image"), "missing": (tmp_path / "nope.gif", "does not exist")}


@pytest.mark.parametrize("case", ["no frames", "unreadable file", "zero-size image", "missing"])
def test_bad_clips_get_clear_errors(case, tmp_path):
    path, msg = _bad_inputs(tmp_path)[case]
    with pytest.raises(BackendError, match=msg) as e:
        generate(path, tmp_path / "job", tiny_settings())
    assert e.value.code == "bad_input"
    job = JobDir(tmp_path / "job")
    assert job.job_json.exists() and "generate" not in job.read_status()["stages"]


def test_empty_frames_and_tiny_images_are_rejected(tmp_path):
    white = np.full((64, 64, 4), 255, np.uint8)
    with pytest.raises(BackendError, match="no object found"):
        prepare_frames([white] * 4, 4, 64)
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(BackendError, match="too small"):
        read_clip(tmp_path / "tiny.png")


def test_non_plain_background_warns_and_alpha_is_used(tmp_path):
    rng = np.random.default_rng(0)
    noisy = np.dstack([rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), np.full((96, 96), 255, np.uint8)])
    prep = prepare_frames([noisy] * 2, 4, 64)
    assert prep.warnings and "not plain" in prep.warnings[0]
    rgba = np.zeros((96, 96, 4), np.uint8)
    rgba[30:60, 40:50] = (200, 30, 30, 255)  # a tall red bar on a transparent background
    prep = prepare_frames([rgba], 4, 64)
    assert not prep.warnings and prep.frames.shape == (4, 64, 64, 3)
    ys, xs = np.nonzero(prep.masks[0])
    assert abs((ys.max() + 1 - ys.min()) - 0.9 * 64) <= 2  # longest side 0.9 of the frame
    assert abs((ys.min() + ys.max() + 1) / 2 - 32) <= 1 and abs((xs.min() + xs.max() + 1) / 2 - 32) <= 1
    near = cv2.dilate(prep.masks[0].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (prep.frames[0][~near] > 250).all()  # white away from the object


def write_clip(path: Path, n: int = 21, size: int = 192) -> Path:
    """A clip of an object walking on white, written as its suffix says: a GIF (Pillow), an MP4 (OpenCV's
    mp4v) or, without a suffix, a folder of RGBA PNGs on a transparent background. The object (a body and
    a swinging leg, like the release's sample clips: 21 frames of an animal or a robot) stays inside the
    frame, so the union of its masks is what preprocessing crops to."""
    from PIL import Image

    frames = []
    for i in range(n):
        img = np.zeros((size, size, 4), np.uint8)
        body = (slice(size // 3, size // 2), slice(size // 4 + i, size // 2 + i))
        img[body] = (150, 90, 40, 255)
        leg = size // 2 + int(round(size / 12 * np.sin(i / 3)))
        img[size // 2:3 * size // 4, leg:leg + size // 16] = (60, 60, 160, 255)
        frames.append(img)
    white = [np.where(f[..., 3:] > 0, f, 255).astype(np.uint8)[..., :3] for f in frames]
    if path.suffix == ".gif":
        Image.fromarray(white[0]).save(path, save_all=True, append_images=[Image.fromarray(f) for f in white[1:]],
                                       duration=80, loop=0)
    elif path.suffix == ".mp4":
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (size, size))
        for f in white:
            writer.write(np.ascontiguousarray(f[:, :, ::-1]))
        writer.release()
    else:
        path.mkdir()
        for i, f in enumerate(frames):
            Image.fromarray(f).save(path / f"frame_{i:03d}.png")
    return path


@pytest.mark.parametrize("name", ["walk.gif", "walk.mp4", "walk_rgba"])
def test_clips_are_read_and_prepared(name, tmp_path):
    """GIF, MP4 and a folder of transparent PNGs (the formats of the official release's sample clips, made
    here): every frame read, 4 picked evenly, the object's longest side 0.9 of the 576² frame."""
    frames = read_clip(write_clip(tmp_path / name))
    assert len(frames) == 21
    prep = prepare_frames(frames, 4, 576)
    assert prep.source_indices == [0, 7, 13, 20] and not prep.warnings
    ys, xs = np.nonzero(prep.masks.any(0))
    side = max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min())
    assert 0.85 * 576 <= side <= 0.92 * 576


def test_cli_generate_from_a_clip(fixture_frames, tmp_path):
    cmd = [sys.executable, "-m", "backend", "generate", str(tmp_path / "job"), "--clip", str(fixture_frames),
           "--weights", str(FIX / "weights.safetensors"), "--config", str(FIX / "config.yaml"), "--device", "cpu",
           "--steps", "2", "--image-size", "48", "--no-preprocess"]
    r = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["source"] == "sp4d"
    assert "[generate] 2/2" in r.stderr
    bad = subprocess.run(cmd[:6] + [str(tmp_path / "missing.gif")] + cmd[7:], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error [bad_input]" in bad.stderr
