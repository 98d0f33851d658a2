"""The Triton kernels (backend/sp4d/kernels.py), run by Triton's interpreter on the CPU.

Each check runs in a subprocess with TRITON_INTERPRET=1 (read when triton is imported). On the
GPU the same kernels are compiled; scripts/gpu_check_sp4d.py repeats these checks there at the
model's real shapes. The interpreter computes bf16 matrix products wrongly (a Triton interpreter
limitation: a plain bf16 tl.dot is off there too), so the kernels are checked in fp16 here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def interpret(code: str) -> str:
    """Run PRELUDE + code under Triton's interpreter; its standard output."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


PRELUDE = """
import torch, torch.nn.functional as F
from backend.sp4d import kernels
g = torch.Generator().manual_seed(0)
def rel(a, b):
    return float((a.double() - b).norm() / b.norm())
def refused(fn, *args):  # print the first clause of the ValueError fn(*args) raises; fail if none
    try:
        fn(*args)
    except ValueError as e:
        print(str(e).split(";")[0])
    else:
        raise AssertionError(f"accepted {[(tuple(a.shape), a.dtype) for a in args]}")
"""


def test_geglu_kernel_equals_linear_then_gelu_gate():
    out = interpret("""
    assert kernels.usable(torch.zeros(1, dtype=torch.float16))
    # rows, inputs and outputs that are no multiple of the tiles; a 3-D input as the blocks pass it
    x = torch.randn(2, 50, 80, generator=g).half()
    w = (torch.randn(2 * 72, 80, generator=g) / 80 ** 0.5).half()
    b = (0.5 * torch.randn(2 * 72, generator=g)).half()
    got = kernels.geglu_linear(x, w, b)
    a, gate = F.linear(x.double(), w.double(), b.double()).chunk(2, -1)
    ref = a * F.gelu(gate)
    assert got.shape == (2, 50, 72) and got.dtype == torch.float16
    assert torch.isfinite(got).all()
    errs = [rel(got, ref)]
    # both launchers directly: the persistent TMA kernel (taken above; each of its epilogues) and
    # the blocked one
    x2 = x.reshape(-1, 80)
    assert kernels.tma_usable(x2, w)
    import triton
    launches = [kernels.geglu_blocked]
    for split in (False, True):
        one = triton.autotune(configs=[kernels._tma_config(32, 32, 32, 1, 4, split)],
                              key=["M", "N", "K"])(kernels._geglu_tma_kernel.fn)
        for gate in kernels.GATE_NAMES:  # the exact GELU every way
            launches.append(lambda *a, one=one, gate=gate: kernels.geglu_tma(*a, kernel=one, gate=gate))
    for launch in launches:
        o = torch.full((100, 72), float("nan"), dtype=torch.float16)
        launch(x2, w, b, o)
        errs.append(rel(o, ref.reshape(100, 72)))
    # an input TMA cannot take (rows 81 values apart: not 16-byte aligned) goes to the blocked kernel
    xs = torch.randn(100, 81, generator=g).half()[:, :80]
    assert not kernels.tma_usable(xs, w)
    a, gate = F.linear(xs.double(), w.double(), b.double()).chunk(2, -1)
    errs.append(rel(kernels.geglu_linear(xs, w, b), a * F.gelu(gate)))
    print(max(errs))
    """)
    assert float(out) < 2e-3, out


def test_geglu_falls_back_to_the_blocked_kernel_when_the_tma_kernel_cannot_build():
    """A Triton/GPU pair that cannot compile the persistent kernel (e.g. its warp specialisation):
    one warning, the blocked kernel's (correct) result, and the blocked kernel from then on."""
    out = interpret("""
    import warnings
    x = torch.randn(64, 80, generator=g).half()
    w = (torch.randn(2 * 48, 80, generator=g) / 80 ** 0.5).half()
    b = (0.5 * torch.randn(2 * 48, generator=g)).half()
    assert kernels.tma_usable(x, w)
    def broken(*args, **kwargs):
        raise RuntimeError("PassManager::run failed")  # what an MLIR pass failure raises
    kernels.geglu_tma = broken
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = kernels.geglu_linear(x, w, b)
        again = kernels.geglu_linear(x, w, b)
    assert [str(c.message).startswith("the persistent GEGLU kernel did not compile") for c in caught] == [True]
    assert not kernels.tma_usable(x, w) and torch.equal(got, again)
    a, gate = F.linear(x.double(), w.double(), b.double()).chunk(2, -1)
    print(rel(got, a * F.gelu(gate)))
    """)
    assert float(out) < 2e-3, out


