"""SP4D network faithfulness: every tensor of the official fixtures, and the checkpoint format."""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.errors import BackendError
from backend.sp4d import memory
from backend.sp4d.checkpoint import build_model, check_keys, load_config, load_model, resolve_weights
from backend.sp4d.clip import preprocess
from backend.sp4d.model import edm_scalings
from backend.sp4d.options import OpChoices, RunOptions, configure
from backend.sp4d.pipeline import SP4DPipeline
from backend.sp4d.sampling import edm_sigmas, guide, linear_guidance_scale

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"  # the official code's outputs (tests/fixtures/README.md)
FIX = FIXTURES / "sp4d_tiny"
TOL = 1e-4  # max|a-b| <= TOL * max|b| per tensor (reference README §7)

torch.set_grad_enabled(False)


def close(a, b, tol=TOL):
    a, b = a.float(), b.float()
    assert a.shape == b.shape
    scale = b.abs().max()
    err = (a - b).abs().max()
    assert err <= tol * scale if scale > 0 else err == 0, f"rel err {float(err / scale):.2e}"


@pytest.fixture(scope="module")
def tiny_config():
    return load_config(FIX / "config.yaml")


@pytest.fixture(scope="module")
def model(tiny_config):
    return load_model(FIX / "weights.safetensors", tiny_config)


def u8_to_model(u8):
    return u8.permute(0, 3, 1, 2).float() / 255 * 2 - 1


@contextmanager
def choices(module, **ops):
    """The module's ops with ``ops`` changed for the block, the defaults again after it."""
    configure(module, OpChoices(**ops))
    try:
        yield
    finally:
        configure(module, OpChoices())


