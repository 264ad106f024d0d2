"""`lensaudit compare`: cells of several MLflow runs side by side.

A job's parent run holds one child run per (model, condition) cell, with the
cell's metrics and the tags lensaudit.model / lensaudit.condition. Compare
selects parent runs by experiment, tag or id, and prints one row per cell.
Works against any tracking URI: the local sqlite store or a tracking server.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from engine.errors import LensauditError
from engine.outputs._tracking import DEFAULT_TRACKING_URI, bounded_retries, check_tracking

METRICS = ("r_cos_cf", "r_cos_cf_ci_low", "r_cos_cf_ci_high", "alignment_change",
           "alignment_change_low", "alignment_change_high", "r_cos_soft", "r_cos_soft_ci_low",
           "r_cos_soft_ci_high", "r_cos", "r_cos_ci_low", "r_cos_ci_high", "p_perm", "accuracy",
           "auc_vs_org", "kappa", "positive_rate", "lme_G", "lme_R_s", "stated_spearman",
           "stated_direction", "n_cases")
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
    from requests.exceptions import RequestException

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    tag_filter = _parse_tags(list(tags))
    check_tracking(uri)  # seconds, where MLflow's client would retry for minutes
    client = MlflowClient(tracking_uri=uri)
    try:
        with bounded_retries():
            return _cell_rows(client, uri, experiments, tag_filter, run_ids)
    except MlflowException as exc:
        raise LensauditError(f"MLflow at {uri}: {exc.message.splitlines()[0]}") from None
    except RequestException as exc:
        raise LensauditError(f"MLflow tracking server {uri} failed: "
                             f"{str(exc).splitlines()[0][:200]}") from None


def _cell_rows(client, uri: str, experiments, tag_filter: dict, run_ids) -> pd.DataFrame:
    """One row per cell of every selected job run (see `compare_runs`)."""
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
            # a metric a cell does not have (NaN: "undefined", not None)
            row.update({m: got.get(m, got.get(RENAMED.get(m, m), float("nan")))
                        for m in METRICS})
            row["note"] = next((c.data.tags[t] for t in (
                "lensaudit.r_cos_cf_undefined", "lensaudit.r_cos_undefined",
                "lensaudit.r_cos_cf_note") if t in c.data.tags), "")
            rows.append(row)
    df = pd.DataFrame(rows, columns=["run_id", "run_name", "job", "model", "condition", "started",
                                     *METRICS, "note"])
    return df.sort_values(["job", "model", "condition", "started"]).reset_index(drop=True)


def _interval_text(lo, hi) -> str:
    """`[+0.700, +0.900]`, or "" where there is no interval."""
    return "" if pd.isna(lo) else f"[{lo:+.3f}, {hi:+.3f}]"


def _with_interval(v, lo=None, hi=None, undefined: str = "") -> str:
    """`+0.812 [+0.700, +0.900]`: the estimate, then its interval where it has
    one (a change between identical decisions is exactly 0 without one)."""
    if pd.isna(v):
        return undefined
    interval = "" if lo is None else _interval_text(lo, hi)
    return f"{v:+.3f}" + (f" {interval}" if interval else "")


def format_comparison(df: pd.DataFrame) -> str:
    if df.empty:
        return "no lensaudit runs matched"
    shown = df.drop(columns=["started", "r_cos_cf_ci_low", "r_cos_cf_ci_high", "alignment_change",
                             "alignment_change_low", "alignment_change_high", "r_cos_soft",
                             "r_cos_soft_ci_low", "r_cos_soft_ci_high", "r_cos_ci_low",
                             "r_cos_ci_high"]).copy()
    shown = shown.rename(columns={"r_cos_cf": "alignment", "r_cos": "r_cos (plain)"})
    shown.insert(shown.columns.get_loc("alignment") + 1, "interval", [
        _interval_text(lo, hi) for lo, hi in zip(df["r_cos_cf_ci_low"], df["r_cos_cf_ci_high"])])
    # A baseline cell has no change; another condition's change is from its model's baseline.
    shown.insert(shown.columns.get_loc("interval") + 1, "change vs baseline", [
        _with_interval(*v) for v in zip(df["alignment_change"], df["alignment_change_low"],
                                        df["alignment_change_high"])])
    if df["r_cos_soft"].notna().any():
        # The soft lens (the policy from the probabilities), where a cell has it.
        shown.insert(shown.columns.get_loc("change vs baseline") + 1, "soft", [
            _with_interval(*v) for v in zip(df["r_cos_soft"], df["r_cos_soft_ci_low"],
                                            df["r_cos_soft_ci_high"])])
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="undefined")


def _interval_svg(v, lo, hi, width: int = 160) -> str:
    """An estimate and its interval on [-1, 1], drawn inline."""
    if pd.isna(v):
        return ""
    x = lambda t: width * (min(max(float(t), -1.0), 1.0) + 1) / 2  # noqa: E731
    bar = ("" if pd.isna(lo) else
           f"<line x1='{x(lo):.1f}' x2='{x(hi):.1f}' y1='7' y2='7' stroke='#4a78a8' "
           "stroke-width='4'/>")
    return (f"<svg width='{width}' height='14' role='img' aria-label='{v:+.3f}'>"
            f"<line x1='0' x2='{width}' y1='7' y2='7' stroke='#ddd'/>"
            f"<line x1='{x(0):.1f}' x2='{x(0):.1f}' y1='1' y2='13' stroke='#aaa'/>{bar}"
            f"<line x1='{x(v):.1f}' x2='{x(v):.1f}' y1='0' y2='14' stroke='#1f3b57' "
            "stroke-width='2'/></svg>")


def comparison_html(df: pd.DataFrame) -> str:
    """The compared cells as one HTML page: the alignment (cross-fitted cosine)
    and the paper's plain r_cos, each with its interval drawn on [-1, 1]."""
    def text(v, lo=None, hi=None):
        return _with_interval(v, lo, hi, undefined="undefined")

    rows = []
    for r in df.itertuples():
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                r.run_id, r.run_name, r.model, r.condition, r.started))
            + f"<td>{text(r.r_cos_cf, r.r_cos_cf_ci_low, r.r_cos_cf_ci_high)}<br>"
            f"{_interval_svg(r.r_cos_cf, r.r_cos_cf_ci_low, r.r_cos_cf_ci_high)}</td>"
            f"<td>{text(r.r_cos_soft, r.r_cos_soft_ci_low, r.r_cos_soft_ci_high)}<br>"
            f"{_interval_svg(r.r_cos_soft, r.r_cos_soft_ci_low, r.r_cos_soft_ci_high)}</td>"
            f"<td>{text(r.r_cos, r.r_cos_ci_low, r.r_cos_ci_high)}<br>"
            f"{_interval_svg(r.r_cos, r.r_cos_ci_low, r.r_cos_ci_high)}</td>"
            + "".join(f"<td>{text(getattr(r, m))}</td>" for m in ("accuracy", "auc_vs_org",
                                                                  "kappa", "lme_G"))
            + f"<td>{html.escape(str(r.note))}</td></tr>")
    head = ("run", "name", "model", "condition", "started", "alignment (cross-fitted) [95%]",
            "soft lens", "r_cos (plain, the paper's)", "accuracy", "AUC vs org", "kappa",
            "G (lens model)", "note")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>lensaudit compare</title>"
            "<style>body{font:13px system-ui,sans-serif}td,th{border:1px solid #ddd;"
            "padding:3px 6px;vertical-align:top}table{border-collapse:collapse}</style>"
            "</head><body><h1>lensaudit compare</h1><p>Each figure's bar spans [-1, 1]; the "
            "tick is the estimate, the blue line its interval.</p><table><thead><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></body></html>")


def _cmd_compare(args) -> int:
    df = compare_runs(tracking_uri=args.tracking_uri, experiments=args.experiment or [],
                      tags=args.tag or [], run_ids=args.run_id or [])
    print(format_comparison(df))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.csv, index=False)
        print(f"written: {args.csv}")
    if args.html:
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        Path(args.html).write_text(comparison_html(df), encoding="utf-8")
        print(f"written: {args.html}")
    return 0


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="cells of several MLflow runs side by side")
    p.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.add_argument("--experiment", action="append", help="experiment name (repeatable)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE",
                   help="only job runs with this tag (repeatable)")
    p.add_argument("--run-id", action="append", help="a job (parent) run id (repeatable)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--html", help="also write the table as an HTML page, each alignment "
                   "drawn with its interval")
    p.set_defaults(func=_cmd_compare)
