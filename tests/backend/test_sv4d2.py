"""SV4D 2.0 in SP4D's RGB branch: its keys, strict loading, RGB-only generation and orbit videos."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.errors import BackendError
from backend.generate import generate
from backend.jobdir import JobDir, read_png
from backend.sp4d.checkpoint import build_model, load_config, load_model
from backend.sp4d.sv4d2 import SV4D2, sv4d2_key_shapes

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


def test_sv4d2_generates_rgb_views_and_orbit_videos(tiny_sv4d2, tmp_path):
    from backend.video import read_mp4

    frames = load_file(FIX / "sampling.safetensors")["input.frames_u8"].numpy()
    clip = tmp_path / "clip"
    clip.mkdir()
    import cv2

    for i, f in enumerate(frames):
        cv2.imwrite(str(clip / f"frame_{i}.png"), f[:, :, ::-1])
    rec = generate(clip, tmp_path / "job", {"model": "sv4d2", "weights": str(tiny_sv4d2), "device": "cpu",
                                            "model_config": str(FIX / "config.yaml"), "steps": 2,
                                            "image_size": 48, "preprocess": False})
    job = JobDir(tmp_path / "job")
    assert rec["source"] == "sv4d2" and rec["views"] == 13 and len(rec["orbits"]) == 14
    assert read_png(job.view_image("rgb", 12, 3)).shape == (48, 48, 3)
    assert not job.view_image("parts", 1, 0).exists()
    v5 = read_mp4(job.root / "views" / "orbit" / "v05.mp4")
    assert v5.shape[0] == 4 and np.isfinite(v5).all()
