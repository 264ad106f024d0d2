"""MLflow logging: a parent run per job, a child run per (model, condition).

A job first writes everything it will log into its run directory
(`save_results`): `results.json` (the spec, the job's metrics and one entry
per cell with its metrics, tags and artifact folder), `cases.parquet`, the
report and one folder per cell under `cells/`. Logging then reads only that
directory (`log_run_dir`), so a run whose tracking server was down, or one
made offline, is logged later by `lensaudit log RUN_DIR` exactly as it would
have been.

Every process that logs sets the tracking URI itself (`tracking_uri`). Only the
job spec is logged as params: it holds no secret values (keys come from the
environment by variable name only). The server is probed before any work
(`check_tracking`), and logging retries a few seconds, not MLflow's minutes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from engine.audit import AuditResult
from engine.datasets import schema_entries
from engine.errors import LensauditError
from engine.records import cell_rows
from engine.servers import probe_http
from engine.spec import JobSpec

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
RESULTS_FILE = "results.json"


def tracking_uri(spec: JobSpec) -> str:
    return spec.output.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def tracking_problem(uri: str, *, timeout_s: float | None = None) -> str | None:
    """Why the tracking store cannot be reached, or None.

    http(s): the server must answer its /health endpoint within `timeout_s`
    (`engine.servers.probe_timeout`).
    sqlite: the database's folder must exist. Other schemes are left to MLflow.
    """
    if uri.startswith(("http://", "https://")):
        reason = probe_http(uri.rstrip("/") + "/health", timeout_s=timeout_s)
        return f"not reachable ({reason})" if reason else None
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        return None if folder.is_dir() else f"folder {folder} does not exist"
    return None


def check_tracking(uri: str, *, timeout_s: float | None = None) -> None:
    """Fail in one line, before any work, when the tracking store cannot be reached."""
    problem = tracking_problem(uri, timeout_s=timeout_s)
    if problem and uri.startswith(("http://", "https://")):
        raise LensauditError(f"MLflow tracking server {uri} is {problem}; start it, or point "
                             "output.tracking_uri / MLFLOW_TRACKING_URI at another store")
    if problem:
        raise LensauditError(f"MLflow tracking store {uri}: {problem}")


@contextlib.contextmanager
def bounded_retries():
    """MLflow's HTTP client retries for minutes by default (7 retries, backoff 2,
    120 s timeout); a dead server should cost seconds. The user's own settings win."""
    defaults = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    added = [k for k in defaults if k not in os.environ]
    os.environ.update({k: defaults[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """MLflow stores NaN poorly; undefined values are left out and tagged instead."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def slug(text: str) -> str:
    """`text` as a file-name part (letters, digits, '-', '_', '.')."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def cell_dir_name(model: str, condition: str) -> str:
    """A cell's folder under `cells/`: stable across processes (no hash())."""
    return f"{slug(model)}--{slug(condition)}"


def save_results(run_dir: Path, spec: JobSpec, *, kind: str, metrics: dict[str, float],
                 tags: dict[str, str], cells: list[dict], cases_table: pd.DataFrame | None,
                 files: list[str], schema: dict | None = None,
                 warnings: list[str] = ()) -> Path:
    """Write what `log_run_dir` logs.

    Args:
      kind: "lens" or "alignment".
      metrics, tags: the job's (parent run's) own.
      cells: one dict per child run: model, condition, metrics, tags, and
        `artifacts`: {file name: DataFrame} written to the cell's folder.
      cases_table: the case set (logged as the runs' input), or None.
      files: job-level artifacts, relative to run_dir (e.g. "summary.csv",
        "report"): a folder is logged under its own name.
      schema: the case set's cue schema (`engine.datasets.schema_entries`),
        so that the run directory says what its cue columns mean.
      warnings: the job's own (the case set's cue diagnostics, its size),
        also logged as the parent run's tags `lensaudit.warning.job.<i>`.
    """
    run_dir = Path(run_dir)
    shutil.rmtree(run_dir / "cells", ignore_errors=True)  # a re-run may have other cells
    entries = []
    for cell in cells:
        folder = Path("cells") / cell_dir_name(cell["model"], cell["condition"])
        (run_dir / folder).mkdir(parents=True, exist_ok=True)
        for name, df in cell.get("artifacts", {}).items():
            if name.endswith(".parquet"):
                df.to_parquet(run_dir / folder / name, index=False)
            else:
                df.to_csv(run_dir / folder / name, index=False)
        entries.append({"model": cell["model"], "condition": cell["condition"],
                        "metrics": _finite(cell.get("metrics", {})),
                        "tags": {k: str(v) for k, v in cell.get("tags", {}).items()},
                        "artifacts": str(folder)})
    if cases_table is not None:
        cases_table.to_parquet(run_dir / "cases.parquet", index=False)
    payload = {"version": 1, "kind": kind, "spec": spec.model_dump(mode="json"),
               "spec_hash": spec.spec_hash(), "git_commit": _git_commit(),
               "metrics": _finite(metrics), "warnings": list(warnings),
               "tags": {**tags, **{f"lensaudit.warning.job.{i}": w[:5000]
                                   for i, w in enumerate(warnings)}}, "files": files,
               "cases": "cases.parquet" if cases_table is not None else None, "cells": entries,
               "schema": schema}
    path = run_dir / RESULTS_FILE
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)
    return path


def read_results(run_dir: str | Path) -> tuple[dict, JobSpec]:
    run_dir = Path(run_dir)
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise LensauditError(f"{run_dir}: no {RESULTS_FILE} (not a finished lensaudit run "
                             "directory; run the job first)")
    try:
        payload = json.loads(path.read_text())
        spec = JobSpec.model_validate(payload["spec"])
    except Exception as exc:
        raise LensauditError(f"{path}: unreadable ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return payload, spec


def log_run_dir(run_dir: str | Path, *, uri: str | None = None,
                experiment: str | None = None) -> tuple[str, str]:
    """Log a finished run directory to MLflow. Returns (tracking URI, parent run id).

    The URI and experiment default to the job's own. Failure is one line that
    says the run directory still holds everything.
    """
    run_dir = Path(run_dir)
    payload, spec = read_results(run_dir)
    uri = uri or tracking_uri(spec)

    def kept(reason: str) -> LensauditError:
        return LensauditError(
            f"MLflow logging to {uri} failed ({reason[:200]}); every decision and result is kept "
            f"in {run_dir}: log it with `lensaudit log {run_dir} --tracking-uri URI`")

    problem = tracking_problem(uri)
    if problem:
        raise kept(problem)
    try:
        with bounded_retries():
            return uri, _log(run_dir, payload, spec, uri, experiment)
    except Exception as exc:
        if not _is_tracking_failure(exc):
            raise
        raise kept((getattr(exc, "message", None) or str(exc) or type(exc).__name__)
                   .splitlines()[0]) from None


def _is_tracking_failure(exc: Exception) -> bool:
    """An error of the store or of the way to it (both come with mlflow), not a bug here."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, (MlflowException, RequestException, SQLAlchemyError, OSError))


@contextlib.contextmanager
def _tracking_at(uri: str):
    """MLflow pointed at `uri` for the block. mlflow.set_tracking_uri also writes
    MLFLOW_TRACKING_URI into the environment (for subprocesses); it is put back
    afterwards, or the next job of this process would log to this store, or
    fail on it once it is gone."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def _log(run_dir: Path, payload: dict, spec: JobSpec, uri: str, experiment: str | None) -> str:
    with _tracking_at(uri):
        return _log_runs(run_dir, payload, spec, experiment)


def _log_runs(run_dir: Path, payload: dict, spec: JobSpec, experiment: str | None) -> str:
    import mlflow

    mlflow.set_experiment(experiment or spec.output.experiment or spec.name)
    tags = {"lensaudit.job": spec.name, "lensaudit.spec_hash": payload["spec_hash"],
            "lensaudit.git_commit": payload["git_commit"], **payload.get("tags", {})}
    params = spec.flat()
    with mlflow.start_run(run_name=spec.name, tags=tags) as parent:
        mlflow.log_params(params)
        mlflow.log_metrics(payload["metrics"])
        dataset = _input_dataset(run_dir, payload, spec)
        if dataset is not None:
            mlflow.log_input(dataset, context="evaluation")
        for name in payload["files"]:
            path = run_dir / name
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=name)
            elif path.is_file():
                mlflow.log_artifact(str(path))
        for cell in payload["cells"]:
            child_tags = {**tags, "lensaudit.model": cell["model"],
                          "lensaudit.condition": cell["condition"], **cell["tags"]}
            with mlflow.start_run(run_name=f"{cell['model']} | {cell['condition']}", nested=True,
                                  tags=child_tags):
                mlflow.log_params(params)
                mlflow.log_metrics(cell["metrics"])
                mlflow.log_artifacts(str(run_dir / cell["artifacts"]))
                _log_tables(run_dir / cell["artifacts"])
                if dataset is not None:
                    mlflow.log_input(dataset, context="evaluation")
    return parent.info.run_id


#: A cell's files logged again as MLflow tables (searchable and comparable in
#: its UI, which shows CSV and Parquet files only as downloads).
TABLES = {"decisions.parquet": "decisions", "policies.csv": "policies",
          "protected_attributes.csv": "protected_attributes",
          "counterfactual.csv": "counterfactual"}


def _log_tables(folder: Path) -> None:
    import mlflow

    for file, name in TABLES.items():
        path = folder / file
        if not path.is_file():
            continue
        df = pd.read_parquet(path) if file.endswith(".parquet") else pd.read_csv(path)
        # JSON has no NaN: a missing figure is null there.
        df = df.astype(object).where(df.notna(), None)
        mlflow.log_table(df, artifact_file=f"tables/{name}.json")


def _input_dataset(run_dir: Path, payload: dict, spec: JobSpec):
    """The case set (or an alignment job's probes) as an MLflow dataset, or None."""
    import mlflow

    if not payload.get("cases"):
        return None
    cases = pd.read_parquet(run_dir / payload["cases"])
    for col in cases.select_dtypes("integer").columns:  # MLflow warns on int columns
        cases[col] = cases[col].astype(float)
    name = spec.dataset.name or Path(spec.dataset.cases).stem
    return mlflow.data.from_pandas(cases, name=name)


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"


def save_lens_results(spec: JobSpec, run_dir: Path, *, audit: AuditResult,
                      decisions: pd.DataFrame, cases_table: pd.DataFrame,
                      constant_columns: list[str], schema=None,
                      warnings: list[str] = ()) -> Path:
    """Everything a lens audit's MLflow runs hold, written into the run
    directory (`save_results`): the audit's figures, each cell's decisions,
    tables and tags, and the cases."""
    org, cells = audit.org, audit.cells
    policy_tables, protected_tables = audit.policy_tables, audit.protected_tables
    tags = {}
    if constant_columns:
        tags["lensaudit.constant_columns"] = ", ".join(constant_columns)[:5000]
    entries = []
    for cell in cells:
        cell_tags = cell.alignment_tags()
        for i, w in enumerate(cell.warnings):
            cell_tags[f"lensaudit.warning.{i}"] = w
        key = (cell.model, cell.condition)
        artifacts = {"decisions.parquet": cell_rows(decisions, *key),
                     "policies.csv": policy_tables[key],
                     "protected_attributes.csv": protected_tables[key]}
        if cell.twins is not None:
            artifacts["counterfactual.csv"] = cell.twins
        if cell.stated is not None:
            artifacts["stated_vs_used.csv"] = cell.stated.table
        entries.append({"model": cell.model, "condition": cell.condition,
                        "metrics": cell.metrics(), "tags": cell_tags, "artifacts": artifacts})
    return save_results(run_dir, spec, kind="lens",
                        metrics={"org_cv_accuracy": org.cv_accuracy, "org_cv_auc": org.cv_auc,
                                 "n_cases": len(cases_table)},
                        tags=tags, cells=entries, cases_table=cases_table,
                        files=["summary.csv", "report", "view.html"],
                        schema=None if schema is None else schema_entries(schema),
                        warnings=warnings)
