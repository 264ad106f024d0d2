"""The `lensaudit` command: a thin layer over the Python API.

Every way a command can end is decided here: a result on stdout (exit 0); bad
input or an unavailable resource as one line on stderr (exit 2, no traceback);
Ctrl-C or SIGTERM as one line saying what was kept (exit 130 / 143), after the
engines this process started are stopped; a closed stdout (`| head`) quietly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from engine.cli._argtypes import port_number
from engine.errors import LensauditError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the flag and the problem), exit 2."""

    def error(self, message: str):  # noqa: D401 (argparse's signature)
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Session:
    """What the interrupt message needs to know about the command in progress."""

    run_dir = None


def _cmd_run(args) -> int:
    from engine.spec import load_job

    spec = load_job(args.job, args.set or [])
    if spec.dataset.name == "mta_align":
        from engine.align.job import format_align_summary, plan_align, run_align_job

        if args.dry_run:
            print(plan_align(spec)[0])
            return 0
        _Session.run_dir = spec.run_dir()
        print(format_align_summary(run_align_job(spec, progress=not args.no_progress)))
        return 0
    from engine.job import format_summary, plan, run_job

    if args.dry_run:
        the_plan, _ = plan(spec)
        print(the_plan.render(spec, devices=True))
        return 0
    _Session.run_dir = spec.run_dir()
    result = run_job(spec, progress=not args.no_progress)
    print(format_summary(result))
    return 0


def _cmd_prepare_model(args) -> int:
    from engine.decisions.backends import prepare_model

    resolved = prepare_model(args.model)
    print(f"{args.model}: ready at {resolved.path}")
    return 0


def _cmd_view(args) -> int:
    from engine.align import VIEW_READERS
    from engine.outputs.view import serve, write_view

    page = write_view(args.run_dir, args.out, readers=VIEW_READERS)
    print(f"view: {page}")
    if args.serve:
        try:
            serve(page, args.port)
        except KeyboardInterrupt:  # the way a server is meant to stop: nothing was lost
            print("view: server stopped", file=sys.stderr)
    return 0


def _cmd_log(args) -> int:
    from engine.outputs import log_run_dir

    uri, run_id = log_run_dir(args.run_dir, uri=args.tracking_uri,
                              experiment=args.experiment)
    print(f"logged {args.run_dir}: MLflow parent run {run_id} in {uri}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lensaudit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job (decisions, audit, MLflow)")
    run.add_argument("job", help="job YAML")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                     help="override a job setting (repeatable)")
    run.add_argument("--dry-run", action="store_true",
                     help="validate (settings, data, models, servers) and print the plan "
                     "without loading a model")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run)

    prep = sub.add_parser("prepare-model", help="convert a bundled model once (cached)")
    prep.add_argument("model", nargs="?", default="bundled:smollm2-135m")
    prep.set_defaults(func=_cmd_prepare_model)

    log = sub.add_parser("log", help="log a finished run directory to MLflow "
                         "(a run made offline, or one whose tracking server was down)")
    log.add_argument("run_dir", help="the job's run directory (output.run_dir)")
    log.add_argument("--tracking-uri", help="default: the job's own tracking URI")
    log.add_argument("--experiment", help="default: the job's own experiment")
    log.set_defaults(func=_cmd_log)

    view = sub.add_parser("view", help="every case of a finished run in one offline page "
                          "(view.html), optionally served on 127.0.0.1")
    view.add_argument("run_dir", help="the job's run directory (output.run_dir)")
    view.add_argument("--out", help="where to write the page (default RUN_DIR/view.html)")
    view.add_argument("--serve", action="store_true",
                      help="serve the page on 127.0.0.1 until Ctrl-C")
    view.add_argument("--port", type=port_number, default=8765,
                      help="port for --serve (0: any free port)")
    view.set_defaults(func=_cmd_view)

    from engine.cli._fit import add_fit_parser

    add_fit_parser(sub)
    from engine.outputs import add_compare_parser

    add_compare_parser(sub)
    from engine.job import add_submit_parser

    add_submit_parser(sub)
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true",
                             help="also show the libraries' own log lines on the console")
    return parser


def _stop_ray() -> None:
    """Stop the engines and the local Ray this process started (no-op otherwise)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _quiet_stdout() -> None:
    """stdout was closed by the reader (`| head`): what is still to come goes nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno())


class _ReaderMayLeave:
    """stdout for a reader that may close the pipe early (`lensaudit fit --json | head`):
    the command still finishes its work (a run keeps deciding and logging), its
    remaining output is dropped, and it exits 0 without a BrokenPipeError."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            _quiet_stdout()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _quiet_stdout()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _compilation_cache() -> None:
    """Keep JAX's compiled kernels between runs (the environment's own setting wins).

    Without it every `lensaudit` process compiles the refit kernels anew: a
    small job's statistics took 27 s cold and 12 s with the cache here. Set
    before JAX is imported, through JAX's own environment variables, so that
    library users of `kernels` keep whatever they chose.
    """
    root = os.environ.get("LENSAUDIT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "lensaudit")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, "jax"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _compilation_cache()
    args = build_parser().parse_args(argv)
    from engine import console

    console.install(verbose=args.verbose)
    _Session.run_dir = None
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    # Restored on return, so that main() can also be called in-process (tests).
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stdout = sys.stdout
    sys.stdout = _ReaderMayLeave(stdout)
    for s in saved:
        signal.signal(s, on_signal)
    try:
        try:
            code = args.func(args)
            sys.stdout.flush()
            return code
        finally:
            # A second Ctrl-C must not cut the clean-up short.
            for s in saved:
                signal.signal(s, signal.SIG_IGN)
            _stop_ray()
    except LensauditError as err:
        print(f"lensaudit: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        where = f" in {_Session.run_dir}" if _Session.run_dir else ""
        name = signal.Signals(received[0]).name if received else "SIGINT"
        print(f"lensaudit: stopped by {name}; the decisions written so far are kept{where}; "
              "run the same command to resume", file=sys.stderr)
        return 128 + (received[0] if received else signal.SIGINT)
    finally:
        sys.stdout = stdout
        for s, handler in saved.items():
            signal.signal(s, handler)
        console.uninstall()

