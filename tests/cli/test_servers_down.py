"""Every command that talks to a server, against one that is not there: one line
naming the server, exit 2, within 30 s (the client libraries alone retry for
minutes: `compare` took 256 s, `ray.init` on a dead RAY_ADDRESS over 2 minutes).

Two kinds of absent server: a port where nothing listens (the connection is
refused at once) and a socket that accepts connections and never answers (a
hung server, or a firewall that swallows the traffic), the harder of the two.
The commands run in this process (`engine.cli.main`).
"""

import contextlib
import shutil
import socket
import time
from pathlib import Path

import pytest
from helpers import assert_one_line_error, free_port, run_cli

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "jobs" / "german_credit_demo.yaml"
#: What the issue allows a command to take before its one line.
LIMIT_S = 30.0


@contextlib.contextmanager
def silent_server():
    """A port where a socket accepts connections (the kernel completes them
    into its backlog) and never reads or answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


@pytest.fixture(params=["refused", "silent"])
def dead_port(request, monkeypatch):
    """A port on 127.0.0.1 where nothing listens, or a silent server. The
    probes wait 1 s here, not their default 5 s (`test_a_silent_server_costs_
    the_default_probe_time` shows that one)."""
    monkeypatch.setenv("LENSAUDIT_PROBE_TIMEOUT_S", "1")
    if request.param == "refused":
        yield free_port()
        return
    with silent_server() as port:
        yield port


@pytest.fixture
def job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "job.yaml"
    shutil.copy(DEMO, path)
    return path


@pytest.fixture
def finished_run(job, tmp_path):
    """A run directory `lensaudit log` accepts (a results file, no cells)."""
    from engine.outputs import save_results
    from engine.spec import load_job

    run_dir = tmp_path / "finished"
    run_dir.mkdir()
    spec = load_job(str(job), [f"output.run_dir={run_dir}"])
    save_results(run_dir, spec, kind="lens", metrics={}, tags={}, cells=[], cases_table=None,
                 files=[])
    return run_dir


def _timed(capsys, *args):
    start = time.monotonic()
    code, _, err = run_cli(capsys, *args)
    return code, err, time.monotonic() - start


def test_compare(capsys, job, dead_port):
    uri = f"http://127.0.0.1:{dead_port}"
    code, err, took = _timed(capsys, "compare", "--tracking-uri", uri, "--experiment", "x")
    assert_one_line_error(code, err, f"MLflow tracking server {uri} is not reachable")
    assert took < LIMIT_S


def test_log(capsys, finished_run, dead_port):
    uri = f"http://127.0.0.1:{dead_port}"
    code, err, took = _timed(capsys, "log", finished_run, "--tracking-uri", uri)
    assert_one_line_error(code, err, f"MLflow logging to {uri} failed (not reachable")
    assert f"every decision and result is kept in {finished_run}" in err
    assert took < LIMIT_S


def test_submit(capsys, job, dead_port):
    address = f"http://127.0.0.1:{dead_port}"
    code, err, took = _timed(capsys, "submit", job, "--address", address)
    assert_one_line_error(code, err, f"Ray dashboard at {address} is not reachable")
    assert took < LIMIT_S


@pytest.mark.parametrize("flag", [[], ["--dry-run"]], ids=["run", "dry-run"])
@pytest.mark.parametrize("kind", ["lens", "alignment"])
def test_run_tracking_server(capsys, job, dead_port, flag, kind):
    uri = f"http://127.0.0.1:{dead_port}"
    if kind == "alignment":  # ALIGN's job (its own plan) probes the same servers
        job = ROOT / "jobs" / "mta_align.yaml"
    code, err, took = _timed(capsys, "run", job, "--set", f"output.tracking_uri={uri}",
                             "--set", f"output.run_dir={Path.cwd() / 'runs' / 'x'}", *flag)
    assert_one_line_error(code, err, f"MLflow tracking server {uri} is not reachable")
    assert took < LIMIT_S
    assert not (Path.cwd() / "runs").exists()  # nothing was started, nothing written


def test_run_openai_endpoint(capsys, job, dead_port, monkeypatch):
    monkeypatch.setenv("LENSAUDIT_TEST_KEY", "k")
    base = f"http://127.0.0.1:{dead_port}/v1"
    code, err, took = _timed(
        capsys, "run", job, "--set",
        f"models=[{{name: 'openai:m', base_url: '{base}', api_key_env: LENSAUDIT_TEST_KEY}}]")
    assert_one_line_error(code, err, f"model 'openai:m': endpoint {base} is not reachable")
    assert took < LIMIT_S


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_run_ray_cluster(capsys, job, dead_port, monkeypatch, scheme):
    address = f"{scheme}127.0.0.1:{dead_port}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    code, err, took = _timed(capsys, "run", job, "--set", "models=[simulated:org]")
    assert_one_line_error(code, err, f"RAY_ADDRESS: Ray cluster at {address} is not reachable")
    assert took < LIMIT_S


def test_a_silent_server_costs_the_default_probe_time(capsys, job, monkeypatch):
    monkeypatch.delenv("LENSAUDIT_PROBE_TIMEOUT_S", raising=False)
    with silent_server() as port:
        uri = f"http://127.0.0.1:{port}"
        code, err, took = _timed(capsys, "compare", "--tracking-uri", uri)
    assert_one_line_error(code, err, f"MLflow tracking server {uri} is not reachable (no answer "
                          "within 5 s)")
    assert 4.5 < took < LIMIT_S


def test_the_grpc_probe_knows_a_real_grpc_server():
    """The probe a Ray address gets: a real gRPC server (grpcio, which Ray's GCS
    is built on) answers it; the same port closed does not."""
    from concurrent import futures

    import grpc

    from engine.servers import probe_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert probe_grpc(f"127.0.0.1:{port}") is None
    finally:
        server.stop(None).wait()
    assert probe_grpc(f"127.0.0.1:{port}") is not None
