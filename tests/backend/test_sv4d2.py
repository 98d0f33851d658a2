"""SV4D 2.0 in SP4D's RGB branch: its keys, strict loading, RGB-only generation and orbit videos."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.errors import BackendError
from backend.generate import generate
from backend.jobdir import JobDir, read_png
from backend.sp4d.checkpoint import build_model, load_config, load_model
from backend.sp4d.sv4d2 import SV4D2, SV4D2Pipeline, sv4d2_key_shapes
from backend.sp4d.sv4d2_recipe import guidance_scale, padded_order, relative_angles, window_angles, window_plan

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
FIX = FIXTURES / "sp4d_tiny"


def tsv_shapes(path: Path) -> dict[str, tuple]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")[:2]
        out[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return out


def test_full_size_sv4d2_keys_from_the_official_sp4d_list():
    """SV4D 2.0's keys (SP4D's net1 without 'net1.', the conditioner, the decoder: reference §1)
    equal those of our SV4D2 built from sp4d.yaml on the meta device; 1,924 UNet tensors."""
    want = sv4d2_key_shapes(tsv_shapes(FIXTURES / "sp4d_state_dict.tsv"))
    model = build_model(load_config(), "meta", "sv4d2")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == want
    assert sum(k.startswith("model.diffusion_model.") for k in got) == 1924


@pytest.fixture(scope="module")
def tiny_sv4d2(tmp_path_factory) -> Path:
    """SV4D 2.0 tiny weights: the SP4D fixture's RGB branch, conditioner and decoder, SV4D 2.0 names."""
    sd = load_file(FIX / "weights.safetensors")
    keep = sv4d2_key_shapes({k: tuple(v.shape) for k, v in sd.items()})
    out = {}
    for k, v in sd.items():
        name = k.replace("model.diffusion_model.net1.", "model.diffusion_model.")
        if name in keep and (k.startswith("model.diffusion_model.net1.") or not k.startswith("model.diffusion_model.")):
            out[name] = v
    path = tmp_path_factory.mktemp("sv4d2") / "sv4d2.safetensors"
    save_file(out, path)
    return path


def test_sv4d2_loads_strictly_and_sp4d_weights_do_not(tiny_sv4d2):
    cfg = load_config(FIX / "config.yaml")
    m = load_model(tiny_sv4d2, cfg, kind="sv4d2")
    assert isinstance(m, SV4D2) and m.latent_channels == 4
    sp4d = load_file(FIX / "weights.safetensors")
    assert torch.equal(m.model.diffusion_model.out[2].weight, sp4d["model.diffusion_model.net1.out.2.weight"])
    with pytest.raises(BackendError) as e:
        load_model(FIX / "weights.safetensors", cfg, kind="sv4d2")
    assert e.value.code == "bad_checkpoint" and "SV4D 2.0" in e.value.message


def official_plan(n: int, t: int = 12) -> list[tuple[int, int | None]]:
    """(start, anchor) of the official sv4d2 loop (simple_video_sample_4d2.py L186-205, main
    0ad7de9): starts range(0, n, t), a start past n - t moved back to n - t; views conditioned
    (cond_mv) from the second window on, on the views of its first frame."""
    out = []
    for t0 in range(0, n, t):
        t0 = n - t if t0 + t > n else t0
        out.append((t0, None if t0 == 0 else t0))
    return out


def test_window_plan_is_the_official_one_where_the_official_loop_runs():
    """12 ≤ n < 24 (the official loop's range: from 24 its second anchor is not generated yet)."""
    for n in range(12, 24):
        assert [(w.start, w.anchor) for w in window_plan(n)] == official_plan(n), n
    plan = window_plan(21)  # the script's default clip
    assert [w.frames for w in plan] == [tuple(range(12)), tuple(range(9, 21))]
    assert [w.anchor for w in plan] == [None, 9]


