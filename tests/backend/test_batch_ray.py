"""The batch on Ray (backend/batch, scripts/batch_rig.py --ray): a local cluster of 2 CPUs.

Inputs are .blend files with the sample creature (the parts oracle: no weights, no GPU), made and
rigged by Blender worker processes (the Blender venv's interpreter); the model path runs the tiny
fixture model on the CPU. The driver runs as the user runs it, as its own process, so that a test
can kill one of its workers for real.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from safetensors.torch import load_file

from backend.batch.driver import last_where, uses_model
from backend.batch.plan import Item, Request, file_stems
from backend.batch.report import Progress, Report
from backend.errors import BackendError
from backend.jobdir import JobDir
from sp4d_job.layout import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "sp4d_tiny"
CI = bool(os.environ.get("CI"))


def need(ok: bool, why: str) -> None:
    """Skip on a developer's machine without it; in CI (scripts/test.sh installs it) fail."""
    if not ok:
        (pytest.fail if CI else pytest.skip)(why)


@pytest.fixture(scope="module")
def ray_installed():
    try:
        import ray  # noqa: F401
    except ImportError:
        need(False, "ray is not installed (pip install -e '.[ray]'; scripts/setup_env.sh does)")


@pytest.fixture(scope="module")
def blender_python():
    py = Path(os.environ.get("SP4D_BLENDER_PYTHON", ROOT / ".venv-blender-4.5" / "bin" / "python"))
    need(py.exists(), f"no Blender interpreter at {py} (scripts/setup_env.sh blender-4.5 makes it)")
    return str(py)


