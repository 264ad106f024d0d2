"""Counterfactual twins (issue 15, item 6): the causal test beside the lens weights.

For every case and listed cue, a twin is the same case with only that cue
changed: to every other level of a categorical or binary cue, and to the 10th
and 90th percentiles of a numeric one (values that occur in the case set).
Each model decides the twins under each condition, with the same prompt but
for that cue, as in discrimination audits of LM decisions (Tamkin et al. 2023,
"Evaluating and mitigating discrimination in language model decisions").

A twin's case id is `<case>~<cue>=<level>`: an ordinary key of the decision
store, so resume covers twins like any decision. Per cue, the audit reports
the share of decisions that flip and the mean change in the probability of the
positive answer, with case-bootstrap intervals in which a case and its twins
move together (`kernels.paired_mean`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import jax

import kernels
from engine.datasets import TWIN_SEPARATOR, CaseSet
from engine.errors import LensauditError
from engine.records import per_case

#: The percentiles a numeric cue's twins take.
NUMERIC_PERCENTILES = (0.10, 0.90)
EFFECT_COLUMNS = ["cue", "level", "n_cases", "n_twins", "flip", "flip_low", "flip_high",
                  "p_change", "p_change_low", "p_change_high"]


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


def _means(rows: pd.DataFrame, ids) -> pd.DataFrame:
    """Mean y and p (p = y where there is none) per case id, for `ids` in order."""
    g, missing = per_case(rows, ids)
    if missing:
        raise LensauditError(f"{len(missing)} counterfactual decision(s) are missing (e.g. case "
                             f"{sorted(missing)[0]}); re-run to compute them")
    g["p"] = g["p"].where(np.isfinite(g["p"]), g["y"])
    return g


def twin_effects(decisions: pd.DataFrame, cases: CaseSet, twins: CaseSet, *, key: jax.Array,
                 n_bootstrap: int, level: float) -> pd.DataFrame:
    """Per cue (level "") and per cue level: flip share and mean change in p.

    Args:
      decisions: one cell's decision rows (its cases' and its twins').
      cases, twins: the audited cases and `twin_cases` of them.

    Returns:
      One row per effect, `EFFECT_COLUMNS`: `flip` is the mean over cases of
      |y(twin) - y(case)| (with one sample, the share of decisions that flip),
      `p_change` of p(twin) - p(case) (signed: toward the positive answer),
      averaged over a case's twins of that cue; intervals paired over cases.
    """
    ids = cases.table["case_id"].astype(str).tolist()
    base = _means(decisions, ids)
    tw = twins.table
    mine = _means(decisions, tw["case_id"].astype(str))
    flip = np.abs(mine["y"].to_numpy() - base.loc[tw["base_case_id"].astype(str), "y"].to_numpy())
    dp = mine["p"].to_numpy() - base.loc[tw["base_case_id"].astype(str), "p"].to_numpy()
    frame = pd.DataFrame({"case": tw["base_case_id"].astype(str).to_numpy(),
                          "cue": tw["cf_cue"].to_numpy(), "level": tw["cf_level"].to_numpy(),
                          "flip": flip, "dp": dp})
    effects = [(cue, "") for cue in dict.fromkeys(frame["cue"])]
    effects += list(dict.fromkeys(zip(frame["cue"], frame["level"])))
    flips = np.full((len(ids), len(effects)), np.nan)
    changes = np.full_like(flips, np.nan)
    row = {c: i for i, c in enumerate(ids)}
    counts = []
    for j, (cue, lvl) in enumerate(effects):
        sel = frame[(frame["cue"] == cue) & ((frame["level"] == lvl) if lvl else True)]
        per = sel.groupby("case")[["flip", "dp"]].mean()
        idx = [row[c] for c in per.index]
        flips[idx, j], changes[idx, j] = per["flip"].to_numpy(), per["dp"].to_numpy()
        counts.append((len(per), len(sel)))
    f = kernels.paired_mean(flips, key=key, n_bootstrap=n_bootstrap, level=level)
    c = kernels.paired_mean(changes, key=key, n_bootstrap=n_bootstrap, level=level)
    return pd.DataFrame({
        "cue": [e[0] for e in effects], "level": [e[1] for e in effects],
        "n_cases": [n for n, _ in counts], "n_twins": [m for _, m in counts],
        "flip": np.asarray(f.mean), "flip_low": np.asarray(f.low), "flip_high": np.asarray(f.high),
        "p_change": np.asarray(c.mean), "p_change_low": np.asarray(c.low),
        "p_change_high": np.asarray(c.high)})[EFFECT_COLUMNS]


def effect_metrics(effects: pd.DataFrame) -> dict[str, float]:
    """The per-cue effects as MLflow metrics (`cf_flip.<cue>`, ...)."""
    out = {}
    for r in effects[effects["level"] == ""].itertuples():
        for name in ("flip", "flip_low", "flip_high", "p_change", "p_change_low", "p_change_high"):
            out[f"cf_{name}.{r.cue}"] = float(getattr(r, name))
    return out


def format_effects(model: str, condition: str, effects: pd.DataFrame) -> list[str]:
    """Console lines: per cue, flip share and change in p with their intervals."""
    lines = []
    for r in effects[effects["level"] == ""].itertuples():
        lines.append(f"  {model} x {condition}: {r.cue}: flips {r.flip:.3f} "
                     f"[{r.flip_low:.3f}, {r.flip_high:.3f}], p(positive) {r.p_change:+.3f} "
                     f"[{r.p_change_low:+.3f}, {r.p_change_high:+.3f}] ({r.n_cases} cases)")
    return lines
