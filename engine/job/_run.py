"""Running a job: the order of its stages and waves. The plan (`_plan`), the
decisions (`_decide`), the audit (`engine.audit`), the outputs
(`engine.outputs`) and the console's summary (`_console`) live apart."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import kernels

from engine import console
from engine.audit import (AuditResult, Peer, StatisticsPlace, add_condition_changes, audit_cell,
                          audit_result, cross_validated, decisions_for_cell, determined_reason,
                          effect_metrics, fit_peer, fit_weights, mentions_by_case, LensExtras,
                          org_crossfit_side, org_policy, org_resamples_side, org_side_here,
                          out_of_fold, pairwise, peer_table, start_cells, stated_vs_used,
                          statistics_place, tabulate, twin_effects, twin_key,
                          zero_policy_reason)
from engine.datasets import IMPORTED, CaseSet, encode_like, schema_entries
from engine.decisions import DecisionStore, EnginePools, ensure_ray, kill_pools
from engine.decisions.backends import anchor_policy, run_simulated
from engine.job._decide import check_reused, decide, start_engines
from engine.job._plan import Plan, judged_cases, load_all_cases, plan
from engine.outputs import (log_run_dir, save_lens_results, save_results,
                            write_peer_report, write_report)
from engine.outputs.view import write_view
from engine.prompts import Policy, PromptContext, build_requests
from engine.records import cell_rows
from engine.spec import JobSpec


@dataclass
class JobResult:
    tracking_uri: str
    parent_run_id: str
    run_dir: Path
    level: float = 0.95
    audit: AuditResult | None = None  # with reference decisions: the audit
    peers: list | None = None  # without: the decision-makers
    pairs: pd.DataFrame | None = None  # ... and every two compared
    peer_summary: pd.DataFrame | None = None  # ... one row each
    warnings: list[str] = field(default_factory=list)  # the case set's, from the plan

    @property
    def summary(self) -> pd.DataFrame:
        return self.audit.summary if self.audit is not None else self.peer_summary

    @property
    def cells(self) -> list:
        return self.audit.cells if self.audit is not None else []

    @property
    def org(self):
        return self.audit.org if self.audit is not None else None

    @property
    def protected(self) -> dict:
        """(model, condition) -> protected-attribute table."""
        return self.audit.protected_tables if self.audit is not None else {}


def run_job(spec: JobSpec, *, progress: bool = True, log=print,
            pools: EnginePools | None = None) -> JobResult:
    """Decisions wave by wave (a condition after those it needs), then the audit.

    `pools`: engines already running (kept running; the caller stops them);
    by default the job starts its own and stops them when the decisions are done.
    """
    the_plan, cases = plan(spec)
    log(the_plan.render(spec))
    run_dir = spec.run_dir()
    console.attach_log_file(run_dir)  # the libraries' own lines go there, not to the console
    store = DecisionStore(run_dir)
    engines, backends = start_engines(spec)
    st = spec.statistics
    if engines or st.device == "gpu" or os.environ.get("RAY_ADDRESS"):
        # Ray forks its processes; JAX warns (rightly) about a fork once its
        # threads run. Start Ray (or join the cluster) before the first JAX
        # computation.
        ensure_ray()
    # here, on a GPU actor of the job's Ray cluster, as Ray tasks over its
    # nodes, or the cells over worker processes
    place = statistics_place(st)
    if place.remote or place.workers > 1:
        log(f"statistics: {place.describe()}")
    enc = cases.encode()  # the prompts' and the simulated backend's feature space
    # The statistics' encoding: the same unless the job asks for another.
    senc = enc if st.encoding == "onehot_standardised" else cases.encode(st.encoding)
    org = y_org = org_side = None
    if cases.has_reference:
        y_org = cases.table["decision"].to_numpy(float)
        if not engines:
            # No engine needs the cores (decisions simulated or stored): the
            # organisation's side, its cross-validation with it, starts on the
            # workers (if any) first, and the ceiling comes with it.
            org_side = organisation_side(senc, y_org, st, place)
        org_fit = fit_weights(senc, y_org, st)  # in the statistics' encoding
        if engines:
            # The ceiling before any decision (a model's decisions cost minutes).
            org = org_policy(org_fit, cross_validated(senc.X, y_org, st))
            warn_determined(cases, org, log)
        # before any decision: org_externalized states it, in the prompts' encoding
        prompt_fit = org_fit if senc is enc else fit_weights(enc, y_org, st)
        simulated_from = (float(prompt_fit.intercept), np.asarray(prompt_fit.beta))
    else:  # no organisation: simulated models draw around a fixed random policy
        simulated_from = (0.0, anchor_policy(len(enc.columns), spec.decision.seed))
    context = PromptContext(org=stated_policy(spec, prompt_fit, y_org) if y_org is not None
                            else None,
                            tiers=spec.decision.tiers, custom=spec.custom_instructions(),
                            prompts=spec.decision.prompts, role=spec.decision.role)
    x_by_case = dict(zip(cases.table["case_id"].astype(str), enc.X))
    twins = the_plan.twins
    if twins is not None:  # in the cases' feature space, for the simulated backend
        x_by_case.update(zip(twins.table["case_id"].astype(str),
                             encode_like(twins.table, cases.schema, enc)))
    reference = lme = shared = None  # the organisation's side of every cell, made at the first
    refused_own = {}  # model -> why it has no baseline policy to introspect on
    cells, tables, protected = [], {}, {}
    peers = []  # without a reference: the decision-makers, compared pairwise
    # Cells being audited: (model, condition) -> (its decisions, a function
    # that waits for its CellResult). Without engines, a wave's cells run
    # while the next wave's decisions are made, which wait only for the cells
    # their conditions need (a baseline's policy for an introspective prompt);
    # engines on this machine's cores are not made to share them.
    running: dict[tuple[str, str], tuple] = {}
    needs = spec.condition_needs()

    def take(keys) -> None:
        """Tabulate the running cells in `keys` (they are done then)."""
        for key in [k for k in running if k in keys]:
            dm, wait = running.pop(key)
            cell = tabulate(wait(), senc, st, cells, tables, protected)
            model, condition = key
            if twins is not None:
                cell.twins = twin_effects(cell_rows(decisions, model, condition), cases, twins,
                                          key=twin_key(st), n_bootstrap=st.bootstrap,
                                          level=st.level)
            cell.stated = stated_for_cell(decisions, cases, senc, cell, dm.y, reference, st)
            if condition == "baseline":
                own, why = own_policy(cell)
                if own is None:
                    refused_own[model] = why
                else:
                    context.own[model] = own
            for w in cell.warnings:
                log(f"warning: {w}")

    owned = pools is None
    computed, decided_again, pools = 0, 0, EnginePools() if owned else pools
    try:
        for k, wave in enumerate(the_plan.waves):
            needed = {d for c in wave for d in needs[c]}
            take({key for key in running if engines or key[1] in needed})
            wave_cells = [(m, c) for m in spec.models for c in wave
                          if c != "introspective" or m.name in context.own]
            for m in spec.models:
                if "introspective" in wave and m.name not in context.own:
                    log(f"warning: {m.name} x introspective refused, before any decision: "
                        f"{refused_own.get(m.name, 'it has no baseline cell')}")
            requests = [r for m, c in wave_cells for which in (cases, twins) if which is not None
                        for r in build_requests(which, m.name, c, spec.decision.samples, context,
                                                spec.mode_of(c))]
            again = check_reused(requests, store, spec.decision, log)
            decided_again += len(again)
            computed += decide(
                spec, requests, store, engines, backends, pools, progress=progress, again=again,
                simulate=lambda todo: run_simulated(todo, store, x_by_case, *simulated_from,
                                                    seed=spec.decision.seed, columns=enc.columns,
                                                    progress=progress))
            decisions = store.load()
            dms = {(m.name, c): decisions_for_cell(decisions, cases, m.name, c)
                   for m, c in wave_cells}
            if y_org is None:
                for (model, condition), dm in dms.items():
                    effects = None if twins is None else twin_effects(
                        cell_rows(decisions, model, condition), cases, twins, key=twin_key(st),
                        n_bootstrap=st.bootstrap, level=st.level)
                    peers.append(Peer(model, condition, cases, senc, dm, twins=effects))
                continue
            if reference is None:
                reference, lme, cv = (org_side or organisation_side(senc, y_org, st, place,
                                                                    cv=org.cv))()
                if org is None:  # (its cross-validation came with its side)
                    org = org_policy(org_fit, cv)
                    warn_determined(cases, org, log)
                shared = tuple(map(place.share, (senc, y_org, reference, lme)))
            # The cells the later waves need first (a baseline before its
            # introspective cell), so that the next wave can start while the
            # rest of this one is audited.
            later = {d for w in the_plan.waves[k + 1:] for c in w for d in needs[c]}
            dms = dict(sorted(dms.items(), key=lambda item: item[0][1] not in later))
            started = start_cells(senc, y_org, dms, st, reference, lme, place=place,
                                  shared=shared)
            running.update({key: (dms[key], wait) for key, wait in started.items()})
        take(set(running))
    except BaseException:
        place.close()  # (cells still running are cancelled or waited for)
        raise
    finally:
        if owned and pools:
            kill_pools(pools)
    # in the plan's order, whenever each cell was done
    order = {key: i for i, key in enumerate(the_plan.cells)}
    cells.sort(key=lambda c: order[(c.model, c.condition)])
    tables, protected = ({key: d[key] for key in sorted(d, key=order.get)}
                         for d in (tables, protected))
    log(f"decisions: {computed} computed now, {the_plan.n_done - decided_again} reused from "
        f"{store.dir}")
    try:
        result = _finish(spec, the_plan, cases, senc, org, y_org, peers, decisions, cells,
                         tables, protected, reference, lme, place, log)
        if place.tasks is not None:
            log(f"statistics ran on {len(place.ran_on)} node(s) of the cluster: "
                f"{place.where_ran()}")
        return result
    finally:
        place.close()


def _finish(spec, the_plan, cases, senc, org, y_org, peers, decisions, cells, tables, protected,
            reference, lme, place, log) -> JobResult:
    """After the decisions: the imported decision-makers' cells, the changes
    between conditions, the report, the view and MLflow."""
    st, run_dir = spec.statistics, spec.run_dir()
    if org is None:
        return finish_reference_free(spec, the_plan, cases, senc, peers, decisions, log)
    changes = add_condition_changes(cells, level=st.level)  # the models' (imports come next)

    imported = the_plan.imported
    sides = list(imported_sides(cases, senc, imported))
    # The organisation's side is shared with the models' cells where it
    # judged every case, and refitted on the cases it judged otherwise; the
    # imported cells are audited together, as a wave's are.
    audited = place.gather([
        (audit_cell, (enc_j, judged.table["decision"].to_numpy(float), dm),
         dict(model=model, condition=IMPORTED, stats=st, reference=reference if whole else None,
              lme=lme if whole else None))
        for model, judged, enc_j, dm, whole in sides])
    for (model, judged, enc_j, dm, whole), cell in zip(sides, audited):
        tabulate(cell, enc_j, st, cells, tables, protected)
        cell.stated = stated_for_cell(imported, judged, enc_j, cell, dm.y,
                                      reference if whole else None, st)
        if not whole:
            cell.warnings.append(f"{model}: {len(judged)} of the {len(cases)} cases judged; "
                                 "intervals reflect that n")
        for w in cell.warnings:
            log(f"warning: {w}")
    if not imported.empty:
        decisions = pd.concat([decisions, imported], ignore_index=True)

    audit = audit_result(org, cells, tables, protected, changes, level=st.level, seed=st.seed)
    audit.summary.to_csv(run_dir / "summary.csv", index=False)
    write_report(run_dir / "report", job_name=spec.name, audit=audit)
    log(f"report: {run_dir / 'report' / 'report.html'}")
    save_lens_results(spec, run_dir, audit=audit, decisions=decisions, cases_table=cases.table,
                      constant_columns=senc.constant, schema=cases.schema,
                      warnings=the_plan.warnings)
    write_view(run_dir)
    uri, run_id = log_run_dir(run_dir)
    return JobResult(uri, run_id, run_dir, st.level, audit, warnings=the_plan.warnings)


def imported_sides(cases: CaseSet, enc, imported: pd.DataFrame):
    """Each imported decision-maker on the cases it judged: (model, those cases,
    their encoding (standardised over them), its decisions, whether it judged
    every case)."""
    for model in imported["model"].unique():
        judged = judged_cases(cases, imported, model)
        whole = len(judged) == len(cases)
        yield (model, judged, enc if whole else judged.encode(enc.method),
               decisions_for_cell(imported, judged, model, IMPORTED), whole)


def finish_reference_free(spec: JobSpec, the_plan: Plan, cases: CaseSet, enc, peers: list,
                          decisions: pd.DataFrame, log) -> JobResult:
    """Policies, protected shares and pairwise cosines of every decision-maker;
    the summary, pairs, report and MLflow runs."""
    st, run_dir = spec.statistics, spec.run_dir()
    peers = peers + [Peer(model, IMPORTED, judged, enc_j, dm)
                     for model, judged, enc_j, dm, _ in imported_sides(cases, enc,
                                                                       the_plan.imported)]
    for p in peers:
        fit_peer(p, st)
    pairs = pairwise(peers, st)
    summary = peer_table(peers)
    summary.to_csv(run_dir / "summary.csv", index=False)
    pairs.to_csv(run_dir / "pairs.csv", index=False)
    write_peer_report(run_dir / "report", job_name=spec.name, peers=peers, summary=summary,
                      pairs=pairs, level=st.level)
    log(f"report: {run_dir / 'report' / 'report.html'}")
    if not the_plan.imported.empty:
        decisions = pd.concat([decisions, the_plan.imported], ignore_index=True)
    entries = []
    for p in peers:
        metrics = p.metrics()
        artifacts = {"decisions.parquet": cell_rows(decisions, p.model, p.condition),
                     "policies.csv": p.policy}
        if p.twins is not None:
            artifacts["counterfactual.csv"] = p.twins
            metrics.update(effect_metrics(p.twins))
        entries.append({"model": p.model, "condition": p.condition, "metrics": metrics,
                        "tags": {"lensaudit.policy_undefined": p.note} if p.note else {},
                        "artifacts": artifacts})
    save_results(run_dir, spec, kind="peers", metrics={"n_cases": len(cases)},
                 tags={"lensaudit.reference": "none"}, cells=entries, cases_table=cases.table,
                 files=["summary.csv", "pairs.csv", "report", "view.html"],
                 schema=schema_entries(cases.schema), warnings=the_plan.warnings)
    write_view(run_dir)
    uri, run_id = log_run_dir(run_dir)
    return JobResult(uri, run_id, run_dir, st.level, peers=peers, pairs=pairs,
                     peer_summary=summary, warnings=the_plan.warnings)


def organisation_side(enc, y_org, st, place: StatisticsPlace, cv=None):
    """Start the organisation's side of every cell: its reference
    (`org_reference`), Lens Model extras (`lme_reference`) and
    cross-validation (`cv`, or computed with them when None). Returns a
    function that waits for them: (reference, extras, cv).

    With worker processes, the reference's two parts (`kernels.REFERENCE_PARTS`)
    start now on two workers, which compile different refit programs (most
    of their time: on this project's 2-core machine 20 s on one worker while
    the other waited); the shorter side rehearses a cell (`org_resamples_side`).
    """
    if place.width < 2:
        return lambda: place.run(org_side_here, enc, y_org, st, cv=cv)
    parts = place.later([(org_crossfit_side, (enc, y_org, st), {}),
                         (org_resamples_side, (enc, y_org, st), dict(cv=cv))])

    def joined():
        (crossfit, lme), (resamples, cv_done) = parts()
        extras = LensExtras(lme, out_of_fold(enc, y_org, st, cv_done))
        return kernels.join_reference(resamples, crossfit), extras, cv_done
    return joined


def warn_determined(cases: CaseSet, org, log) -> None:
    """Say where the cues (nearly) determine the reference decision."""
    determined = determined_reason(org.cv_accuracy, org.cv_auc)
    if determined:
        log(f"warning: case set '{cases.name}': {determined}")


def stated_for_cell(decisions: pd.DataFrame, cases: CaseSet, enc, cell, y: np.ndarray,
                    reference, st):
    """The cell's stated-versus-used comparison, where its decisions came with
    reasons; `y`: its answers per case (`CellDecisions.y`)."""
    rows = cell_rows(decisions, cell.model, cell.condition)
    rows = rows[rows["case_id"].isin(set(cases.table["case_id"].astype(str)))]
    if not rows["reasoning"].notna().any():
        return None
    M = mentions_by_case(rows, cases.table["case_id"].astype(str).tolist(), cases.schema)
    return stated_vs_used(M, cases.schema, enc.cues, cell.comparison,
                          None if reference is None else reference.boot_weights, X=enc.X, y=y,
                          level=st.level)


def stated_policy(spec: JobSpec, fitted, y_org: np.ndarray) -> Policy:
    """The organisation's policy that prompts state: the one fitted on the job's
    cases, or with `decision.prompts: calm` (as the CALM paper) the one fitted
    on the whole case set, with the whole case set's positive rate."""
    if spec.decision.prompts != "calm":
        return Policy(fitted.beta, float(y_org.mean()))
    everything = load_all_cases(spec)
    y_all = everything.table["decision"].to_numpy(float)
    fit = fit_weights(everything.encode(), y_all, spec.statistics)
    return Policy(np.asarray(fit.beta), float(y_all.mean()))


def own_policy(cell) -> tuple[Policy | None, str | None]:
    """The baseline policy an introspective prompt describes: the hard one, else
    the soft one (a model that gave one answer throughout), else none and why."""
    c = cell.comparison
    if zero_policy_reason(c) is None:
        return Policy(c.beta_dm, c.positive_rate_dm), None
    if cell.soft_policy is not None:
        return Policy(cell.soft.beta_dm, c.positive_rate_dm, source="probabilities"), None
    return None, (f"its baseline policy is undefined ({zero_policy_reason(c)}) and "
                  + ("its soft policy too" if cell.soft is not None
                     else f"there is no soft policy: {cell.soft_reason}"))


