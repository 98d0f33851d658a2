import os
import shutil
import tempfile

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


@pytest.fixture
def job_copy(generated_job, tmp_path):
    """A private copy of the generated job that a test may modify."""
    dst = tmp_path / "job"
    shutil.copytree(generated_job.root, dst)
    return JobDir(dst)


@pytest.fixture
def miou():
    from backend.rig.metrics import part_miou

    return part_miou
