"""The viewer's data: one row per case, one column per decision-maker x condition.

Shapes are columnar (a list per field, one entry per case) so that a run of
10,000 cases x 30 cues embeds as a few MB of JSON and the page filters arrays
rather than objects.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from engine.datasets import TWIN_SEPARATOR, base_case_id, schema_from_entries
from engine.errors import LensauditError
from engine.outputs._tracking import read_results


def _schema(payload: dict, cases: pd.DataFrame):
    """The run's cue schema (results.json keeps it), or None for a run written
    before it did: the page then shows the raw values."""
    if not payload.get("schema"):
        return None
    schema = schema_from_entries(payload["schema"])
    return schema if all(c.name in cases.columns for c in schema.cues) else None


def _cues(schema, cases: pd.DataFrame) -> tuple[list[dict], dict[str, list[str]]]:
    """Per cue: name, phrase, kind, protected; and its values as shown, per case."""
    if schema is None:
        names = [c for c in cases.columns if c not in ("case_id", "decision")]
        return ([{"name": n, "phrase": n, "kind": "", "protected": False} for n in names],
                {n: _levels(cases[n].astype(str).tolist()) for n in names})
    cues = [{"name": c.name, "phrase": c.phrase, "kind": c.kind, "protected": c.protected}
            for c in schema.cues]
    return cues, {c.name: _levels(c.render_many(cases[c.name].tolist())) for c in schema.cues}


def _levels(texts: list[str]) -> list[str] | dict:
    """A cue's shown values, as a list, or as {"levels", "codes"} where few
    values repeat over many cases (the page reads both: 100,000 cases' values
    as text were most of its 16 MB)."""
    codes, levels = pd.factorize(pd.Series(texts, dtype=object))
    if 2 * len(levels) > len(texts):
        return texts
    return {"levels": levels.tolist(), "codes": codes.tolist()}


#: Digits a probability or mean answer keeps on the page (it shows two).
DIGITS = 4


def _number(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v),
                                                                                   DIGITS)


def _column(rows: pd.DataFrame, ids: list[str]) -> dict:
    """One decision-maker x condition per case: mean answer, mean p, the answer
    most often given (the first given of a tie), the first reasoning, and how
    many samples. Grouped without a Python function per case (one took 2 minutes
    for 200,000 decisions)."""
    rows = rows[rows["y"] >= 0].reset_index(drop=True)
    g = rows.groupby("case_id", sort=False)
    # The most given choice, ties to the one given first: count per (case,
    # choice), order by count (descending) then first row, keep each case's first.
    at = rows.reset_index().groupby(["case_id", "choice"], sort=False)["index"]
    tally = pd.DataFrame({"times": at.size(), "first": at.min()}).reset_index()
    tally = tally.sort_values(["times", "first"], ascending=[False, True], kind="stable")
    choice = tally.drop_duplicates("case_id").set_index("case_id")["choice"]
    reasons = rows[rows["reasoning"].notna() & (rows["reasoning"].astype(str) != "")]
    reasoning = reasons.drop_duplicates("case_id").set_index("case_id")["reasoning"]
    per = pd.DataFrame({"y": g["y"].mean(), "p": g["p_positive"].mean(), "n": g["y"].size()})
    per = per.reindex(ids)
    choice, reasoning = choice.reindex(ids), reasoning.reindex(ids)
    return {"y": [_number(v) for v in per["y"].tolist()],
            "p": [_number(v) for v in per["p"].tolist()],
            "n": [0 if pd.isna(v) else int(v) for v in per["n"].tolist()],
            "choice": [None if pd.isna(v) else str(v) for v in choice.tolist()],
            "reasoning": [None if pd.isna(v) else str(v) for v in reasoning.tolist()]}


def _twins(rows: pd.DataFrame, ids: list[str], column: dict) -> dict | None:
    """Counterfactual twins of each case: per case, its twins' changes and
    answers, and how many flipped the case's answer. None without twins."""
    tw = rows[rows["case_id"].astype(str).str.contains(TWIN_SEPARATOR, regex=False)
              & (rows["y"] >= 0)]
    if tw.empty:
        return None
    g = tw.groupby("case_id", sort=False).agg(y=("y", "mean"), p=("p_positive", "mean"),
                                              choice=("choice", "first"))
    base = {i: y for i, y in zip(ids, column["y"])}
    detail: dict[str, list] = {i: [] for i in ids}
    flips = dict.fromkeys(ids, 0)
    for twin_id, y, p, choice in zip(g.index.tolist(), g["y"].tolist(), g["p"].tolist(),
                                     g["choice"].tolist()):
        case = base_case_id(twin_id)
        if case not in detail:
            continue
        y0 = base[case]
        flipped = y0 is not None and (y > 0.5) != (y0 > 0.5)
        flips[case] += int(flipped)
        detail[case].append({"change": twin_id.split(TWIN_SEPARATOR, 1)[1],
                             "choice": str(choice), "p": _number(p), "flipped": bool(flipped)})
    return {"flips": [flips[i] for i in ids], "detail": [detail[i] for i in ids]}


