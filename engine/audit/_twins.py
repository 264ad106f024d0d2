"""What counterfactual twins change (issue 15, item 6): the causal test beside
the lens weights.

Per cue, the share of decisions that flip between a case and its twins
(`engine.prompts.twin_cases`) and the mean change in the probability of the
positive answer, with case-bootstrap intervals in which a case and its twins
move together (`kernels.paired_mean`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import jax

import kernels
from engine.datasets import CaseSet
from engine.errors import LensauditError
from engine.records import per_case

EFFECT_COLUMNS = ["cue", "level", "n_cases", "n_twins", "flip", "flip_low", "flip_high",
                  "p_change", "p_change_low", "p_change_high"]


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
