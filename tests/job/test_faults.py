"""Fault injection: a fault ends in one line on stderr and exit 2, and every
decision already computed is kept and reused by the re-run.

(Bad input is in test_cli_errors.py and test_fit_cli.py; a killed driver and a
killed engine actor, and SIGTERM, are in test_resume.py.)
"""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (alive, assert_one_line_error, session_pids, start_mlflow_server,
                     stop_mlflow_server)

from engine.decisions import DecisionStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def run_args(run_dir: Path, tracking_uri: str, *overrides: str) -> list[str]:
    args = [sys.executable, "-m", "engine.cli", "run", "jobs/german_credit_demo.yaml",
            "--no-progress", "--set", f"output.run_dir={run_dir}",
            "--set", f"output.tracking_uri={tracking_uri}"]
    for o in overrides:
        args += ["--set", o]
    return args


def test_tracking_server_killed_mid_run_keeps_everything_and_lensaudit_log_recovers(tmp_path):
    from mlflow.tracking import MlflowClient

    server, uri = start_mlflow_server(tmp_path / "server")
    run_dir = tmp_path / "run"
    args = run_args(run_dir, uri, "models=[simulated:org,simulated:cos=0.5]",
                    "dataset.subset.per_class=100", "statistics.bootstrap=400",
                    "statistics.permutations=400")
    store = DecisionStore(run_dir)
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.time() + 300
        while not store.shards():  # decisions are in; the statistics are being computed
            assert driver.poll() is None, driver.communicate()[1]
            assert time.time() < deadline, "no decisions written in 300 s"
            time.sleep(0.05)
    finally:
        stop_mlflow_server(server)  # by PID, in the middle of the run
    started = time.time()
    _, err = driver.communicate(timeout=600)
    assert_one_line_error(driver.returncode, err, f"MLflow logging to {uri} failed")
    assert f"kept in {run_dir}: log it with `lensaudit log {run_dir} --tracking-uri URI`" in err
    assert time.time() - started < 120  # seconds of retries, not MLflow's minutes
    assert len(store.load()) == 400

    # The run directory holds everything: log it to another store later.
    later = f"sqlite:///{tmp_path / 'later.db'}"
    out = subprocess.run([sys.executable, "-m", "engine.cli", "log", str(run_dir),
                          "--tracking-uri", later], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    client = MlflowClient(tracking_uri=later)
    (exp,) = [e for e in client.search_experiments() if e.name == "german_credit_demo"]
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2
    for child in children:
        assert 0 < child.data.metrics["p_perm"] <= 1
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"decisions.parquet", "policies.csv", "protected_attributes.csv"} <= names

    # A re-run would reuse every decision.
    plan = subprocess.run(run_args(run_dir, later, *[a for a in args if "=" in a][2:])
                          + ["--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "400 in all, 400 already done, 0 to compute" in plan.stdout, plan.stderr


def test_an_engine_that_cannot_start_is_named_and_the_other_models_decisions_are_kept(tmp_path):
    run_dir = tmp_path / "run"
    # SmolLM2-135M holds 8,192 positions; vLLM refuses a longer context at start.
    args = run_args(run_dir, f"sqlite:///{tmp_path / 'm.db'}", "dataset.subset.per_class=10",
                    "models=[simulated:org, {name: bundled:smollm2-135m, max_model_len: 100000}]",
                    "statistics.bootstrap=50", "statistics.permutations=50")
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    out, err = driver.communicate(timeout=600)
    assert_one_line_error(driver.returncode, err,
                          "model 'bundled:smollm2-135m': the engine failed: ")
    assert "max_model_len" in err and "100000" in err
    # Ray's own report of the actor's failure (its traceback) is not on the console.
    assert "Traceback" not in out and "raylet" not in out, out
    deadline = time.time() + 30  # the engines and the local Ray this run started are gone
    while [p for p in session_pids(driver.pid) if alive(p)] and time.time() < deadline:
        time.sleep(0.5)
    assert not [p for p in session_pids(driver.pid) if alive(p)]

    d = DecisionStore(run_dir).load()
    assert len(d) == 20 and set(d["model"]) == {"simulated:org"}
    again = subprocess.run(args + ["--dry-run"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert "40 in all, 20 already done, 20 to compute" in again.stdout
