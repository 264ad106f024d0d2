"""`lensaudit compare` against a real MLflow tracking server on 127.0.0.1."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import start_mlflow_server, stop_mlflow_server

from engine.job import run_job
from engine.spec import load_job

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield uri
    finally:
        stop_mlflow_server(proc)


@pytest.fixture(scope="module")
def two_runs(server, tmp_path_factory):
    ids = []
    for i, models in enumerate(("[simulated:org]", "[simulated:org,simulated:cos=0.5]")):
        tmp = tmp_path_factory.mktemp(f"job{i}")
        spec = load_job("jobs/german_credit_demo.yaml", [
            f"models={models}", "dataset.subset.per_class=70", "statistics.bootstrap=50",
            "statistics.permutations=50", f"output.run_dir={tmp}",
            f"output.tracking_uri={server}", "output.experiment=compare-test"])
        ids.append(run_job(spec, progress=False, log=lambda *_: None).parent_run_id)
    return ids


def test_compare_by_experiment_prints_and_writes_every_cell(server, two_runs, tmp_path):
    out_csv = tmp_path / "cells.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "compare", "--tracking-uri", server,
         "--experiment", "compare-test", "--csv", str(out_csv), "--html",
         str(tmp_path / "cells.html")],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out_csv)
    assert len(df) == 3  # 1 cell + 2 cells
    assert set(df["model"]) == {"simulated:org", "simulated:cos=0.5"}
    assert df["r_cos"].notna().all() and df["r_cos_cf"].notna().all()
    assert (df["r_cos_cf_ci_low"] <= df["r_cos_cf"]).all() and (df["r_cos_cf"] <= df["r_cos_cf_ci_high"]).all()
    assert "simulated:cos=0.5" in proc.stdout and "alignment" in proc.stdout
    assert "r_cos (plain)" in proc.stdout
    assert "None" not in proc.stdout  # a metric no cell of the job has reads "undefined"
    page = (tmp_path / "cells.html").read_text()
    assert page.count("<tr>") == 1 + 3 and page.count("<svg") == 3 * 3  # alignment, soft, plain
    r = df.iloc[0]
    assert f"{r.r_cos_cf:+.3f} [{r.r_cos_cf_ci_low:+.3f}, {r.r_cos_cf_ci_high:+.3f}]" in page


def test_compare_by_run_id_and_tag(server, two_runs):
    from engine.outputs import compare_runs

    one = compare_runs(tracking_uri=server, run_ids=[two_runs[1]])
    assert len(one) == 2 and set(one["run_id"]) == {two_runs[1][:12]}
    tagged = compare_runs(tracking_uri=server, tags=["lensaudit.job=german_credit_demo"],
                          experiments=["compare-test"])
    assert len(tagged) == 3


def test_compare_unknown_experiment_is_named(server):
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "compare", "--tracking-uri", server,
         "--experiment", "nope"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "no MLflow experiment 'nope'" in proc.stderr


def test_compare_reads_runs_logged_under_the_old_metric_names(server):
    """Runs logged before `auc` became `auc_vs_org` (the same quantity) still compare."""
    import mlflow

    from engine.outputs import compare_runs

    client = mlflow.tracking.MlflowClient(tracking_uri=server)
    exp = client.create_experiment("compare-renamed")
    parent = client.create_run(exp, tags={"lensaudit.job": "old"}, run_name="old")
    child = client.create_run(exp, tags={"mlflow.parentRunId": parent.info.run_id,
                                         "lensaudit.model": "m", "lensaudit.condition": "baseline"})
    client.log_metric(child.info.run_id, "auc", 0.71)
    client.log_metric(child.info.run_id, "accuracy", 0.66)
    row = compare_runs(tracking_uri=server, experiments=["compare-renamed"]).iloc[0]
    assert row["auc_vs_org"] == pytest.approx(0.71) and row["accuracy"] == pytest.approx(0.66)


def test_the_runs_hold_their_decisions_as_mlflow_tables_and_the_view(server, two_runs, tmp_path):
    """What the MLflow UI shows as tables (log_table), the case set as every
    run's input, and the per-case page on the job's parent run."""
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=server)
    parent = client.get_run(two_runs[0])
    assert "view.html" in {a.path for a in client.list_artifacts(two_runs[0])}
    child = client.search_runs([parent.info.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{two_runs[0]}'")[0]
    tables = {a.path for a in client.list_artifacts(child.info.run_id, "tables")}
    assert {"tables/decisions.json", "tables/policies.json"} <= tables
    logged = json.loads(child.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "tables/decisions.json", "type": "table"} in logged
    table = json.loads(Path(client.download_artifacts(child.info.run_id, "tables/decisions.json",
                                                      str(tmp_path))).read_text())
    assert len(table["data"]) == 140  # the cell's 140 cases, one sample each
    assert {"case_id", "choice", "p_positive"} <= set(table["columns"])
    assert child.inputs.dataset_inputs and parent.inputs.dataset_inputs
