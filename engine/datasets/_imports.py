"""Imported decision-makers: someone else's decisions on the cases of a case set
(a human panel, an earlier run, another tool's output), read from a table into
decision rows that the audit treats like a model's (issue 15, item 4).

Several rows of one case are samples (a panel's members); a `by` column splits
the table into decision-makers of their own, named `<name>:<group>`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from engine.datasets._casefile import binary_values
from engine.datasets._schema import CaseSet
from engine.errors import LensauditError
from engine.files import read_table

#: The decision rows' condition and backend for imported decisions.
IMPORTED = "imported"


def read_imported(cases: CaseSet, *, name: str, path: str | Path, id: str = "case_id",
                  decision: str = "decision", probability: str | None = None,
                  by: str | None = None, reason: str | None = None,
                  source: str = "imports") -> pd.DataFrame:
    """Decision rows (model, condition, case_id, sample, y, p_positive, choice,
    backend, reasoning) of one import, on the cases of `cases` it judged.

    `cases` is the whole case set: an id it does not hold is an error (a typo
    in the ids would otherwise drop cases silently). Errors are one line that
    names `source` (the job's key, "imports.0"), the file, the case and column.
    """
    path = Path(path)
    where = f"{source}: {path.name}"
    try:
        df = read_table(path)
    except LensauditError as exc:
        raise LensauditError(f"{source}: {exc}") from None
    for key, col in (("id", id), ("decision", decision), ("probability", probability),
                     ("by", by), ("reason", reason)):
        if col is not None and col not in df.columns:
            raise LensauditError(f"{where}: no column '{col}' ({source}.{key}); columns: "
                                 + ", ".join(map(str, df.columns[:12])))
    ids = df[id].astype(str).str.strip()
    unknown = ~ids.isin(set(cases.table["case_id"].astype(str)))
    if unknown.any():
        raise LensauditError(f"{where}: case {ids[unknown].iloc[0]} (column '{id}') is not in "
                             f"case set '{cases.name}' ({int(unknown.sum())} such row(s))")
    s = cases.schema
    y = binary_values(df[decision], ids, "decision", where, (s.positive_label, s.negative_label))
    p = np.full(len(df), np.nan)
    if probability is not None:
        p = pd.to_numeric(df[probability], errors="coerce").to_numpy(float)
        bad = ~((p >= 0) & (p <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise LensauditError(f"{where}: case {ids.iloc[i]}: column '{probability}' "
                                 f"(probability) is {df[probability].iloc[i]!r}, not in [0, 1]")
    if by is not None and df[by].isna().any():
        i = int(np.flatnonzero(df[by].isna().to_numpy())[0])
        raise LensauditError(f"{where}: case {ids.iloc[i]}: column '{by}' (by) is empty")
    model = (name + ":" + df[by].astype(str).str.strip()) if by is not None \
        else pd.Series(name, index=df.index)
    rows = pd.DataFrame({"model": model.to_numpy(), "condition": IMPORTED,
                         "case_id": ids.to_numpy(), "y": y, "p_positive": p})
    rows["sample"] = rows.groupby(["model", "case_id"]).cumcount()
    rows["choice"] = np.where(y == 1, s.positive_label, s.negative_label)
    rows["backend"] = IMPORTED
    rows["reasoning"] = (None if reason is None else
                         [v if isinstance(v, str) and v.strip() else None for v in df[reason]])
    return rows[["model", "condition", "case_id", "sample", "y", "p_positive", "choice",
                 "backend", "reasoning"]]
