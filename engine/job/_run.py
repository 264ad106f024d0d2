"""Running a job: spec -> cases -> requests -> decisions -> audit -> MLflow."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import kernels

from engine import console
from engine.audit import (AuditResult, Peer, StatisticsPlace, add_condition_changes, audit_cell,
                          cross_validated, decisions_for_cell, determined_reason, effect_metrics,
                          fit_peer, fit_weights, format_alignment, format_effects, format_peers,
                          format_protected, format_stated, mentions_by_case, missing_line,
                          LensExtras, note_lines, org_crossfit_side, org_policy,
                          org_resamples_side, org_side_here, out_of_fold, pairwise,
                          peer_table, refit_devices, start_cells, stated_vs_used,
                          statistics_workers, tabulate, twin_effects, twin_key,
                          zero_policy_reason)
from engine.datasets import (DATASETS, IMPORTED, CaseSet, check_cues, check_sample_size,
                             encode_like, final_verdicts_path, load_case_file, read_imported,
                             schema_entries)
from engine.decisions import (DecisionStore, EnginePools, ensure_ray, kill_pools, pending,
                              reused, run_decisions, vllm_devices)
from engine.decisions.backends import (EngineConfig, anchor_policy, check_model, parse_simulated,
                                       prepare_model, run_openai, run_simulated)
from engine.errors import LensauditError
from engine.outputs import (check_tracking, log_run_dir, save_results, summary_table,
                            tracking_uri, ui_command, write_peer_report, write_report)
from engine.outputs.view import write_view
from engine.prompts import Policy, PromptContext, build_requests, condition_waves, twin_cases
from engine.records import cell_rows
from engine.servers import check_ray_address, probe_http
from engine.spec import ImportSpec, JobSpec


def load_all_cases(spec: JobSpec) -> CaseSet:
    """The job's case set, before `dataset.subset`, without the cues that define
    the reference unless the job includes them (`dataset.outcome_cues`)."""
    return _outcome_cues(spec, _read_cases(spec))


def _read_cases(spec: JobSpec) -> CaseSet:
    d = spec.dataset
    return load_case_file(d.cases) if d.cases else DATASETS[d.name](d.path)


def _outcome_cues(spec: JobSpec, cases: CaseSet) -> CaseSet:
    return cases if spec.dataset.outcome_cues == "include" else cases.without_outcome_cues()


def _subset(spec: JobSpec, cases: CaseSet) -> CaseSet:
    s = spec.dataset.subset
    return cases if s is None else cases.subset(per_class=s.per_class, n=s.n, seed=s.seed)


def load_cases(spec: JobSpec) -> CaseSet:
    """The cases the job audits (`dataset.subset` applied)."""
    return _subset(spec, load_all_cases(spec))


def job_imports(spec: JobSpec) -> list[tuple[str, ImportSpec]]:
    """(job key, import) of every imported decision-maker; `dataset.human_study`
    is the shipped import of the ECHR study's participant groups."""
    out = [(f"imports.{i}", imp) for i, imp in enumerate(spec.imports)]
    if spec.dataset.human_study:
        out.append(("dataset.human_study", ImportSpec(
            name="human", path=str(final_verdicts_path()), decision="verdict", by="group")))
    return out


def imported_decisions(spec: JobSpec, all_cases: CaseSet, cases: CaseSet) -> pd.DataFrame:
    """Decision rows of every import, on the audited cases; each imported
    decision-maker must have judged enough of them to fit a policy."""
    frames = [read_imported(all_cases, **imp.model_dump(), source=key)
              for key, imp in job_imports(spec)]
    if not frames:
        return pd.DataFrame(columns=["model", "condition", "case_id", "sample", "y"])
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["case_id"].isin(set(cases.table["case_id"]))].reset_index(drop=True)
    where = " after dataset.subset" if spec.dataset.subset is not None else ""
    for key, imp in job_imports(spec):
        names = [m for m in rows["model"].unique()
                 if m == imp.name or m.startswith(imp.name + ":")]
        if not names:
            raise LensauditError(f"{key}: {Path(imp.path).name} judged none of the "
                                 f"{len(cases)} cases{where}")
        for model in names:
            judged = _judged(cases, rows, model)
            check_sample_size(len(judged), _positives(judged), 0,
                              f"{key}: {model}: the cases it judged{where}")
    return rows


