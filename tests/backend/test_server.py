"""The backend as a real subprocess speaking the JSON-lines protocol."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def test_ping_and_bad_requests(server):
    server.send(id="a", cmd="ping")
    assert server.read() == {"id": "a", "event": "result", "data": {"pong": True, "version": "0.1.0"}}
    server.p.stdin.write("not json\n")
    server.p.stdin.flush()
    e = server.read()
    assert e["event"] == "error" and e["code"] == "bad_request"
    server.send(id="b", cmd="launch_rockets")
    e = server.read()
    assert e["id"] == "b" and e["code"] == "bad_request" and "unknown cmd" in e["message"]
    server.send(id="c", cmd="run")
    assert server.read()["code"] == "bad_request"


def test_run_job_end_to_end_then_resume(server, job_copy):
    server.send(id="j", cmd="run", job=str(job_copy.root))
    events = server.until("j")
    assert events[-1]["event"] == "result", events[-1]
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    assert {"parts", "rig"} <= set(stages)
    assert all(0 <= e["step"] <= e["total"] for e in events if e["event"] == "progress")
    assert job_copy.skeleton_json.exists() and job_copy.weights_npz.exists()
    # a second run reuses every finished stage: no progress, same records
    before = job_copy.read_status()["stages"]
    server.send(id="k", cmd="run", job=str(job_copy.root))
    again = server.until("k")
    assert [e["event"] for e in again] == ["result"]
    assert job_copy.read_status()["stages"] == before


def test_bad_input_reports_code_and_status(server, job_copy):
    with np.load(job_copy.mesh_npz) as z:
        arrays = dict(z)
    arrays["vertices"][3] = np.nan
    np.savez(job_copy.mesh_npz, **arrays)
    server.send(id="x", cmd="generate", job=str(job_copy.root))
    e = server.until("x")[-1]
    assert e["event"] == "error" and e["code"] == "bad_input" and "NaN" in e["message"]
    assert job_copy.read_status()["error"]["code"] == "bad_input"
    server.send(id="y", cmd="generate", job=str(job_copy.root / "does-not-exist"))
    e = server.until("y")[-1]
    assert e["code"] == "bad_input" and "does not exist" in e["message"]
    assert not (job_copy.root / "does-not-exist").exists()  # an error never creates the folder


def test_no_gpu_without_ground_truth(server, job_copy):
    with np.load(job_copy.mesh_npz) as z:
        arrays = {k: z[k] for k in ("vertices", "faces", "matrix_world")}
    np.savez(job_copy.mesh_npz, **arrays)
    spec = json.loads(job_copy.job_json.read_text())
    spec["settings"]["part_source"] = "auto"
    job_copy.job_json.write_text(json.dumps(spec))
    server.send(id="m", cmd="generate", job=str(job_copy.root))
    e = server.until("m")[-1]
    assert e["code"] == "no_gpu" and "CUDA" in e["message"]  # not missing_weights: the weights are not the problem


def test_cancel_mid_job_leaves_folder_consistent(server, job_copy):
    job_copy.invalidate_from("generate", ("generate", "parts", "rig"))
    server.send(id="g", cmd="run", job=str(job_copy.root))
    e = server.read()
    assert e["event"] == "progress"
    server.send(id="c", cmd="cancel", target="g")
    events = server.until("g")
    assert events[-1]["event"] == "error" and events[-1]["code"] == "cancelled"
    status = job_copy.read_status()
    assert status["error"]["code"] == "cancelled" and "generate" not in status["stages"]
    # the folder has no temporary files and a later run completes
    assert not list(job_copy.root.rglob(".*.tmp"))
    server.send(id="g2", cmd="run", job=str(job_copy.root))
    assert server.until("g2")[-1]["event"] == "result"


def test_exits_on_shutdown_and_on_stdin_eof(start_server):
    s = start_server()
    s.send(id="s", cmd="shutdown")
    assert s.read()["data"] == {"shutdown": True}
    assert s.p.wait(timeout=30) == 0
    s = start_server()
    s.p.stdin.close()
    assert s.p.wait(timeout=30) == 0


def test_cli_run_and_error_exit(job_copy, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ok = subprocess.run([sys.executable, "-m", "backend", "run", str(job_copy.root)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "rig" in json.loads(ok.stdout)
    bad = subprocess.run([sys.executable, "-m", "backend", "rig", str(tmp_path / "nope")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "error [bad_input]" in bad.stderr


def test_reweight_request_and_cli_reject_a_broken_skeleton(server, job_copy, tmp_path):
    server.send(id="w", cmd="reweight", job=str(job_copy.root))  # no rig/skeleton_edited.json yet
    e = server.until("w")[-1]
    assert e["event"] == "error" and e["code"] == "bad_input" and "skeleton" in e["message"]
    bad = tmp_path / "skel.json"
    bad.write_text('{"bones": [{"name": "a", "deform": true, "head": [0, 0]}]}')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "backend", "reweight", str(job_copy.root), str(bad)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "error [bad_input]" in r.stderr and "head and a tail" in r.stderr


def test_warm_loads_the_model_once_and_never_downloads(start_server, tmp_path):
    """``warm`` (sent by Blender when its panel is first shown) loads the model the next job will
    use and keeps it; weights that are not on this disk give a reason, not a download (the hub
    cache here is empty and the network off), and so does the oracle's part source."""
    server = start_server(env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    fix = ROOT / "tests" / "fixtures" / "sp4d_tiny"
    s = {"weights": str(fix / "weights.safetensors"), "model_config": str(fix / "config.yaml"), "device": "cpu",
         "image_size": 48, "part_source": "sp4d"}
    server.send(id="w1", cmd="warm", settings=s)
    first = server.until("w1")
    d = first[-1]["data"]
    assert d["warmed"] and d["loaded"] and not d["ran"], first  # on the CPU: the load alone
    assert any(e["event"] == "progress" and e["stage"] == "warm" for e in first)
    server.send(id="w2", cmd="warm", settings=s)
    d = server.until("w2")[-1]["data"]
    assert d["warmed"] and not d["loaded"]  # the process kept it: a job now starts warm
    server.send(id="w3", cmd="warm", settings={**s, "weights": "hub"})
    d = server.until("w3")[-1]["data"]
    assert not d["warmed"] and "not downloaded" in d["reason"]
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.safetensors"))
    server.send(id="w4", cmd="warm", settings={**s, "weights": str(tmp_path / "gone.safetensors")})
    assert "does not exist" in server.until("w4")[-1]["data"]["reason"]
    server.send(id="w5", cmd="warm", settings={**s, "part_source": "oracle"})
    assert "oracle" in server.until("w5")[-1]["data"]["reason"]
    server.send(id="w6", cmd="warm", settings="fast")
    assert server.until("w6")[-1]["code"] == "bad_request"
    server.send(id="w7", cmd="warm", settings={**s, "precision": "fp8"})
    assert server.until("w7")[-1]["code"] == "bad_input"
