"""The weights download (backend/weights.py) and the dependency check (backend/doctor.py).

No internet: a test-only "hub" (tests/hub_server.py: http.server on 127.0.0.1 in this test
process) stands in for huggingface.co through HF_ENDPOINT. The product opens no port; the backend
under test is the real ``serve`` subprocess, huggingface_hub the real library, the cache its real
layout.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from backend import doctor

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from hub_server import FILE, REPO, LocalHub  # noqa: E402


@pytest.fixture
def hub_env(tmp_path):
    """An environment pointing huggingface_hub at an empty cache of this test (and no token)."""
    return {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": ""}


@pytest.fixture
def local_hub():
    hubs = []

    def make(*a, **kw):
        hubs.append(LocalHub(*a, **kw))
        return hubs[-1]

    yield make
    for h in hubs:
        h.close()


def _env(hub_env, hub, **extra):
    env = {**hub_env, "HF_ENDPOINT": hub.url, **extra}
    for k in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.setdefault(k, "")
    return env


def _cached(hub_env):
    from huggingface_hub import try_to_load_from_cache

    p = try_to_load_from_cache(REPO, FILE, cache_dir=hub_env["HF_HUB_CACHE"])
    return Path(p) if isinstance(p, str) else None


def test_download_streams_progress_cancels_and_resumes(start_server, local_hub, hub_env):
    """A cancelled download keeps its partial file; the next one continues it with a Range
    request; the finished file is where huggingface_hub itself finds it offline."""
    payload = os.urandom(3 << 20)
    hub = local_hub(payload, rate=1.5e6)  # ~2 s for the whole file
    srv = start_server(env=_env(hub_env, hub))
    srv.send(id="w1", cmd="weights", accept_licence=True)
    while True:
        e = srv.read()
        assert e["id"] == "w1" and e["event"] == "progress", e
        if e["bytes"] > 0:
            break
    assert e["stage"] == "weights" and e["bytes_total"] == len(payload) and e["total"] == len(payload)
    assert e["rate_bps"] > 0 and "MB/s" in e["message"]
    srv.send(id="c", cmd="cancel", target="w1")
    end = srv.until("w1")[-1]
    assert end["event"] == "error" and end["code"] == "cancelled", end
    partial = Path(hub_env["HF_HUB_CACHE"]) / "models--stabilityai--sp4d" / "blobs" / f"{hub.etag}.incomplete"
    have = partial.stat().st_size
    assert 0 < have < len(payload) and _cached(hub_env) is None

    hub.rate = None
    srv.send(id="w2", cmd="weights", accept_licence=True)
    events = srv.until("w2")
    assert events[-1]["event"] == "result", events[-1]
    gets = [r for r in hub.requests if r[0] == "GET"]
    start = int(gets[-1][2].removeprefix("bytes=").rstrip("-"))
    assert start >= have  # continued from the partial file (flushed up to its last report), not from zero
    assert events[-2]["resumed_from"] == start
    path = Path(events[-1]["data"]["weights"])
    assert path.read_bytes() == payload and not partial.exists()
    assert _cached(hub_env) == path  # the hub cache's layout: huggingface_hub finds it without the network
    from huggingface_hub import hf_hub_download

    assert Path(hf_hub_download(REPO, FILE, cache_dir=hub_env["HF_HUB_CACHE"], local_files_only=True)) == path
    n = len(hub.requests)
    srv.send(id="w3", cmd="weights")  # cached now: no request at all (and no licence question)
    assert srv.until("w3")[-1]["event"] == "result" and len(hub.requests) == n


def test_download_refused_until_the_licence_is_accepted(start_server, local_hub, hub_env):
    hub = local_hub(b"weights")
    srv = start_server(env=_env(hub_env, hub))
    srv.send(id="w", cmd="weights")
    e = srv.until("w")[-1]
    assert e["event"] == "error" and e["code"] == "licence_required", e
    srv.send(id="bad", cmd="weights", accept_licence="yes")
    e2 = srv.until("bad")[-1]
    assert e2["event"] == "error" and e2["code"] == "bad_request" and "accept_licence" in e2["message"]
    assert "Stability AI Community License" in e["message"] and "huggingface.co/stabilityai/sp4d" in e["message"]
    assert hub.requests == []  # nothing asked of the hub before the licence is accepted


def test_gated_repo_refusal_says_what_to_do(start_server, local_hub, hub_env):
    hub = local_hub(b"weights", gated=True)
    srv = start_server(env=_env(hub_env, hub))
    srv.send(id="w", cmd="weights", accept_licence=True)
    e = srv.until("w")[-1]
    assert e["event"] == "error" and e["code"] == "gated", e
    assert "https://huggingface.co/stabilityai/sp4d" in e["message"] and "hf auth login" in e["message"]
    assert "HF_TOKEN" in e["message"]


def test_a_corrupted_download_is_deleted_not_used(start_server, local_hub, hub_env):
    hub = local_hub(b"not the weights", etag=hashlib.sha256(b"the weights").hexdigest())
    srv = start_server(env=_env(hub_env, hub))
    srv.send(id="w", cmd="weights", accept_licence=True)
    e = srv.until("w")[-1]
    assert e["event"] == "error" and e["code"] == "bad_checkpoint" and "SHA-256" in e["message"], e
    assert not list((Path(hub_env["HF_HUB_CACHE"]) / "models--stabilityai--sp4d" / "blobs").iterdir())
    assert _cached(hub_env) is None


def test_offline_downloads_nothing_and_says_so(start_server, local_hub, hub_env):
    """Blender's online access off (HF_HUB_OFFLINE): offline at once, even with the licence
    accepted, and no request reaches the hub."""
    hub = local_hub(b"weights")
    srv = start_server(env=_env(hub_env, hub, HF_HUB_OFFLINE="1"))
    srv.send(id="w", cmd="weights", accept_licence=True)
    e = srv.until("w")[-1]
    assert e["event"] == "error" and e["code"] == "offline" and "Allow Online Access" in e["message"], e
    assert hub.requests == []


def test_cli_weights_accept_licence_flag(local_hub, hub_env):
    hub = local_hub(b"x" * 1000)
    env = dict(os.environ, PYTHONPATH=str(ROOT), **_env(hub_env, hub))
    r = subprocess.run([sys.executable, "-m", "backend", "weights"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "error [licence_required]" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "backend", "weights", "--accept-licence"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and Path(r.stdout.strip()).read_bytes() == b"x" * 1000, r.stderr


SVD_REPO, SVD_FILE = "stabilityai/stable-video-diffusion-img2vid-xt-1-1", "svd_xt_1_1.safetensors"


def test_svd_weights_have_their_own_licence_and_repository(start_server, local_hub, hub_env):
    """model 'svd': SVD-XT 1.1's licence named, then its file from its repository; the CLI the same;
    an unknown model is a bad request."""
    hub = local_hub(b"svd weights", repo=SVD_REPO, file=SVD_FILE)
    srv = start_server(env=_env(hub_env, hub))
    srv.send(id="w", cmd="weights", model="svd")
    e = srv.until("w")[-1]
    assert e["event"] == "error" and e["code"] == "licence_required", e
    assert "SVD-XT 1.1" in e["message"] and f"huggingface.co/{SVD_REPO}/blob/main/LICENSE.md" in e["message"]
    assert "Accept SVD Licence" in e["message"] and hub.requests == []
    srv.send(id="w2", cmd="weights", model="svd", accept_licence=True)
    e = srv.until("w2")[-1]
    assert e["event"] == "result" and Path(e["data"]["weights"]).read_bytes() == b"svd weights", e
    assert "models--stabilityai--stable-video-diffusion-img2vid-xt-1-1" in e["data"]["weights"]
    srv.send(id="bad", cmd="weights", model="sv4d")
    e = srv.until("bad")[-1]
    assert e["event"] == "error" and e["code"] == "bad_request" and "'model'" in e["message"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **_env(hub_env, hub))
    r = subprocess.run([sys.executable, "-m", "backend", "weights", "--model", "svd", "--accept-licence"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and Path(r.stdout.strip()).read_bytes() == b"svd weights", r.stderr


def test_a_gated_svd_repository_names_its_own_page(start_server, local_hub, hub_env):
    hub = local_hub(b"w", gated=True, repo=SVD_REPO, file=SVD_FILE)
    srv = start_server(env=_env(hub_env, hub))
    srv.send(id="w", cmd="weights", model="svd", accept_licence=True)
    e = srv.until("w")[-1]
    assert e["event"] == "error" and e["code"] == "gated" and f"https://huggingface.co/{SVD_REPO}," in e["message"]


def test_doctor_checks_every_dependency_of_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    assert {d.lower().replace("_", "-") for d in doctor.REQUIRED.values()} == names


def test_doctor_reports_torch_and_devices():
    r = subprocess.run([sys.executable, "-m", "backend", "doctor", "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    rep = json.loads(r.stdout)
    import torch

    assert r.returncode == 0 and rep["missing"] == [] and rep["torch"] == torch.__version__
    assert rep["cuda"] == torch.cuda.is_available() and len(rep["gpus"]) == torch.cuda.device_count()


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """An interpreter with none of the backend's packages (a venv without even pip)."""
    d = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(d)], check=True, timeout=120)
    return d / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def test_serve_without_dependencies_answers_missing_dependency(bare_python, tmp_path):
    """No torch, no numpy: the server still speaks the protocol; every job ends with
    missing_dependency naming what is missing, instead of a dead process."""
    p = subprocess.Popen([str(bare_python), "-m", "backend", "serve"], cwd=ROOT, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = [{"id": "p", "cmd": "ping"}, {"id": "j", "cmd": "run", "job": str(tmp_path)}, {"id": "w", "cmd": "weights"},
             {"id": "s", "cmd": "shutdown"}]
    out, err = p.communicate("".join(json.dumps(x) + "\n" for x in lines), timeout=60)
    events = [json.loads(x) for x in out.splitlines()]
    assert p.returncode == 0, err
    ready, ping, job, weights, bye = events
    assert ready["event"] == "ready" and {"torch", "numpy"} <= set(ready["missing"])
    assert ping["data"]["pong"] and "torch" in ping["data"]["missing"]
    for e in (job, weights):
        assert e["event"] == "error" and e["code"] == "missing_dependency" and "torch" in e["message"]
        assert "Set Up Backend" in e["message"]
    assert bye["data"] == {"shutdown": True}
    r = subprocess.run([str(bare_python), "-m", "backend", "doctor", "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 3 and "torch" in json.loads(r.stdout)["missing"]

