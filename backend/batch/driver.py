"""The batch on Ray: Blender workers, model workers and stage tasks, and what to do when one dies.

Per .blend file a Blender worker captures the job folders (a CPU task that runs a bpy process);
per item the stages run where they belong: generation with the model on a model worker (a Ray
actor per GPU that keeps SP4D loaded), the CPU-only stages (parts, rig, the oracle's generation)
as CPU tasks spread over the cluster; once every item of a file has ended, a Blender worker builds
the file's rigs and saves it. Pictures (Rig Image) are items whose job folders the driver writes
(source kind 'image': SVD then SP4D on a model worker, the rest as CPU tasks); once all have ended,
one Blender worker builds each rigged picture's new mesh and armature into OUT/images_rigged.blend.
Everything meets in the job folders on shared storage, so a stage a
dead worker left is simply run again, and the stages it finished are reused by their digests.

Faults: a task or actor whose process or node dies raises on ``ray.get``; the item is tried again
(on another node when the cluster has one, on another model worker when there is one) until it has
failed ``attempts`` times; then it is reported with every reason. Stage errors with a definite cause
(bad input, missing weights) are reported at once. Every item ends exactly once in report.json.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BackendError
from ..stages import COMMANDS
from . import RAY_HINT, work
from .plan import IMAGES_STEM, JOBS, LOGS, REPORT_JSON, Item, Request, file_stems, image_items, job_items
from .report import Progress, Report


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise BackendError("bad_request", RAY_HINT) from exc
    return ray


def connect(ray, req: Request) -> None:
    """Join the cluster at req.address, or start a local one (req.num_cpus CPUs)."""
    if ray.is_initialized():
        return
    if req.address:
        ray.init(address=req.address, log_to_driver=False)
    else:
        ray.init(num_cpus=req.num_cpus, log_to_driver=False)


def uses_model(spec: dict, gpus: float) -> bool:
    """Whether an item's generation needs the SP4D model (job.json ``spec``; the cluster's GPUs):
    as backend/generate.py decides, with 'auto' taking SP4D wherever the cluster has a GPU."""
    source = (spec.get("settings") or {}).get("part_source") or "auto"
    if spec.get("source", {}).get("kind") in ("clip", "image") and source == "auto":
        source = "sp4d"
    return source == "sp4d" or (source == "auto" and gpus > 0)


@dataclass
class Blend:
    """One .blend file: its items, and how often its Blender work failed."""

    path: str
    stem: str
    keys: list[str] = field(default_factory=list)
    failures: list = field(default_factory=list)
    state: str = "capturing"  # then rigging (its items run), building, done


@dataclass
class Task:
    kind: str  # capture | stages | model | build
    item: Item | None = None
    blend: Blend | None = None
    worker: int | None = None  # the model worker's index


class Batch:
    """Schedules one request on a connected cluster and writes its report; ``run`` returns the
    exit code (0: every item rigged, 1: some failed, 3: none rigged; as scripts/batch_rig.py)."""

    def __init__(self, ray, req: Request, progress: Progress | None = None):
        self.ray, self.req = ray, req
        self.out = req.out
        self.logs = self.out / LOGS
        self.items: dict[str, Item] = {}
        self.blends: dict[str, Blend] = {}
        self.pending: dict = {}  # ObjectRef -> Task
        self.report = Report(self.out / REPORT_JSON)
        self.progress = progress
        self.steps: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        self.workers: list = []
        self.free: list[int] = []
        self.waiting: deque[Item] = deque()  # items waiting for a model worker
        self.gpus = float(ray.cluster_resources().get("GPU", 0))
        self.stages_task = ray.remote(num_cpus=1, max_retries=0)(work.run_stages)
        self.bpy_task = ray.remote(num_cpus=1, max_retries=0)(work.run_bpy)
        self.crashes = self._crash_types()

    # --- set-up --------------------------------------------------------------------------------
    def _crash_types(self) -> tuple:
        ex = self.ray.exceptions
        names = ("WorkerCrashedError", "RayActorError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
                 "LocalRayletDiedError", "OutOfMemoryError", "TaskUnschedulableError", "ActorUnschedulableError",
                 "RaySystemError")
        return tuple(getattr(ex, n) for n in names if hasattr(ex, n))

    def check_nodes(self) -> list[dict]:
        """Every alive node must see the batch's folder (and the Blender interpreter, if needed)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = f".batch-{uuid.uuid4().hex}"
        (self.out / token).write_text("shared storage check\n")
        check = self.ray.remote(num_cpus=0, max_retries=0)(work.node_check)
        blender = self.req.blender if self.req.files or self.req.images else None
        try:
            refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(self.out), token, blender) for n in self.ray.nodes() if n["Alive"]]
            seen = self.ray.get(refs, timeout=120)
        except self.ray.exceptions.GetTimeoutError as exc:
            raise BackendError("bad_request", "some nodes did not answer the shared-storage check in 120 s") from exc
        finally:
            (self.out / token).unlink(missing_ok=True)
        bad = [f"{s['host']} (node {s['node']}) {'; '.join(s['problems'])}" for s in seen if s["problems"]]
        if bad:
            raise BackendError("bad_request", "nodes that cannot take part: " + " | ".join(bad))
        return seen

    def start_model_workers(self) -> None:
        if self.workers:
            return
        split = "," in str(self.req.settings.get("device") or "")
        n = self.req.model_workers or max(int(self.gpus // (2 if split else 1)), 1)
        gpus = (2 if split else 1) if self.gpus > 0 else 0
        cpus = 1 if self.ray.cluster_resources().get("CPU", 0) > n else 0  # never all CPUs: the stages need one
        cls = self.ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=3, max_task_retries=0)(work.ModelWorker)
        self.workers = [cls.remote() for _ in range(n)]
        self.free = list(range(n))

    # --- items ---------------------------------------------------------------------------------
    def log_of(self, key: str) -> str:
        return str(self.logs / f"{key}.log")

    def add_item(self, item: Item) -> None:
        self.items[item.key] = item
        self.report.expect(item)

    def plan_steps(self, item: Item) -> None:
        """The item's steps: [(where, stages)], 'model' for generation with SP4D, else 'cpu'."""
        stages = COMMANDS["run" if item.file else self.req.command]
        spec = json.loads((Path(item.job) / "job.json").read_text())
        if "generate" in stages and uses_model(spec, self.gpus):
            self.start_model_workers()
            rest = tuple(s for s in stages if s != "generate")
            self.steps[item.key] = [("model", ("generate",))] + ([("cpu", rest)] if rest else [])
        else:
            self.steps[item.key] = [("cpu", stages)]

    def start(self, item: Item) -> None:
        try:
            self.plan_steps(item)
        except (OSError, ValueError) as exc:
            self.finish(item, False, error=f"cannot read its job.json: {exc}", phase="plan")
            return
        self.next_step(item)

    def next_step(self, item: Item, avoid_node: str | None = None) -> None:
        steps = self.steps[item.key]
        if item.step >= len(steps):
            self.item_rigged(item)
            return
        where, stages = steps[item.step]
        attempt = len(item.failures) + 1
        if where == "model":
            self.waiting.append(item)
            self.dispatch_model()
            return
        opts = {}
        if avoid_node:
            opts["scheduling_strategy"] = self.elsewhere(avoid_node)
        ref = self.stages_task.options(**opts).remote(item.job, list(stages), self.log_of(item.key), attempt,
                                                      self.req.timeout)
        self.pending[ref] = Task("stages", item=item)

    def dispatch_model(self) -> None:
        """Give waiting items to free model workers, each away from a worker it died on."""
        while self.waiting and self.free:
            item = self.waiting.popleft()
            avoid = {f.get("worker") for f in item.failures}
            pick = next((w for w in self.free if w not in avoid), None)
            if pick is None and len(self.free) == len(self.workers):
                pick = self.free[0]  # no other worker is left: try the same one again
            if pick is None:
                self.waiting.appendleft(item)
                return
            self.free.remove(pick)
            attempt = len(item.failures) + 1
            ref = self.workers[pick].run.remote(item.job, ["generate"], self.log_of(item.key), attempt,
                                                self.req.timeout)
            self.pending[ref] = Task("model", item=item, worker=pick)

    def elsewhere(self, node: str):
        """Soft affinity to another alive node with CPUs (Ray's choice when there is none)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        others = [n["NodeID"] for n in self.ray.nodes()
                  if n["Alive"] and n["NodeID"] != node and n["Resources"].get("CPU", 0) >= 1]
        return NodeAffinitySchedulingStrategy(random.choice(others), soft=True) if others else "DEFAULT"

    def stage_result(self, task: Task, res: dict) -> None:
        item = task.item
        item.seconds += res.get("seconds", 0.0)
        for stage, how in res.get("stages", {}).items():
            item.stages[stage] = "ran" if "ran" in (how, item.stages.get(stage)) else how
        if res.get("model"):
            item.stages["model"] = res["model"]
        if res["ok"]:
            item.step += 1
            self.next_step(item)
            return
        err = res["error"]
        if err["code"] in work.RETRY_CODES:
            self.retry(item, err["code"], err["message"], res.get("where", {}).get("node"), task.worker)
        else:
            self.finish(item, False, error=f"[{err['code']}] {err['message']}", code=err["code"],
                        phase=res.get("stage"))

    def crashed(self, task: Task, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if task.kind in ("capture", "build"):
            self.blend_failed(task, why, None)
            return
        item = task.item
        where = last_where(self.log_of(item.key))
        self.retry(item, "backend_died", f"the worker died: {why}", where.get("node"), task.worker,
                   host=where.get("host"), pid=where.get("pid"))

    def retry(self, item: Item, code: str, message: str, node: str | None, worker: int | None, **where) -> None:
        """Try the item's step again (elsewhere), or report it once it failed ``attempts`` times."""
        why = f"[{code}] {message}"[:500]
        item.failures.append({"error": why, "node": node, "worker": worker, **where})
        work.ItemLog(self.log_of(item.key)).write(f"try {len(item.failures)} failed: {why}")
        if len(item.failures) >= self.req.attempts:
            self.finish(item, False, error=f"failed {len(item.failures)} times; last: {why}", code=code,
                        phase=self.steps[item.key][item.step][0], attempts=len(item.failures))
            return
        self.event(f"retry {self.label(item)}: {why[:200]} (try {len(item.failures) + 1} of {self.req.attempts})")
        self.next_step(item, avoid_node=node)

    # --- .blend files ----------------------------------------------------------------------------
    def capture(self, blend: Blend) -> None:
        s = self.req.settings
        args = ["capture", blend.path, "--jobs", str(self.out / JOBS), "--stem", blend.stem,
                "--settings", json.dumps(s)] + (["--objects", *self.req.objects] if self.req.objects else [])
        timeout = self.req.timeout * max(len(self.req.objects), 1) if self.req.timeout else None
        ref = self.bpy_task.remote(self.req.blender, args, str(self.logs / f"{blend.stem}.capture.log"),
                                   len(blend.failures) + 1, timeout)
        self.pending[ref] = Task("capture", blend=blend)

    def captured(self, blend: Blend, res: dict) -> None:
        blend.state = "rigging"
        if res.get("error"):
            keys = self.req.objects or [None]
            for name in keys:
                item = Item(key=f"{blend.stem}-{name}" if name else blend.stem, file=blend.path, object=name,
                            stem=blend.stem)
                self.add_item(item)
                blend.keys.append(item.key)
                self.finish(item, False, error=res["error"], phase="capture")
            return
        for it in res["items"]:
            item = Item(key=it["key"], file=blend.path, object=it["object"], job=it.get("job"), stem=blend.stem)
            self.add_item(item)
            blend.keys.append(item.key)
        for key in list(blend.keys):
            item = self.items[key]
            err = next(it.get("error") for it in res["items"] if it["key"] == key)
            if err:
                self.finish(item, False, error=err, phase="capture")
            else:
                self.start(item)
        self.maybe_build(blend)

    def blend_of(self, item: Item) -> Blend | None:
        """The file an item is built into: its .blend, the pictures' new file, or None (a job folder)."""
        return self.blends.get(item.file) if item.file else self.blends.get(IMAGES_STEM) if item.image else None

    def item_rigged(self, item: Item) -> None:
        blend = self.blend_of(item)
        if blend is None:
            self.finish(item, True)
            return
        item.result = {}
        self.maybe_build(blend)

    def maybe_build(self, blend: Blend) -> None:
        """Once every item of the file has ended or been rigged: build the rigged ones, save."""
        items = [self.items[k] for k in blend.keys]
        if blend.state != "rigging" or any(it.result is None and it.key not in self.report.entries for it in items):
            return
        rigged = [it for it in items if it.result is not None and it.key not in self.report.entries]
        if not rigged:
            blend.state = "done"
            return
        blend.state = "building"
        if blend.stem == IMAGES_STEM and not blend.path:  # the pictures: new meshes in a new file
            args = ["build-images", str(self.out / f"{IMAGES_STEM}_rigged.blend"), "--out", str(self.out),
                    "--stem", IMAGES_STEM, "--items",
                    json.dumps([{"key": it.key, "image": it.image, "job": it.job} for it in rigged])]
        else:
            args = ["build", blend.path, "--out", str(self.out), "--stem", blend.stem, "--items",
                    json.dumps([{"object": it.object, "job": it.job} for it in rigged])]
        if self.req.export:
            args += ["--export", self.req.export]
        timeout = self.req.timeout * len(rigged) if self.req.timeout else None
        ref = self.bpy_task.remote(self.req.blender, args, str(self.logs / f"{blend.stem}.build.log"),
                                   len(blend.failures) + 1, timeout)
        self.pending[ref] = Task("build", blend=blend)

    def built(self, blend: Blend, res: dict) -> None:
        blend.state = "done"
        by_object = {b.get("key") or b["object"]: b for b in res.get("items", [])}
        for key in blend.keys:
            item = self.items[key]
            if key in self.report.entries:
                continue
            b = by_object.get(item.key if item.image else item.object) or {
                "error": res.get("error", "the build did not report this object")}
            if b.get("error"):
                self.finish(item, False, error=b["error"], phase="build")
            elif item.image:
                item.object = b["object"]  # the picture's new mesh
                self.finish(item, True, armature=b["armature"], bones=b["bones"])
            else:
                self.finish(item, True, armature=b["armature"], bones=b["bones"])

    def blend_failed(self, task: Task, why: str, res: dict | None) -> None:
        blend = task.blend
        blend.failures.append(f"{task.kind}: {why}"[:500])
        if len(blend.failures) < self.req.attempts:
            self.event(f"retry {Path(blend.path).name} ({task.kind}): {why[:200]}")
            if task.kind == "capture":
                self.capture(blend)
            else:
                blend.state = "rigging"
                self.maybe_build(blend)
            return
        error = f"the Blender worker failed {len(blend.failures)} times ({task.kind}); last: {why}"
        if task.kind == "capture":
            self.captured(blend, {"error": error})
        else:
            self.built(blend, {"error": error})

    def write_image_job(self, item: Item) -> bool:
        """The picture's job folder (source kind 'image', the batch's settings; finished stages kept
        for a re-run); False, with the item reported failed, when the picture is missing."""
        from ..jobdir import JobDir

        if not Path(item.image).is_file():
            self.finish(item, False, error=f"the image {item.image} does not exist", code="bad_input", phase="plan")
            return False
        try:
            JobDir(item.job).create({"kind": "image", "path": item.image}, self.req.settings)
        except (OSError, BackendError) as exc:
            self.finish(item, False, error=f"cannot write its job folder: {exc}", phase="plan")
            return False
        return True

    # --- the loop --------------------------------------------------------------------------------
    def label(self, item: Item) -> str:
        return f"{item.stem}/{item.object}" if item.file else Path(item.image).name if item.image else item.key

    def event(self, text: str) -> None:
        if self.progress:
            self.progress.event(text)

    def finish(self, item: Item, ok: bool, **extra) -> None:
        entry = self.report.finish(item, ok, log=self.log_of(item.key), **{k: v for k, v in extra.items()
                                                                           if v is not None})
        what = (f"{entry.get('armature')} ({entry.get('bones')} bones)" if entry.get("armature") else
                ", ".join(f"{s} {h}" for s, h in item.stages.items())) if ok else entry["error"][:300]
        tries = f", try {entry['attempts']}" if entry["attempts"] > 1 else ""
        self.event(f"{'ok  ' if ok else 'FAIL'} {self.label(item)}: {what}{tries}")
        blend = self.blend_of(item)
        if blend is not None and blend.state == "rigging":
            self.maybe_build(blend)  # the file's last open item may have ended

    def running(self) -> dict[str, int]:
        kinds = [t.kind for t in self.pending.values()]
        return {"Blender": kinds.count("capture") + kinds.count("build"), "model": kinds.count("model"),
                "stages": kinds.count("stages"), "waiting for a model worker": len(self.waiting)}

    def settle(self, ref) -> None:
        task = self.pending.pop(ref)
        if task.kind == "model":
            self.free.append(task.worker)
        try:
            res = self.ray.get(ref)
        except self.crashes as exc:
            self.crashed(task, exc)
        except self.ray.exceptions.RayTaskError as exc:  # a bug in a worker function
            self.crashed(task, exc)
        else:
            if task.kind in ("stages", "model"):
                self.stage_result(task, res)
            elif not res["ok"]:
                self.blend_failed(task, res["error"], res)
            elif task.kind == "capture":
                self.captured(task.blend, res)
            else:
                self.built(task.blend, res)
        if task.kind == "model":
            self.dispatch_model()

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.check_nodes()
        for item in job_items(self.req.jobs):
            self.add_item(item)
        for path, stem in file_stems(self.req.files).items():
            self.blends[path] = Blend(path, stem)
            self.capture(self.blends[path])
        pictures = image_items(self.req.images, self.out / JOBS)
        if pictures:
            self.blends[IMAGES_STEM] = Blend("", IMAGES_STEM, keys=[it.key for it in pictures], state="rigging")
        for item in pictures:
            self.add_item(item)
        for item in list(self.items.values()):
            if item.image and not self.write_image_job(item):
                continue
            self.start(item)
        if self.progress:
            self.progress.total = max(len(self.req.files) * max(len(self.req.objects), 1) + len(self.req.jobs)
                                      + len(self.req.images), 1)
        try:
            while self.pending:
                ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    self.settle(ref)
                if self.progress:
                    self.progress.total = max(self.progress.total, len(self.items))
                    self.progress.show(self.report.done, self.report.failed, self.running())
        finally:
            self.report.close(self.items)
        if self.progress:
            self.progress.show(self.report.done, self.report.failed, {}, force=True)
        if self.report.failed == 0:
            return 0
        return 3 if self.report.done == 0 else 1


_WHERE = re.compile(r"on (?P<host>\S+) \(node (?P<node>\S+), pid (?P<pid>\d+)\)")


def last_where(log_path: str) -> dict:
    """Host, node and process of the item's last try, from its log (the dead worker cannot say)."""
    try:
        lines = Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        m = _WHERE.search(line)
        if m:
            return {"host": m["host"], "node": None if m["node"] == "None" else m["node"], "pid": int(m["pid"])}
    return {}


def run_batch(req: Request, progress: Progress | None = None) -> int:
    """Connect (or start a local cluster), run the batch, return its exit code."""
    ray = import_ray()
    connect(ray, req)
    return Batch(ray, req, progress).run()
