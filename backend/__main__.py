"""Command line: ``python -m backend {serve,run,generate,rig,reweight,weights,doctor,prepare,orbits,sample}``.

``serve`` and ``doctor`` look for the backend's packages before importing any (backend/doctor.py):
an interpreter without torch or numpy serves ``missing_dependency`` answers instead of dying on an
ImportError that Blender would only show as a dead process.
"""

from __future__ import annotations

import argparse
import json
import sys

from .allocator import allocator_config


def _print_progress(e: dict) -> None:
    eta = f" (ETA {e['eta_s']:.0f} s)" if e.get("eta_s") else ""
    print(f"[{e['stage']}] {e['step']}/{e['total']} {e['message']}{eta}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    allocator_config()  # before torch starts CUDA
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["serve"], ["doctor"]):
        from . import doctor

        if argv[0] == "doctor":
            return doctor.main(argv[1:])
        lacking = doctor.missing()
        if lacking:
            print(doctor.missing_message(lacking), file=sys.stderr, flush=True)
            return doctor.serve_missing(lacking)
    from .context import StageContext
    from .errors import BackendError, from_exception
    from .jobdir import JobDir
    from .settings import add_flags, checked, from_flags

    ap = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve", help="speak the JSON-lines protocol on stdin/stdout")
    for name, text in (("run", "generate then rig"), ("generate", "part images"), ("rig", "rig from part images")):
        p = sub.add_parser(name, help=f"{text} for a job folder")
        p.add_argument("job", help="job folder (docs/job-folder.md)")
        if name == "generate":
            p.add_argument("--clip", help="video, GIF, image, folder or glob: creates the job from this clip with "
                           "the settings below (docs/generation.md)")
            p.add_argument("--image", help="one picture: creates the job from it, animated by SVD first "
                           "(backend/generate_svd.py), with the settings below")
            add_flags(p)
    p = sub.add_parser("reweight", help="recompute rig/weights.npz for an edited skeleton")
    p.add_argument("job")
    p.add_argument("skeleton", help="skeleton JSON (rig/skeleton.json format)")
    add_flags(p, stage="rig")
    p = sub.add_parser("weights", help="download sp4d.safetensors (or with --model svd svd_xt_1_1.safetensors) into "
                       "the Hugging Face cache (resumes a partial download; needs the licence accepted: "
                       "--accept-licence)")
    p.add_argument("--model", choices=("sp4d", "svd"), default="sp4d",
                   help="sp4d (stabilityai/sp4d) or svd (stabilityai/stable-video-diffusion-img2vid-xt-1-1)")
    p.add_argument("--accept-licence", action="store_true",
                   help="accept the Stability AI Community License of that model's weights (read it first on the "
                        "model page)")
    sub.add_parser("doctor", help="what this interpreter lacks, torch and its GPUs (--json: one JSON object)")
    p = sub.add_parser("prepare", help="run the model once at these settings, so that the first job finds the "
                       "kernels' tuning and (with --compile) the compiled graphs on disk (Set Up's last step)")
    add_flags(p)
    p = sub.add_parser("orbits", help="one MP4 per generated view and a grid (views/orbit/) of a generated job")
    p.add_argument("job")
    p.add_argument("--fps", type=float, default=8.0)
    p = sub.add_parser("sample", help="write the procedural sample creature (npz)")
    p.add_argument("out", help="output .npz path")
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        from .server import serve

        return serve()
    try:
        if args.cmd == "sample":
            from .sample.assets import make_creature, save_asset

            save_asset(make_creature(), args.out)
            print(args.out)
            return 0
        if args.cmd == "weights":
            from sp4d_job.hub import MODELS

            from .weights import fetch_weights

            m = MODELS[args.model]
            print(fetch_weights(StageContext(_print_progress), repo=m["repo"], filename=m["file"],
                                accepted=args.accept_licence))
            return 0
        if args.cmd == "prepare":
            from .prepare import prepare

            print(json.dumps(prepare(from_flags(args), on_event=_print_progress), indent=1))
            return 0
        if args.cmd == "orbits":
            from .video import export_orbits

            print(json.dumps(export_orbits(JobDir(args.job), args.fps), indent=1))
            return 0
        if args.cmd == "reweight":
            from .rig.reweight import reweight_from_file

            top_k = checked(from_flags(args, stage="rig"))["max_influences"]
            with JobDir(args.job).lock("'reweight' (command line)"):
                print(json.dumps(reweight_from_file(args.job, args.skeleton, top_k)))
            return 0
        if args.cmd == "generate" and (args.clip or args.image):
            from .generate import generate

            if args.clip and args.image:
                raise BackendError("bad_request", "give --clip or --image, not both")
            result = generate(args.clip or args.image, args.job, from_flags(args), on_event=_print_progress,
                              kind="image" if args.image else "clip")
            print(json.dumps(result, indent=1, default=str))
            return 0
        from .stages import run_command

        result = run_command(args.cmd, JobDir(args.job), StageContext(_print_progress))
        print(json.dumps(result, indent=1, default=str))
        return 0
    except Exception as exc:  # noqa: BLE001
        err: BackendError = from_exception(exc)
        print(f"error [{err.code}]: {err.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
