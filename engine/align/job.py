"""Running an alignment job: ADMs over probes -> alignment table, lens audit, MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from engine import console
from engine.align._view import VIEW_READERS
from engine.align.adm import RANDOM, build_align_requests, random_rows, with_mode
from engine.align.data import Probe
from engine.align.design import MODELESS, adm_decisions, adm_targets, job_modes, load_probes
from engine.align.examples import similarity
from engine.align.lens import lens_audit, lens_table, lens_tags
from engine.align.metric import (alignment_table, method_by_attribute, mode_changes,
                                 scenario_table, target_means)
from engine.audit import (AuditResult, format_alignment, missing_line, note_lines,
                          statistics_place)
from engine.decisions import DecisionStore, EnginePools, kill_pools, pending
from engine.decisions.backends import check_model
from engine.errors import LensauditError
from engine.job import check_reused, check_servers, decide, start_engines
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


# ------------------------------------------------------------ the job


@dataclass
class AlignResult:
    table: pd.DataFrame  # long: one row per (model, condition, target)
    wide: pd.DataFrame  # ALIGN layout
    lens: pd.DataFrame  # lens_by_attribute.csv (`engine.align.lens.lens_table`)
    tracking_uri: str
    parent_run_id: str
    run_dir: Path
    #: with alignment.compare_modes: per ADM x target, the paired change in
    #: accuracy in the other decision mode (`metric.mode_changes`)
    mode_change: pd.DataFrame | None = None
    #: the lens audit per backbone: its baseline the reference, its ADMs the cells
    audits: dict[str, AuditResult] = field(default_factory=dict)


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
    again = check_reused(requests, store, spec.decision, log)
    drawn = pending([r for r in requests if r.model == RANDOM], store, again)
    store.write(random_rows(drawn, spec.decision.seed))  # the random ADM needs no engine
    owned = pools is None
    pools = EnginePools() if owned else pools
    try:
        computed = decide(spec, [r for r in requests if r.model != RANDOM], store, engines,
                          backends, pools, progress=progress, again=again)
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
    audits = audit_lens(spec, decisions, probes, log)
    lens = lens_table(audits)
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
    save_align_results(spec, run_dir, table, decisions, probes, means, changes, lens,
                       lens_tags(audits))
    from engine.outputs.view import write_view

    write_view(run_dir, readers=VIEW_READERS)
    uri, run_id = log_run_dir(run_dir)
    return AlignResult(table, wide, lens, uri, run_id, run_dir, changes, audits)


def audit_lens(spec: JobSpec, decisions: pd.DataFrame, probes: list[Probe],
               log) -> dict[str, AuditResult]:
    """`lens_audit` where `statistics.device` and `workers` put the refits; the
    cells' warnings go to the log."""
    st = spec.statistics
    place = statistics_place(st)
    try:
        audits = lens_audit(decisions, probes, spec.alignment.attributes, stats=st, place=place)
    finally:
        place.close()
    for audit in audits.values():
        for cell in audit.cells:
            for w in cell.warnings:
                log(f"warning: lens audit: {w}")
    return audits


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
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if not table.empty:
        files.append(forest_plot(
            out / "alignment_accuracy.png",
            [f"{m.split(':')[-1]} | {c} | {g}"
             for m, c, g in zip(table["model"], table["method"], table["target"])],
            table["accuracy"], table["ci_low"], table["ci_high"],
            xlabel="alignment accuracy (interval over probes)", xlim=(-0.02, 1.02),
            chance=table["chance"]))
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
            *lens_sections(lens, out, files)]
    write_page(out, name, page, kind="alignment")
    files.append(out / "report.html")
    return files


