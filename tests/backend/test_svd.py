"""SVD-XT 1.1 faithfulness: every tensor of the official tiny fixtures, the checkpoint format, the
pipeline's seeding (tests/fixtures/svd/README.md, "SVD reference")."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.errors import BackendError
from backend.sp4d.clip import preprocess
from backend.sp4d.model import edm_scalings
from backend.sp4d.sampling import edm_sigmas, guide, linear_guidance_scale
from backend.svd.checkpoint import build_model, load_config, load_model
from backend.svd.pipeline import SVDParams, SVDPipeline, draws
from backend.svd.preprocess import resize_and_crop, to_model, to_u8

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "fixtures" / "svd"
FIX = REF / "svd_tiny"
TOL = 1e-4  # max|a-b| <= TOL * max|b| per tensor (SVD reference §13)

torch.set_grad_enabled(False)


def close(a, b, tol=TOL):
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = b.abs().max()
    err = (a - b).abs().max()
    assert err <= tol * scale if scale > 0 else err == 0, f"rel err {float(err / scale):.2e}"


def frames_close(a, b):
    """uint8 frames: within one level (SVD reference §13)."""
    assert a.shape == b.shape
    assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1


@pytest.fixture(scope="module")
def tiny_config():
    return load_config(FIX / "config.yaml")


@pytest.fixture(scope="module")
def model(tiny_config):
    return load_model(FIX / "weights.safetensors", tiny_config, keep_unused=True)


@pytest.fixture(scope="module")
def fx():
    return {name: load_file(FIX / f"{name}.safetensors")
            for name in ("sampling", "conditioner", "vae", "denoiser", "preprocess")}


def tsv_shapes(path: Path) -> dict[str, tuple]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        out[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return out


# --- checkpoint -------------------------------------------------------------------------------------
def test_full_size_key_list_loads_strictly_into_our_config(tmp_path):
    """The official key list (2,446 tensors) equals our full model's, built on the meta device;
    a safetensors file with exactly those keys (empty shapes are not written: their header is
    what load checks first) passes the strict check."""
    from backend.sp4d.checkpoint import check_keys

    expected = tsv_shapes(REF / "svd_xt_1_1_state_dict.tsv")
    model = build_model(load_config(), "meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(expected) == 2446
    check_keys(ours, expected, "SVD-XT 1.1")
    assert sum(int(np.prod(s)) for s in ours.values()) == 2_389_819_785


def test_tiny_weights_strict_and_bad_files_rejected(tiny_config, tmp_path):
    sd = load_file(FIX / "weights.safetensors")
    sd.pop("model.diffusion_model.out.2.bias")
    sd["model.diffusion_model.extra"] = torch.zeros(1)
    save_file(sd, tmp_path / "bad.safetensors")
    with pytest.raises(BackendError) as e:
        load_model(tmp_path / "bad.safetensors", tiny_config)
    assert e.value.code == "bad_checkpoint" and "1 missing" in e.value.message and "1 unexpected" in e.value.message
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BackendError) as e:
        load_model(tmp_path / "junk.safetensors", tiny_config)
    assert e.value.code == "bad_checkpoint"
    m = load_model(FIX / "weights.safetensors", tiny_config)  # inference never runs these
    assert m.first_stage_model.encoder is None
    assert m.conditioner.embedders[3].encoder.decoder is None


def test_real_size_constants():
    """σ schedule, c_noise, guidance scale, the conditioning vector and x_init's factor at real size."""
    from backend.svd.conditioner import conditioning

    k = load_file(REF / "svd_xt_1_1_constants.safetensors")
    sig = edm_sigmas(30, 0.002, 700.0)
    close(sig, k["sigmas_30"], 1e-6)
    close(edm_scalings(sig[:-1])[3], k["c_noise_30"], 1e-6)
    close(linear_guidance_scale(25, 1.5, 3.0), k["guider_scale_25"], 1e-7)
    close(torch.sqrt(1.0 + sig[0] ** 2.0).view(1), k["x_init_factor"], 1e-7)
    from backend.sp4d.conditioner import SinusoidalEmbedder

    emb = torch.nn.ModuleList([torch.nn.Identity(), SinusoidalEmbedder(256), SinusoidalEmbedder(256),
                               torch.nn.Identity(), SinusoidalEmbedder(256)])
    img = torch.zeros(1, 3, 8, 8)
    embedders = torch.nn.ModuleList([_Const(torch.zeros(1, 4)), emb[1], emb[2], _Const(torch.zeros(1, 4, 1, 1)),
                                     emb[4]])
    c, uc = conditioning(embedders, img, img, 25, 6, 127, 0.02)
    close(c["vector"][0], k["vector_fps6_mb127_ca0.02"], 1e-5)  # float32 sin/cos of 127·f_k
    assert torch.equal(c["vector"], uc["vector"])