def env() -> dict:
    return dict(os.environ, SP4D_BACKEND_PYTHON=sys.executable, PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def blends(tmp_path_factory, blender_python):
    """asset000.blend, asset001.blend: two creatures each; asset001 also holds a mesh without faces."""
    out = tmp_path_factory.mktemp("blends")
    r = subprocess.run([blender_python, str(ROOT / "scripts" / "batch_bpy.py"), "sample", str(out), "--files", "2",
                        "--per-file", "2", "--broken"], capture_output=True, text=True, timeout=300, env=env())
    assert r.returncode == 0, r.stdout + r.stderr
    return [out / "asset000.blend", out / "asset001.blend"]


def driver(*args, **kw):
    return subprocess.run([sys.executable, "-m", "backend.batch", *map(str, args)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=600, **kw)


def report_of(out: Path) -> dict:
    entries = json.loads((out / "report.json").read_text())
    keys = [e["key"] for e in entries]
    assert len(keys) == len(set(keys)), f"an item is in the report twice: {keys}"
    return {e["key"]: e for e in entries}


def write_request(out: Path, blender_python: str, files, **extra) -> Path:
    req = {"out": str(out), "files": [str(f) for f in files], "settings": {"part_source": "oracle"},
           "blender": {"python": blender_python}, "num_cpus": 2, **extra}
    return Request.from_dict(req).write()


CREATURES = {"asset000-Creature0", "asset000-Creature1", "asset001-Creature0", "asset001-Creature1"}


@pytest.fixture(scope="module")
def first_batch(ray_installed, blends, blender_python, tmp_path_factory):
    """The batch as an artist starts it: batch_rig.py --ray from Blender's interpreter."""
    out = tmp_path_factory.mktemp("batch") / "out"
    t0 = time.monotonic()
    r = subprocess.run([blender_python, str(ROOT / "scripts" / "batch_rig.py"), "--ray", "--files", *map(str, blends),
                        "--out", str(out), "--part-source", "oracle", "--export", "glb"],
                       capture_output=True, text=True, timeout=600, env=env())
    return {"out": out, "run": r, "report": report_of(out) if (out / "report.json").exists() else {},
            "seconds": time.monotonic() - t0}


def test_a_batch_of_several_items_ends_each_once(first_batch):
    r, out, report = first_batch["run"], first_batch["out"], first_batch["report"]
    assert r.returncode == 1, r.stdout + r.stderr  # the faceless mesh failed
    assert set(report) == CREATURES | {"asset001-Broken"}
    assert "no faces" in report["asset001-Broken"]["error"] and report["asset001-Broken"]["phase"] == "capture"
    for key in CREATURES:
        e = report[key]
        assert e["ok"] and e["bones"] > 5 and e["armature"].endswith("_rig") and e["attempts"] == 1, e
        assert e["stages"] == {"generate": "ran", "parts": "ran", "rig": "ran"}
        assert "rig: ran" in Path(e["log"]).read_text()
    for stem in ("asset000", "asset001"):
        assert (out / f"{stem}_rigged.blend").is_file() and (out / f"{stem}_rigged.glb").stat().st_size > 10_000
    assert "[batch] 5/5 items: 4 ok, 1 failed" in r.stdout
    assert "FAIL asset001/Broken" in r.stdout


def test_a_rerun_does_only_what_is_left(first_batch, blender_python):
    """What a crash inside one item's rig stage leaves (generate and parts finished, rig not),
    then the same request again: that item's rig runs, everything else is reused."""
    out = first_batch["out"]
    job = JobDir(out / "jobs" / "asset000-Creature0")
    status = job.read_status()
    del status["stages"]["rig"]
    write_json_atomic(job.status_json, status)
    (out / "report.json").unlink()
    r = driver(out / "batch_request.json", "--num-cpus", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    report = report_of(out)
    assert set(report) == CREATURES | {"asset001-Broken"}
    assert report["asset000-Creature0"]["stages"] == {"generate": "reused", "parts": "reused", "rig": "ran"}
    for key in CREATURES - {"asset000-Creature0"}:
        assert report[key]["ok"] and report[key]["stages"] == dict.fromkeys(("generate", "parts", "rig"), "reused")


def _last_event(log: Path) -> str:
    """The log's last line that is not a progress line (those are indented)."""
    lines = [ln[20:] for ln in log.read_text().splitlines() if len(ln) > 20 and not ln[20:].startswith(" ")]
    return lines[-1] if lines else ""


def test_killed_workers_retry_the_item_then_report_it(ray_installed, blends, blender_python, tmp_path):
    """Kill the worker of the first item caught inside a stage once (its retry resumes there and
    rigs it), and the other item's worker twice (it is reported failed, never dropped)."""
    out = tmp_path / "out"
    req = write_request(out, blender_python, blends[:1])
    proc = subprocess.Popen([sys.executable, "-m", "backend.batch", str(req)], cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kills: dict[str, list] = {}  # item -> [(pid, stage)]
    plan: dict[str, int] = {}  # item -> how often to kill its worker: 1 for the first caught, 2 for the other
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            for log in sorted((out / "logs").glob("asset000-Creature*.log")):
                key, event = log.stem, _last_event(log)
                plan.setdefault(key, 1 if not plan else 2)
                if len(kills.get(key, [])) >= plan[key] or event not in ("parts: started", "rig: started"):
                    continue
                pid = last_where(str(log))["pid"]
                if pid in {p for p, _ in kills.get(key, [])}:
                    continue  # the try already killed (its log ends where it died): wait for the next one
                os.kill(pid, signal.SIGSTOP)
                if _last_event(log) == event:  # still inside that stage: kill it there
                    os.kill(pid, signal.SIGKILL)
                    kills.setdefault(key, []).append((pid, event.split(":")[0]))
                else:
                    os.kill(pid, signal.SIGCONT)
            time.sleep(0.02)
        stdout, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    once, twice = (k for k, n in sorted(plan.items(), key=lambda kv: kv[1]))
    assert [len(kills.get(once, [])), len(kills.get(twice, []))] == [1, 2], (kills, stdout)
    assert proc.returncode == 1, stdout
    report = report_of(out)
    assert set(report) == {once, twice}
    e = report[once]
    assert e["ok"] and e["bones"] > 5 and e["attempts"] == 2, e
    assert e["retried_after"][0]["pid"] == kills[once][0][0] and "died" in e["retried_after"][0]["error"]
    second = Path(e["log"]).read_text().split("try 2:")[1]
    assert "generate: reused" in second and f"{kills[once][0][1]}: ran" in second  # resumed where it died
    f = report[twice]
    assert not f["ok"] and f["code"] == "backend_died" and f["attempts"] == 2, f
    assert [r["pid"] for r in f["retried_after"]] == [pid for pid, _ in kills[twice]]
    assert f"retry asset000/{once.split('-')[1]}" in stdout and f"FAIL asset000/{twice.split('-')[1]}" in stdout
    assert (out / "asset000_rigged.blend").is_file()  # built with the item that was rigged


def _tiny_clip_jobs(root: Path, n: int) -> list[Path]:
    frames = root / "frames"
    frames.mkdir()
    for i, f in enumerate(load_file(FIX / "sampling.safetensors")["input.frames_u8"].numpy()):
        cv2.imwrite(str(frames / f"frame_{i}.png"), f[:, :, ::-1])
    settings = {"part_source": "sp4d", "weights": str(FIX / "weights.safetensors"), "device": "cpu",
                "model_config": str(FIX / "config.yaml"), "steps": 2, "image_size": 48, "preprocess": False}
    jobs = []
    for k in range(n):
        job = JobDir(root / f"clip{k}")
        job.create({"kind": "clip", "path": str(frames)}, {**settings, "seed": k})
        jobs.append(job.root)
    return jobs


def test_the_model_worker_keeps_the_model_loaded_between_items(ray_installed, tmp_path):
    jobs = _tiny_clip_jobs(tmp_path, 3)
    out = tmp_path / "out"
    r = driver("--jobs", *jobs, "--out", out, "--command", "generate", "--num-cpus", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    report = report_of(out)
    assert set(report) == {"clip0", "clip1", "clip2"} and all(e["ok"] for e in report.values())
    models = sorted(e["stages"]["model"] for e in report.values())
    assert models == ["loaded", "warm", "warm"], report  # one worker, one load for the three items
    for job in jobs:
        assert JobDir(job).stage_info("generate")["source"] == "sp4d"
        assert JobDir(job).view_image("parts", 12, 3).is_file()


def test_without_ray_the_plain_batch_works_and_ray_says_what_to_install(blends, blender_python, tmp_path):
    """A 'ray' that cannot be imported (first on PYTHONPATH) for every process of the batch."""
    stub = tmp_path / "stub" / "ray"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('ray is blocked in this test')\n")
    e = dict(env(), PYTHONPATH=str(stub.parent))
    plain = subprocess.run([blender_python, str(ROOT / "scripts" / "batch_rig.py"), "--files", str(blends[0]),
                            "--objects", "Creature0", "--out", str(tmp_path / "plain"), "--part-source", "oracle"],
                           capture_output=True, text=True, timeout=600, env=e)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert [x["ok"] for x in json.loads((tmp_path / "plain" / "report.json").read_text())] == [True]
    on_ray = subprocess.run([blender_python, str(ROOT / "scripts" / "batch_rig.py"), "--ray", "--files",
                             str(blends[0]), "--out", str(tmp_path / "ray"), "--part-source", "oracle"],
                            capture_output=True, text=True, timeout=120, env=e)
    assert on_ray.returncode == 2 and "pip install -e '.[ray]'" in on_ray.stderr, on_ray.stdout + on_ray.stderr
    assert not (tmp_path / "ray" / "report.json").exists()


def test_report_ends_each_item_once_and_never_drops_one(tmp_path):
    items = {k: Item(key=k, file="f.blend", object=k) for k in ("a", "b", "c")}
    rep = Report(tmp_path / "report.json", list(items.values()))
    rep.finish(items["b"], True, armature="b_rig", bones=3)
    with pytest.raises(RuntimeError, match="ended twice"):
        rep.finish(items["b"], False, error="again")
    items["a"].failures.append({"error": "[backend_died] the worker died"})
    rep.finish(items["a"], False, error="failed twice")
    rep.close(items)
    entries = json.loads((tmp_path / "report.json").read_text())
    assert [(e["key"], e["ok"], e["attempts"]) for e in entries] == [("a", False, 2), ("b", True, 1), ("c", False, 1)]
    assert entries[2]["error"].startswith("the batch ended before")


def test_progress_line_counts_and_time_left():
    t = [0.0]
    p = Progress(10, clock=lambda: t[0])
    t[0] = 60.0
    assert p.text(2, 1, {"stages": 2}) == ("[batch] 3/10 items: 2 ok, 1 failed; in flight 2 stages; 3.0 items/min; "
                                           "ETA 2m20s; elapsed 1m00s")


SVD_FIX = ROOT / "tests" / "fixtures" / "svd" / "svd_tiny"


def test_pictures_on_ray_as_the_local_batch_rigs_them(ray_installed, blender_python, tmp_path):
    """--images on Ray: one item a picture (its job folder written by the driver), the real tiny SVD
    and the parts oracle (oracle_mesh: the sample creature) on the cluster, the parts and rig stages,
    then one Blender worker builds every rigged picture's new mesh into OUT/images_rigged.blend; a
    missing picture fails alone with bad_input."""
    import numpy as np

    r = subprocess.run([sys.executable, "-m", "backend", "sample", str(tmp_path / "creature.npz")], cwd=ROOT,
                       env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pic = np.zeros((70, 50, 4), np.uint8)
    pic[10:60, 15:35] = (180, 120, 60, 255)
    cv2.imwrite(str(tmp_path / "figure.png"), cv2.cvtColor(pic, cv2.COLOR_RGBA2BGRA))
    settings = {"part_source": "oracle", "oracle_mesh": str(tmp_path / "creature.npz"), "device": "cpu",
                "svd_weights": str(SVD_FIX / "weights.safetensors"), "svd_config": str(SVD_FIX / "config.yaml"),
                "svd_steps": 2, "svd_frames": 6, "svd_width": 48, "svd_height": 32, "motion_bucket": 90}
    out = tmp_path / "out"
    req = Request.from_dict({"out": str(out), "images": [str(tmp_path / "figure.png"), str(tmp_path / "gone.png")],
                             "settings": settings, "blender": {"python": blender_python}, "num_cpus": 2}).write()
    r = driver(req, "--num-cpus", "2")
    assert r.returncode == 1, r.stdout + r.stderr
    report = report_of(out)
    by_image = {Path(e["image"]).name: e for e in report.values()}
    ok, gone = by_image["figure.png"], by_image["gone.png"]
    assert ok["ok"] and ok["bones"] > 1 and ok["object"].startswith("figure") and ok["armature"], ok
    assert ok["stages"] == {"generate": "ran", "parts": "ran", "rig": "ran"}
    assert not gone["ok"] and gone["code"] == "bad_input" and "does not exist" in gone["error"]
    job = JobDir(ok["job"])
    assert job.read_job()["source"] == {"kind": "image", "path": str(tmp_path / "figure.png")}
    assert json.loads((job.root / "input" / "svd" / "svd.json").read_text())["motion_bucket"] == 90
    assert (out / "images_rigged.blend").is_file()
    assert "FAIL gone.png" in r.stdout and "ok   figure.png" in r.stdout


def test_plan_names_and_checks(tmp_path):
    a, b = tmp_path / "x" / "model.blend", tmp_path / "y" / "model.blend"
    stems = file_stems([str(a), str(b), str(tmp_path / "solo.blend")])
    assert len(set(stems.values())) == 3 and stems[str(tmp_path / "solo.blend")] == "solo"
    assert all(s.startswith("model-") for s in list(stems.values())[:2])
    with pytest.raises(BackendError, match="no .blend files"):
        Request.from_dict({"out": str(tmp_path)})
    with pytest.raises(BackendError, match="needs 'blender'"):
        Request.from_dict({"out": str(tmp_path), "images": [str(tmp_path / "p.png")]})
    assert uses_model({"source": {"kind": "image"}, "settings": {}}, gpus=0)
    with pytest.raises(BackendError, match="not found"):
        Request.from_dict({"out": str(tmp_path), "files": [str(a)], "blender": {"python": sys.executable}})
    assert uses_model({"settings": {"part_source": "auto"}}, gpus=1) and not uses_model({"settings": {}}, gpus=0)
    assert uses_model({"source": {"kind": "clip"}, "settings": {}}, gpus=0)
    assert not uses_model({"settings": {"part_source": "oracle"}}, gpus=8)
