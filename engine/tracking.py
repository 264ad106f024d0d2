"""MLflow logging: a parent run per job, a child run per (model, condition).

Every process that logs sets the tracking URI itself (`tracking_uri`). Only the
job spec is logged as params: it holds no secret values (keys come from the
environment by variable name only).
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from engine.spec import JobSpec

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(spec: JobSpec) -> str:
    return spec.output.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


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


def log_job(spec: JobSpec, *, org, cells, decisions: pd.DataFrame, policy_tables: dict,
            protected_tables: dict, cases_table: pd.DataFrame, constant_columns: list[str],
            report_files: list[Path] = ()) -> tuple[str, str]:
    """Log the job. Returns (tracking URI, parent run id)."""
    import mlflow

    uri = tracking_uri(spec)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(spec.output.experiment or spec.name)
    tags = {"lensaudit.job": spec.name, "lensaudit.spec_hash": spec.spec_hash(),
            "lensaudit.git_commit": _git_commit()}
    with mlflow.start_run(run_name=spec.name, tags=tags) as parent, \
            tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(spec.flat())
        mlflow.log_metrics(_finite({"org_cv_accuracy": org.cv_accuracy, "org_cv_auc": org.cv_auc,
                                    "n_cases": len(cases_table)}))
        as_float = cases_table.copy()
        for col in as_float.select_dtypes("integer").columns:  # MLflow warns on int columns
            as_float[col] = as_float[col].astype(float)
        dataset = mlflow.data.from_pandas(as_float, name=spec.dataset.name)
        mlflow.log_input(dataset, context="evaluation")
        if constant_columns:
            mlflow.set_tag("lensaudit.constant_columns", ", ".join(constant_columns)[:5000])
        summary = summary_table(cells)
        summary_path = Path(tmp) / "summary.csv"
        summary.to_csv(summary_path, index=False)
        mlflow.log_artifact(str(summary_path))
        for f in report_files:
            mlflow.log_artifact(str(f), artifact_path="report")
        for cell in cells:
            child_tags = dict(tags, **{"lensaudit.model": cell.model,
                                       "lensaudit.condition": cell.condition})
            if cell.r_cos_reason:
                child_tags["lensaudit.r_cos_undefined"] = cell.r_cos_reason
            if cell.r_cos_adj_reason:
                child_tags["lensaudit.r_cos_adj_undefined"] = cell.r_cos_adj_reason
            for i, w in enumerate(cell.warnings):
                child_tags[f"lensaudit.warning.{i}"] = w
            with mlflow.start_run(run_name=f"{cell.model} | {cell.condition}", nested=True,
                                  tags=child_tags):
                mlflow.log_params(spec.flat())
                mlflow.log_metrics(_finite(cell.metrics()))
                cell_dir = Path(tmp) / f"{len(os.listdir(tmp))}"
                cell_dir.mkdir()
                d = decisions[(decisions["model"] == cell.model)
                              & (decisions["condition"] == cell.condition)]
                d.to_parquet(cell_dir / "decisions.parquet", index=False)
                policy_tables[(cell.model, cell.condition)].to_csv(cell_dir / "policies.csv",
                                                                   index=False)
                protected_tables[(cell.model, cell.condition)].to_csv(
                    cell_dir / "protected_attributes.csv", index=False)
                mlflow.log_artifacts(str(cell_dir))
    return uri, parent.info.run_id


def summary_table(cells) -> pd.DataFrame:
    rows = []
    for cell in cells:
        m = cell.metrics()
        rows.append({"model": cell.model, "condition": cell.condition, **m,
                     "note": cell.r_cos_reason or ""})
    return pd.DataFrame(rows)


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"
