"""Is a server there? Probes that answer within seconds, before any work.

Every command that talks to a server (an MLflow tracking server, a Ray
dashboard, a Ray cluster's GCS, an OpenAI-compatible endpoint) probes it first,
so that a server that is down, refuses the connection or accepts it and never
answers costs `PROBE_TIMEOUT_S`, not the client libraries' minutes of retries.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request

from engine.errors import LensauditError

#: Seconds a probe waits for a connection, and again for an answer, unless
#: LENSAUDIT_PROBE_TIMEOUT_S says otherwise (a slow link to a remote server).
PROBE_TIMEOUT_S = 5.0


def probe_timeout(timeout_s: float | None = None) -> float:
    """`timeout_s`, else LENSAUDIT_PROBE_TIMEOUT_S, else `PROBE_TIMEOUT_S`."""
    if timeout_s is not None:
        return timeout_s
    try:
        return float(os.environ.get("LENSAUDIT_PROBE_TIMEOUT_S") or PROBE_TIMEOUT_S)
    except ValueError:
        return PROBE_TIMEOUT_S

#: An HTTP/2 client's opening (the connection preface and an empty SETTINGS
#: frame): a gRPC server answers it with its own SETTINGS frame at once.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def probe_http(url: str, *, timeout_s: float | None = None) -> str | None:
    """None if an HTTP server answers at `url` (any status), else the reason."""
    timeout_s = probe_timeout(timeout_s)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # it answered: there is a server (auth and paths are its business)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return f"no answer within {timeout_s:g} s"
        return str(reason) or type(exc).__name__


def probe_grpc(address: str, *, timeout_s: float | None = None) -> str | None:
    """None if a gRPC (HTTP/2) server answers at `address` ("host:port"), else
    the reason: it sends the HTTP/2 preface and waits for any reply."""
    timeout_s = probe_timeout(timeout_s)
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return f"'{address}' is not HOST:PORT"
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                      timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            conn.sendall(_HTTP2_PREFACE)
            if not conn.recv(9):
                return "the connection was closed without an answer"
            return None
    except (TimeoutError, socket.timeout):
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def ray_address_problem(address: str | None, *, timeout_s: float | None = None) -> str | None:
    """Why the Ray cluster at `address` (RAY_ADDRESS: "HOST:PORT" of its GCS,
    or "ray://HOST:PORT" of its client server) cannot be joined, or None.
    No address, "auto" and "local" are Ray's own business (ray.init would
    otherwise wait minutes for a cluster that is not there)."""
    if not address or address in ("auto", "local"):
        return None
    reason = probe_grpc(address.removeprefix("ray://"), timeout_s=timeout_s)
    return f"Ray cluster at {address} is not reachable ({reason})" if reason else None


def check_ray_address() -> None:
    """Fail in one line when the Ray cluster named by RAY_ADDRESS does not answer."""
    problem = ray_address_problem(os.environ.get("RAY_ADDRESS"))
    if problem:
        raise LensauditError(f"RAY_ADDRESS: {problem}; start the cluster, or unset RAY_ADDRESS "
                             "to run on a local Ray")
