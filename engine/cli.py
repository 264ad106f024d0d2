"""The `lensaudit` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import os
import sys

from engine.errors import LensauditError


def _cmd_run(args) -> int:
    from engine.job import format_summary, plan, run_job
    from engine.spec import load_job

    spec = load_job(args.job, args.set or [])
    if spec.dataset.name == "mta_align":
        from engine.align.job import format_align_summary, plan_align, run_align_job

        if args.dry_run:
            print(plan_align(spec)[0])
            return 0
        print(format_align_summary(run_align_job(spec, progress=not args.no_progress)))
        return 0
    if args.dry_run:
        the_plan, _ = plan(spec)
        print(the_plan.render(spec))
        return 0
    result = run_job(spec, progress=not args.no_progress)
    print(format_summary(result))
    return 0


def _cmd_prepare_model(args) -> int:
    from engine.backends import prepare_model

    resolved = prepare_model(args.model)
    print(f"{args.model}: ready at {resolved.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lensaudit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job (decisions, audit, MLflow)")
    run.add_argument("job", help="job YAML")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                     help="override a job setting (repeatable)")
    run.add_argument("--dry-run", action="store_true",
                     help="validate and print the plan without loading a model")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run)

    prep = sub.add_parser("prepare-model", help="convert a bundled model once (cached)")
    prep.add_argument("model", nargs="?", default="bundled:smollm2-135m")
    prep.set_defaults(func=_cmd_prepare_model)

    from engine.fit_cli import add_fit_parser

    add_fit_parser(sub)
    from engine.compare import add_compare_parser

    add_compare_parser(sub)
    from engine.submit import add_submit_parser

    add_submit_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LensauditError as err:
        print(f"lensaudit: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("lensaudit: interrupted; decisions written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
