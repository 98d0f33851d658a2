"""How SP4D runs: RunOptions from a job's settings, what describe() says runs, and that the choices
are made in the options (no environment switch, no class attribute, instances compiled)."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from backend.errors import BackendError
from backend.settings import checked
from backend.sp4d import dispatch
from backend.sp4d.options import COMPILE_SCOPES, OpChoices, RunOptions, configure

ROOT = Path(__file__).resolve().parents[2]


def test_options_from_settings():
    """One place turns settings into options: devices ('auto' is the GPU when there is one), the
    precision (the CPU always float32), the compile scope and the layout it prefers, low VRAM."""
    opts = RunOptions.from_settings(checked({"device": "auto", "compile": True, "low_vram": True,
                                             "decode_chunk": 1}), cuda_count=1)
    assert opts.devices == ("cuda",) and opts.compile == "layers"
    assert opts.channels_last and opts.offload == "cpu" and opts.decode_chunk == 1
    cpu = RunOptions.from_settings(checked({"precision": "fp16", "compile": "blocks"}), cuda_count=0)
    assert cpu.devices == ("cpu",) and cpu.dtype == torch.float32 and not cpu.channels_last
    split = RunOptions.from_settings(checked({"device": "cuda:0,cuda:1"}), cuda_count=2)
    assert split.devices == ("cuda:0", "cuda:1") and split.compile is None and not split.channels_last
    with pytest.raises(BackendError, match="1 CUDA GPU"):
        RunOptions.from_settings(checked({"device": "cuda:0,cuda:1"}), cuda_count=1)
    with pytest.raises(BackendError, match="no CUDA GPU") as e:
        RunOptions.from_settings(checked({"device": "cuda"}), cuda_count=0)
    assert e.value.code == "no_gpu"


def test_compile_auto_compiles_where_the_machine_can():
    """'auto' (Blender's default) is the layers on a CUDA GPU with Triton, eager on the CPU, without
    Triton (Windows' plain torch) and in the 12 GB tier (its streamed blocks run eager)."""
    from backend.sp4d.memory import GIB

    def scope(device="cuda", triton=True, **s):
        return RunOptions.from_settings(checked({"device": device, "compile": "auto", **s}), cuda_count=1,
                                        available=79 * GIB, triton=triton).compile

    assert checked({"compile": "AUTO"})["compile"] == "auto"
    assert scope() == "layers" and RunOptions.from_settings(
        checked({"compile": "auto"}), cuda_count=1, available=79 * GIB, triton=True).channels_last
    assert scope(triton=False) is None and scope(device="cpu") is None and scope(vram="12") is None
    assert scope(vram="16") == "layers"
    with pytest.raises(BackendError, match="'auto'"):
        checked({"compile": "sometimes"})


def test_memory_tiers_from_settings():
    """The tier ('vram') is chosen from the memory available on the GPU unless set; low_vram caps it
    at 16 GB; the 12 GB tier streams UNet blocks and so runs eager; the CPU has no tier."""
    from backend.sp4d.memory import GIB, TIERS

    def opts(available, **s):
        return RunOptions.from_settings(checked({"device": "cuda", **s}), cuda_count=1, available=available)

    assert [opts(a * GIB).tier for a in (79, 23, 16, 11, 6)] == ["24", "24", "16", "12", "12"]
    big = opts(79 * GIB, compile=True)
    assert (big.offload, big.cfg_batch, big.unet_resident_gib, big.compile) == (None, "joint", None, "layers")
    mid = opts(79 * GIB, vram=16, compile=True)
    assert (mid.offload, mid.cfg_batch, mid.unet_resident_gib, mid.compile) == ("cpu", "sequential", None, "layers")
    assert mid.decode_chunk == TIERS["16"].decode_chunk
    small = opts(79 * GIB, vram="12", compile=True)
    assert small.unet_resident_gib == TIERS["12"].unet_resident_gib and small.compile is None
    assert opts(79 * GIB, low_vram=True).tier == "16" and opts(11 * GIB, low_vram=True).tier == "12"
    assert RunOptions.from_settings(checked({"vram": "12"}), cuda_count=0).tier is None
    with pytest.raises(BackendError) as e:
        checked({"vram": "8"})
    assert e.value.code == "bad_input" and "24" in str(e.value)
    with pytest.raises(ValueError, match="eager"):
        RunOptions(unet_resident_gib=4.0, compile="layers")


def test_allocator_config_is_expandable_except_on_windows_or_when_set():
    from backend.allocator import allocator_config

    env = {}
    assert allocator_config(env, "linux") == "expandable_segments:True" == env["PYTORCH_CUDA_ALLOC_CONF"]
    assert allocator_config({}, "win32") is None
    own = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}
    assert allocator_config(own, "linux") == "max_split_size_mb:128"


def test_options_are_checked_and_replaced_by_name():
    opts = RunOptions()
    assert opts.replace(frame_norm=False, compile="blocks") == RunOptions(compile="blocks",
                                                                          ops=OpChoices(frame_norm=False))
    for bad in ({"compile": "everything"}, {"devices": ()}, {"devices": ("cpu",) * 3}, {"decode_chunk": 0}):
        with pytest.raises(ValueError):
            RunOptions(**bad)
    with pytest.raises(ValueError, match="geglu_gate must be one of"):
        OpChoices(geglu_gate="tanh")  # the benchmarks' inexact epilogues are not the layer's
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.ops.frame_norm = False  # frozen: a run's choices do not change under it


def described(options: RunOptions) -> dict[str, str]:
    """describe()'s rows: op -> what runs."""
    return {k.strip(): v.strip() for k, v in (line.split("  ", 1) for line in options.describe().splitlines())}


def test_describe_says_what_runs_for_attention_on_cuda_bf16_compiled():
    rows = described(RunOptions(devices=("cuda",), dtype=torch.bfloat16, compile="layers", channels_last=True))
    attention = rows["attention, camera and motion blocks (12 and 4 tokens)"]
    if dispatch.kernels.triton is not None:
        assert "Triton kernel" in attention and "Triton kernel" in rows["GEGLU projection"]
    assert "SDPA" in rows["attention, spatial blocks (h·w tokens)"]
    assert "channels-last" in rows["UNet layout"] and "by image" in rows["VAE GroupNorm"]
    eager_cpu = described(RunOptions())
    assert eager_cpu["attention, camera and motion blocks (12 and 4 tokens)"] == "PyTorch SDPA, chunked"
    assert eager_cpu["compiled"] == "nothing (eager)" and "cuBLAS" in eager_cpu["GEGLU projection"]


def test_dispatch_choices_follow_the_options():
    """The same *_impl functions decide at run time and in describe()."""
    ops, off = OpChoices(), OpChoices(triton_kernels=False)
    assert dispatch.attention_impl(ops, 12, kernel_ok=True, compiled=False) == "triton"
    assert dispatch.attention_impl(off, 12, kernel_ok=True, compiled=True) == "reduce"
    assert dispatch.attention_impl(off, 12, kernel_ok=True, compiled=False) == "sdpa"
    assert dispatch.attention_impl(ops, 17, kernel_ok=True, compiled=True) == "sdpa"
    assert dispatch.geglu_impl(off, kernel_ok=True) == "plain"
    assert dispatch.norm_silu_impl(OpChoices(frame_norm=False), kernel_ok=True) == "plain"
    assert dispatch.time_conv_impl(ops, 72 * 72, False) == "frame_conv"
    assert dispatch.time_conv_impl(ops, 36 * 36, True) == "cudnn channels-last"
    assert dispatch.time_conv_impl(ops, 36 * 36, False) == "cudnn"
    assert dispatch.out_linear_impl(ops, True, torch.bfloat16, compiled=True) == "bias apart"
    assert dispatch.out_linear_impl(OpChoices(out_bias_apart=False), True, torch.bfloat16, True) == "linear"


def test_configure_sets_the_choices_on_the_instances_only():
    from backend.sp4d.layers import Attention, FeedForward

    ff, attn = FeedForward(8), Attention(8, 2, 4)
    choices = OpChoices(triton_kernels=False)
    configure(ff, choices)
    assert ff.net[0].ops is choices and ff.net[2].ops is choices
    assert attn.ops == OpChoices() and type(attn).ops == OpChoices()  # other instances, the class: unchanged


def test_the_compile_scopes_are_the_options_scopes():
    from backend.sp4d.compiled import SCOPES

    assert tuple(SCOPES) == COMPILE_SCOPES


def test_no_behaviour_switch_is_left_in_the_environment_or_class_attributes():
    """The backend reads no SP4D_* environment variable, and no class of the model keeps a switch
    as a class attribute (UPPER_CASE = value in a class body)."""
    sources = {p: p.read_text() for p in (ROOT / "backend").rglob("*.py")}
    assert not [p for p, s in sources.items() if "SP4D_" in s]
    switches = []
    for path, source in ((p, s) for p, s in sources.items() if p.parent.name == "sp4d"):
        for cls in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)):
            for stmt in cls.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] \
                    if isinstance(stmt, ast.AnnAssign) else []
                switches += [(path.name, cls.name, n.id) for n in targets
                             if isinstance(n, ast.Name) and n.id.isupper() and len(n.id) > 1]
    assert not switches, switches
