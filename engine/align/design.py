"""What an alignment job decides: its probes and its aligned decision-makers
(method x target), read from the job's settings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine.align.adm import RATINGS, Target, target, with_mode
from engine.align.data import Probe, load_align_system, load_mta
from engine.align.metric import parse_target
from engine.align.regression import METHOD as REGRESSION, regression_decisions
from engine.align.vote import voted_decisions
from engine.errors import LensauditError
from engine.spec import JobSpec


def load_probes(spec: JobSpec) -> list[Probe]:
    path = spec.dataset.path
    if path and not Path(path).name.startswith("paper-dataset"):
        probes = load_align_system(path)
    else:
        probes = load_mta(path)
    n = spec.alignment.probes
    return probes[:n] if n else probes


def adm_targets(spec: JobSpec) -> list[tuple[str, Target | None]]:
    """(method, target) of every ADM the job asks for (per backbone)."""
    a = spec.alignment
    out: list[tuple[str, Target | None]] = []
    for method in a.methods:
        if method == "baseline":
            out.append((method, None))
        elif method == "random":
            out.append((method, None))
        elif method in ("prompt_aligned", "few_shot", "comparative_regression"):
            out += [(method, target(attr, lvl)) for attr in a.attributes for lvl in a.levels]
        elif method == "multi_attribute":
            if not a.multi_attribute:
                raise LensauditError("alignment.multi_attribute: the multi_attribute method "
                                     "needs at least one target")
            for t in a.multi_attribute:
                tgt = parse_target(t)
                for attr in tgt.attributes:
                    target(attr, 0.0)  # validates the attribute name
                out.append((method, tgt))
        elif method == "persona":
            if not a.personas:
                raise LensauditError("alignment.personas: the persona method needs personas")
            out += [(method, Target(persona=p)) for p in a.personas]
    return out


#: Methods whose requests do not depend on the decision mode (ratings are
#: always reasoned; random asks nothing).
MODELESS = ("comparative_regression", "random")


def job_modes(spec: JobSpec) -> list[str]:
    """The decision modes the job's backbone ADMs answer in: the job's own
    first, then with `alignment.compare_modes` the other."""
    mode = spec.decision.mode
    other = "choice" if mode == "reasoning" else "reasoning"
    return [mode, other] if spec.alignment.compare_modes else [mode]


def adm_decisions(spec: JobSpec, decisions: pd.DataFrame, probes: list[Probe]) -> pd.DataFrame:
    """The decisions every ADM of the job is scored on: the stored answers of
    the ADMs that answer directly, the comparative-regression ADMs' choices
    derived from their ratings (which are left out), and with `vote: opposite`
    the voted ADMs' choices (`method+vote`) beside their unvoted answers (in
    each decision mode the job runs)."""
    by_id = {p.item_id: p for p in probes}
    parts = [decisions[~decisions["condition"].str.startswith(RATINGS + ":")]]
    for method, tgt in adm_targets(spec):
        if method == REGRESSION:
            parts.append(regression_decisions(decisions, by_id, tgt))
        elif spec.alignment.vote == "opposite" and method in ("prompt_aligned", "few_shot"):
            for mode in job_modes(spec):
                tagged = method if mode == spec.decision.mode else with_mode(method, mode)
                parts.append(voted_decisions(decisions, by_id, tagged, tgt))
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else decisions.iloc[:0]