def forest_plot(path: Path, labels: list[str], value, low, high, *, xlabel: str,
                xlim: tuple[float, float], chance=None, zero_line: bool = False) -> Path:
    """One row per label, the first at the top: each value with its interval
    (none drawn where it is missing), and `chance` (the same length), if given,
    as grey ticks; `zero_line`: a line at 0. Written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v, lo, hi = (np.asarray(a, float)[::-1] for a in (value, low, high))
    y = np.arange(len(v))
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(v) + 1.5))
    ax.errorbar(v, y, xerr=np.nan_to_num(np.vstack([v - lo, hi - v]).clip(min=0)), fmt="o",
                capsize=2)
    if chance is not None:
        ax.scatter(np.asarray(chance, float)[::-1], y, marker="|", color="grey", label="chance")
        ax.legend(fontsize=7)
    if zero_line:
        ax.axvline(0, color="grey", lw=0.5)
    ax.set_yticks(y)
    ax.set_yticklabels(labels[::-1], fontsize=6)
    ax.set_xlabel(xlabel)
    ax.set_xlim(*xlim)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: The lens table's columns per ADM (alignment with its baseline) and per attribute.
LENS_CELL_COLUMNS = ["model", "condition", "r_cos_cf_vs_baseline", "r_cos_cf_low",
                     "r_cos_cf_high", "r_cos_vs_baseline", "p_perm", "n_probes", "note"]
LENS_WEIGHT_COLUMNS = ["model", "condition", "attribute", "beta_baseline", "beta_condition",
                       "change", "change_low", "change_high", "status"]


def lens_sections(lens: pd.DataFrame, out: Path, files: list[Path]) -> list[str]:
    """The report's lens audit: each ADM's cross-fitted alignment with its
    baseline (a plot and a table), then the attributes' weights and changes."""
    if lens.empty:
        return ["<p>Too few two-choice probes for a lens audit.</p>"]
    cells = lens.drop_duplicates(["model", "condition"])[LENS_CELL_COLUMNS]
    page = ["<p>Per steered ADM against its backbone's baseline on the two-choice probes: "
            "<i>r_cos_cf</i>, the cross-fitted cosine of the two policies with its interval "
            "(the alignment figure), the plain <i>r_cos</i> and its permutation p-value; then "
            "each attribute's weight (its score difference between the choices) and the "
            "change with a paired interval. <i>note</i> and <i>status</i> say why a figure is "
            "missing, and <i>note</i> what to know of a defined alignment whose interval "
            "reaches +-1.</p>"]
    shown = cells[np.isfinite(cells["r_cos_cf_vs_baseline"])]
    if not shown.empty:
        files.append(forest_plot(
            out / "lens_alignment.png",
            [f"{m.split(':')[-1]} | {c}" for m, c in zip(shown["model"], shown["condition"])],
            shown["r_cos_cf_vs_baseline"], shown["r_cos_cf_low"], shown["r_cos_cf_high"],
            xlabel="r_cos_cf with the baseline (interval; none drawn where refused)",
            xlim=(-1.02, 1.02), zero_line=True))
        page.append("<img src='lens_alignment.png' alt='lens alignment with the baseline'>")
    return page + [table_html(cells, fmt="+.3f"), table_html(lens[LENS_WEIGHT_COLUMNS],
                                                              fmt="+.3f")]


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


#: MLflow metric -> lens table column, on each steered ADM's cell: the names a
#: job's cell gives its alignment with its reference (here the backbone's
#: baseline), so that `lensaudit compare` shows both alike.
LENS_METRICS = {"r_cos_cf": "r_cos_cf_vs_baseline", "r_cos_cf_ci_low": "r_cos_cf_low",
                "r_cos_cf_ci_high": "r_cos_cf_high", "r_cos": "r_cos_vs_baseline",
                "p_perm": "p_perm", "n_cases": "n_probes"}


def save_align_results(spec: JobSpec, run_dir: Path, table: pd.DataFrame,
                       decisions: pd.DataFrame, probes: list[Probe],
                       means: pd.DataFrame | None = None,
                       changes: pd.DataFrame | None = None,
                       lens: pd.DataFrame | None = None,
                       lens_tags: dict[tuple[str, str], dict[str, str]] | None = None) -> Path:
    """Everything the alignment job's MLflow runs hold, written into the run directory
    (alignment.csv, alignment_table.csv, lens_by_attribute.csv and report/ are
    already there). A steered ADM's cell also carries its lens alignment with its
    baseline (`LENS_METRICS`, from `lens`), where it has one, and the tags
    saying why it is missing or what to know of it (`lens_tags`, from
    `engine.align.lens.lens_tags`)."""
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
        tags = dict((lens_tags or {}).get((model, condition), {}))
        if lens is not None and not lens.empty:
            own = lens[(lens["model"] == model) & (lens["condition"] == condition)]
            if len(own):
                metrics.update({k: own[c].iloc[0] for k, c in LENS_METRICS.items()})
        d = decisions[(decisions["model"] == model) & (decisions["condition"] == condition)]
        cells.append({"model": model, "condition": condition, "metrics": metrics, "tags": tags,
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
    lines += format_lens(res.audits)
    lines.append(f"MLflow: parent run {res.parent_run_id} in {res.tracking_uri}")
    return "\n".join(lines)


def format_lens(audits: dict[str, AuditResult]) -> list[str]:
    """The lens audit's lines of the summary: each steered ADM's alignment with
    its baseline, and why it is missing where it is."""
    cells = [c for a in audits.values() for c in a.cells]
    if not cells:
        return []
    level = f"{next(iter(audits.values())).level:.0%}"
    lines = [f"lens audit, each ADM against its backbone's baseline on the two-choice probes "
             f"(cross-fitted cosine [{level} interval]; the plain r_cos; p_perm):"]
    for cell in cells:
        c = cell.comparison
        rc, pp = (f"{v:{f}}" if np.isfinite(v) else "undef"
                  for v, f in ((c.r_cos, "+.3f"), (c.p_perm, ".3f")))
        lines.append(f"  {cell.model:26} {cell.condition:40} {format_alignment(c):26} "
                     f"{rc:>7} {pp:>7}")
        if cell.alignment_reason:
            lines.append(missing_line("alignment", c, cell.alignment_reason))
        lines += note_lines(cell)
    return lines
