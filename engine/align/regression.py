"""The comparative-regression ADM (align-system's comparative regression): the
backbone rates every choice of a probe on the target's attribute (0-10, with
a reasoning; stored per attribute under `adm.ratings_condition`), and the ADM
takes the choice whose rating, averaged over samples, is nearest the
target's value, ties to the first choice in the source's order. One set of
ratings serves every target on the attribute (high and low alike)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from engine.align.adm import Target, condition_name, ratings_condition
from engine.align.data import Probe

METHOD = "comparative_regression"


def ratings(rows: pd.DataFrame) -> dict[int, float]:
    """Mean rating per choice (source index) over the valid rows of one probe."""
    per = [json.loads(s).get("rated", {}) for s in rows["choice_logprobs"]]
    per = [{int(k): float(v) for k, v in r.items()} for r in per if r]
    if not per:
        return {}
    return {c: float(np.mean([r[c] for r in per if c in r])) for c in per[0]}


def nearest_choice(rated: dict[int, float], tgt: Target) -> int:
    """The choice whose rating is nearest the target value (ties: lowest index)."""
    (_, value, _), = tgt.parts
    return min(rated, key=lambda c: (abs(rated[c] - value), c))


def regression_decisions(decisions: pd.DataFrame, probes: dict[str, Probe],
                         tgt: Target) -> pd.DataFrame:
    """One decision row per (model, probe) of comparative_regression x `tgt`
    (one attribute), from the stored ratings of that attribute. The averaged
    ratings are kept in `choice_logprobs` as {"rated": ...}."""
    (attribute, _, _), = tgt.parts
    stored = decisions[(decisions["condition"] == ratings_condition(attribute))
                       & (decisions["y"] >= 0)]
    rows = []
    for (model, case_id), d in stored.groupby(["model", "case_id"]):
        rated = ratings(d)
        if not rated or case_id not in probes:
            continue
        y = nearest_choice(rated, tgt)
        rows.append({
            "model": model, "condition": condition_name(METHOD, tgt), "case_id": case_id,
            "sample": 0, "choice": str(y), "y": y, "p_positive": float("nan"),
            "choice_logprobs": json.dumps({"rated": {str(c): v for c, v in rated.items()}}),
            "reasoning": d["reasoning"].iloc[0], "prompt_hash": "", "prompt_tokens": 0,
            "completion_tokens": 0, "latency_s": 0.0, "backend": "regression",
            "seed": int(d["seed"].iloc[0])})
    return pd.DataFrame(rows, columns=decisions.columns)