def _positives(cases: CaseSet) -> int | None:
    """Positive reference decisions, or None for a case set without a reference."""
    return int(cases.table["decision"].sum()) if cases.has_reference else None


def _judged(cases: CaseSet, rows: pd.DataFrame, model: str) -> CaseSet:
    """The cases an imported decision-maker judged."""
    mask = cases.table["case_id"].isin(set(rows.loc[rows["model"] == model, "case_id"]))
    return cases if mask.all() else CaseSet(cases.name, cases.table[mask].reset_index(drop=True),
                                            cases.schema)


def cell_keys(spec: JobSpec, cases: CaseSet,
              twins: CaseSet | None = None) -> list[tuple[str, str, str, int]]:
    """Every decision key of the job (counterfactual twins' too), the
    conditions' dependencies included."""
    conditions = [c for wave in condition_waves(spec.condition_names(), spec.condition_needs())
                  for c in wave]
    ids = [str(i) for i in cases.table["case_id"]]
    ids += [] if twins is None else [str(i) for i in twins.table["case_id"]]
    return [(m.name, c, i, k) for m in spec.models for c in conditions for i in ids
            for k in range(spec.decision.samples)]


@dataclass
class Plan:
    cells: list[tuple[str, str]]
    waves: list[list[str]]
    n_cases: int
    n_decisions: int
    n_done: int
    warnings: list[str]
    imported: pd.DataFrame  # decision rows of the imported decision-makers
    twins: CaseSet | None = None  # counterfactual twins of the cases
    n_cues: int = 0
    n_columns: int = 0  # encoded, in the statistics' encoding
    left_out: tuple[str, ...] = ()  # cues that define the reference, left out

    def render(self, spec: JobSpec, devices: bool = False) -> str:
        """The plan as the console shows it; `devices`: also where the refits and
        engines will run (--dry-run: it starts JAX, which a run must not do
        before Ray has forked its processes)."""
        lines = [f"job {spec.name}: {len(self.cells)} cell(s) x {self.n_cases} cases "
                 f"x {spec.decision.samples} sample(s)"]
        cues = f"  cues: {self.n_cues} ({self.n_columns} encoded columns, " \
               f"{spec.statistics.encoding})"
        if self.left_out:
            cues += (f"; left out, as they define the reference decision: {len(self.left_out)} "
                     f"({', '.join(self.left_out)}; dataset.outcome_cues: include keeps them)")
        lines.append(cues)
        lines += [f"  cell: {m} x {c}" for m, c in self.cells]
        for m, n in self.imported.groupby("model", sort=False)["case_id"].nunique().items():
            lines.append(f"  cell: {m} x imported ({n} cases judged)")
        if len(self.waves) > 1:
            lines.append("  order: " + " -> ".join("[" + ", ".join(w) + "]" for w in self.waves))
        if self.twins is not None:
            per_cue = self.twins.table.groupby("cf_cue", sort=False).size()
            lines.append("  counterfactual twins per model and condition: "
                         + ", ".join(f"{cue} {n}" for cue, n in per_cue.items()))
        lines.append(f"  decisions: {self.n_decisions} in all, {self.n_done} already done, "
                     f"{self.n_decisions - self.n_done} to compute")
        lines.append(f"  statistics: {spec.statistics.bootstrap} bootstrap, "
                     f"{spec.statistics.permutations} permutation refits per cell")
        if devices:
            where = refit_devices(spec.statistics.device, statistics_workers(spec.statistics))
            lines.append(f"  refits on: {where}")
            if any(check_model(m.name).backend == "vllm" for m in spec.models):
                lines.append(f"  engines on: {vllm_devices()}")
        lines.append(f"  run dir: {spec.run_dir()}   tracking: {tracking_uri(spec)}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def check_servers(spec: JobSpec) -> None:
    """The tracking store is reachable, the Ray cluster named by RAY_ADDRESS
    answers, and every openai model's key variable is set and its server
    answers (any HTTP status), each within seconds."""
    from engine.decisions.backends import api_key

    check_tracking(tracking_uri(spec))
    check_ray_address()
    for m in spec.models:
        if m.name.startswith("openai:"):
            api_key(m.openai_config())
            url = m.base_url.rstrip("/") + "/models"
            reason = probe_http(url)
            if reason:
                raise LensauditError(f"model '{m.name}': endpoint {m.base_url} is not reachable "
                                     f"({reason})")


def plan(spec: JobSpec) -> tuple[Plan, CaseSet]:
    """Validate everything a run needs without loading a model: the models, the
    servers (tracking, openai endpoints), the case set and its size."""
    for m in spec.models:
        check_model(m.name)
    check_servers(spec)
    every_cue = _read_cases(spec)
    all_cases = _outcome_cues(spec, every_cue)
    left_out = tuple(c.name for c in every_cue.schema.cues if c not in all_cases.schema.cues)
    cases = _subset(spec, all_cases)
    enc = cases.encode(spec.statistics.encoding)  # bad cue values surface here, before any model
    where = " after dataset.subset" if spec.dataset.subset is not None else ""
    source = f"case set '{cases.name}'{where}"
    warnings = check_cues(cases.table, cases.schema, enc, source=source)
    warnings += check_sample_size(len(cases), _positives(cases), len(enc.columns), source)
    waves = condition_waves(spec.condition_names(), spec.condition_needs())
    if not cases.has_reference:
        check_reference_free(spec, cases, waves)
    imported = imported_decisions(spec, all_cases, cases)
    check_simulated_cues(spec, cases)
    twins = (twin_cases(cases, spec.counterfactual.cues) if spec.counterfactual is not None
             else None)
    keys = cell_keys(spec, cases, twins)
    done = DecisionStore(spec.run_dir()).done_keys()
    n_done = sum(k in done for k in keys)
    cells = [(m.name, c) for wave in waves for m in spec.models for c in wave]
    return Plan(cells, waves, len(cases), len(keys), n_done, warnings, imported, twins,
                len(cases.schema.cues), len(enc.columns), left_out), cases


#: Conditions whose prompt states the organisation's policy.
NEEDS_ORGANISATION = ("org_externalized", "introspective")


def check_reference_free(spec: JobSpec, cases: CaseSet, waves: list[list[str]]) -> None:
    """Without a reference there is no organisation's policy to state or to
    simulate from: such conditions and `simulated:org` are refused in one line."""
    for c in (c for wave in waves for c in wave):
        if c in NEEDS_ORGANISATION:
            raise LensauditError(f"conditions: '{c}' states the organisation's policy, and case "
                                 f"set '{cases.name}' has no reference column to fit it from "
                                 "(name one with reference: in its case-set file)")
    for i, m in enumerate(spec.models):
        if m.name.startswith("simulated:org"):
            raise LensauditError(f"models.{i}: '{m.name}' decides by the organisation's policy, "
                                 f"and case set '{cases.name}' has no reference column")


def check_simulated_cues(spec: JobSpec, cases: CaseSet) -> None:
    """A simulated model's ignore=<cue> names a cue of the case set."""
    names = [c.name for c in cases.schema.cues]
    for i, m in enumerate(spec.models):
        if m.name.startswith("simulated:"):
            for cue in parse_simulated(m.name.partition(":")[2]).ignore:
                if cue not in names:
                    raise LensauditError(f"models.{i}: '{m.name}': ignore={cue}: no cue '{cue}' "
                                         f"in case set '{cases.name}'")


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


def start_engines(spec: JobSpec) -> tuple[dict, dict]:
    """Engine configs of the models served by vLLM, and every model's backend."""
    engines, backends = {}, {}
    for m in spec.models:
        resolved = prepare_model(m.name)
        backends[m.name] = resolved.backend
        if resolved.backend == "vllm":
            engines[m.name] = (EngineConfig(resolved.path, m.name, m.tensor_parallel_size,
                                            m.max_model_len, m.cpu_memory_fraction,
                                            seed=spec.decision.seed, dtype=m.dtype,
                                            block_size=m.kv_block_size), m.replicas)
    return engines, backends


def decide(spec: JobSpec, requests: list, store: DecisionStore, engines: dict, backends: dict,
           pools, *, progress: bool = True, simulate=None, again: frozenset = frozenset()) -> int:
    """Compute the pending requests, and those whose key is in `again` (stored,
    but made otherwise: `check_reused`), each model on its backend; returns how
    many."""
    d = spec.decision
    todo = pending(requests, store, again)
    by_backend: dict[str, list] = {}
    for r in todo:
        by_backend.setdefault(backends[r.model], []).append(r)
    n = 0
    if by_backend.get("simulated"):
        if simulate is None:
            raise LensauditError("the simulated backend has no policy for this job")
        n += simulate(by_backend["simulated"])
    for m in spec.models:
        reqs = [r for r in by_backend.get("openai", []) if r.model == m.name]
        n += run_openai(reqs, store, m.openai_config(), temperature=d.temperature, seed=d.seed,
                        batch_size=d.batch_size, progress=progress,
                        reasoning_max_tokens=d.reasoning_max_tokens)
    n += run_decisions(by_backend.get("vllm", []), store, engines, batch_size=d.batch_size,
                       temperature=d.temperature, seed=d.seed,
                       cache_root=str((spec.run_dir() / ".vllm_cache").resolve()),
                       progress=progress, pools=pools,
                       reasoning_max_tokens=d.reasoning_max_tokens, again=again)
    return n


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
    place = StatisticsPlace(st.device, statistics_workers(st), spread=st.workers == "auto")
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

    audit = AuditResult(org, cells, tables, protected, changes, summary_table(cells),
                        st.level, st.seed)
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
        judged = _judged(cases, imported, model)
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


def check_reused(requests: list, store: DecisionStore, decision, log) -> frozenset:
    """The keys to decide again, and a line per reason where stored decisions
    were made otherwise than this job would make them (`engine.decisions.reused`),
    with how many in each cell (three named, then how many more: an alignment
    job has dozens, and one changed setting reaches them all). With
    `decision.reuse: any` they are reused and the line is a warning; with
    `same` they are decided again (the new decisions replace them)."""
    by_why: dict[str, dict[tuple[str, str], int]] = {}
    again = set()
    for r, why in reused(requests, store, temperature=decision.temperature, seed=decision.seed):
        cells = by_why.setdefault(why, {})
        cells[(r.model, r.condition)] = cells.get((r.model, r.condition), 0) + 1
        again.add(r.key)
    for why, cells in by_why.items():
        counts = list(cells.items())
        where = ", ".join(f"{n} in {model} x {condition}" for (model, condition), n in counts[:3])
        if len(counts) > 3:
            where += (f" and {sum(n for _, n in counts[3:])} in {len(counts) - 3} more "
                      "cell(s)")
        if decision.reuse == "same":
            log(f"deciding again the stored decisions this job would make otherwise, {why}: "
                f"{where}")
        else:
            log(f"warning: stored decisions are reused that this job would make otherwise, "
                f"{why}: {where}; to decide them again, set decision.reuse=same")
    return frozenset(again) if decision.reuse == "same" else frozenset()


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


def save_lens_results(spec: JobSpec, run_dir: Path, *, audit: AuditResult,
                      decisions: pd.DataFrame, cases_table: pd.DataFrame,
                      constant_columns: list[str], schema=None,
                      warnings: list[str] = ()) -> Path:
    """Everything the job's MLflow runs hold, written into the run directory:
    the audit's figures, each cell's decisions and the cases."""
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


def _fixed(v, width: int) -> str:
    """A figure to three decimals, or "undef" (a statistic not defined for this cell)."""
    return f"{'undef':>{width}}" if v is None or not np.isfinite(v) else f"{v:{width}.3f}"


def format_summary(result: JobResult) -> str:
    """What the console shows when a job ends."""
    if result.peers is not None:
        lines = format_peers(result.peers, result.pairs, result.level)
    else:
        lines = _lens_lines(result)
    sources = result.cells or result.peers or []
    twins = [c for c in sources if c.twins is not None]
    if twins:
        lines.append(f"counterfactual twins: share of decisions that flip when only the cue "
                     f"changes, and the mean change in p(positive) [{result.level:.0%} "
                     "intervals]:")
        for c in twins:
            lines += format_effects(c.model, c.condition, c.twins)
        lines.append(f"  per level: {result.run_dir}/cells/*/counterfactual.csv and report/")
    stated = [c for c in result.cells if c.stated is not None]
    if stated:
        lines.append("stated versus used: how often the reasons cite each cue against how much "
                     f"the decisions weigh it [{result.level:.0%} interval]:")
        for c in stated:
            lines += format_stated(c.model, c.condition, c.stated)
        lines.append(f"  per cue: {result.run_dir}/cells/*/stated_vs_used.csv and report/")
    lines += [f"warning: {w}" for w in result.warnings]
    lines.append(f"every case: {result.run_dir / 'view.html'} (lensaudit view "
                 f"{result.run_dir} --serve to serve it)")
    lines.append(f"MLflow: parent run {result.parent_run_id} in {result.tracking_uri}")
    lines.append(f"view it: {ui_command(result.tracking_uri)}")
    return "\n".join(lines)


def _lens_lines(result: JobResult) -> list[str]:
    """The summary of an audit against the organisation's decisions."""
    audit = result.audit
    level = f"{audit.level:.0%}"
    any_soft = any(cell.soft is not None for cell in audit.cells)
    lines = [f"organisation: cross-validated accuracy {audit.org.cv_accuracy:.3f}, "
             f"AUC {audit.org.cv_auc:.3f}",
             f"alignment: cross-fitted cosine of the two policies [{level} interval]; "
             + ("soft: the same with the decision-maker's policy fitted to its probabilities; "
                if any_soft else "")
             + "r_cos: the paper's plain cosine (attenuated by estimation noise); acc, AUC, "
             "kappa: the answers against the organisation's; G: the Lens Model Equation's "
             "matching"]
    soft_head = f" {'soft [' + level + ']':26}" if any_soft else ""
    wm = max([34, *(len(cell.model) for cell in audit.cells)])
    wc = max([16, *(len(cell.condition) for cell in audit.cells)])
    header = f"{'model':{wm}} {'condition':{wc}} {'alignment [' + level + ']':26}{soft_head} " \
             f"{'r_cos':>7} {'p_perm':>7} {'acc':>6} {'AUC':>6} {'kappa':>6} {'G':>6} {'pos':>5}"
    lines += [header, "-" * len(header)]
    for cell in audit.cells:
        c = cell.comparison
        rc = "undef" if cell.r_cos_reason else f"{c.r_cos:+.3f}"
        soft = (f" {format_alignment(cell.soft) if cell.soft else '-':26}" if any_soft else "")
        pp = "undef" if not np.isfinite(c.p_perm) else f"{c.p_perm:.3f}"
        lines.append(f"{cell.model:{wm}} {cell.condition:{wc}} {format_alignment(c):26}{soft} "
                     f"{rc:>7} {pp:>7} {c.accuracy:6.3f} {c.auc_vs_org:6.3f} {c.kappa:6.3f} "
                     f"{_fixed(cell.lme.get('lme_G'), 6)} {c.positive_rate_dm:5.2f}")
        if cell.alignment_reason:
            lines.append(missing_line("alignment", c, cell.alignment_reason))
            if cell.soft is not None and not cell.soft_alignment_reason:
                lines.append(f"    the soft lens is defined: {format_alignment(cell.soft)}, read "
                             "from its probabilities of each answer")
        if cell.soft is not None and cell.soft_alignment_reason:
            lines.append(missing_line("soft alignment", cell.soft, cell.soft_alignment_reason))
        lines += note_lines(cell)
    protected = {k: t for k, t in audit.protected_tables.items() if not t.empty}
    if len(protected) <= 2:
        for (model, condition), table in protected.items():
            lines.append(format_protected(model, condition, table))
    elif protected:
        lines.append("share of |beta| on protected attributes (organisation -> decision-maker, "
                     "difference [interval]):")
        for (model, condition), t in protected.items():
            r = t.iloc[-1]
            if r.status:
                lines.append(f"  {model} x {condition}: {r.beta_org:.3f} -> {r.status}")
                continue
            lines.append(f"  {model} x {condition}: {r.beta_org:.3f} -> {r.beta_dm:.3f}, "
                         f"{r.beta_diff:+.3f} [{r.beta_diff_low:+.3f}, {r.beta_diff_high:+.3f}]")
        lines.append(f"  per-attribute tables: {result.run_dir}/cells/*/protected_attributes.csv "
                     "and report/")
    return lines


def eprint(*args):
    print(*args, file=sys.stderr)