class _Const(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return self.value


# --- conditioner --------------------------------------------------------------------------------------
def test_conditioner_clip_and_scalars(model, fx):
    f = fx["conditioner"]
    x = to_model(f["clip.in_u8"][0].numpy())
    close(preprocess(x), f["clip.preprocessed"])
    clip = model.conditioner.embedders[0]
    close(clip.open_clip.model.visual(f["clip.preprocessed"]), f["clip.tower_out"])
    close(clip(x)[:, None], f["clip.embedder_out"])
    close(model.conditioner.embedders[1](f["scalar.in"]), f["scalar.emb_fps"], 1e-6)
    close(model.conditioner.embedders[4](f["scalar.in"]), f["scalar.emb_cond_aug"], 1e-6)


# --- VAE ----------------------------------------------------------------------------------------------
def test_vae_encoders(model, fx):
    f = fx["vae"]
    x = torch.cat([to_model(u) for u in f["enc.in_u8"].numpy()])
    assert torch.equal(x, f["enc.in"])
    enc = model.conditioner.embedders[3]
    close(enc.encoder.moments(x), f["enc.moments"])
    close(enc(x), f["enc.embedder_out"])
    close(enc.encoder.encode(x), f["enc.mode"])
    close(model.first_stage_model.encoder(x), f["first_stage_enc.moments"])


def test_video_decoder_depends_on_the_chunk(model, fx):
    f = fx["vae"]
    close((1.0 / model.scale_factor) * f["dec.z"], f["dec.z_unscaled"], 0)
    close(model.decode(f["dec.z"], chunk=6), f["dec.out_full"])
    close(model.decode(f["dec.z"], chunk=4), f["dec.out_chunked"])


# --- denoiser -----------------------------------------------------------------------------------------
def test_one_denoiser_call(model, fx):
    f = fx["denoiser"]
    cond = {k: f[f"in.c.{k}"] for k in ("crossattn", "concat", "vector")}
    x, sigma = f["in.x"], f["in.sigma"]
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma)
    close(c_noise, f["net_in.c_noise"], 1e-6)
    close(x * c_in.view(-1, 1, 1, 1), f["net_in.x_scaled"], 1e-6)
    close(model.network(f["net_in.x_scaled"], f["net_in.c_noise"], cond, 6), f["net_out"])
    close(model.denoise(x, sigma, cond, 6), f["out.denoised"])
    close(model.denoise(x, sigma, cond, 6, image_only=True), f["out.denoised_image_only"])


