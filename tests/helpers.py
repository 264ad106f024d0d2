"""Helpers shared by the tests that start real servers and processes."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Processes in session `sid` (a process started with start_new_session)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: session id
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def descendants(pid: int) -> list[int]:
    """Every process below `pid` now (children, their children, ...)."""
    parent_of = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent_of[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out += kids
        frontier += kids
    return out


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start_mlflow_server(store: Path) -> tuple[subprocess.Popen, str]:
    """A real lean tracking server on 127.0.0.1 (mlflow_config/start_server.sh),
    in its own process group so that `stop_mlflow_server` stops it by PID."""
    port = free_port()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.Popen([str(ROOT / "mlflow_config" / "start_server.sh"), str(store), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=1)
            return proc, uri
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("mlflow server exited")
            time.sleep(0.5)
    stop_mlflow_server(proc)
    raise RuntimeError("mlflow server did not answer within 120 s")


def stop_mlflow_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """`lensaudit ARGS` in this process: (exit code, stdout, stderr)."""
    from engine.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    """Bad input: exit 2, one line on stderr naming the problem, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]


def assert_drawn_from_probabilities(rows, *, temperature: float, seed: int = 0,
                                    choices=("Good", "Bad")) -> None:
    """Every binary answer in `rows` (decision rows: a frame or dicts) is the one
    its choice log-probabilities and the case's own number give (`_draw`):
    a function of its probabilities, whatever batch it was decided in. Exact at
    temperature 1 (and 0 where one token begins each choice): the rows keep each
    choice's summed log-probability, not its tokens'."""
    import json

    import pandas as pd

    from engine.decisions.backends._draw import case_uniform, drawn_choice

    for r in (rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows):
        lp = json.loads(r["choice_logprobs"])
        u = case_uniform(seed, r["model"], r["condition"], r["case_id"], int(r["sample"]))
        assert r["choice"] == drawn_choice(choices, lp, temperature, u), r["case_id"]


def stop_session(proc):
    """SIGTERM every process of the head's session (ours, by PID), then SIGKILL stragglers."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        for pid in session_pids(proc.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        # Zombies (exited, not yet reaped: the head's own script until proc.wait) are done.
        while [p for p in session_pids(proc.pid) if alive(p)] and time.time() < deadline:
            time.sleep(0.2)
    proc.wait(timeout=10)