def test_full_model_has_exactly_the_official_keys_and_shapes():
    expected = {}
    for line in (FIXTURES / "sp4d_state_dict.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        expected[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    sd = build_model(load_config(), "meta").state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert sum(v.numel() for v in sd.values()) == 5_074_722_989


def test_vae_encoder_and_dual_decoder(model):
    v = load_file(FIX / "vae.safetensors")
    close(u8_to_model(v["enc.in_u8"]), v["enc.in"])
    enc = model.conditioner.embedders[1].encoder
    close(enc.moments(v["enc.in"]), v["enc.moments"])
    close(enc.encode(v["enc.in"]), v["enc.mode"])
    close(v["dec.z"] * (1.0 / model.scale_factor), v["dec.z_unscaled"])
    close(model.decode(v["dec.z"]), v["dec.out"])


def test_clip_preprocessing_and_tower(model):
    c = load_file(FIX / "clip.safetensors")
    close(preprocess(u8_to_model(c["pre.in576_u8"])), c["pre.out576"])
    close(preprocess(u8_to_model(c["pre.in512_u8"])), c["pre.out512"])
    visual = model.conditioner.embedders[0].open_clip.model.visual
    close(visual(torch.cat([c["pre.out576"], c["pre.out512"]])), c["tower.out"])
    out = torch.cat([model.conditioner.embedders[0](u8_to_model(c["pre.in576_u8"])),
                     model.conditioner.embedders[0](u8_to_model(c["pre.in512_u8"]))])
    close(out, c["embedder.out"])


def test_clip_tower_keeps_cudnn_attention_off_only_while_it_runs(model):
    """cuDNN attention builds a graph at its first call of each process (0.84 s on an H100 for the
    tower's 32 microsecond calls): the tower runs with the other kernels, the UNet keeps PyTorch's
    choice (cuDNN is its fastest)."""
    clip = model.conditioner.embedders[0]
    seen = []
    hook = clip.open_clip.model.visual.transformer.resblocks[0].register_forward_hook(
        lambda *_: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
    try:
        before = torch.backends.cuda.cudnn_sdp_enabled()
        clip(torch.zeros(1, 3, 64, 64))
        assert seen == [False] and torch.backends.cuda.cudnn_sdp_enabled() == before
        with choices(clip, clip_attention="pytorch"):  # PyTorch's choice, to compare
            clip(torch.zeros(1, 3, 64, 64))
        assert seen == [False, before]
    finally:
        hook.remove()


def test_denoiser_call(model):
    u = load_file(FIX / "unet.safetensors")
    cond = {k[len("in.c."):]: u[k] for k in u if k.startswith("in.c.")}
    _, _, c_in, c_noise = edm_scalings(u["in.sigma"])
    close(c_noise, u["net_in.c_noise"])
    close(u["in.x"] * c_in.view(-1, 1, 1, 1), u["net_in.x_scaled"])
    close(model.network(u["net_in.x_scaled"], u["net_in.c_noise"], cond), u["net_out"])
    close(model.denoise(u["in.x"], u["in.sigma"], cond), u["out.denoised"])
    # the batch is separable: the conditional half alone gives the same result
    half = {"crossattn": cond["crossattn"][1:], "cond_view": cond["cond_view"][12:],
            "cond_motion": cond["cond_motion"][4:], "concat": cond["concat"][48:], "vector": cond["vector"][48:]}
    close(model.denoise(u["in.x"][48:], u["in.sigma"][48:], half), u["out.denoised"][48:])


def test_denoiser_call_channels_last(model):
    """The NHWC layout (GPU speed) gives the fixture's output too, and can be switched back."""
    from backend.sp4d.unet import use_channels_last

    u = load_file(FIX / "unet.safetensors")
    cond = {k[len("in.c."):]: u[k] for k in u if k.startswith("in.c.")}
    unet = model.model.diffusion_model
    use_channels_last(unet)
    try:
        conv = unet.net1.input_blocks[1][0].in_layers[2]
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        close(model.network(u["net_in.x_scaled"], u["net_in.c_noise"], cond), u["net_out"])
    finally:
        use_channels_last(unet, False)
    assert conv.weight.is_contiguous() and not unet.channels_last


def test_layout_follows_the_compile_scope_and_device(model):
    """Channels-last only for the compiled layers on CUDA (the measured gain); set_layout switches
    each distinct UNet once and back."""
    from backend.settings import checked
    from backend.sp4d.options import RunOptions
    from backend.sp4d.unet import set_layout

    def channels_last(scope, device):
        return RunOptions.from_settings(checked({"compile": scope, "device": device}), cuda_count=2).channels_last

    assert channels_last("layers", "cuda:1")
    assert not any(channels_last(s, d) for s, d in (("layers", "cpu"), ("blocks", "cuda"), (None, "cuda")))
    unet = model.model.diffusion_model
    conv = unet.net1.input_blocks[1][0].in_layers[2]
    try:
        set_layout([unet, unet], True)
        assert unet.channels_last and conv.weight.is_contiguous(memory_format=torch.channels_last)
    finally:
        set_layout([unet], False)
    assert not unet.channels_last and conv.weight.is_contiguous()


@pytest.fixture(scope="module")
def sampling():
    return load_file(FIX / "sampling.safetensors")


@pytest.fixture(scope="module")
def conditioned(model, sampling):
    s = sampling
    noise = {k: s[f"cond.noise.{k}"].float() for k in ("cond_frames", "cond_view", "cond_motion")}
    return model.condition(u8_to_model(s["input.frames_u8"]), s["input.polar_rad"], s["input.azimuth_rad"], noise)


def test_conditioner_outputs_and_unconditional_forms(conditioned, sampling, model):
    c, uc = conditioned
    for k in ("crossattn", "concat", "vector", "cond_view", "cond_motion"):
        close(c[k], sampling[f"cond.c.{k}"])
        close(uc[k], sampling[f"cond.uc.{k}"])
    batched = model.batch_cond(c, uc)
    for k in batched:
        close(batched[k], sampling[f"denoiser_in.c.{k}"])


def test_encode_once_conditioning_is_the_per_copy_one_within_its_noise(model, sampling):
    """Without noise draws, each frame is encoded once (4 images, not 64) and shared by its 12 copies;
    the network's input differs from the official one only by the copies' 1e-5 draws. In float64:
    this random tiny encoder's float32 rounding (~1e-4 of its range) is as large as those draws."""
    import copy

    s = sampling
    m = copy.deepcopy(model).double()
    noise = {k: s[f"cond.noise.{k}"].double() for k in ("cond_frames", "cond_view", "cond_motion")}
    frames, angles = u8_to_model(s["input.frames_u8"]).double(), (s["input.polar_rad"], s["input.azimuth_rad"])
    encoded = []
    for e in m.conditioner.embedders[1:]:
        if hasattr(e, "encoder"):
            e.register_forward_hook(lambda mod, args, out: encoded.append(args[0].shape[0]))
    c, uc = m.condition(frames, *angles, noise, per_copy=False)
    m.condition(frames, *angles)  # drawn noise: encoded once too
    assert encoded == [frames.shape[0]] * 2
    encoded.clear()
    ref_c, ref_uc = m.condition(frames, *angles, noise)  # given draws: the official 64 encodes
    assert encoded == [48, 12, 4]
    v = m.n_view
    close(c["concat"][::v], ref_c["concat"][::v], 1e-9)  # each frame's first copy has the official draw
    # the other copies differ by their own 1e-5 draws only: as much as two official runs differ
    other = dict(noise, cond_frames=torch.randn(noise["cond_frames"].shape, generator=torch.Generator().manual_seed(1),
                                                dtype=torch.float64))
    spread = (m.condition(frames, *angles, other)[0]["concat"] - ref_c["concat"]).abs().max()
    err = (c["concat"] - ref_c["concat"]).abs().max()
    assert 0 < err <= 1.5 * spread, (float(err), float(spread))
    for k in ("crossattn", "vector"):
        assert c[k].equal(ref_c[k]) and uc[k].equal(ref_uc[k])
    assert not c["cond_view"].any() and not c["cond_motion"].any()
    batched, ref = m.batch_cond(c, uc), m.batch_cond(ref_c, ref_uc)
    for k in ref:
        assert batched[k].shape == ref[k].shape
        if k not in ("concat", "cond_motion"):  # cond_view: zero for the network either way
            assert batched[k].equal(ref[k]), k


def test_sampler_pieces(sampling):
    close(edm_sigmas(3), sampling["sampler.sigmas"])
    close(linear_guidance_scale(48, 1.0, 3.0), sampling["guider.scale.effective_linear_1_to_3"])
    close(sampling["sampler.randn"] * torch.sqrt(1.0 + edm_sigmas(3)[0] ** 2.0), sampling["sampler.x_init"])


def test_every_denoiser_call_of_the_sampling_run(model, sampling):
    s = sampling
    cond = {k[len("denoiser_in.c."):]: s[k] for k in s if k.startswith("denoiser_in.c.")}
    close(model.network(s["step0.net_in.x_scaled"], s["step0.net_in.c_noise"], cond), s["step0.net_out"])
    sig = s["sampler.sigmas"]
    for i in range(3):
        out = model.denoise(s[f"step{i}.denoiser_in.x"], s[f"step{i}.denoiser_in.sigma"], cond)
        close(out, s[f"step{i}.denoiser_out"])
        d = guide(s[f"step{i}.denoiser_out"], linear_guidance_scale(48))
        close(d, s[f"step{i}.denoised"])
        x = s["sampler.x_init"] if i == 0 else s[f"step{i - 1}.x_out"]
        close(x + (sig[i + 1] - sig[i]) * (x - d) / sig[i], s[f"step{i}.x_out"])


def test_full_sampling_run_and_decode(model, conditioned, sampling):
    c, uc = conditioned
    steps = {}
    z = model.sample(c, uc, sampling["sampler.randn"], steps=3, on_step=lambda i, n, x: steps.update({i: x}))
    for i in range(3):
        close(steps[i], sampling[f"step{i}.x_out"])
    close(model.decode(z), sampling["decode.out"])


def test_memory_tiers_compute_the_same_sampling_run(model, conditioned, sampling):
    """What the 16 and 12 GB tiers change (backend/sp4d/memory.py) leaves the fixture's sampling
    run as it is: the guided step's halves as two UNet calls, and every UNet block streamed from
    host memory for its own forward (here host and device are both the CPU: the same hooks and
    copies run), then put back."""
    c, uc = conditioned
    pipe = SP4DPipeline(model)
    unet = model.model.diffusion_model
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    try:
        pipe.apply(RunOptions(cfg_batch="sequential", unet_resident_gib=0.0))
        assert pipe.streamed is not None and len(pipe.streamed.names) == len(memory.unet_blocks(unet))
        assert unet.net1.middle_block._forward_pre_hooks
        z = model.sample(c, uc, sampling["sampler.randn"], steps=3, sequential=True)
        close(z, sampling["step2.x_out"])
        # the streamed weights are back in host memory between calls, unchanged
        assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    finally:
        pipe.apply(RunOptions())
    assert pipe.streamed is None and not unet.net1.middle_block._forward_pre_hooks
    close(model.sample(c, uc, sampling["sampler.randn"], steps=3), sampling["step2.x_out"])


def test_non_finite_latents_are_a_clear_error(model, sampling):
    """Half precision past its range yields inf/NaN latents: numeric_overflow (generate_sp4d then
    runs the job again in bf16), never images of garbage."""
    frames = u8_to_model(sampling["input.frames_u8"])
    noise = torch.full_like(sampling["sampler.randn"], float("inf"))
    with pytest.raises(BackendError) as e:
        SP4DPipeline(model).window(frames, noise, steps=1)
    assert e.value.code == "numeric_overflow" and "bf16" in e.value.message


def test_blocks_to_stream_take_the_largest_until_the_rest_fits(model):
    unet = model.model.diffusion_model
    total = memory.module_bytes(unet)
    assert memory.blocks_to_stream(unet, total / memory.GIB) == []
    half = memory.blocks_to_stream(unet, total / 2 / memory.GIB)
    sizes = [memory.module_bytes(b) for _, b in half]
    assert sizes == sorted(sizes, reverse=True) and total - sum(sizes) <= total / 2
    assert total - sum(sizes[:-1]) > total / 2  # no block more than needed


def _write(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def test_wrong_checkpoints_name_the_keys(tmp_path, tiny_config):
    sd = load_file(FIX / "weights.safetensors")
    bad = dict(sd)
    bad.pop("model.diffusion_model.net1.out.2.bias")
    bad["model.diffusion_model.extra.weight"] = torch.zeros(3)
    bad["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1, 2, 3, 3)
    _write(tmp_path / "bad.safetensors", bad)
    with pytest.raises(BackendError) as e:
        load_model(tmp_path / "bad.safetensors", tiny_config)
    msg = e.value.message
    assert e.value.code == "bad_checkpoint"
    assert "1 missing: model.diffusion_model.net1.out.2.bias" in msg
    assert "1 unexpected: model.diffusion_model.extra.weight" in msg
    assert "first_stage_model.decoder.conv_in.weight (1, 2, 3, 3) != (32, 4, 3, 3)" in msg


def test_the_conditioners_vae_decoders_are_checked_but_not_kept(tmp_path, tiny_config, model):
    """Official checkpoints hold a decoder for each conditioning VAE, which nothing runs: its keys
    are still required (a file without them is refused, naming them), its tensors are not loaded."""
    from backend.sp4d.vae import ModeOnlyAutoencoder

    vaes = [m for m in model.conditioner.modules() if isinstance(m, ModeOnlyAutoencoder)]
    assert len(vaes) == 3 and all(v.decoder is None and v.post_quant_conv is None for v in vaes)
    assert not any(".decoder." in k or "post_quant_conv" in k for k in model.conditioner.state_dict())
    sd = load_file(FIX / "weights.safetensors")
    dropped = [k for k in sd if k.startswith("conditioner.") and (".decoder." in k or "post_quant_conv" in k)]
    assert dropped
    _write(tmp_path / "no_decoder.safetensors", {k: v for k, v in sd.items() if k != dropped[0]})
    with pytest.raises(BackendError, match=f"1 missing: {dropped[0]}"):
        load_model(tmp_path / "no_decoder.safetensors", tiny_config)


def test_only_safetensors_are_loaded(tmp_path):
    pt = tmp_path / "sp4d.ckpt"
    pt.write_bytes(b"\x80\x04 not loaded")
    with pytest.raises(BackendError, match="only .safetensors"):
        resolve_weights(str(pt))
    garbage = tmp_path / "sp4d.safetensors"
    garbage.write_bytes(b"garbage")
    with pytest.raises(BackendError, match="not a readable safetensors"):
        load_model(garbage, load_config(FIX / "config.yaml"))
    with pytest.raises(BackendError, match="does not exist"):
        resolve_weights(str(tmp_path / "nope.safetensors"))


def test_load_casts_to_the_requested_dtype(tiny_config):
    m = load_model(FIX / "weights.safetensors", tiny_config, dtype=torch.bfloat16)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    u = load_file(FIX / "unet.safetensors")
    cond = {k[len("in.c."):]: u[k] for k in u if k.startswith("in.c.")}
    out = m.denoise(u["in.x"], u["in.sigma"], cond)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    close(out, u["out.denoised"], tol=0.1)  # bf16: loose, see docs/sp4d.md for GPU measurements


def test_check_keys_accepts_an_exact_match():
    check_keys({"a": (1, 2)}, {"a": (1, 2)})


def test_hub_download_offline_gives_a_clear_message(tmp_path):
    code = ("from backend.sp4d.checkpoint import hub_weights\n"
            "from backend.errors import BackendError\n"
            "try:\n    hub_weights()\nexcept BackendError as e:\n    print(e.code, e.message)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("offline") and "hub cache" in r.stdout and "HF_HUB_OFFLINE" in r.stdout, \
        r.stdout + r.stderr


def test_attention_chunking_and_single_key_shortcut_are_exact():
    import torch.nn.functional as F

    from backend.sp4d.layers import Attention

    torch.manual_seed(0)
    a = Attention(32, 2, 16, 8)
    a.ops = OpChoices(sdpa_max_batch_heads=10)  # force several chunks

    def reference(x, c):
        q, k, v = (p(t).view(t.shape[0], t.shape[1], 2, 16).transpose(1, 2) for p, t in
                   ((a.to_q, x), (a.to_k, c), (a.to_v, c)))
        return a.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape[0], x.shape[1], 32))

    x = torch.randn(23, 5, 32)
    c = torch.randn(23, 3, 8)
    assert torch.equal(a(x, c), reference(x, c))
    # one context token: the output no longer depends on x; computed once per row, broadcast
    c1 = torch.randn(23, 1, 8)
    assert a(x, c1).shape == (23, 1, 32)
    close(a(x, c1).expand(23, 5, 32), reference(x, c1), 1e-6)
    norm = torch.nn.LayerNorm(32)
    for ctx in (c, c1):
        close(a.cross(norm, x, ctx), x + reference(norm(x), ctx), 1e-6)


def test_short_attention_equals_fused_attention():
    import torch.nn.functional as F

    from backend.sp4d.functional import short_attention

    g = torch.Generator().manual_seed(0)
    for n, m in ((4, 4), (12, 12), (3, 7)):  # the motion block, the camera block, and unequal lengths
        q, k, v = (torch.randn(6, 2, s, 16, generator=g) * 3 for s in (n, m, m))
        close(short_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), 1e-5)
    half = [t.to(torch.bfloat16) for t in (q, k, v)]
    assert short_attention(*half).dtype == torch.bfloat16


def test_group_norm_by_image_equals_group_norm_on_both_layouts():
    """The compiled graphs' GroupNorm (per-image partial sums, two passes) against PyTorch's: the
    time ResBlocks' 5-D transposed frames view and a contiguous tensor, the VAE's 4-D images in
    NCHW and channels-last memory."""
    import torch.nn.functional as F

    from backend.sp4d.functional import group_norm_by_image

    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(12, generator=g, dtype=torch.float64), torch.randn(12, generator=g, dtype=torch.float64)
    mem = torch.randn(2, 5, 12, 3, 4, generator=g, dtype=torch.float64) * 2 + 7  # (b, frames, c, h, w), offset mean
    img = torch.randn(3, 12, 5, 6, generator=g, dtype=torch.float64) * 2 - 5
    for x in (mem.transpose(1, 2), mem.transpose(1, 2).contiguous(), img,
              img.contiguous(memory_format=torch.channels_last)):
        ref = F.group_norm(x, 4, w, b, 1e-6)
        out = group_norm_by_image(x, 4, w, b, 1e-6)
        assert out.dtype == torch.float64 and out.shape == x.shape
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    half = group_norm_by_image(mem.transpose(1, 2).bfloat16(), 4, w.float(), b.float(), 1e-6)
    assert half.dtype == torch.bfloat16
    close(half.double(), F.group_norm(mem.transpose(1, 2), 4, w, b, 1e-6), 1e-2)


def test_frame_conv_equals_conv3d_on_both_layouts_and_rejects_other_kernels():
    """The time ResBlocks' (k, 1, 1) convolution as a batched product over frame windows, against
    PyTorch's conv3d: several videos (windows must not cross between them), k = 1, 3, 5."""
    import torch.nn.functional as F

    from backend.sp4d.functional import frame_conv

    g = torch.Generator().manual_seed(0)
    for k in (1, 3, 5):
        mem = torch.randn(3, 7, 6, 4, 5, generator=g, dtype=torch.float64)  # (b, frames, c, h, w)
        w = torch.randn(8, 6, k, 1, 1, generator=g, dtype=torch.float64)
        b = torch.randn(8, generator=g, dtype=torch.float64)
        for x in (mem.transpose(1, 2), mem.transpose(1, 2).contiguous()):
            torch.testing.assert_close(frame_conv(x, w, b), F.conv3d(x, w, b, padding=(k // 2, 0, 0)),
                                       rtol=1e-12, atol=1e-12)
    assert frame_conv(mem.transpose(1, 2), w, None).shape == (3, 8, 7, 4, 5)
    for bad in (torch.zeros(8, 6, 3, 3, 1), torch.zeros(8, 6, 2, 1, 1), torch.zeros(8, 5, 3, 1, 1)):
        with pytest.raises(ValueError, match="frame_conv"):
            frame_conv(mem.transpose(1, 2), bad, None)


def test_edge_convolutions_equal_conv2d():
    """The first and last UNet layers' convolutions as products (conv_few_in: im2col with the bias
    as a row of ones; conv_few_out: one product, then the shifted taps summed), against PyTorch's
    conv2d: odd kernels, non-contiguous input, with and without bias; EdgeConv keeps cuDNN for
    other strides and for small frames."""
    import torch.nn.functional as F

    from backend.sp4d.functional import conv_few_in, conv_few_out
    from backend.sp4d.layers import EdgeConv

    g = torch.Generator().manual_seed(0)
    for k in (1, 3, 5):
        x = torch.randn(2, 14, 9, 11, generator=g, dtype=torch.float64)[:, ::2]  # 7 channels, strided
        for c_out, fn in ((20, conv_few_in), (3, conv_few_out)):
            w = torch.randn(c_out, 7, k, k, generator=g, dtype=torch.float64)
            for b in (torch.randn(c_out, generator=g, dtype=torch.float64), None):
                got = fn(x, w, b)
                assert got.dtype == x.dtype and got.shape == (2, c_out, 9, 11)
                torch.testing.assert_close(got, F.conv2d(x, w, b, padding=k // 2), rtol=1e-12, atol=1e-12)
    conv = EdgeConv(8, 4, 3, padding=1).double()
    for x in (torch.randn(1, 8, 40, 40, generator=g, dtype=torch.float64),
              torch.randn(1, 8, 8, 8, generator=g, dtype=torch.float64)):
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-12, atol=1e-12)
    strided = EdgeConv(8, 4, 3, stride=2, padding=1).double()
    x = torch.randn(1, 8, 40, 40, generator=g, dtype=torch.float64)
    assert strided(x).shape == (1, 4, 20, 20)


def test_product_attention_equals_sdpa_for_one_wide_head():
    """The compiled decoder's mid-block attention on CUDA (one 512-wide head as two products, float32
    scores) against PyTorch's attention in float64: float32 exact, bf16 within its rounding."""
    import torch.nn.functional as F

    from backend.sp4d.functional import product_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 50, 64, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(product_attention(*(t.float() for t in (q, k, v))).double(), ref,
                               rtol=1e-5, atol=1e-5)
    half = product_attention(*(t.bfloat16() for t in (q, k, v)))
    assert half.dtype == torch.bfloat16
    close(half, ref, 2e-2)


@pytest.mark.skipif(not any(map(__import__("shutil").which, ("g++", "c++", "clang++"))), reason="no C++ compiler")
def test_compiled_decoder_matches_the_fixture_with_its_group_norm_by_image(model):
    """Both compile scopes compile the VAE decoder whole; its GroupNorms then take the per-image
    partial sums (VAEGroupNorm), which must still give the official decode; compiled, the decoder's
    weights are channels-last."""
    from backend.sp4d.compiled import compiled_scope
    from backend.sp4d.options import RunOptions
    from backend.sp4d.pipeline import SP4DPipeline

    v = load_file(FIX / "vae.safetensors")
    pipe = SP4DPipeline(model, RunOptions(compile="layers"))
    dec = model.first_stage_model.decoder
    try:
        assert compiled_scope([dec]) == "layers" and dec.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        close(model.decode(v["dec.z"]), v["dec.out"])
    finally:
        pipe.apply(RunOptions())
    assert compiled_scope([model]) is None and dec.conv_in.weight.is_contiguous()


DECODE_COMPILED = """
import hashlib, json, sys
import torch
from safetensors.torch import load_file
from torch._dynamo.utils import counters
from backend.sp4d.checkpoint import load_config, load_model
from backend.sp4d.compiled import compile_modules
fix = __import__("pathlib").Path(sys.argv[1])
model = load_model(fix / "weights.safetensors", load_config(fix / "config.yaml"))
compile_modules([model], "layers")
with torch.no_grad():
    out = model.decode(load_file(fix / "vae.safetensors")["dec.z"])
print(json.dumps({"cache": {k: v for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")},
                  "digest": hashlib.sha256(out.numpy().tobytes()).hexdigest()}))
"""


@pytest.mark.skipif(not any(map(__import__("shutil").which, ("g++", "c++", "clang++"))), reason="no C++ compiler")
def test_a_second_process_loads_the_compiled_graphs_from_inductors_cache(tmp_path):
    """A backend restart must not compile again (2-3.5 minutes at full size): the compile options keep
    inductor's on-disk graph cache on, so a second process with the same cache folder loads the
    decoder's graph and computes exactly what the first did. (On CUDA the graphs hold multi-kernels
    too; scripts/bench_gpu_all.sh cache checks those on the device, docs/perf.md row 41.)"""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),
               PYTHONPATH=str(ROOT))
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", DECODE_COMPILED, str(FIX)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert runs[0]["cache"].get("fxgraph_cache_miss", 0) >= 1 and not runs[0]["cache"].get("fxgraph_cache_hit")
    assert runs[1]["cache"].get("fxgraph_cache_hit", 0) >= 1 and not runs[1]["cache"].get("fxgraph_cache_miss")
    assert runs[1]["digest"] == runs[0]["digest"]


DECODE_SAVED = """
import hashlib, json, sys
import torch
from safetensors.torch import load_file
from backend.sp4d.checkpoint import load_config, load_model
from backend.sp4d.compiled import compile_modules
from backend.sp4d.precompiled import STORES
fix = __import__("pathlib").Path(sys.argv[1])
model = load_model(fix / "weights.safetensors", load_config(fix / "config.yaml"))
compile_modules([model.first_stage_model.decoder], "layers", saved=sys.argv[2])
with torch.inference_mode():
    out = model.decode(load_file(fix / "vae.safetensors")["dec.z"])
print(json.dumps({"stats": STORES[0].stats,
                  "digest": hashlib.sha256(out.numpy().tobytes()).hexdigest()}))
"""


def test_a_saved_graphs_key_reads_the_unet_context_by_its_tensors_shapes_not_values(tmp_path):
    """A UNet block's call carries a UNetContext (a dataclass of tensors): its key must not change
    with the tensors' values (each sampling step's time embedding), or every step of every job
    compiles a graph of its own instead of loading the saved one; shapes still tell calls apart."""
    from backend.sp4d.precompiled import SavedGraphs
    from backend.sp4d.unet_blocks import UNetContext

    store = SavedGraphs(tmp_path / "saved")
    module = torch.nn.Linear(2, 2)

    def ctx(n_time: int, seed: int) -> UNetContext:
        g = torch.Generator().manual_seed(seed)
        v = 8 // n_time
        return UNetContext(torch.randn(8, 16, generator=g), torch.randn(1, n_time, 4, generator=g),
                           torch.randn(v, 4, 3, 3, generator=g), n_time, v)

    x = torch.randn(8, 4, 3, 3)
    step = [store.key(module, "forward", (x, ctx(4, seed)), {}) for seed in (0, 1)]
    assert step[0] == step[1]
    assert store.key(module, "forward", (x, ctx(2, 0)), {}) != step[0]


@pytest.mark.skipif(not any(map(__import__("shutil").which, ("g++", "c++", "clang++"))), reason="no C++ compiler")
def test_saved_graphs_are_loaded_by_a_second_process_without_tracing(tmp_path):
    """compiled_graphs 'saved' (precompiled.py): the first process compiles the decoder's graphs
    (DualDecoder.single with Decoder.forward inside it) and saves them whole; a second process with
    the same folder loads them, compiles nothing, and decodes the same bytes. A saved file that is
    not a graph is refused and compiled again, never run."""
    saved = tmp_path / "saved"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),
               PYTHONPATH=str(ROOT))

    def run():
        r = subprocess.run([sys.executable, "-c", DECODE_SAVED, str(FIX), str(saved)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["stats"]["compiled"] >= 1 and first["stats"]["loaded"] == 0
    assert second["stats"] == {"loaded": first["stats"]["compiled"], "compiled": 0, "rejected": 0}
    assert second["digest"] == first["digest"]
    files = sorted(saved.glob("*.bin"))
    assert len(files) == first["stats"]["compiled"]
    files[0].write_bytes(b"not a graph")
    third = run()
    assert third["stats"]["rejected"] == 1 and third["stats"]["compiled"] == 1 and third["digest"] == first["digest"]


@pytest.mark.skipif(not any(map(__import__("shutil").which, ("g++", "c++", "clang++"))), reason="no C++ compiler")
def test_out_linear_adds_the_bias_apart_only_in_compiled_half_precision():
    """OutLinear is nn.Linear eagerly (any dtype) and in compiled float32; compiled in bf16 it adds
    the bias after the product, which may differ by the product's extra rounding, nothing more."""
    import torch.nn.functional as F

    from backend.sp4d.layers import OutLinear

    g = torch.Generator().manual_seed(0)
    lin = OutLinear(64, 32)
    x = torch.randn(4, 50, 64, generator=g)
    assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias))
    compiled = torch.compile(lin.forward, dynamic=False)
    torch.testing.assert_close(compiled(x), F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)
    lin16, x16 = lin.bfloat16(), x.bfloat16()
    assert torch.equal(lin16(x16), F.linear(x16, lin16.weight, lin16.bias))
    got = compiled(x16)
    ref = F.linear(x16.double(), lin16.weight.double(), lin16.bias.double())
    assert got.dtype == torch.bfloat16
    assert float((got.double() - ref).abs().max() / ref.abs().max()) < 2e-2


@pytest.mark.parametrize("edge_min", [0, 1 << 30])
def test_edge_convolutions_match_the_fixtures_both_ways(model, edge_min):
    """EdgeConv forced onto the products (the fixtures' latents are below OpChoices.edge_*_pixels) and
    kept on cuDNN: both give the official output."""
    u = load_file(FIX / "unet.safetensors")
    cond = {k[len("in.c."):]: u[k] for k in u if k.startswith("in.c.")}
    with choices(model, edge_in_pixels=edge_min, edge_out_pixels=edge_min):
        close(model.network(u["net_in.x_scaled"], u["net_in.c_noise"], cond), u["net_out"])


@pytest.mark.parametrize("frame_min", [0, 1 << 30])
def test_time_resblocks_match_the_fixtures_through_frame_conv_and_cudnn(model, frame_min):
    """FrameConv's convolution is frame_conv or conv3d by frame size; the fixtures' frames are small,
    so both paths are forced here and must give the official output."""
    u = load_file(FIX / "unet.safetensors")
    cond = {k[len("in.c."):]: u[k] for k in u if k.startswith("in.c.")}
    with choices(model, frame_conv_pixels=frame_min):
        close(model.network(u["net_in.x_scaled"], u["net_in.c_noise"], cond), u["net_out"])


def test_skips_concatenated_in_the_fusion_layers_equal_the_eager_concatenation(model):
    """OpChoices.skips_in_fusion moves each output block's [h | skip] into the fusion layer before
    it: the same network output, bit for bit, and the fixture's."""
    u = load_file(FIX / "unet.safetensors")
    cond = {k[len("in.c."):]: u[k] for k in u if k.startswith("in.c.")}
    args = (u["net_in.x_scaled"], u["net_in.c_noise"], cond)
    calls = []
    hook = model.model.diffusion_model.middle_cross.register_forward_hook(lambda m, a, o: calls.append(len(a)))
    try:
        inside = model.network(*args)
        with choices(model, skips_in_fusion=False):
            outside = model.network(*args)
    finally:
        hook.remove()
    assert calls == [4, 2]  # the middle fusion got the first output block's skips, then did not
    assert inside.equal(outside)
    close(inside, u["net_out"])


@pytest.mark.skipif(not any(map(__import__("shutil").which, ("g++", "c++", "clang++"))), reason="no C++ compiler")
@pytest.mark.parametrize("scope, conv", [("blocks", "cudnn"), ("layers", "frame_conv"), ("layers", "channels_last")])
def test_compiled_unet_matches_eager_and_uncompiles(model, scope, conv):
    """compile_modules on the CPU (inductor's C++ backend): the compiled graphs, with the short
    attention of the camera and motion blocks and each way of the time ResBlocks' convolution
    (dispatch.time_conv; the fixtures' small frames take none of the large-frame paths unless
    forced), give the eager network's output; only instances are compiled, never their classes."""
    from backend.sp4d import unet_blocks
    from backend.sp4d.compiled import compile_modules, compiled_scope, uncompile_modules

    u = load_file(FIX / "unet.safetensors")
    cond = {k[len("in.c."):]: u[k] for k in u if k.startswith("in.c.")}
    args = (u["net_in.x_scaled"], u["net_in.c_noise"], cond)
    unet = model.model.diffusion_model
    block = unet.net1.middle_block[1]  # a SpatioTemporalTransformer
    time_mix = block.time_mix_blocks[0]
    eager = unet_blocks.TimeMixBlock.forward, unet_blocks.SpatioTemporalTransformer.forward
    forced = {"frame_conv_pixels": 0 if conv == "frame_conv" else 1 << 30,
              "frame_conv_channels_last_pixels": 0 if conv == "channels_last" else 1 << 30}
    try:
        with choices(model, **forced):
            assert compile_modules([unet], scope) and not compile_modules([unet], scope)
            assert compiled_scope([unet]) == scope
            assert "forward" in vars(block if scope == "layers" else time_mix)
            assert "forward" not in vars(time_mix if scope == "layers" else block)
            close(model.network(*args), u["net_out"])
    finally:
        uncompile_modules([unet])
    assert (unet_blocks.TimeMixBlock.forward, unet_blocks.SpatioTemporalTransformer.forward) == eager
    assert compiled_scope([unet]) is None and "forward" not in vars(block) and "forward" not in vars(time_mix)
