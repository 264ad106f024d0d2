"""Running an alignment job: ADMs over probes -> alignment table, lens audit, MLflow."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from engine import console
from engine.align._view import VIEW_READERS
from engine.align.adm import RANDOM, build_align_requests, random_rows, with_mode
from engine.align.data import Probe
from engine.align.design import MODELESS, adm_decisions, adm_targets, job_modes, load_probes
from engine.align.examples import similarity
from engine.align.metric import (alignment_table, method_by_attribute, mode_changes,
                                 scenario_table, target_means)
from engine.audit import StatisticsSpec
from engine.decisions import DecisionStore, EnginePools, kill_pools, pending
from engine.decisions.backends import check_model
from engine.errors import LensauditError
from engine.job import check_servers, decide, start_engines
from engine.outputs import log_run_dir, table_html, tracking_uri, write_page
from engine.spec import JobSpec


def all_align_requests(spec: JobSpec, probes: list[Probe]):
    """Every ADM decides every probe: accuracy uses the probes that measure its
    target, and the lens audit compares all ADMs on the same probes. Requests
    that several ADMs share (a voted ADM's opposite answers, comparative
    regression's ratings, the random ADM's draws) are asked once."""
    d, a = spec.decision, spec.alignment
    sim = similarity(probes) if "few_shot" in a.methods else None
    reqs: dict = {}
    for m in spec.models:
        for method, tgt in adm_targets(spec):
            for mode in job_modes(spec):
                if mode != d.mode and method in MODELESS:
                    continue  # the same requests in either mode
                for r in build_align_requests(probes, m.name, method, tgt, samples=d.samples,
                                              seed=d.seed, k=a.few_shot_k, score_all=True,
                                              mode=mode, vote=a.vote == "opposite", sim=sim):
                    if mode != d.mode:
                        r = replace(r, condition=with_mode(r.condition, mode))
                    reqs.setdefault(r.key, r)
    return list(reqs.values())


# ------------------------------------------------------------ lens bridge


def lens_design(probes: list[Probe], attributes: list[str]) -> tuple[list[str], np.ndarray]:
    """Two-choice probes (merged by probe id) and their cue matrix: per
    attribute, (score of choice 1 - score of choice 0) / 10, 0 where the probe
    does not measure it; then standardised (a constant column stays 0)."""
    merged: dict[str, dict] = {}
    for p in probes:
        if len(p.choices) != 2:
            continue
        row = merged.setdefault(p.probe_id, {})
        for a in p.attributes:
            if a in attributes:
                s = p.score(a)
                row[a] = (s[1] - s[0]) / 10.0
    ids = sorted(merged)
    X = np.array([[merged[i].get(a, 0.0) for a in attributes] for i in ids], float)
    sd = X.std(0)
    X = np.where(sd > 0, (X - X.mean(0)) / np.where(sd > 0, sd, 1), 0.0)
    return ids, X


def lens_audit(decisions: pd.DataFrame, probes: list[Probe], attributes: list[str], *,
               stats: StatisticsSpec) -> pd.DataFrame:
    """Each steered ADM against its backbone's baseline, in the lens model.

    Cues are the attribute-score differences of two-choice probes; a policy's
    weight on an attribute says how much that attribute drives the choice.
    For each (model, condition): the baseline's and the condition's weights,
    the change with a paired bootstrap interval, r_cos between them (with the
    cross-fitted r_cos_cf, the primary figure) and its permutation p-value.
    `statistics.*` apply as in every lens audit (B, P, C, level, interval,
    seed); the baseline's side is fitted once per backbone and shared by its
    conditions (the same resamples, so their comparisons stay paired). With
    `interval: bca` the weight change uses the basic interval (its jackknife is
    not computed).
    """
    import kernels

    ids, X = lens_design(probes, attributes)
    if len(ids) < 5:
        return pd.DataFrame()
    pid_of = {p.item_id: p.probe_id for p in probes}
    d = decisions.assign(probe_id=decisions["case_id"].map(pid_of))
    d = d[d["probe_id"].isin(ids) & (d["y"] >= 0)]
    key = jax.random.PRNGKey(stats.seed)
    settings = dict(n_bootstrap=stats.bootstrap, C=stats.C, interval=stats.interval)
    rows = []
    for model, dm in d.groupby("model"):
        share = dm.groupby(["condition", "probe_id"])["y"].mean().unstack("condition")
        count = dm.groupby(["condition", "probe_id"])["y"].size().unstack("condition")
        if "baseline" not in share:
            continue
        share, count = share.reindex(ids), count.reindex(ids)
        base = share["baseline"].to_numpy(float)
        if np.isnan(base).any():
            continue
        y_base = (base > 0.5).astype(float)
        reference = kernels.lens_reference(X, y_base, key=key, **settings)
        for cond in share.columns:
            if cond == "baseline" or share[cond].isna().any():
                continue
            c = kernels.compare_policies(X, y_base, share[cond].to_numpy(float), key=key,
                                         n_permutations=stats.permutations, level=stats.level,
                                         dm_trials=count[cond].to_numpy(float),
                                         reference=reference, **settings)
            diff = kernels.bootstrap_interval(
                c.beta_dm - c.beta_org, c.boot_beta_dm - c.boot_beta_org, level=stats.level,
                method="basic" if stats.interval == "bca" else stats.interval)
            for j, a in enumerate(attributes):
                rows.append({"model": model, "condition": cond, "attribute": a,
                             "beta_baseline": c.beta_org[j], "beta_condition": c.beta_dm[j],
                             "change": c.beta_dm[j] - c.beta_org[j],
                             "change_low": float(diff.low[j]), "change_high": float(diff.high[j]),
                             "r_cos_vs_baseline": c.r_cos, "r_cos_cf_vs_baseline": c.r_cos_cf,
                             "p_perm": c.p_perm, "n_probes": len(ids)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------ the job


@dataclass
class AlignResult:
    table: pd.DataFrame  # long: one row per (model, condition, target)
    wide: pd.DataFrame  # ALIGN layout
    lens: pd.DataFrame
    tracking_uri: str
    parent_run_id: str
    run_dir: Path
    #: with alignment.compare_modes: per ADM x target, the paired change in
    #: accuracy in the other decision mode (`metric.mode_changes`)
    mode_change: pd.DataFrame | None = None


def plan_align(spec: JobSpec) -> tuple[str, list[Probe]]:
    for m in spec.models:
        if check_model(m.name).backend == "simulated":
            raise LensauditError(f"model '{m.name}': the simulated backend has no policy over "
                                 "scenario choices; use a language model for alignment jobs")
    check_servers(spec)
    probes = load_probes(spec)
    reqs = all_align_requests(spec, probes)
    done = len(reqs) - len(pending(reqs, DecisionStore(spec.run_dir())))
    text = (f"alignment job {spec.name}: {len(spec.models)} backbone(s) x "
            f"{count_adms(spec)} x {len(probes)} probes = {len(reqs)} decisions "
            f"({done} already done)\n  run dir: {spec.run_dir()}   tracking: {tracking_uri(spec)}")
    return text, probes


def count_adms(spec: JobSpec) -> str:
    """How many ADMs a backbone stands for, and of what kinds: each method x
    target, in each decision mode (ratings and random have one), voted twins."""
    modes = len(job_modes(spec))
    direct = voted = 0
    for method, _ in adm_targets(spec):
        n = 1 if method in MODELESS else modes
        direct += n
        if spec.alignment.vote == "opposite" and method in ("prompt_aligned", "few_shot"):
            voted += n
    return f"{direct + voted} ADM(s) ({voted} voted)" if voted else f"{direct} ADM(s)"


def run_align_job(spec: JobSpec, *, progress: bool = True, log=print,
                  pools: EnginePools | None = None) -> AlignResult:
    """ADM decisions, alignment accuracy, lens audit, report, MLflow. `pools`:
    engines already running (kept running), as in `engine.job.run_job`."""
    text, probes = plan_align(spec)
    log(text)
    run_dir = spec.run_dir()
    console.attach_log_file(run_dir)
    store = DecisionStore(run_dir)
    engines, backends = start_engines(spec)
    requests = all_align_requests(spec, probes)
    drawn = pending([r for r in requests if r.model == RANDOM], store)
    store.write(random_rows(drawn, spec.decision.seed))  # the random ADM needs no engine
    owned = pools is None
    pools = EnginePools() if owned else pools
    try:
        computed = decide(spec, [r for r in requests if r.model != RANDOM], store, engines,
                          backends, pools, progress=progress)
    finally:
        if owned:
            kill_pools(pools)
    log(f"decisions: {computed + len(drawn)} computed now")
    keys = {r.key for r in requests}
    decisions = store.load()
    decisions = decisions[[k in keys for k in zip(decisions["model"], decisions["condition"],
                                                    decisions["case_id"], decisions["sample"])]]
    decisions = adm_decisions(spec, decisions, probes)
    a = spec.alignment
    table = alignment_table(decisions, probes, a.attributes, n_bootstrap=a.bootstrap,
                            level=spec.statistics.level, seed=spec.statistics.seed)
    wide = method_by_attribute(table)
    means = target_means(decisions, probes, a.attributes, n_bootstrap=a.bootstrap,
                         level=spec.statistics.level, seed=spec.statistics.seed)
    scenarios = scenario_table(decisions, probes, table)
    lens = lens_audit(decisions, probes, a.attributes, stats=spec.statistics)
    modes = job_modes(spec)
    changes = (mode_changes(decisions, probes, a.attributes, modes[1], n_bootstrap=a.bootstrap,
                            level=spec.statistics.level, seed=spec.statistics.seed)
               if len(modes) > 1 else None)
    if changes is not None:
        changes.to_csv(run_dir / "alignment_mode_change.csv", index=False)
    table.to_csv(run_dir / "alignment.csv", index=False)
    wide.to_csv(run_dir / "alignment_table.csv", index=False)
    means.to_csv(run_dir / "alignment_means.csv", index=False)
    scenarios.to_csv(run_dir / "alignment_by_scenario.csv", index=False)
    lens.to_csv(run_dir / "lens_by_attribute.csv", index=False)
    write_align_report(run_dir / "report", spec.name, table, wide, lens, means,
                       reasoning_examples(decisions), changes)
    save_align_results(spec, run_dir, table, decisions, probes, means, changes)
    from engine.outputs.view import write_view

    write_view(run_dir, readers=VIEW_READERS)
    uri, run_id = log_run_dir(run_dir)
    return AlignResult(table, wide, lens, uri, run_id, run_dir, changes)


def reasoning_examples(decisions: pd.DataFrame, per_adm: int = 1) -> pd.DataFrame:
    """The first `per_adm` reasonings each ADM gave (reasoning or rating mode),
    with the probe and the choice they came with (all of them: decisions.parquet
    and view.html)."""
    said = decisions[decisions["reasoning"].fillna("").str.len() > 0]
    said = said.sort_values(["model", "condition", "case_id", "sample"])
    return (said.groupby(["model", "condition"]).head(per_adm)
            [["model", "condition", "case_id", "y", "reasoning"]]
            .rename(columns={"case_id": "probe", "y": "choice"}).reset_index(drop=True))


def write_align_report(out: Path, name: str, table, wide, lens,
                       means: pd.DataFrame | None = None,
                       reasoning: pd.DataFrame | None = None,
                       changes: pd.DataFrame | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = []
    if not table.empty:
        fig, ax = plt.subplots(figsize=(9, 0.3 * len(table) + 1.5))
        t = table.iloc[::-1]
        y = np.arange(len(t))
        err = np.vstack([t["accuracy"] - t["ci_low"], t["ci_high"] - t["accuracy"]]).clip(min=0)
        ax.errorbar(t["accuracy"], y, xerr=err, fmt="o", capsize=2)
        ax.scatter(t["chance"], y, marker="|", color="grey", label="chance")
        ax.set_yticks(y)
        ax.set_yticklabels([f"{m.split(':')[-1]} | {c} | {g}" for m, c, g in
                            zip(t["model"], t["method"], t["target"])], fontsize=6)
        ax.set_xlabel("alignment accuracy (interval over probes)")
        ax.set_xlim(-0.02, 1.02)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "alignment_accuracy.png", dpi=110)
        plt.close(fig)
        files.append(out / "alignment_accuracy.png")
    page = ["<h2>Method x attribute (accuracy)</h2>", table_html(wide, na_rep="-"),
            "<img src='alignment_accuracy.png' alt='alignment accuracy'>",
            "<h2>Mean over attribute x level targets</h2>",
            (table_html(means) if means is not None and not means.empty
             else "<p>No targets scored.</p>"),
            "<h2>All targets</h2><p><i>accuracy</i>: pooled over probes; "
            "<i>accuracy_valid</i>: over the probes whose choices differ on the target "
            "(align-system's valid_only); <i>accuracy_by_scenario</i>: the mean of the "
            "scenarios' accuracies (per scenario: alignment_by_scenario.csv).</p>",
            table_html(table),
            *(["<h2>Asking for reasons: the paired change in alignment accuracy</h2>",
               "<p>Each ADM in the job's decision mode and in the other (method@mode), on "
               "the probes both answered; interval from resampling those probes.</p>",
               table_html(changes, fmt="+.3f")]
              if changes is not None and not changes.empty else []),
            "<h2>Reasoning (the first of each ADM; every one in view.html)</h2>",
            (table_html(reasoning, na_rep="-") if reasoning is not None and not reasoning.empty
             else "<p>No reasoning asked for (decision.mode: choice).</p>"),
            "<h2>Lens model: which attributes drive the choices</h2>",
            "<p>Per steered ADM against its baseline: weight of each attribute's score "
            "difference on two-choice probes, and the change with a paired interval.</p>",
            table_html(lens, fmt="+.3f") if not lens.empty
            else "<p>Too few two-choice probes for a lens audit.</p>"]
    write_page(out, name, page, kind="alignment")
    files.append(out / "report.html")
    return files


def probe_table(probes: list[Probe]) -> pd.DataFrame:
    """The probes as a table (the alignment runs' input in MLflow)."""
    return pd.DataFrame({"case_id": [p.item_id for p in probes],
                         "scenario_id": [p.scenario_id for p in probes],
                         "probe_id": [p.probe_id for p in probes],
                         "attributes": [", ".join(p.attributes) for p in probes],
                         "text": [p.text for p in probes],
                         "choices": [" | ".join(p.choices) for p in probes]})


def _key(target_name: str) -> str:
    """A target's name as an MLflow metric key part."""
    return target_name.replace("=", "_").replace("+", "__").replace("*", "_w")


def save_align_results(spec: JobSpec, run_dir: Path, table: pd.DataFrame,
                       decisions: pd.DataFrame, probes: list[Probe],
                       means: pd.DataFrame | None = None,
                       changes: pd.DataFrame | None = None) -> Path:
    """Everything the alignment job's MLflow runs hold, written into the run directory
    (alignment.csv, alignment_table.csv, lens_by_attribute.csv and report/ are
    already there)."""
    from engine.outputs import save_results

    cells = []
    for (model, condition), rows in table.groupby(["model", "condition"]):
        metrics = {}
        for r in rows.itertuples():
            key = _key(r.target)
            metrics[f"alignment_accuracy.{key}"] = r.accuracy
            metrics[f"alignment_ci_low.{key}"] = r.ci_low
            metrics[f"alignment_ci_high.{key}"] = r.ci_high
            metrics[f"alignment_accuracy_valid.{key}"] = r.accuracy_valid
            metrics[f"alignment_accuracy_by_scenario.{key}"] = r.accuracy_by_scenario
        if np.isfinite(rows["first_position_rate"].iloc[0]):  # NaN for derived ADMs
            metrics["first_position_rate"] = rows["first_position_rate"].iloc[0]
        if means is not None and not means.empty:
            m = means[(means["model"] == model) & (means["condition"] == condition)]
            if len(m):
                metrics.update(alignment_accuracy_mean=m["mean_accuracy"].iloc[0],
                               alignment_accuracy_mean_low=m["ci_low"].iloc[0],
                               alignment_accuracy_mean_high=m["ci_high"].iloc[0])
        if changes is not None:  # on the other mode's cell: its change from the job's mode
            for r in changes[(changes["model"] == model)
                             & (changes["other"] == condition)].itertuples():
                metrics[f"alignment_accuracy_change.{_key(r.target)}"] = r.change
                metrics[f"alignment_accuracy_change_low.{_key(r.target)}"] = r.change_low
                metrics[f"alignment_accuracy_change_high.{_key(r.target)}"] = r.change_high
        d = decisions[(decisions["model"] == model) & (decisions["condition"] == condition)]
        cells.append({"model": model, "condition": condition, "metrics": metrics,
                      "artifacts": {"decisions.parquet": d}})
    return save_results(run_dir, spec, kind="alignment", metrics={},
                        tags={"lensaudit.kind": "alignment"}, cells=cells,
                        cases_table=probe_table(probes),
                        files=["alignment.csv", "alignment_table.csv", "lens_by_attribute.csv",
                               "alignment_means.csv", "alignment_by_scenario.csv", "view.html",
                               "report"]
                        + (["alignment_mode_change.csv"] if changes is not None else []))


def format_align_summary(res: AlignResult) -> str:
    lines = ["alignment accuracy (method x target; interval over probes):"]
    for r in res.table.itertuples():
        lines.append(f"  {r.model:26} {r.condition:40} {r.target:28} {r.accuracy:.3f} "
                     f"[{r.ci_low:.3f}, {r.ci_high:.3f}] n={r.n_probes} ties={r.n_ties} "
                     f"chance={r.chance:.2f}")
    if not res.table.empty:
        r0 = res.table.groupby(["model", "condition"]).first().reset_index()
        r0 = r0[r0["first_position_rate"].notna()]
        lines.append("position bias (share answering the first shown choice vs chance): " + ", ".join(
            f"{c}: {f:.2f} vs {ch:.2f}" for c, f, ch in zip(
                r0["condition"], r0["first_position_rate"], r0["first_position_chance"])))
    if res.mode_change is not None and not res.mode_change.empty:
        lines.append("asking for reasons or not (paired change in accuracy, other mode minus "
                     "the job's):")
        for r in res.mode_change.itertuples():
            lines.append(f"  {r.model:26} {r.other:40} {r.target:28} {r.change:+.3f} "
                         f"[{r.change_low:+.3f}, {r.change_high:+.3f}] n={r.n_probes}")
    lines.append(f"MLflow: parent run {res.parent_run_id} in {res.tracking_uri}")
    return "\n".join(lines)