def test_geglu_launches_from_two_threads_at_once():
    """The CFG split launches the kernels from two threads. Triton's autotuner keeps the launch in
    progress on the kernel object; unserialised, the launches mixed up (wrong results here)."""
    out = interpret("""
    import sys, threading
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    x = torch.randn(64, 80, generator=g).half()
    w = (torch.randn(2 * 48, 80, generator=g) / 80 ** 0.5).half()
    b = (0.5 * torch.randn(2 * 48, generator=g)).half()
    a, gate = F.linear(x.double(), w.double(), b.double()).chunk(2, -1)
    ref = a * F.gelu(gate)
    kernels.geglu_linear(x, w, b)  # the first call alone, as the split makes it
    errs, failures = [], []
    def work():
        try:
            errs.extend(rel(kernels.geglu_linear(x, w, b), ref) for _ in range(6))
        except Exception as e:
            failures.append(repr(e))
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures and len(errs) == 12 and not kernels._tma_failed, failures
    print(max(errs))
    """)
    assert float(out) < 2e-3, out


def test_geglu_rejects_mismatched_weights_with_the_shapes():
    out = interpret("""
    x = torch.randn(8, 16, generator=g).half()
    w, b = torch.randn(2 * 12, 16, generator=g).half(), torch.randn(2 * 12, generator=g).half()
    cases = [(w[:23], b[:23]), (w[:, :15], b), (w, b[:20]), (w.float(), b), (w[:0], b[:0])]
    for wi, bi in cases:
        refused(kernels.geglu_linear, x, wi, bi)
    """)
    lines = out.splitlines()
    assert len(lines) == 5 and lines[0].startswith("geglu_linear: weight must be (2N, 16)"), out
    assert "share one dtype" in lines[3], out


def test_short_attention_rejects_mismatched_shapes():
    out = interpret("""
    q = torch.randn(3, 4, 2, 16, generator=g).half()
    k = torch.randn(3, 5, 2, 16, generator=g).half()
    for qi, ki, vi in ((q, k, k[:, :4]), (q, k[:2], k[:2]), (q, k[..., :1, :], k[..., :1, :]),
                       (q[..., :12], k[..., :12], k[..., :12])):
        refused(kernels.short_attention, qi, ki, vi)
    """)
    assert out.count("short_attention: q (B, n, heads, d)") == 4, out


def test_short_attention_kernel_equals_softmax_attention():
    out = interpret("""
    import numpy as np
    np.seterr(invalid="raise", divide="raise")  # padding rows (no keys) must not compute NaNs either
    errs = []
    for dt in (torch.float16,):
        for n, m in ((12, 12), (4, 4), (3, 7)):  # camera, motion, unequal lengths
            # per-head views of linear outputs, as the Attention module makes them (no copies)
            q = (3 * torch.randn(37, n, 3 * 64, generator=g)).to(dt).view(37, n, 3, 64)
            kv = (3 * torch.randn(37, m, 2 * 3 * 64, generator=g)).to(dt)
            k, v = (t.view(37, m, 3, 64) for t in kv.chunk(2, -1))
            got = kernels.short_attention(q, k, v)
            ref = F.scaled_dot_product_attention(*(t.double().transpose(1, 2) for t in (q, k, v)))
            assert got.shape == (37, n, 3 * 64) and got.dtype == dt
            errs.append(rel(got, ref.transpose(1, 2).reshape(37, n, 3 * 64)))
    print(max(errs))
    """)
    assert float(out) < 2e-3, out  # float32 scores; the weights rounded to fp16 for p·v, as flash kernels do


def test_modules_take_the_kernels_and_agree_with_the_plain_path():
    """GEGLU and Attention switch to the kernels for half-precision inputs and give what the plain
    PyTorch path gives (both in fp16 on the CPU: the plain path rounds the projection once more);
    OpChoices.triton_kernels off takes the plain path."""
    out = interpret("""
    from backend.sp4d.layers import Attention, FeedForward
    from backend.sp4d.options import OpChoices, configure
    torch.manual_seed(0)
    ff, attn = FeedForward(64).half(), Attention(64, 2, 32).half()
    x = torch.randn(30, 12, 64, generator=g).half()
    calls = []
    for name in ("geglu_linear", "short_attention"):
        fn = getattr(kernels, name)
        setattr(kernels, name, lambda *a, _fn=fn, _n=name: calls.append(_n) or _fn(*a))
    fused = ff(x).float(), attn(x).float()
    for m in (ff, attn):
        configure(m, OpChoices(triton_kernels=False))
    plain = ff(x).float(), attn(x).float()
    assert sorted(calls) == ["geglu_linear", "short_attention"], calls
    print(max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(fused, plain)))
    """)
    assert float(out) < 5e-3, out


def test_triton_is_installed_for_these_tests():
    import triton  # noqa: F401  (scripts/setup_env.sh installs it; without it the checks above would not run)


