"""`lensaudit submit` to a real local Ray head (token auth) that the test starts and
stops by PID (never `ray stop`, which kills every Ray process by name)."""

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, stop_session

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    import tempfile

    # Short: Ray's AF_UNIX socket paths under it must stay within 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="lah", dir="/tmp"))
    dash, gcs = free_port(), free_port()
    token = secrets.token_hex(32)
    env = dict(os.environ, RAY_AUTH_TOKEN=token, RAY_TMPDIR=str(tmp),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([str(ROOT / "cluster" / "local_head.sh"), str(dash), str(gcs), "2"],
                            env=env, stdout=open(tmp / "head.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=1)
                break
            except urllib.error.HTTPError:  # 401 without a token: the server is up
                break
            except OSError:
                assert proc.poll() is None, (tmp / "head.log").read_text()[-2000:]
                time.sleep(0.5)
        else:
            pytest.fail("Ray head did not start in 120 s")
        yield address, token
    finally:
        stop_session(proc)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def test_submit_the_demo_job_to_a_local_head(head, tmp_path):
    address, token = head
    run_dir = tmp_path / "run"
    env = dict(os.environ, RAY_AUTH_TOKEN=token, LENSAUDIT_SUBMIT_TEST_SECRET="do-not-print-me")
    env.pop("RAY_ADDRESS", None)
    # The demo job, on the simulated backend so the cluster needs no model.
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "submit", "jobs/german_credit_demo.yaml",
         "--address", address, "--set", "models=[simulated:org]",
         "--set", "dataset.subset.per_class=30", "--set", "statistics.bootstrap=50",
         "--set", "statistics.permutations=50", "--set", f"output.run_dir={run_dir}",
         "--set", f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
         "--env", "LENSAUDIT_SUBMIT_TEST_SECRET"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SUCCEEDED" in proc.stdout and "organisation:" in proc.stdout
    assert "LENSAUDIT_SUBMIT_TEST_SECRET" in proc.stdout  # the name is shown ...
    assert "do-not-print-me" not in proc.stdout + proc.stderr  # ... the value never
    assert (run_dir / "summary.csv").is_file() and (run_dir / "report" / "report.html").is_file()


def test_submit_without_the_token_is_refused(head):
    address, _ = head
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    env["RAY_AUTH_TOKEN_PATH"] = "/nonexistent-token-file"  # and no default token file used
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "submit", "jobs/german_credit_demo.yaml",
         "--address", address, "--no-wait"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0


def test_install_and_submission_id_reach_the_runtime_environment():
    """`--install gpu`: Ray's runtime environment installs the uploaded tree with
    the gpu extra (Ray's own image needs nothing baked in); Ray accepts the
    placeholder it expands to the unpacked tree; `--submission-id` names the job."""
    from ray.runtime_env import RuntimeEnv

    from engine.errors import LensauditError
    from engine.job import build_submission

    sub = build_submission("jobs/german_credit_demo.yaml", [], [], ROOT, install="gpu",
                           submission_id="lensaudit-german-credit")
    assert sub["runtime_env"]["pip"] == ["${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}[gpu]"]
    assert sub["submission_id"] == "lensaudit-german-credit"
    env = RuntimeEnv(**sub["runtime_env"])  # Ray's own validation of the fields
    assert env.pip_config()["packages"] == ["${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}[gpu]"]
    plain = build_submission("jobs/german_credit_demo.yaml", [], [], ROOT)
    assert "pip" not in plain["runtime_env"] and "submission_id" not in plain
    with pytest.raises(LensauditError, match="--install tpu: use one of"):
        build_submission("jobs/german_credit_demo.yaml", [], [], ROOT, install="tpu")
