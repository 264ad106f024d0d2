"""What reaches the user's console, and what goes to the run's log file instead.

The console shows lensaudit's own lines (stdout) and its progress bars
(stderr). Third-party libraries speak through Python's `logging` and
`warnings` (MLflow's database set-up, alembic's migrations, Ray's notices),
which a user did not ask for and cannot act on: they go to `lensaudit.log`
in the run directory once it is known, and to the console only with
`--verbose`. Nothing is dropped: without a run directory (e.g. `lensaudit fit`)
they are held in memory and written nowhere, unless `--verbose`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: Libraries whose INFO lines are worth keeping in the run's log file; every
#: other library logs WARNING and above there. None reach the console unless
#: --verbose.
INFO_LOGGERS = ("mlflow", "alembic", "ray", "vllm")

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Held(logging.Handler):
    """Keeps records until a log file is attached (bounded, oldest dropped)."""

    def __init__(self, limit: int = 2000):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.limit = limit

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        del self.records[:-self.limit]


class Console:
    """The process's console policy, set once by the CLI."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.held = _Held()
        self.file_handler: logging.FileHandler | None = None

    def install(self) -> "Console":
        # MLflow adds its own stderr handler on import unless told not to.
        os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
        root = logging.getLogger()
        root.setLevel(logging.WARNING)
        for name in INFO_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
            _through_root(name)  # a library already imported may have set up its own
        for h in list(root.handlers):  # a second install (main() called again in-process)
            if isinstance(h, _Held) or getattr(h, "_lensaudit", False):
                root.removeHandler(h)
        root.addHandler(self.held)
        if self.verbose:
            stream = logging.StreamHandler(sys.stderr)
            stream.setFormatter(logging.Formatter(_FORMAT))
            stream._lensaudit = True
            root.addHandler(stream)
        else:
            logging.captureWarnings(True)  # warnings.warn -> logger "py.warnings" -> log file
        return self

    def attach_log_file(self, run_dir: str | Path) -> Path:
        """From now on (and for what was held so far) records go to run_dir/lensaudit.log."""
        path = Path(run_dir) / "lensaudit.log"
        if self.file_handler is not None and Path(self.file_handler.baseFilename) == path.resolve():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._lensaudit = True
        for record in self.held.records:
            handler.handle(record)
        self.held.records.clear()
        root = logging.getLogger()
        if self.file_handler is not None:
            root.removeHandler(self.file_handler)
            self.file_handler.close()
        root.addHandler(handler)
        self.file_handler = handler
        return path


    def uninstall(self) -> None:
        root = logging.getLogger()
        for h in (self.held, self.file_handler):
            if h is not None:
                root.removeHandler(h)
                h.close()
        for h in list(root.handlers):
            if getattr(h, "_lensaudit", False):
                root.removeHandler(h)
        logging.captureWarnings(False)


_current: Console | None = None


def install(verbose: bool = False) -> Console:
    global _current
    _current = Console(verbose).install()
    return _current


def adopt_logger(name: str) -> None:
    """Route a library logger that installs its own stderr handler on import
    (Ray does) through ours: to the run's log file, and the console only with
    --verbose. No-op outside the CLI."""
    if _current is not None:
        _through_root(name)


def _through_root(name: str) -> None:
    """Drop a logger's own handlers so its records reach ours through the root."""
    lg = logging.getLogger(name)
    for h in list(lg.handlers):
        lg.removeHandler(h)
    lg.propagate = True


def uninstall() -> None:
    """Detach the handlers `install` added (main() returns; tests call it in-process)."""
    global _current
    if _current is not None:
        _current.uninstall()
        _current = None


def attach_log_file(run_dir: str | Path) -> Path | None:
    """Send third-party records to the run's log file (no-op outside the CLI)."""
    return _current.attach_log_file(run_dir) if _current is not None else None


def verbose() -> bool:
    return _current is not None and _current.verbose
