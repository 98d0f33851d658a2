"""``python -m backend.batch``: run a batch on Ray (docs/batch.md).

  python -m backend.batch OUT/batch_request.json [--ray ADDRESS] [--num-cpus N]
      the request scripts/batch_rig.py --ray wrote (running it again resumes the batch)
  python -m backend.batch --jobs JOB... --out OUT [--command run|generate|rig] [--ray ADDRESS]
      existing job folders (clips, prepared meshes), without Blender

Exit code 0 when every item succeeded, 1 when some failed (report.json says which), 2 when the
batch could not start (no Ray, a bad request, a node without the shared folder).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import BackendError
from .plan import Request


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m backend.batch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("request", nargs="?", help="batch_request.json (scripts/batch_rig.py --ray writes it)")
    ap.add_argument("--jobs", nargs="*", default=[], help="job folders to run (instead of a request)")
    ap.add_argument("--out", help="the batch's folder: report.json and logs/ (with --jobs)")
    ap.add_argument("--command", default="run", choices=["run", "generate", "rig"], help="stages (with --jobs)")
    ap.add_argument("--ray", metavar="ADDRESS", help="the cluster: 'local' (a new one on this machine), 'auto' "
                    "(the one `ray start` runs here), host:port or ray://host:10001")
    ap.add_argument("--num-cpus", type=int, help="CPUs of a local cluster (default: all)")
    ap.add_argument("--model-workers", type=int, help="model workers (default: one per GPU)")
    ap.add_argument("--attempts", type=int, help="tries per item before it is reported failed (default 2)")
    ap.add_argument("--timeout", type=float, help="seconds per item and stage run")
    args = ap.parse_args(argv)
    if bool(args.request) == bool(args.jobs):
        ap.error("give a request file or --jobs")
    if args.jobs and not args.out:
        ap.error("--jobs needs --out")
    return args


def request_of(args: argparse.Namespace) -> Request:
    base = Request.read(args.request).to_dict() if args.request else {
        "out": args.out, "jobs": args.jobs, "command": args.command}
    for key in ("num_cpus", "model_workers", "attempts", "timeout"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    if args.ray is not None:
        base["address"] = args.ray
    return Request.from_dict(base)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        req = request_of(args)
        from .driver import run_batch
        from .report import Progress

        code = run_batch(req, Progress(0))
    except BackendError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    print(f"report: {req.out / 'report.json'}; logs: {req.out / 'logs'}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
