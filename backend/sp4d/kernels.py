"""Triton kernels for the two places where the UNet's time goes to memory traffic, not arithmetic.

* ``geglu_linear``: the GEGLU projection ``a·gelu(g)``, ``[a | g] = x·Wᵀ + b``, in one matrix
  product. Unfused, the (tokens, 8·C) product is written, read back by the gating kernel and a
  (tokens, 4·C) result written again; fused, the gated result is the product's only output. On
  Hopper and newer GPUs a persistent kernel with TMA loads/stores (``geglu_tma``; its tile and
  warp specialisation autotuned), elsewhere one program per output tile (``geglu_blocked``).
* ``short_attention``: softmax attention over a few tokens (the camera block's 12 views, the
  motion block's 4 frames). Flash kernels tile 64+ queries per block, so these sequences fill a
  fraction of each tile; here one program takes one sequence (four of the motion block's),
  head after head, reads q, k and v once and writes the output in the (rows, tokens, heads·d)
  layout the next projection reads.

Both run on CUDA for bf16/fp16 tensors when Triton is installed (``usable``); dispatch.py decides
from the run's OpChoices whether they are used, and everything else takes the plain PyTorch forms
in functional.py. They are registered as torch custom ops, so compiled graphs call them as single
opaque kernels. The tests run them in Triton's interpreter on the CPU (TRITON_INTERPRET=1, read
when Triton is imported) against float64 references (in fp16: the interpreter's bf16 matrix
products are wrong).
"""

from __future__ import annotations

import inspect
import math
import os
import threading
import warnings

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: the plain PyTorch paths are used
    triton = None
try:  # host-side TMA descriptors and Hopper warp specialisation: Triton 3.6 (as measured) or newer
    from triton.tools.tensor_descriptor import TensorDescriptor

    TMA_TRITON = tuple(int(p) for p in triton.__version__.split(".")[:2]) >= (3, 6)
except (ImportError, AttributeError, ValueError):
    TMA_TRITON = False

# Triton's autotuner keeps the arguments of the launch in progress on the kernel object (and the
# TMA pre-hook sets the descriptors' boxes from them): launches from two threads at once, as the
# CFG split over two GPUs makes them, would mix them up. Launching is host work of microseconds.
# (The attention kernel has no autotuner: nothing per launch is kept on it.)
_LAUNCH = threading.Lock()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's own switch for its CPU interpreter (tests)
HALF = (torch.bfloat16, torch.float16)
# the persistent GEGLU kernel's epilogues (GATES), each the exact GELU; the first is the fastest (the default)
GATE_NAMES = ("exp", "poly", "erf")


def usable(x: torch.Tensor) -> bool:
    """Whether the kernels can take ``x``: Triton present, a half-precision tensor on CUDA (or on
    the CPU under Triton's interpreter, for the tests)."""
    return (triton is not None and x.dtype in HALF
            and (x.is_cuda or (INTERPRET and x.device.type == "cpu")))


def attention_usable(q: torch.Tensor) -> bool:
    """``usable`` for short_attention's q (B, n, heads, d): d must be a power of two, ≥ 16."""
    return usable(q) and _head_dim_ok(q.shape[-1])


def _head_dim_ok(d: int) -> bool:
    return d >= 16 and d & (d - 1) == 0


