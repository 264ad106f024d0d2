"""Running a job: spec -> cases -> requests -> decisions -> audit -> MLflow."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.audit import (audit_cell, decisions_for_cell, fit_org, format_protected, policy_table,
                          protected_table)
from engine.backends import check_model, prepare_model
from engine.backends._vllm import EngineConfig
from engine.conditions import PromptRequest, build_requests
from engine.datasets import DATASETS, CaseSet
from engine.decisions import DecisionStore, pending, run_decisions
from engine.spec import JobSpec
from engine.tracking import log_job, summary_table, tracking_uri, ui_command


def load_cases(spec: JobSpec) -> CaseSet:
    cases = DATASETS[spec.dataset.name](spec.dataset.path)
    s = spec.dataset.subset
    if s is not None:
        cases = cases.subset(per_class=s.per_class, n=s.n, seed=s.seed)
    return cases


def all_requests(spec: JobSpec, cases: CaseSet) -> list[PromptRequest]:
    out = []
    for m in spec.models:
        for cond in spec.conditions:
            out.extend(build_requests(cases, m.name, cond, spec.decision.samples))
    return out


@dataclass
class Plan:
    cells: list[tuple[str, str]]
    n_cases: int
    n_decisions: int
    n_done: int

    def render(self, spec: JobSpec) -> str:
        lines = [f"job {spec.name}: {len(self.cells)} cell(s) x {self.n_cases} cases "
                 f"x {spec.decision.samples} sample(s)"]
        lines += [f"  cell: {m} x {c}" for m, c in self.cells]
        lines.append(f"  decisions: {self.n_decisions} in all, {self.n_done} already done, "
                     f"{self.n_decisions - self.n_done} to compute")
        lines.append(f"  statistics: {spec.statistics.bootstrap} bootstrap, "
                     f"{spec.statistics.permutations} permutation refits per cell")
        lines.append(f"  run dir: {spec.run_dir()}   tracking: {tracking_uri(spec)}")
        return "\n".join(lines)


def plan(spec: JobSpec) -> tuple[Plan, CaseSet, list[PromptRequest]]:
    """Validate everything a run needs without loading a model."""
    for m in spec.models:
        check_model(m.name)
    cases = load_cases(spec)
    cases.encode()  # bad cue values surface here, before any model starts
    requests = all_requests(spec, cases)
    todo = pending(requests, DecisionStore(spec.run_dir()))
    cells = [(m.name, c) for m in spec.models for c in spec.conditions]
    return Plan(cells, len(cases), len(requests), len(requests) - len(todo)), cases, requests


@dataclass
class JobResult:
    summary: pd.DataFrame
    cells: list
    tracking_uri: str
    parent_run_id: str
    org: object
    run_dir: Path
    protected: dict  # (model, condition) -> protected-attribute table


def run_job(spec: JobSpec, *, progress: bool = True, log=print) -> JobResult:
    the_plan, cases, requests = plan(spec)
    log(the_plan.render(spec))
    run_dir = spec.run_dir()
    store = DecisionStore(run_dir)
    cache_root = str((run_dir / ".vllm_cache").resolve())
    engines = {}
    for m in spec.models:
        resolved = prepare_model(m.name)
        engines[m.name] = (EngineConfig(resolved.path, m.name, m.tensor_parallel_size,
                                        m.max_model_len, m.cpu_memory_fraction,
                                        seed=spec.decision.seed, dtype=m.dtype), m.replicas)
    computed = run_decisions(requests, store, engines, batch_size=spec.decision.batch_size,
                             temperature=spec.decision.temperature, seed=spec.decision.seed,
                             cache_root=cache_root, progress=progress)
    log(f"decisions: {computed} computed now, {the_plan.n_done} reused from {store.dir}")

    decisions = store.load()
    enc = cases.encode()
    y_org = cases.table["decision"].to_numpy(float)
    org = fit_org(enc, y_org, spec.statistics)
    schema_cols = cases.schema.column_cue()
    labels = cases.schema.column_labels()
    cells, tables, protected = [], {}, {}
    for model, condition in the_plan.cells:
        y, p = decisions_for_cell(decisions, cases, model, condition)
        cell = audit_cell(enc, y_org, y, p, model=model, condition=condition, stats=spec.statistics)
        cells.append(cell)
        st = spec.statistics
        tables[(model, condition)] = table = policy_table(
            enc.columns, labels, cell, [c.protected for c in schema_cols],
            [c.family for c in schema_cols], level=st.level, interval=st.interval)
        protected[(model, condition)] = protected_table(table, cell, level=st.level,
                                                        interval=st.interval)
        for w in cell.warnings:
            log(f"warning: {w}")
    for model, condition in tables:
        tables[(model, condition)].to_csv(
            run_dir / f"policies-{_slug(model)}-{condition}.csv", index=False)
        protected[(model, condition)].to_csv(
            run_dir / f"protected-{_slug(model)}-{condition}.csv", index=False)
    summary = summary_table(cells)
    summary.to_csv(run_dir / "summary.csv", index=False)
    uri, run_id = log_job(spec, org=org, cells=cells, decisions=decisions, policy_tables=tables,
                          protected_tables=protected, cases_table=cases.table,
                          constant_columns=enc.constant)
    return JobResult(summary, cells, uri, run_id, org, run_dir, protected)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def format_summary(result: JobResult) -> str:
    lines = [f"organisation: cross-validated accuracy {result.org.cv_accuracy:.3f}, "
             f"AUC {result.org.cv_auc:.3f}"]
    header = f"{'model':28} {'condition':12} {'r_cos [95% CI]':26} {'p_perm':>7} " \
             f"{'r_cos_adj':>9} {'acc':>6} {'AUC':>6} {'kappa':>6} {'pos':>5}"
    lines += [header, "-" * len(header)]
    for cell in result.cells:
        c = cell.comparison
        if cell.r_cos_reason:
            rc = "undefined"
        else:
            rc = f"{c.r_cos:+.3f} [{c.r_cos_ci.low:+.3f}, {c.r_cos_ci.high:+.3f}]"
        lines.append(f"{cell.model:28} {cell.condition:12} {rc:26} {c.p_perm:7.3f} "
                     f"{c.r_cos_adj:9.3f} {c.accuracy:6.3f} {c.auc:6.3f} {c.kappa:6.3f} "
                     f"{c.positive_rate_dm:5.2f}")
        if cell.r_cos_reason:
            lines.append(f"    r_cos undefined: {cell.r_cos_reason}")
    for (model, condition), table in result.protected.items():
        text = format_protected(model, condition, table)
        if text:
            lines.append(text)
    lines.append(f"MLflow: parent run {result.parent_run_id} in {result.tracking_uri}")
    lines.append(f"view it: {ui_command(result.tracking_uri)}")
    return "\n".join(lines)


def eprint(*args):
    print(*args, file=sys.stderr)
