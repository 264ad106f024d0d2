"""Counterfactual twins (issue 15, item 6): the cases, each with one cue changed.

For every case and listed cue, a twin is the same case with only that cue
changed: to every other level of a categorical or binary cue, and to the 10th
and 90th percentiles of a numeric one (values that occur in the case set).
Each model decides the twins under each condition, with the same prompt but
for that cue, as in discrimination audits of LM decisions (Tamkin et al. 2023,
"Evaluating and mitigating discrimination in language model decisions").

A twin's case id is `<case>~<cue>=<level>`: an ordinary key of the decision
store, so resume covers twins like any decision. What the twins change is
measured by the audit (`engine.audit.twin_effects`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.datasets import TWIN_SEPARATOR, CaseSet
from engine.errors import LensauditError

#: The percentiles a numeric cue's twins take.
NUMERIC_PERCENTILES = (0.10, 0.90)


def check_cues(cases: CaseSet, cues: list[str]) -> None:
    """Every listed cue is a cue of the case set (one line naming the first that is not)."""
    names = [c.name for c in cases.schema.cues]
    for i, cue in enumerate(cues):
        if cue not in names:
            raise LensauditError(f"counterfactual.cues.{i}: no cue '{cue}' in case set "
                                 f"'{cases.name}' (cues: {', '.join(names)})")


def _targets(cases: CaseSet, name: str) -> list[tuple[object, str]]:
    """(value, label) of every value a twin of cue `name` may take."""
    cue = cases.schema.cue(name)
    if cue.kind == "categorical":
        return [(code, code) for code in cue.levels]
    if cue.kind == "binary":
        return [(1, "yes"), (0, "no")]
    values = pd.to_numeric(cases.table[name]).to_numpy(float)
    qs = np.quantile(values, NUMERIC_PERCENTILES, method="inverted_cdf")
    return [(float(q), f"{q:g}") for q in dict.fromkeys(qs)]


def twin_cases(cases: CaseSet, cues: list[str]) -> CaseSet:
    """The twins of every case for each cue, as a case set of their own.

    Its table has the cases' columns with the one cue changed, `case_id` =
    `<case>~<cue>=<label>`, and `base_case_id`, `cf_cue`, `cf_level`. A twin
    that would equal its case (the case already has that value) is left out.
    """
    check_cues(cases, cues)
    t = cases.table
    parts = []
    for name in cues:
        kind = cases.schema.cue(name).kind
        current = t[name].astype(str) if kind == "categorical" else t[name].astype(float)
        for value, label in _targets(cases, name):
            differs = (current != value).to_numpy() if kind == "categorical" else \
                ~np.isclose(current.to_numpy(), float(value))
            twin = t[differs].copy()
            twin["base_case_id"] = twin["case_id"]
            twin["case_id"] = twin["case_id"].astype(str) + f"{TWIN_SEPARATOR}{name}={label}"
            twin[name] = value
            twin["cf_cue"], twin["cf_level"] = name, label
            parts.append(twin)
    table = pd.concat(parts, ignore_index=True)
    return CaseSet(cases.name, table, cases.schema)
