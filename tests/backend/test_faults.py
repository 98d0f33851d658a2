"""Every input the backend takes, as a hostile tester would give it: each case ends in a clear error
with a stable code (or succeeds), the server never dies, and no finished work is lost."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.context import StageContext
from backend.errors import ERROR_CODES, BackendError
from backend.jobdir import JobDir
from backend.stages import run_command
from sp4d_job.lock import LOCK_FILE, JobLock, holder

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "sp4d_tiny"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def cli(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "backend", *map(str, args)], cwd=ROOT, env=kw.pop("env", ENV),
                          capture_output=True, text=True, timeout=timeout, **kw)


# --- the server survives any line ----------------------------------------------------------------------------

HOSTILE_LINES = {
    "nested a hundred thousand deep": "[" * 100_000,
    "nested objects": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "not JSON": "not json at all",
    "a number": "42",
    "an array": '["ping"]',
    "a string": '"ping"',
    "null": "null",
    "a list as id": '{"id": [1, 2], "cmd": "ping"}',
    "an object as id": '{"id": {"a": 1}, "cmd": "run", "job": "/tmp"}',
    "a bool as id": '{"id": true, "cmd": "ping"}',
    "a huge id": json.dumps({"id": "x" * 10_000, "cmd": "ping"}),
    "no id on a job": '{"cmd": "run", "job": "/tmp"}',
    "a list as cmd": '{"id": "c1", "cmd": ["run"]}',
    "no cmd": '{"id": "c2"}',
    "a number as job": '{"id": "c3", "cmd": "run", "job": 5}',
    "an empty job": '{"id": "c4", "cmd": "rig", "job": ""}',
    "a NUL in the job": '{"id": "c5", "cmd": "run", "job": "/tmp/a\\u0000b"}',
    "a list as cancel target": '{"id": "c6", "cmd": "cancel", "target": [1]}',
    "an unknown cancel code": '{"id": "c7", "cmd": "cancel", "code": "boom"}',
    "invalid UTF-8": b"\xff\xfe{\"id\": 1}".decode("latin-1"),
    "a NaN": '{"id": NaN, "cmd": "ping"}',
}


def test_the_server_answers_every_hostile_line_with_bad_request_and_lives_on(server):
    for name, line in HOSTILE_LINES.items():
        server.write(line)
        e = server.read()
        assert e["event"] == "error" and e["code"] == "bad_request", (name, e)
        assert isinstance(e["message"], str) and len(e["message"]) < 500, name
        if name in ("a list as cmd", "no cmd", "a number as job", "an empty job", "a NUL in the job"):
            assert e["id"] == json.loads(line)["id"], name  # a valid id is answered by its id
    server.write("x" * (1 << 20 + 1))  # a line over the 1 MiB limit: skipped, not held or parsed
    assert server.read()["code"] == "bad_request"
    server.send(id="alive", cmd="ping")
    assert server.read() == {"id": "alive", "event": "result", "data": {"pong": True, "version": "0.1.0"}}
    assert server.p.poll() is None


def test_an_id_in_use_is_refused_and_both_jobs_keep_their_own_events(server, job_copy, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(job_copy.root, other)
    job_copy.invalidate_from("generate", ("generate", "parts", "rig"))  # a few seconds of work
    server.send(id=7, cmd="run", job=str(job_copy.root))
    server.send(id=7, cmd="run", job=str(other))
    server.send(id="second", cmd="rig", job=str(other))
    events = {7: [], "second": []}
    while not all(evs and evs[-1]["event"] in ("result", "error") and (k != 7 or len(
            [e for e in evs if e["event"] in ("result", "error")]) == 2) for k, evs in events.items()):
        e = server.read()
        events[e["id"]].append(e)
    ends7 = [e for e in events[7] if e["event"] in ("result", "error")]
    assert ends7[0]["code"] == "bad_request" and "still running" in ends7[0]["message"]
    assert ends7[1]["event"] == "result" and ends7[1]["data"]["job"] == str(job_copy.root)
    assert events["second"][-1]["event"] == "result" and events["second"][-1]["data"]["job"] == str(other)


# --- settings and job.json ------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings,field,allowed", [
    ({"frames": "abc"}, "frames", "an integer from 1 to 64"),
    ({"frames": [4]}, "frames", "an integer from 1 to 64"),
    ({"frames": {"n": 4}}, "frames", "an integer from 1 to 64"),
    ({"max_influences": -1}, "max_influences", "an integer of at least 0"),
    ({"cfg": "NaN"}, "cfg", "a number"),
    ({"cfg": float("inf")}, "cfg", "a number"),
    ({"image_size": 100000}, "image_size", "from 16 to 2048"),
    ({"part_source": None, "precision": 16}, "precision", "one of bf16, fp16, fp32"),
    ({"device": ["cuda"]}, "device", "'auto', 'cpu'"),
    ({"weights": 5}, "weights", "a string"),
    ({"compile": [1]}, "compile", "'blocks' or 'layers'"),
])
def test_settings_of_the_wrong_type_or_value_name_the_field_and_allowed_values(server, job_copy, settings, field,
                                                                              allowed):
    spec = json.loads(job_copy.job_json.read_text())
    spec["settings"].update(settings)
    job_copy.job_json.write_text(json.dumps(spec))
    for cmd in ("run", "rig"):  # every path reads the settings through the one schema
        server.send(id=cmd, cmd=cmd, job=str(job_copy.root))
        e = server.until(cmd)[-1]
        assert e["event"] == "error" and e["code"] == "bad_input", e
        assert e["message"].startswith(f"settings.{field} must be ") and allowed in e["message"], e["message"]
    r = cli("run", job_copy.root)
    assert r.returncode == 2 and f"error [bad_input]: settings.{field} must be" in r.stderr


def test_null_settings_take_their_defaults(job_copy):
    spec = json.loads(job_copy.job_json.read_text())
    spec["settings"] = {"part_source": "oracle", "frames": None, "max_influences": None, "image_size": None}
    job_copy.job_json.write_text(json.dumps(spec))
    out = run_command("run", job_copy, StageContext())
    assert out["rig"]["done"]


@pytest.mark.parametrize("text,msg", [
    ('{"source": {"kind": "mesh"}, "settings": "abc"}', "'settings' must be an object, got str"),
    ('{"source": {"kind": "mesh"}, "settings": [1, 2]}', "'settings' must be an object, got list"),
    ('{"source": "mesh", "settings": {}}', "'source' must be an object, got str"),
    ("[" * 100_000, "not valid JSON"),
    ("", "not valid JSON"),
    ("\x00\x01", "not valid JSON"),
])
def test_a_malformed_job_json_is_bad_input(job_copy, text, msg):
    job_copy.job_json.write_text(text)
    with pytest.raises(BackendError, match=msg) as e:
        run_command("run", job_copy, StageContext())
    assert e.value.code == "bad_input"


@pytest.mark.parametrize("skeleton,msg", [
    ('{"bones": "abc"}', "list of bones"),
    ('{"bones": [1, 2]}', "must be an object"),
    ('[1]', "list of bones"),
    ('{"bones": [{"head": [0, 0, 0], "tail": [0, 0, 1]}]}', "name of its own"),
    ('{"bones": [{"name": "a", "head": [0, 0, NaN], "tail": [0, 0, 1]}]}', "NaN"),
    ('{"bones": [{"name": "a", "head": [0, 0, 0, 0, 0, 0], "tail": [0, 0, 1, 0, 0, 1]}]}', "head and a tail"),
    ("[" * 100_000, "cannot read the skeleton"),
])
def test_a_broken_edited_skeleton_is_bad_input(job_copy, skeleton, msg):
    (job_copy.root / "rig").mkdir(exist_ok=True)
    (job_copy.root / "rig" / "skeleton_edited.json").write_text(skeleton)
    with pytest.raises(BackendError, match=msg) as e:
        run_command("reweight", job_copy, StageContext())
    assert e.value.code == "bad_input"


# --- the job folder: missing, read-only, locked ------------------------------------------------------------------

def test_run_on_a_missing_folder_is_bad_input_and_creates_nothing(tmp_path):
    for cmd in ("run", "generate", "rig"):
        r = cli(cmd, tmp_path / "nope")
        assert r.returncode == 2 and "error [bad_input]" in r.stderr and "does not exist" in r.stderr
    r = cli("reweight", tmp_path / "nope", tmp_path / "skel.json")
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert not (tmp_path / "nope").exists()


def _without_root_overrides():
    """In the child: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so that
    root obeys permission bits after exec like any user (prctl PR_CAPBSET_DROP)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_job_folder_is_io_error(generated_job, tmp_path):
    job = tmp_path / "job"
    shutil.copytree(generated_job.root, job)
    try:
        for p in [job, *job.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        as_root = os.geteuid() == 0
        for cmd in ("run", "rig"):
            r = subprocess.run([sys.executable, "-m", "backend", cmd, str(job)], cwd=ROOT, env=ENV, text=True,
                               capture_output=True, timeout=300,
                               preexec_fn=_without_root_overrides if as_root else None)
            assert r.returncode == 2 and "error [io_error]" in r.stderr, r.stderr
            assert "cannot write" in r.stderr and "Traceback" not in r.stderr
    finally:
        for p in [job, *job.rglob("*")]:
            p.chmod(0o755)


def test_a_second_job_on_a_busy_folder_gets_busy_and_the_first_keeps_its_results(server, job_copy):
    job_copy.invalidate_from("generate", ("generate", "parts", "rig"))
    server.send(id="first", cmd="run", job=str(job_copy.root))
    assert server.read()["event"] == "progress"
    for cmd in ("run", "rig", "reweight"):
        server.send(id=cmd, cmd=cmd, job=str(job_copy.root))
        e = server.until(cmd)[-1]
        assert e["event"] == "error" and e["code"] == "busy" and "in use by 'run'" in e["message"], e
    events = server.until("first")
    assert events[-1]["event"] == "result"
    assert job_copy.stage_done("rig", events[-1]["data"]["stages"]["rig"]["key"])
    assert job_copy.read_status()["error"] is None  # the refused jobs wrote nothing into the first's folder
    assert holder(job_copy.root) is None


def test_a_lock_held_by_another_process_is_busy_until_it_dies(job_copy):
    code = ("import sys, time\nfrom sp4d_job.lock import JobLock\nJobLock(sys.argv[1], 'a test').acquire()\n"
            "print('held', flush=True)\ntime.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(job_copy.root)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert holder(job_copy.root)["pid"] == p.pid
        r = cli("rig", job_copy.root)
        assert r.returncode == 2 and "error [busy]" in r.stderr and f"process {p.pid}" in r.stderr
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
    # the dead holder's lock file stays behind; the next job takes it over
    assert (job_copy.root / LOCK_FILE).exists() and holder(job_copy.root) is None
    assert cli("rig", job_copy.root).returncode == 0


def test_a_stale_lock_file_is_taken_over(job_copy):
    (job_copy.root / LOCK_FILE).write_text(json.dumps({"pid": 999_999_999, "host": "gone", "what": "'run'"}))
    assert run_command("rig", job_copy, StageContext())["rig"]["done"]
    with JobLock(job_copy.root, "me"):  # and a lock is released after its job
        with pytest.raises(BackendError) as e:
            run_command("rig", job_copy, StageContext())
        assert e.value.code == "busy"
    assert holder(job_copy.root) is None


# --- stage records: replaced only by a new result, outputs verified ---------------------------------------------

def _status(job):
    return json.loads(job.status_json.read_text())["stages"]


@pytest.mark.parametrize("damage", ["delete weights", "change skeleton", "delete labels", "delete a view"])
def test_a_damaged_output_is_recomputed_not_reported_done(rigged_copy, damage):
    job = rigged_copy
    path = {"delete weights": job.weights_npz, "change skeleton": job.skeleton_json,
            "delete labels": job.labels_npz, "delete a view": job.view_image("parts", 5, 2)}[damage]
    if damage == "change skeleton":
        path.write_text(path.read_text().replace('"torso"', '"trunk"'))
    else:
        path.unlink()
    out = run_command("run", job, StageContext())
    assert job.weights_npz.exists() and job.skeleton_json.exists() and job.labels_npz.exists()
    assert job.view_image("parts", 5, 2).exists()
    assert all(job.stage_done(s, out[s]["key"]) for s in ("generate", "parts", "rig"))
    assert '"torso"' in job.skeleton_json.read_text()


def test_an_intact_job_reuses_every_stage(rigged_copy):
    before = _status(rigged_copy)
    run_command("run", rigged_copy, StageContext())
    assert _status(rigged_copy) == before


def _tiny_job(root: Path, frames_dir: Path, **settings) -> JobDir:
    job = JobDir(root)
    job.create({"kind": "clip", "path": str(frames_dir)},
               {"part_source": "sp4d", "weights": str(FIX / "weights.safetensors"),
                "model_config": str(FIX / "config.yaml"), "device": "cpu", "steps": 2, "image_size": 48,
                "preprocess": False, **settings})
    return job


@pytest.fixture(scope="module")
def tiny_frames(tmp_path_factory):
    from safetensors.torch import load_file

    d = tmp_path_factory.mktemp("frames")
    for i, f in enumerate(load_file(FIX / "sampling.safetensors")["input.frames_u8"].numpy()):
        cv2.imwrite(str(d / f"frame_{i}.png"), f[:, :, ::-1])
    return d


def test_a_bad_checkpoint_keeps_the_finished_stage_record(tmp_path, tiny_frames):
    job = _tiny_job(tmp_path / "job", tiny_frames)
    done = run_command("generate", job, StageContext())["generate"]
    bad = tmp_path / "bad.safetensors"
    from safetensors.numpy import save_file

    save_file({"nothing": np.zeros(3, np.float32)}, str(bad))
    spec = json.loads(job.job_json.read_text())
    spec["settings"]["weights"] = str(bad)
    job.job_json.write_text(json.dumps(spec))
    with pytest.raises(BackendError) as e:
        run_command("generate", job, StageContext())
    assert e.value.code == "bad_checkpoint"
    assert _status(job)["generate"] == done  # the finished record and its files survive the failure
    spec["settings"]["weights"] = str(FIX / "weights.safetensors")
    job.job_json.write_text(json.dumps(spec))
    events = []
    again = run_command("generate", job, StageContext(events.append))["generate"]
    assert again == done and not [e for e in events if "denoising" in e["message"]]  # nothing regenerated


# --- clips: size limits, streaming ------------------------------------------------------------------------------

def _huge_png(path: Path, w: int, h: int) -> Path:
    """A valid PNG of w×h black pixels that is small on disk (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * w
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return _huge_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 20000, 20000)


def test_a_20000_pixel_png_clip_is_bad_input_not_a_bomb(bomb, tmp_path):
    r = cli("generate", tmp_path / "job", "--clip", bomb, "--weights", FIX / "weights.safetensors", "--config",
            FIX / "config.yaml", "--device", "cpu", "--steps", "1", "--image-size", "48", timeout=120)
    assert r.returncode == 2 and "error [bad_input]" in r.stderr and "MP" in r.stderr, r.stderr
    assert "scale the clip down" in r.stderr


def test_a_20000_pixel_view_image_is_bad_input(rigged_copy, bomb):
    shutil.copy(bomb, rigged_copy.view_image("parts", 3, 1))
    with pytest.raises(BackendError, match="20000×20000") as e:
        run_command("rig", rigged_copy, StageContext())
    assert e.value.code == "bad_input"


def _write_video(path: Path, n: int, w: int = 640, h: int = 480) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (w, h))
    frame = np.full((h, w, 3), 255, np.uint8)
    for i in range(n):
        frame[:] = 255
        frame[h // 4:3 * h // 4, w // 4 + i % 50:w // 2 + i % 50] = (40, 90, 160)
        writer.write(frame)
    writer.release()
    return path


PEAK = """
import resource, sys
from backend.clip_input import prepare_frames, read_clip
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
clip = read_clip(sys.argv[1])
prep = prepare_frames(clip, 4, 576)
print(len(clip), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024, prep.source_indices)
"""


def test_clip_reading_memory_does_not_grow_with_the_clip_length(tmp_path):
    """A 640×480 frame is 1.2 MB as RGBA: 900 frames held at once would be 1.1 GB."""
    out = {}
    for n in (30, 900):
        video = _write_video(tmp_path / f"clip{n}.mp4", n)
        r = subprocess.run([sys.executable, "-c", PEAK, str(video)], cwd=ROOT, env=ENV, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        count, grew_mb, picked = r.stdout.strip().split(maxsplit=2)
        out[n] = int(grew_mb)
        assert int(count) == n and picked == str([0, round((n - 1) / 3), round(2 * (n - 1) / 3), n - 1])
    assert out[900] < out[30] + 40, out  # the same few frames at a time, however long the clip


def test_a_huge_video_frame_size_is_refused_before_decoding(tmp_path, monkeypatch):
    from backend import clip_input

    video = _write_video(tmp_path / "wide.mp4", 3, 640, 480)
    monkeypatch.setattr(clip_input, "MAX_PIXELS", 640 * 480 - 1)
    with pytest.raises(BackendError, match="640×480") as e:
        clip_input.read_clip(video)
    assert e.value.code == "bad_input"


# --- stable codes: no GPU, offline, timeout, out of memory --------------------------------------------------------

def test_every_error_code_is_documented():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for code in ERROR_CODES:
        assert f"| `{code}` |" in doc, code


def test_no_gpu_is_its_own_code(job_copy):
    spec = json.loads(job_copy.job_json.read_text())
    spec["settings"].update(part_source="sp4d", weights=str(FIX / "weights.safetensors"))
    job_copy.job_json.write_text(json.dumps(spec))
    with pytest.raises(BackendError, match="no CUDA GPU") as e:
        run_command("generate", job_copy, StageContext())
    assert e.value.code == "no_gpu"


@pytest.mark.parametrize("offline_env", [{"HF_HUB_OFFLINE": "1"}, {}])
def test_hub_weights_offline_fail_fast_with_offline(tmp_path, tiny_frames, offline_env):
    """No network here: with HF_HUB_OFFLINE (Blender's online access off) at once, without it
    after one failed connection, never half a minute of retries."""
    job = _tiny_job(tmp_path / "job", tiny_frames, weights="hub")
    env = dict(ENV, HF_HOME=str(tmp_path / "hf"), **offline_env)
    env.pop("HF_HUB_OFFLINE", None) if not offline_env else None
    t0 = time.monotonic()
    r = cli("generate", job.root, env=env, timeout=120)
    assert r.returncode == 2 and "error [offline]" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 20
    assert ("HF_HUB_OFFLINE" in r.stderr) == bool(offline_env)


def test_hub_weights_come_from_the_cache_offline(tmp_path, monkeypatch):
    """A cached sp4d.safetensors is used without the network (HF_HUB_OFFLINE set)."""
    snap = tmp_path / "hub" / "models--stabilityai--sp4d"
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    (snap / "refs").mkdir()
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123" / "sp4d.safetensors").write_bytes(b"x")
    code = "from backend.sp4d.checkpoint import hub_weights\nprint(hub_weights())\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(ENV, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1"))
    assert r.returncode == 0 and r.stdout.strip().endswith("snapshots/abc123/sp4d.safetensors"), r.stderr


def test_a_cancel_for_a_timeout_says_timeout(server, job_copy):
    job_copy.invalidate_from("generate", ("generate", "parts", "rig"))
    server.send(id="slow", cmd="run", job=str(job_copy.root))
    assert server.read()["event"] == "progress"
    server.send(id="stop", cmd="cancel", target="slow", code="timeout", message="did not finish within 1 s")
    e = server.until("slow")[-1]
    assert e["event"] == "error" and e["code"] == "timeout" and e["message"] == "did not finish within 1 s"
    assert job_copy.read_status()["error"]["code"] == "timeout"


def test_out_of_memory_says_what_to_lower():
    from backend.errors import from_exception

    e = from_exception(MemoryError())
    assert e.code == "out_of_memory" and "frames" in e.message and "image size" in e.message
