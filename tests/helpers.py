"""Helpers shared by the tests that start real servers and processes."""

import socket
from pathlib import Path


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