# --- the whole sampling chain ------------------------------------------------------------------------
def test_sampling_chain_step_by_step(model, fx):
    f = fx["sampling"]
    T = 6
    image = to_model(f["input.image_u8"][0].numpy())
    assert torch.equal(image, f["input.image"])
    assert torch.equal(image + 0.02 * f["noise.cond_aug"], f["input.cond_frames"])
    close(model.conditioner.embedders[0](image), f["cond.clip.embedding"])
    close(model.conditioner.embedders[3].encoder.moments(f["input.cond_frames"]), f["cond.vae.moments"])
    c, uc = model.condition(image, f["noise.cond_aug"], T, 6, 127, 0.02)
    for k in ("crossattn", "concat", "vector"):
        close(c[k], f[f"cond.c_raw.{k}"])
        close(uc[k], f[f"cond.uc_raw.{k}"])
    cond = model.batch_cond(c, uc, T)
    for k in ("crossattn", "concat", "vector"):
        close(cond[k], f[f"denoiser_in.c.{k}"])
    sigmas = edm_sigmas(3, 0.002, 700.0)
    close(sigmas, f["sampler.sigmas"], 0)
    scale = linear_guidance_scale(T, 1.5, 3.0)
    close(scale, f["guider.scale"], 0)
    x = f["noise.init"] * torch.sqrt(1.0 + sigmas[0] ** 2.0)
    close(x, f["sampler.x_init"], 0)
    for i in range(3):
        s = f[f"step{i}.denoiser_in.sigma"]
        d = model.denoise(f[f"step{i}.denoiser_in.x"], s, cond, T)
        close(d, f[f"step{i}.denoiser_out"])
        close(guide(f[f"step{i}.denoiser_out"], scale), f[f"step{i}.denoised"], 1e-6)
        if i == 0:
            _, _, c_in, c_noise = edm_scalings(s)
            close(model.network(f["step0.net_in.x_scaled"], f["step0.net_in.c_noise"], cond, T), f["step0.net_out"])
        x_out = x + (sigmas[i + 1] - sigmas[i]) * (x - guide(d, scale)) / sigmas[i]
        close(x_out, f[f"step{i}.x_out"])
        x = f[f"step{i}.x_out"]
    close(model.decode(f["decode.z"], chunk=4), f["decode.out"])
    frames_close(to_u8(f["decode.out"]), f["output.frames_u8"].numpy())


def test_pipeline_end_to_end_with_the_stored_draws(model, fx):
    """generate(): the demo path from the u8 picture to u8 frames; the seed reproduces the draws."""
    f = fx["sampling"]
    params = SVDParams(frames=6, steps=3, decoding_t=4, width=48, height=32)
    d = draws(params, 1)
    assert torch.equal(d["cond_aug"], f["noise.cond_aug"]) and torch.equal(d["init"], f["noise.init"])
    pipe = SVDPipeline(model)
    seen = []
    out = pipe.generate(f["input.image_u8"][0].numpy(), params, seed=1, on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    frames_close(out, f["output.frames_u8"].numpy())
    pipe.apply(pipe.options.replace(offload="cpu", cfg_batch="sequential"))  # low VRAM: CFG halves one by one
    frames_close(pipe.generate(f["input.image_u8"][0].numpy(), params, seed=1), f["output.frames_u8"].numpy())
    pipe.apply(pipe.options.replace(offload=None, cfg_batch="joint"))
    with pytest.raises(BackendError) as e:
        pipe.generate(f["input.image_u8"][0].numpy(), SVDParams(width=50, height=32))
    assert e.value.code == "bad_input"


# --- preprocessing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["wide", "tall"])
def test_resize_and_crop(fx, case):
    f = fx["preprocess"]
    out = resize_and_crop(f[f"{case}.in_u8"][0].numpy(), 48, 32)
    assert np.array_equal(out, f[f"{case}.out_u8"][0].numpy())


def test_bench_svd_runs_on_the_cpu(tmp_path):
    """scripts/bench_svd.py (the lead runs it on a GPU) works: ours only, tiny config."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_svd.py"), "--device", "cpu", "--config",
                        str(FIX / "config.yaml"), "--width", "48", "--height", "32", "--frames", "6", "--steps", "2",
                        "--decoding-t", "4", "--repeats", "1", "--out", str(out)],
                       cwd=ROOT, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["seconds"]["ours_end_to_end_eager"] > 0 and "ours_unet_call_eager" in r.stdout