def test_window_plan_beyond_the_official_range_anchors_on_generated_frames():
    for n in (24, 30, 40, 64):
        plan = window_plan(n)
        generated: set[int] = set()
        for w in plan:
            assert len(w.frames) == 12 and w.frames == tuple(range(w.start, w.start + 12))
            assert (w.anchor is None) == (w is plan[0]) and (w.anchor is None or w.anchor in generated)
            generated |= set(w.frames)
        assert generated == set(range(n))
    assert [(w.start, w.anchor) for w in window_plan(30)] == [(0, None), (11, 11), (18, 18)]
    with pytest.raises(ValueError):
        window_plan(11)


def test_padded_order_plays_a_short_clip_back_and_forth():
    assert padded_order(4) == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3]
    assert padded_order(1) == [0] * 12
    assert padded_order(12) == list(range(12)) and padded_order(21) == list(range(21))


def test_sv4d2_cameras_relative_to_the_input_view():
    """Script L149-162, L201-204: azimuths 0, 60, 120, 180, 240 (input first), elevation 0 -> the
    4 views at +60, +120, +180, +240 degrees, relative polar pi/2; time-major over 12 frames."""
    polar, az = relative_angles()
    np.testing.assert_allclose(np.degrees(az), [60, 120, 180, 240], atol=1e-9)
    np.testing.assert_allclose(polar, np.full(4, np.pi / 2), atol=0)
    p48, a48 = window_angles()
    assert p48.dtype == torch.float64 and a48.shape == (48,) and torch.equal(a48[4:8], a48[:4])


def test_sv4d2_guidance_per_frame_and_view():
    """LinearPredictionGuider(max_scale=cfg 2.0, num_frames=48) with its default min_scale 1.0
    (helpers L549-557; guiders.py L60-86: linspace(min, max, 48) over the time-major latents; the
    script's min_cfg 2.0 is not passed): frame t, view v gets 1 + (4t + v)/47, e.g."""
    s = guidance_scale()
    assert s.shape == (48,) and s.dtype == torch.float32
    derived = {(0, 0): 1.0, (0, 3): 1 + 3 / 47, (5, 2): 1 + 22 / 47, (6, 0): 1 + 24 / 47, (11, 3): 2.0}
    for (t, v), want in derived.items():
        assert abs(float(s[4 * t + v]) - want) < 1e-6, (t, v)
    assert abs(float(s[1] - s[0]) - 1 / 47) < 1e-6


@pytest.fixture(scope="module")
def tiny_pipe(tiny_sv4d2):
    return SV4D2Pipeline(load_model(tiny_sv4d2, load_config(FIX / "config.yaml"), kind="sv4d2"))


