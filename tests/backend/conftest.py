import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from backend.context import StageContext
from backend.generate import run_generate
from backend.jobdir import JobDir
from backend.sample.assets import make_creature

# the SP4D job points inductor at the user's cache folder (runtime.compile_cache_dir); tests compile
# into a folder of their own instead, so that no run reuses graphs another left
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="sp4d-tests-inductor-"))


@pytest.fixture(scope="session")
def creature():
    return make_creature()


def make_job(root, creature, settings=None, vertices=None, **mesh_extra) -> JobDir:
    """A job folder for the creature (or other vertices) with the oracle's ground truth."""
    job = JobDir(root)
    job.create({"kind": "mesh", "object": "creature"}, {"part_source": "oracle", **(settings or {})})
    extra = dict(gt_labels=creature.labels, gt_parents=creature.parents, gt_joints=creature.joints)
    extra.update(mesh_extra)
    job.write_mesh(creature.vertices if vertices is None else vertices, creature.faces, **extra)
    return job


@pytest.fixture(scope="session")
def generated_job(tmp_path_factory, creature):
    """A job folder with the oracle's views (generated once per session)."""
    job = make_job(tmp_path_factory.mktemp("generated"), creature)
    run_generate(job, StageContext())
    return job


def copy_job(job: JobDir, dst) -> JobDir:
    """A private copy of ``job`` at ``dst`` that a test may modify."""
    shutil.copytree(job.root, dst)
    return JobDir(dst)


@pytest.fixture
def job_copy(generated_job, tmp_path):
    """A private copy of the generated job."""
    return copy_job(generated_job, tmp_path / "job")


@pytest.fixture(scope="session")
def rigged_job(tmp_path_factory, generated_job):
    """A job folder with every stage done (the oracle's views, parts, rig), made once per session."""
    from backend.stages import run_command

    job = copy_job(generated_job, tmp_path_factory.mktemp("rigged") / "job")
    run_command("run", job, StageContext())
    return job


@pytest.fixture
def rigged_copy(rigged_job, tmp_path):
    """A private copy of the rigged job."""
    return copy_job(rigged_job, tmp_path / "rigged")


@pytest.fixture
def miou():
    from backend.rig.metrics import part_miou

    return part_miou


ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """``python -m backend serve`` as a real subprocess: send requests, read events."""

    def __init__(self, env: dict | None = None, **popen):
        env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        self.p = subprocess.Popen([sys.executable, "-u", "-m", "backend", "serve"], cwd=ROOT, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, **popen)
        # lines through a thread: select() on the pipe misses lines already in the text wrapper's buffer
        # (several events arriving at once), and a test would wait for an event it was already sent
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.read()["event"] == "ready"

    def _pump(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, **req):
        self.write(json.dumps(req))

    def write(self, line: str):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def read(self, timeout=120):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("backend did not answer in time") from None
        assert line, f"backend exited: {self.p.stderr.read()}"
        return json.loads(line)

    def until(self, rid, kinds=("result", "error")):
        events = []
        while True:
            e = self.read()
            if e.get("id") == rid:
                events.append(e)
                if e["event"] in kinds:
                    return events

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def start_server():
    """A factory of backend server processes, each closed after the test."""
    procs = []

    def start(**kw):
        procs.append(Proc(**kw))
        return procs[-1]

    yield start
    for p in procs:
        p.close()


@pytest.fixture
def server(start_server):
    return start_server()
