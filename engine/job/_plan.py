"""A job's plan: its cases (read, subset, checked), its imported
decision-makers, its cells and waves, and what is already decided; checked
before any model is loaded, and shown by `--dry-run` and at a run's start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.audit import refit_devices, statistics_workers
from engine.datasets import (DATASETS, CaseSet, check_cues, check_sample_size,
                             final_verdicts_path, load_case_file, read_imported)
from engine.decisions import DecisionStore, vllm_devices
from engine.decisions.backends import check_model, parse_simulated
from engine.errors import LensauditError
from engine.outputs import check_tracking, tracking_uri
from engine.prompts import condition_waves, twin_cases
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
            judged = judged_cases(cases, rows, model)
            check_sample_size(len(judged), _positives(judged), 0,
                              f"{key}: {model}: the cases it judged{where}")
    return rows


def _positives(cases: CaseSet) -> int | None:
    """Positive reference decisions, or None for a case set without a reference."""
    return int(cases.table["decision"].sum()) if cases.has_reference else None


def judged_cases(cases: CaseSet, rows: pd.DataFrame, model: str) -> CaseSet:
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