def input_clip(n: int) -> torch.Tensor:
    """n frames (n, 3, 48, 48) in [-1, 1] from the fixture's 4 input frames (varied per frame)."""
    f = load_file(FIX / "sampling.safetensors")["input.frames_u8"].permute(0, 3, 1, 2).float() / 255 * 2 - 1
    return torch.stack([f[i % 4].roll(i // 4, dims=-1) for i in range(n)])


def test_window_conditioning_on_the_anchor_views(tiny_pipe):
    """First window: cond_view zero in both halves (cond_mv False: script L205, helpers L960-962);
    a later window: the anchors' VAE latents in the conditional half, zero in the unconditional
    (force_uc_zero_embeddings), and they reach the network."""
    model = tiny_pipe.model
    polar, az = window_angles()
    frames = input_clip(12)
    gen = torch.Generator().manual_seed(0)
    c, uc = model.condition_window(frames, None, polar, az, torch.Generator().manual_seed(0))
    assert c["crossattn"].shape[:2] == (1, 12) and c["concat"].shape[0] == 48 and c["cond_view"].shape[0] == 4
    assert not c["cond_view"].any() and not uc["cond_view"].any()
    anchors = frames[:4].flip(-1)
    ca, uca = model.condition_window(frames, anchors, polar, az, torch.Generator().manual_seed(0))
    assert torch.equal(ca["concat"], c["concat"])  # the same draws for the frames
    assert ca["cond_view"].abs().amax() > 0.01 and not uca["cond_view"].any()
    batch = model.batch_cond(ca, uca)
    assert torch.equal(batch["cond_view"][4:], ca["cond_view"])
    x = torch.randn(96, 4, 6, 6, generator=gen)
    sigma = torch.full((96,), 3.0)
    with torch.inference_mode():
        d_anchor = model.denoise(x, sigma, batch)
        d_none = model.denoise(x, sigma, model.batch_cond(c, uc))
    assert (d_anchor[48:] - d_none[48:]).abs().amax() > 1e-4  # the anchors change the conditional half


def test_views_follow_the_window_plan(tiny_pipe):
    """views() on 13 frames = window 0..11 unconditioned, then window 1..12 conditioned on window 1's
    views of frame 1 (its anchor), which replace frames 1..11; the same draws in the same order."""
    frames = input_clip(13)
    noise = torch.randn(48, 4, 6, 6, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        rgb, parts = tiny_pipe.views(frames, steps=1, seed=7, noise=noise)
        gen = torch.Generator().manual_seed(7)
        r = tiny_pipe.recipe
        first = tiny_pipe.sample_window(frames[:12], None, noise, r, steps=1, generator=gen).view(12, 4, 3, 48, 48)
        same_draws = torch.Generator()
        same_draws.set_state(gen.get_state())
        second = tiny_pipe.sample_window(frames[1:13], first[1] * 2 - 1, noise, r, steps=1,
                                         generator=gen).view(12, 4, 3, 48, 48)
        unanchored = tiny_pipe.sample_window(frames[1:13], None, noise, r, steps=1,
                                             generator=same_draws).view(12, 4, 3, 48, 48)
    assert parts is None and rgb.shape == (13, 4, 3, 48, 48)
    assert torch.equal(rgb[0], first[0]) and torch.equal(rgb[1:], second)
    assert not torch.equal(second, unanchored)


def test_a_short_clip_is_padded_and_cut_back(tiny_pipe):
    frames = input_clip(3)
    with torch.inference_mode():
        rgb, _ = tiny_pipe.views(frames, steps=1, seed=1)
    assert rgb.shape == (3, 4, 3, 48, 48) and torch.isfinite(rgb).all()


def test_sv4d2_generates_rgb_views_and_orbit_videos(tiny_sv4d2, tmp_path):
    from backend.video import read_mp4

    frames = load_file(FIX / "sampling.safetensors")["input.frames_u8"].numpy()
    clip = tmp_path / "clip"
    clip.mkdir()
    import cv2

    for i, f in enumerate(frames):
        cv2.imwrite(str(clip / f"frame_{i}.png"), f[:, :, ::-1])
    rec = generate(clip, tmp_path / "job", {"model": "sv4d2", "weights": str(tiny_sv4d2), "device": "cpu",
                                            "model_config": str(FIX / "config.yaml"), "steps": 1,
                                            "image_size": 48, "preprocess": False})
    job = JobDir(tmp_path / "job")
    # SV4D 2.0's recipe: 21 frames (the script's n_frames) × the input view and 4 generated views
    assert rec["source"] == "sv4d2" and rec["frames"] == 21 and rec["views"] == 5 and len(rec["orbits"]) == 6
    assert read_png(job.view_image("rgb", 4, 20)).shape == (48, 48, 3)
    assert not job.view_image("rgb", 5, 0).exists() and not job.view_image("rgb", 1, 21).exists()
    assert not job.view_image("parts", 1, 0).exists()
    cams = json.loads(job.cameras_json.read_text())
    assert [round(c["azimuth_deg"], 6) for c in cams["views"]] == [0, 60, 120, 180, 240]
    v4 = read_mp4(job.root / "views" / "orbit" / "v04.mp4")
    assert v4.shape[:3] == (21, 48, 48) and read_mp4(job.root / "views" / "orbit" / "grid.mp4").shape[0] == 21
