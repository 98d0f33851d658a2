"""The benchmark scripts run on the device machine; here they run on the CPU with the tiny
fixture model (bench_gpu) or refuse cleanly (the CUDA-only ones), so a broken script is caught
before a device call is spent on it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"  # the official code's outputs (tests/fixtures/README.md)
FIX = FIXTURES / "sp4d_tiny"
CPU_ONLY = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=ROOT, env=CPU_ONLY,
                          capture_output=True, text=True, timeout=600)


def test_bench_gpu_runs_a_generation_and_the_cfg_split_on_the_cpu(tmp_path):
    out = tmp_path / "bench.json"
    r = script("bench_gpu.py", "--device", "cpu", "--config", str(FIX / "config.yaml"), "--precision", "fp32",
               "--size", "48", "--steps", "2", "--devices", "cpu,cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert set(res["stages"]) == {"conditioning", "sampling", "decoding"}
    assert len(res["step_times"]) == 2 and res["step_median_seconds"] > 0
    assert res["step_flops"] > 0
    assert res["split_max_rel"] < 1e-5  # the two CFG halves on two "devices" equal the one batch
    assert "finite True" in r.stdout


def test_bench_gpu_names_a_missing_config(tmp_path):
    r = script("bench_gpu.py", "--device", "cpu", "--config", str(tmp_path / "nope.yaml"), "--steps", "1")
    assert r.returncode != 0 and "nope.yaml" in r.stderr


@pytest.mark.parametrize("name, args", [("bench_kernels.py", []), ("gpu_check_sp4d.py", ["--fixtures", "x"]),
                                        ("bench_condition.py", []), ("bench_ceiling.py", []),
                                        ("bench_memory.py", []), ("bench_first_job.py", ["--steps", "2"])])
def test_cuda_only_scripts_refuse_without_a_gpu(name, args):
    r = script(name, *args)
    assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr


def test_bench_warm_up_names_a_work_folder_without_its_cache(tmp_path):
    """bench_warm_up reruns Warm Up on what bench_first_job left: a folder without the checkpoint
    and the compile cache is refused with what to run first."""
    r = script("bench_warm_up.py", "--work", str(tmp_path / "empty"))
    assert r.returncode == 2 and "run bench_first_job.py --work there first" in r.stderr, r.stderr


def backend_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, env=CPU_ONLY, capture_output=True,
                          text=True, timeout=300)


def test_prepare_on_the_cpu_says_it_did_not_run_and_why():
    """Set Up's last step on a machine without CUDA: nothing is built per machine there; it says so
    (ran False, the reason) instead of loading the model, and exits 0 (Set Up goes on)."""
    r = backend_cli("prepare", "--weights", "hub")  # the licence is not accepted: no download is even tried
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ran"] is False and "no CUDA GPU" in out["reason"] and out["compiled"] is False


@pytest.mark.parametrize("args, code, words", [
    (["--precision", "fp8"], "bad_input", "settings.precision must be one of bf16, fp16, fp32, got 'fp8'"),
    (["--image-size", "50"], "bad_input", "settings.image_size must be an integer from 16 to 2048, a multiple of 8"),
    (["--vram", "8"], "bad_input", "settings.vram must be one of auto, 24, 16, 12"),
    (["--device", "cuda"], "no_gpu", "device 'cuda' was asked for but no CUDA GPU is available")])
def test_prepare_with_bad_settings_fails_with_the_stable_code(args, code, words):
    r = backend_cli("prepare", *args)
    assert r.returncode == 2 and f"error [{code}]: {words}" in r.stderr, r.stderr
    assert r.stdout == ""


def test_bench_kernels_names_an_unknown_piece():
    r = script("bench_kernels.py", "--only", "geglu,convv")
    assert r.returncode == 2 and "convv" in r.stderr


def test_bench_kernels_smoke_run_on_the_cpu(tmp_path):
    """The GPU-free pieces at one tiny level: every row is produced, the frame-window convolution
    and the edge convolutions' products agree with float64 references, the compiled blocks with the eager ones."""
    out = tmp_path / "kernels.json"
    r = script("bench_kernels.py", "--smoke", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    pieces = {k.split(" / ")[0] for k in rows}
    assert {"videores", "timeres", "conv3d", "edge", "qkv", "spatial"} <= pieces
    assert rows["conv3d / 64@8² / frame_conv"]["rel_err"] < 1e-6
    assert rows["edge / 8² / in 8->320 product"]["rel_err"] < 1e-6
    assert rows["edge / 8² / out 320->4 product"]["rel_err"] < 1e-6
    assert max(v["rel_err"] for k, v in rows.items() if k.startswith(("timeres", "videores"))) < 1e-5
    assert script("bench_kernels.py", "--smoke", "--only", "geglu").returncode == 2  # needs the GPU kernels


@pytest.mark.skipif(not any(map(__import__("shutil").which, ("g++", "c++", "clang++"))), reason="no C++ compiler")
def test_bench_decode_smoke_run_on_the_cpu(tmp_path):
    """A tiny decoder eager and compiled (as the compile scopes compile it, GroupNorms by image), NCHW
    and channels-last: every row, and all agree with float32 eager."""
    out = tmp_path / "decode.json"
    r = script("bench_decode.py", "--smoke", "--chunks", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["results"]
    assert [x["variant"] for x in rows] == ["eager", "eager-cl", "compiled", "compiled-cl"]
    assert max(x["max_rel_float32"] for x in rows) < 1e-5
    assert script("bench_decode.py", "--smoke", "--variants", "eager,fastest").returncode == 2


def test_bench_condition_smoke_run_on_the_cpu(tmp_path):
    """The conditioning's pieces on the tiny model: every row, encoded once cheaper than per copy."""
    out = tmp_path / "condition.json"
    r = script("bench_condition.py", "--smoke", "--config", str(FIX / "config.yaml"), "--reps", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 10 and all(v > 0 for v in rows.values())
    assert "first conditioning call, by CPU time" in r.stdout
    assert rows["conditioning, encoded once (4 encodes)"] < rows["conditioning, per copy (64 encodes)"]


def test_first_job_benchs_warm_up_phase_runs_on_the_cpu(tmp_path, monkeypatch):
    """bench_first_job's Warm Up phase (a serve process warmed at its start, then a job, as the
    add-on asks), here with the tiny model on the CPU, so that its device call works."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from bench_batch_ray import clip_jobs
    from bench_first_job import warm_serve

    settings = {"part_source": "sp4d", "weights": str(FIX / "weights.safetensors"),
                "model_config": str(FIX / "config.yaml"), "device": "cpu", "steps": 2, "image_size": 48,
                "precision": "fp32"}
    job = clip_jobs(tmp_path / "jobs", 1, settings)[0]
    out = warm_serve(job, settings, dict(CPU_ONLY, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor")))
    assert out["warm_up"]["warmed"] and out["warm_up"]["loaded"] and not out["warm_up"]["ran"]
    assert out["warm_up_s"] > 0 and out["job_after_warm_up_s"] > 0
    assert len(list((Path(job) / "views").rglob("*.png"))) > 0


def test_first_job_bench_resumes_only_the_same_measurement(monkeypatch):
    """A --work folder's results are resumed only by a run on the same card with the same
    settings; a field the folder has not recorded yet never clashes."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from bench_first_job import resume_clash

    row = {"gpu": "NVIDIA H100 80GB HBM3", "steps": 50, "compiled_graphs": "saved", "prepare_s": 211.1}
    assert resume_clash(row, {"gpu": "NVIDIA H100 80GB HBM3", "steps": 50, "diagnose": True}) == {}
    assert resume_clash(row, {"gpu": "NVIDIA H200", "steps": 20}) == {"gpu": ("NVIDIA H100 80GB HBM3", "NVIDIA H200"),
                                                                        "steps": (50, 20)}