def test_kernels_are_off_for_float32_and_without_the_interpreter():
    code = """
    print(kernels.usable(torch.zeros(1)), kernels.usable(torch.zeros(1, dtype=torch.bfloat16)))
    """
    assert interpret(code).split() == ["False", "True"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.stdout.split() == ["False", "False"], r.stdout + r.stderr  # no GPU here: the plain paths


def test_frame_norm_equals_group_norm_then_silu():
    """frame_norm's two kernels against float64 silu(group_norm(x + add)): frames-major and NCDHW
    inputs and outputs, images (4-D), planes no multiple of the block, with and without the
    per-plane add; and a time and a spatial ResBlock through them against float64, no less exact
    than their plain half-precision paths."""
    out = interpret("""
    from backend.sp4d import frame_norm
    from backend.sp4d.options import OpChoices, configure
    from backend.sp4d.unet_blocks import ResBlock
    errs = []
    b, c, f, h, w, groups = 2, 8, 5, 7, 9, 4
    weight = 1 + 0.1 * torch.randn(c, generator=g)
    bias = 0.1 * torch.randn(c, generator=g)
    for frames_in in (True, False):
        mem = 3 + 2 * torch.randn(b, f, c, h, w, generator=g)  # an offset mean, as activations have
        x = (mem.transpose(1, 2) if frames_in else mem.transpose(1, 2).contiguous()).half()
        assert frame_norm.usable(x)
        # the ResBlock's embedding comes as a transposed (b, frames, c) tensor; a constant per (b, c) too
        adds = (torch.randn(b, f, c, generator=g).half().transpose(1, 2)[..., None, None],
                torch.randn(b, c, 1, 1, 1, generator=g).half())
        for add in (None, *adds):
            xs = x.double() + (0 if add is None else add.double())
            ref = F.silu(F.group_norm(xs, groups, weight.double(), bias.double(), 1e-5))
            for frames_out in (True, False):
                got = frame_norm.group_norm_silu(x, groups, weight, bias, 1e-5, add, frames_major=frames_out)
                assert got.dtype == torch.float16 and got.shape == x.shape
                assert got.transpose(1, 2).is_contiguous() == frames_out and got.is_contiguous() == (not frames_out)
                errs.append(rel(got, ref))
    # images (n, c, h, w): one frame each; the embedding per (n, c)
    x4 = (1 + torch.randn(3, c, h, w, generator=g)).half()
    add4 = torch.randn(3, c, 1, 1, generator=g).half()
    ref = F.silu(F.group_norm(x4.double() + add4.double(), groups, weight.double(), bias.double(), 1e-5))
    got = frame_norm.group_norm_silu(x4, groups, weight, bias, 1e-5, add4)
    assert got.shape == x4.shape and got.is_contiguous()
    errs.append(rel(got, ref))
    assert not frame_norm.usable(x4.contiguous(memory_format=torch.channels_last))  # planes not contiguous
    assert not frame_norm.usable(torch.zeros(2, 3, 4, 5, 6).half().transpose(-1, -2))
    assert not frame_norm.usable(torch.zeros(2, 3, 4, 5, 6))  # float32: F.group_norm
    # a time ResBlock (frames-major input, embedding per frame) through the kernels and the plain way
    blk = ResBlock(32, 16, 32, dims=3, kernel=(3, 1, 1), emb_time_major=True)
    with torch.no_grad():
        for p in blk.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    x5 = torch.randn(2, 6, 32, 5, 5, generator=g).transpose(1, 2)
    emb = torch.randn(2, 6, 16, generator=g)
    ref = blk.double()(x5.double(), emb.double())
    blk.half()
    got = blk(x5.half(), emb.half())
    # and a spatial (2-D) ResBlock with a channel change
    blk2 = ResBlock(32, 16, 64)
    with torch.no_grad():
        for p in blk2.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    x2 = torch.randn(4, 32, 6, 6, generator=g)
    emb2 = torch.randn(4, 16, generator=g)
    ref2 = blk2.double()(x2.double(), emb2.double())
    got2 = blk2.half()(x2.half(), emb2.half())
    for m in (blk, blk2):
        configure(m, OpChoices(frame_norm=False))
    plain = blk(x5.half(), emb.half())
    plain2 = blk2(x2.half(), emb2.half())
    errs += [rel(got, ref), rel(got2, ref2)]
    print(max(errs), max(rel(plain, ref), rel(plain2, ref2)))
    """)
    err, plain = map(float, out.split()[-2:])
    assert err < 2e-3, err  # fp16 output rounding
    assert err <= 1.5 * plain + 1e-4, (err, plain)  # no less exact than the plain half path
