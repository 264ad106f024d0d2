"""`lensaudit compare`: cells of several MLflow runs side by side.

A job's parent run holds one child run per (model, condition) cell, with the
cell's metrics and the tags lensaudit.model / lensaudit.condition. Compare
selects parent runs by experiment, tag or id, and prints one row per cell.
Works against any tracking URI: the local sqlite store or a tracking server.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from engine.errors import LensauditError
from engine.tracking import DEFAULT_TRACKING_URI

METRICS = ("r_cos_cf", "r_cos_cf_ci_low", "r_cos_cf_ci_high", "alignment_change",
           "alignment_change_low", "alignment_change_high", "r_cos_soft", "r_cos_soft_ci_low",
           "r_cos_soft_ci_high", "r_cos", "p_perm", "accuracy", "auc_vs_org", "kappa", "positive_rate",
           "lme_G", "lme_R_s", "n_cases")
#: Metric keys renamed since earlier runs were logged (new -> old), the meaning
#: unchanged: older runs are read under the new name (README, "Metric names").
RENAMED = {"auc_vs_org": "auc", "propensity_r_vs_org_fit": "propensity_r"}


def _parse_tags(tags: list[str]) -> dict[str, str]:
    out = {}
    for t in tags:
        if "=" not in t:
            raise LensauditError(f"--tag '{t}': expected KEY=VALUE")
        k, v = t.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def compare_runs(*, tracking_uri: str | None = None, experiments: list[str] = (),
                 tags: list[str] = (), run_ids: list[str] = ()) -> pd.DataFrame:
    """One row per cell of every selected job run.

    Args:
      experiments: experiment names (all their job runs); tags: KEY=VALUE
        filters on the job runs; run_ids: job (parent) run ids.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    client = MlflowClient(tracking_uri=uri)
    tag_filter = _parse_tags(list(tags))
    try:
        if run_ids:
            parents = [client.get_run(r) for r in run_ids]
            exp_ids = sorted({p.info.experiment_id for p in parents})
        else:
            names = list(experiments)
            if not names:
                exp_ids = [e.experiment_id for e in client.search_experiments()]
            else:
                exp_ids = []
                for name in names:
                    exp = client.get_experiment_by_name(name)
                    if exp is None:
                        raise LensauditError(f"no MLflow experiment '{name}' in {uri}")
                    exp_ids.append(exp.experiment_id)
            clauses = ["tags.`lensaudit.job` != ''"]
            clauses += [f"tags.`{k}` = '{v}'" for k, v in tag_filter.items()]
            runs = client.search_runs(exp_ids, " and ".join(clauses), max_results=5000)
            parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        rows = []
        for p in parents:
            children = client.search_runs(
                [p.info.experiment_id], f"tags.`mlflow.parentRunId` = '{p.info.run_id}'",
                max_results=5000)
            for c in children:
                row = {"run_id": p.info.run_id[:12], "run_name": p.info.run_name,
                       "job": p.data.tags.get("lensaudit.job", ""),
                       "model": c.data.tags.get("lensaudit.model", ""),
                       "condition": c.data.tags.get("lensaudit.condition", ""),
                       "started": pd.Timestamp(p.info.start_time, unit="ms")}
                got = c.data.metrics
                row.update({m: got.get(m, got.get(RENAMED.get(m, m))) for m in METRICS})
                row["note"] = c.data.tags.get("lensaudit.r_cos_cf_undefined",
                                              c.data.tags.get("lensaudit.r_cos_undefined", ""))
                rows.append(row)
    except MlflowException as exc:
        raise LensauditError(f"MLflow at {uri}: {exc.message.splitlines()[0]}") from None
    df = pd.DataFrame(rows, columns=["run_id", "run_name", "job", "model", "condition", "started",
                                     *METRICS, "note"])
    return df.sort_values(["job", "model", "condition", "started"]).reset_index(drop=True)


def format_comparison(df: pd.DataFrame) -> str:
    if df.empty:
        return "no lensaudit runs matched"
    shown = df.drop(columns=["started", "r_cos_cf_ci_low", "r_cos_cf_ci_high", "alignment_change",
                             "alignment_change_low", "alignment_change_high", "r_cos_soft",
                             "r_cos_soft_ci_low", "r_cos_soft_ci_high"]).copy()
    shown = shown.rename(columns={"r_cos_cf": "alignment", "r_cos": "r_cos (plain)"})
    shown.insert(shown.columns.get_loc("alignment") + 1, "interval", [
        "" if pd.isna(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
        for lo, hi in zip(df["r_cos_cf_ci_low"], df["r_cos_cf_ci_high"])])
    # A baseline cell has no change; another condition's change is from its model's baseline.
    shown.insert(shown.columns.get_loc("interval") + 1, "change vs baseline", [
        "" if pd.isna(d) else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        for d, lo, hi in zip(df["alignment_change"], df["alignment_change_low"],
                             df["alignment_change_high"])])
    if df["r_cos_soft"].notna().any():
        # The soft lens (the policy from the probabilities), where a cell has it.
        shown.insert(shown.columns.get_loc("change vs baseline") + 1, "soft", [
            "" if pd.isna(v) else f"{v:+.3f}" + ("" if pd.isna(lo) else f" [{lo:+.3f}, {hi:+.3f}]")
            for v, lo, hi in zip(df["r_cos_soft"], df["r_cos_soft_ci_low"],
                                 df["r_cos_soft_ci_high"])])
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="undefined")


def _cmd_compare(args) -> int:
    df = compare_runs(tracking_uri=args.tracking_uri, experiments=args.experiment or [],
                      tags=args.tag or [], run_ids=args.run_id or [])
    print(format_comparison(df))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.csv, index=False)
        print(f"written: {args.csv}")
    return 0


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="cells of several MLflow runs side by side")
    p.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.add_argument("--experiment", action="append", help="experiment name (repeatable)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE",
                   help="only job runs with this tag (repeatable)")
    p.add_argument("--run-id", action="append", help="a job (parent) run id (repeatable)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.set_defaults(func=_cmd_compare)