if triton is not None:
    # the autotuners' picks kept in Triton's on-disk cache (Triton 3.2 on): a new process, as a
    # user's first job after Set Up's compile (backend/prepare.py), finds them instead of timing
    # every config for each shape again during its first step
    _AUTOTUNE_ON_DISK = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters \
        else {}
    _GEMM_CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_stages=s, num_warps=w)
        for bm, bn, bk, s, w in ((128, 128, 64, 3, 8), (128, 128, 64, 4, 8), (128, 64, 64, 4, 4),
                                 (64, 128, 64, 4, 4), (128, 128, 32, 4, 8), (128, 64, 32, 5, 4),
                                 (256, 64, 64, 3, 8), (64, 64, 64, 5, 4))
    ] if not INTERPRET else [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2})]

    @triton.autotune(configs=_GEMM_CONFIGS, key=["M", "N", "K"], **_AUTOTUNE_ON_DISK)
    @triton.jit
    def _geglu_kernel(x_ptr, w_ptr, b_ptr, o_ptr, M, N, K, s_xm, s_xk, s_wn, s_wk, s_om, s_on,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr):
        # grouped tile order: GROUP_M row tiles share the same weight columns while they are in L2
        pid = tl.program_id(0)
        n_m, n_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        group = pid // (GROUP_M * n_n)
        first_m = group * GROUP_M
        rows_in_group = min(n_m - first_m, GROUP_M)
        pid_m = first_m + (pid % (GROUP_M * n_n)) % rows_in_group
        pid_n = (pid % (GROUP_M * n_n)) // rows_in_group
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        in_m, in_n = rm[:, None] < M, rn[None, :] < N
        x_ptrs = x_ptr + rm[:, None] * s_xm + rk[None, :] * s_xk
        wa_ptrs = w_ptr + rn[None, :] * s_wn + rk[:, None] * s_wk  # (BLOCK_K, BLOCK_N) of the value rows
        wg_ptrs = wa_ptrs + N * s_wn  # ... and of the gate rows, N further down the weight
        acc_a = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            in_k = (k0 + rk) < K
            x = tl.load(x_ptrs, mask=in_m & in_k[None, :], other=0.0)
            wa = tl.load(wa_ptrs, mask=in_k[:, None] & in_n, other=0.0)
            wg = tl.load(wg_ptrs, mask=in_k[:, None] & in_n, other=0.0)
            acc_a = tl.dot(x, wa, acc_a)
            acc_g = tl.dot(x, wg, acc_g)
            x_ptrs += BLOCK_K * s_xk
            wa_ptrs += BLOCK_K * s_wk
            wg_ptrs += BLOCK_K * s_wk
        a = acc_a + tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        g = acc_g + tl.load(b_ptr + N + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        out = a * (0.5 * g * (1.0 + tl.erf(g * 0.7071067811865476)))  # exact (erf) GELU, as F.gelu
        tl.store(o_ptr + rm[:, None] * s_om + rn[None, :] * s_on, out.to(o_ptr.dtype.element_ty), mask=in_m & in_n)

    def _set_blocks(nargs: dict) -> None:
        """Autotuner pre-hook: the TMA descriptors' box shapes follow the config's tile."""
        bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
        nargs["x_desc"].block_shape = [bm, bk]
        nargs["w_desc"].block_shape = [bn, bk]
        nargs["o_desc"].block_shape = [bm, bn // 2 if nargs["SPLIT"] else bn]

    def _tma_config(bm, bn, bk, stages, warps, split=False, ws=False):
        return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "SPLIT": split, "WS": ws},
                             num_stages=stages, num_warps=warps, pre_hook=_set_blocks)

    _TMA_CONFIGS = [
        _tma_config(*c) for c in ((128, 128, 64, 3, 8), (128, 128, 64, 4, 8), (128, 64, 64, 4, 4),
                                  (128, 64, 64, 5, 8), (64, 128, 64, 4, 4), (128, 128, 32, 5, 8),
                                  (128, 128, 64, 4, 8, True), (128, 128, 64, 5, 8, True))
    ] + [  # warp-specialised (loads in their own warps): the fastest at all three widths on an H100
        _tma_config(128, 128, 64, s, 8, split, True) for s in (3, 4) for split in (False, True)
    ] if not INTERPRET else [_tma_config(32, 32, 32, 1, 4)]  # one config: the interpreter cannot time them

    @triton.jit
    def _tile_of(t, n_m, n_n, GROUP_M: tl.constexpr):
        # the grouped order of _geglu_kernel: GROUP_M row tiles walk the weight columns together
        group = t // (GROUP_M * n_n)
        first_m = group * GROUP_M
        rows_in_group = min(n_m - first_m, GROUP_M)
        return first_m + (t % (GROUP_M * n_n)) % rows_in_group, (t % (GROUP_M * n_n)) // rows_in_group

    @triton.autotune(configs=_TMA_CONFIGS, key=["M", "N", "K"], **_AUTOTUNE_ON_DISK)
    @triton.jit
    def _geglu_tma_kernel(x_desc, w_desc, b_ptr, o_desc, M, N, K, PROGRAMS: tl.constexpr, GATE: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          GROUP_M: tl.constexpr, SPLIT: tl.constexpr, WS: tl.constexpr):
        # Persistent: PROGRAMS programs (one per SM) walk the output tiles. With K of 320-1280 a
        # tile has only 5-20 products, so loading the first operands and the gated store weigh on
        # every tile; the flattened loop lets the pipeliner fetch the next tile's operands (TMA)
        # while this tile's epilogue runs. SPLIT: the epilogue in two column halves (half the
        # registers and store buffer); WS: warp-specialised loads (Triton's Hopper support; needs
        # the loop unflattened). GATE: the epilogue's out = GATE(a, g), a @triton.jit function.
        n_m, n_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        k_steps = tl.cdiv(K, BLOCK_K)
        done = tl.program_id(0) - PROGRAMS  # the epilogue's own tile counter: keeps the stages independent
        for t in tl.range(tl.program_id(0), n_m * n_n, PROGRAMS, flatten=not WS, warp_specialize=WS):
            pid_m, pid_n = _tile_of(t, n_m, n_n, GROUP_M)
            off_m, off_n = pid_m * BLOCK_M, pid_n * BLOCK_N
            acc_a = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for ks in range(k_steps):
                x = x_desc.load([off_m, ks * BLOCK_K])
                acc_a = tl.dot(x, w_desc.load([off_n, ks * BLOCK_K]).T, acc_a)  # value rows
                acc_g = tl.dot(x, w_desc.load([N + off_n, ks * BLOCK_K]).T, acc_g)  # gate rows, N further
            done += PROGRAMS
            pid_m, pid_n = _tile_of(done, n_m, n_n, GROUP_M)
            if SPLIT:
                a0, a1 = tl.split(tl.permute(tl.reshape(acc_a, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
                g0, g1 = tl.split(tl.permute(tl.reshape(acc_g, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
                _gate_store(a0, g0, b_ptr, o_desc, N, pid_m * BLOCK_M, pid_n * BLOCK_N, BLOCK_N // 2, GATE)
                _gate_store(a1, g1, b_ptr, o_desc, N, pid_m * BLOCK_M, pid_n * BLOCK_N + BLOCK_N // 2, BLOCK_N // 2,
                            GATE)
            else:
                _gate_store(acc_a, acc_g, b_ptr, o_desc, N, pid_m * BLOCK_M, pid_n * BLOCK_N, BLOCK_N, GATE)

    @triton.jit
    def _gate_store(acc_a, acc_g, b_ptr, o_desc, N, off_m, off_n, WIDTH: tl.constexpr, GATE: tl.constexpr):
        # bias, GATE(a, g), one rounding, TMA store of the (rows, WIDTH) block
        rn = off_n + tl.arange(0, WIDTH)
        a = acc_a + tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        g = acc_g + tl.load(b_ptr + N + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        o_desc.store([off_m, off_n], GATE(a, g).to(o_desc.dtype))

    @triton.jit
    def gate_erf(a, g):
        # a·gelu(g), exact (erf) GELU through libdevice's erf, as F.gelu
        return a * (0.5 * g * (1.0 + tl.erf(g * 0.7071067811865476)))

    @triton.jit
    def gate_poly(a, g):
        # a·gelu(g), exact GELU through Abramowitz & Stegun 7.1.28: erf(z) = 1 - (1 + Σ a_i z^i)^-16,
        # z ≥ 0, |error| < 3e-7 (GELU within 5e-7), with gelu(g) = max(g, 0) - |g|/2 · (1 - erf(|g|/√2)):
        # 15 multiply-adds and one fast division instead of libdevice's erf and its branches
        z = tl.abs(g) * 0.7071067811865476
        q = 1.0 + z * (0.0705230784 + z * (0.0422820123 + z * (0.0092705272 + z * (
            0.0001520143 + z * (0.0002765672 + z * 0.0000430638)))))
        r = tl.math.fdiv(tl.full(q.shape, 1.0, tl.float32), q)  # div.full: ~2 ulp, no IEEE rounding path
        r = r * r
        r = r * r
        r = r * r
        return a * (tl.maximum(g, 0.0) - (z * 0.7071067811865476) * (r * r))

    @triton.jit
    def gate_exp(a, g):
        # a·gelu(g), exact GELU through Abramowitz & Stegun 7.1.26: erf(z) = 1 - t·P(t)·exp(-z²),
        # t = 1 / (1 + p·z), |error| < 1.5e-7: 5 multiply-adds, a fast division and the hardware exp2
        z = tl.abs(g) * 0.7071067811865476
        t = tl.math.fdiv(tl.full(z.shape, 1.0, tl.float32), 1.0 + 0.3275911 * z)
        p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        e = tl.math.exp2(z * z * -1.4426950408889634)
        return a * (tl.maximum(g, 0.0) - (z * 0.7071067811865476) * (p * e))

    GATES = dict(zip(GATE_NAMES, (gate_exp, gate_poly, gate_erf), strict=True))

    @triton.jit
    def _short_attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, B, n, m,
                                s_qb, s_qn, s_qh, s_kb, s_km, s_kh, s_vb, s_vm, s_vh, s_ob, s_on, s_oh,
                                scale, H: tl.constexpr, G: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_M: tl.constexpr, D: tl.constexpr):
        # one program: G sequences (a 16-row tile holds four of 4 tokens), all heads in turn;
        # the scores of different sequences are masked out (block-diagonal). Scores and softmax
        # in float32, p·v as the flash kernels do it (p rounded to q's type).
        first = tl.program_id(0) * G
        rn, rm, rd = tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_M), tl.arange(0, D)
        bq, bk = first + rn // n, first + rm // m  # the sequence of each query / key row
        ok_q = (rn < G * n) & (bq < B)
        ok_k = (rm < G * m) & (bk < B)
        q_off = bq * s_qb + (rn % n) * s_qn
        k_off, v_off = bk * s_kb + (rm % m) * s_km, bk * s_vb + (rm % m) * s_vm
        o_off = bq * s_ob + (rn % n) * s_on
        same = (rn // n)[:, None] == (rm // m)[None, :]
        for h in range(H):
            q = tl.load(q_ptr + q_off[:, None] + h * s_qh + rd[None, :], mask=ok_q[:, None], other=0.0)
            k = tl.load(k_ptr + k_off[:, None] + h * s_kh + rd[None, :], mask=ok_k[:, None], other=0.0)
            v = tl.load(v_ptr + v_off[:, None] + h * s_vh + rd[None, :], mask=ok_k[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale  # (BLOCK_N, BLOCK_M)
            # masked scores: a finite floor, not -inf, so that padding rows (no keys) stay finite
            s = tl.where(same & ok_k[None, :], s, -1.0e30)
            p = tl.exp(s - tl.max(s, axis=1)[:, None])
            p = p / tl.sum(p, axis=1)[:, None]
            out = tl.dot(p.to(v.dtype), v)  # (BLOCK_N, D)
            tl.store(o_ptr + o_off[:, None] + h * s_oh + rd[None, :], out.to(o_ptr.dtype.element_ty),
                     mask=ok_q[:, None])


@torch.library.custom_op("sp4d::geglu_linear", mutates_args=())
def geglu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gate: str = "exp",
                 tma: bool = True) -> torch.Tensor:
    """``a·gelu(g)`` with ``[a | g] = x·weightᵀ + bias`` (weight (2N, K), bias (2N,)), fused.
    x: (..., K) -> (..., N). float32 accumulation, one rounding at the end. ``tma``: the
    persistent TMA kernel where it can run (tma_usable), with epilogue GATES[gate]; else (and
    always for ``tma`` False) the blocked kernel (erf GELU)."""
    K = x.shape[-1]
    N = weight.shape[0] // 2
    if weight.dim() != 2 or weight.shape != (2 * N, K) or bias.shape != (2 * N,) or not N:
        raise ValueError(f"geglu_linear: weight must be (2N, {K}) and bias (2N,) for inputs (..., {K}); got "
                         f"weight {tuple(weight.shape)}, bias {tuple(bias.shape)}")
    if weight.dtype != x.dtype or bias.dtype != x.dtype:
        raise ValueError(f"geglu_linear: x, weight and bias must share one dtype; got {x.dtype}, {weight.dtype}, "
                         f"{bias.dtype}")
    x2 = x.reshape(-1, K)
    out = torch.empty(x2.shape[0], N, device=x.device, dtype=x.dtype)
    if tma and tma_usable(x2, weight):
        try:
            geglu_tma(x2, weight, bias, out, gate=gate)
            return out.view(*x.shape[:-1], N)
        except Exception as e:  # noqa: BLE001 - a Triton/GPU pair that cannot build it: blocked from now on
            if isinstance(e, torch.OutOfMemoryError):
                raise
            _tma_fallback(e)
    geglu_blocked(x2, weight, bias, out)
    return out.view(*x.shape[:-1], N)


_tma_failed = False


def _tma_fallback(error: Exception) -> None:
    global _tma_failed
    _tma_failed = True
    warnings.warn(f"the persistent GEGLU kernel did not compile here ({type(error).__name__}: {str(error)[:300]}); "
                  "using the blocked kernel", RuntimeWarning, stacklevel=3)


def tma_usable(x2: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether geglu_tma can take these operands: a Hopper-or-newer GPU (or the interpreter), a
    Triton with TMA descriptors, TMA's layout rules (unit inner strides, 16-byte aligned rows and
    bases), and no earlier failure to build it in this process."""
    if not TMA_TRITON or _tma_failed:
        return False
    if x2.is_cuda and torch.cuda.get_device_capability(x2.device)[0] < 9:
        return False
    return all(t.stride(-1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0
               for t in (x2, weight))


def geglu_blocked(x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor) -> None:
    """The GEGLU product into ``out`` (M, N), one program per output tile (any strides)."""
    (M, K), N = x2.shape, out.shape[1]

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    with _LAUNCH:
        _geglu_kernel[grid](x2, weight, bias, out, M, N, K, x2.stride(0), x2.stride(1),
                            weight.stride(0), weight.stride(1), out.stride(0), out.stride(1))


def geglu_tma(x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor,
              kernel=None, gate="exp", per_sm: int = 1) -> None:
    """The GEGLU product into ``out`` (M, N): persistent programs, TMA loads and stores.
    ``kernel``: another autotuned variant of _geglu_tma_kernel (other configs); ``gate``: a name of
    GATES or a @triton.jit function (a, g) -> out (scripts/bench_kernels.py times epilogues that
    are not GELU); ``per_sm``: persistent programs per SM (2, with configs small enough for two on
    an SM, lets one program's epilogue overlap the other's products)."""
    (M, K), N = x2.shape, out.shape[1]
    programs = per_sm * (torch.cuda.get_device_properties(x2.device).multi_processor_count if x2.is_cuda else 4)
    descs = [TensorDescriptor(t, list(t.shape), list(t.stride()), [16, 16]) for t in (x2, weight, out)]

    def grid(meta):  # the boxes ([16, 16] above) are set per config by _set_blocks
        return (min(programs, triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])),)

    with _LAUNCH:
        (kernel or _geglu_tma_kernel)[grid](descs[0], descs[1], bias, descs[2], M, N, K, PROGRAMS=programs,
                                            GATE=GATES[gate] if isinstance(gate, str) else gate)


@geglu_linear.register_fake
def _(x, weight, bias, gate="exp", tma=True):
    return x.new_empty(*x.shape[:-1], weight.shape[0] // 2)


@torch.library.custom_op("sp4d::short_attention", mutates_args=())
def short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v for q (B, n, heads, d) and k, v (B, m, heads, d), n and m small
    (a linear layer's output viewed per head, no copy); returns (B, n, heads·d). d a power of 2."""
    B, n, H, D = q.shape
    m = k.shape[1]
    if k.shape != (B, m, H, D) or v.shape != k.shape or not _head_dim_ok(D):
        raise ValueError(f"short_attention: q (B, n, heads, d) and k, v (B, m, heads, d) with d a power of 2 "
                         f"≥ 16; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty(B, n, H, D, device=q.device, dtype=q.dtype)
    G = max(1, 16 // max(n, m))  # sequences per program: fill the 16-row minimum of a matrix product
    _short_attention_kernel[(triton.cdiv(B, G),)](
        q, k, v, out, B, n, m, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2), D ** -0.5,
        H=H, G=G, BLOCK_N=max(16, triton.next_power_of_2(G * n)), BLOCK_M=max(16, triton.next_power_of_2(G * m)),
        D=D, num_warps=4)
    return out.view(B, n, H * D)


@short_attention.register_fake
def _(q, k, v):
    return q.new_empty(q.shape[0], q.shape[1], q.shape[2] * q.shape[3])


def _register_flop_formulas() -> None:
    """FLOPs of the custom ops for torch.utils.flop_counter (the benchmarks' FLOP floor): the
    products they replace, so the counted work does not shrink when the kernels take over."""
    from torch.utils.flop_counter import register_flop_formula, sdpa_flop_count

    @register_flop_formula(torch.ops.sp4d.geglu_linear)
    def _(x_shape, w_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * w_shape[0]

    @register_flop_formula(torch.ops.sp4d.short_attention)
    def _(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        (b, n, h, d), m = q_shape, k_shape[1]
        return sdpa_flop_count((b, h, n, d), (b, h, m, d), (b, h, m, d))


_register_flop_formulas()