def _policies(run_dir: Path, cells: list[dict]) -> dict | None:
    """The organisation's and each cell's weights with intervals, per encoded column."""
    table, keys = None, []
    for cell in cells:
        path = run_dir / cell["artifacts"] / "policies.csv"
        if not path.is_file():
            continue
        p = pd.read_csv(path, keep_default_na=False, na_values=[""])
        key = f"{cell['model']} | {cell['condition']}"
        keys.append(key)
        if table is None:
            table = {"column": p["column"].astype(str).tolist(),
                     "label": p["label"].astype(str).tolist(),
                     "cue": [str(c).split("=", 1)[0] for c in p["column"]],
                     "status": p["status"].fillna("").astype(str).tolist(),
                     "org": _triple(p, "beta_org"), "cells": {}}
        table["cells"][key] = _triple(p, "beta_dm")
    return None if table is None else {**table, "order": keys}


def _triple(p: pd.DataFrame, name: str) -> list[list[float | None]]:
    if name not in p.columns or p[name].isna().all():
        return [[None, None, None]] * len(p)
    return [[_number(a), _number(b), _number(c)]
            for a, b, c in zip(p[name], p[f"{name}_low"], p[f"{name}_high"])]


#: A study's own reader of its run for the page: (run_dir, results payload,
#: job spec) -> the page's data. The lens runs' reader is `view_data` itself.
Reader = Callable[[Path, dict, object], dict]


def view_data(run_dir: str | Path, readers: Mapping[str, Reader] | None = None) -> dict:
    """Everything the page shows, from a finished run directory.

    readers: by results kind, the reader of a study that is not a lens audit
    (`engine.align.VIEW_READERS` for ALIGN runs): the study knows its own
    results, the viewer only how to show them.
    """
    run_dir = Path(run_dir)
    payload, spec = read_results(run_dir)
    kind = payload["kind"]
    if kind in (readers or {}):
        return readers[kind](run_dir, payload, spec)
    if kind not in ("lens", "peers"):
        raise LensauditError(f"{run_dir}: a run of kind '{kind}', which this viewer cannot read")
    if not payload.get("cases"):
        raise LensauditError(f"{run_dir}: the run holds no case table to view")
    cases = pd.read_parquet(run_dir / payload["cases"])
    ids = cases["case_id"].astype(str).tolist()
    schema = _schema(payload, cases)
    cues, values = _cues(schema, cases)
    columns, twins = [], {}
    for cell in payload["cells"]:
        path = run_dir / cell["artifacts"] / "decisions.parquet"
        rows = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        if rows.empty:
            continue
        rows["case_id"] = rows["case_id"].astype(str)
        key = f"{cell['model']} | {cell['condition']}"
        col = _column(rows, ids)
        columns.append({"key": key, "model": cell["model"], "condition": cell["condition"],
                        **col})
        t = _twins(rows, ids, col)
        if t is not None:
            twins[key] = t
    reference = "decision" in cases.columns
    s = spec.dataset
    return {
        "kind": "lens" if reference else "peers", "job": spec.name,
        "dataset": s.name or Path(s.cases).name, "n": len(ids), "ids": ids,
        "cues": cues, "values": values,
        "reference": ([int(v) for v in cases["decision"]] if reference else None),
        "labels": ({"positive": "1", "negative": "0"} if schema is None else
                   {"positive": schema.positive_label, "negative": schema.negative_label}),
        "columns": columns, "twins": twins,
        "policies": _policies(run_dir, payload["cells"]),
    }
