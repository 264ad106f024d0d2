"""ECtHR Article 6 cases with ADM legal-factor annotations (CC0; Mumford et al. 2023).

Cases are the court's Article 6 judgments; cues are the factors of the
Angelic Domain Model (ADM) of Article 6 as ascribed by trained annotators.
The encoding (documented in the shipped PROVENANCE.txt):

* decision = the court's outcome: 1 = violation, 0 = no violation;
* each ADM factor is a categorical cue, satisfied / not satisfied /
  not at issue, by strict majority of the annotators who read the case;
* the limb (criminal, civil, both) by plurality;
* cases that no annotator read are excluded and counted (`excluded`).
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import pandas as pd

from engine.datasets._schema import CaseSet, Cue, CueSchema
from engine.errors import LensauditError

LEVELS = {"satisfied": "requirement satisfied", "not_satisfied": "requirement not satisfied",
          "not_at_issue": "not at issue"}
LIMB_KEY, FLAG_KEY = "CRIMINAL LIMB?", "FLAGGED?"


def echr_dir() -> Path:
    return Path(str(resources.files("engine") / "data" / "echr_article6"))


def _slug(text: str) -> str:
    return "_".join(text.strip().lower().replace("-", " ").split())


def adm_factors(design: Path | None = None) -> list[tuple[str, str]]:
    """(factor, issue) for every Issue and Intermediate factor of the ADM design CSV."""
    design = design or echr_dir() / "art6_angelic_design.csv"
    with open(design, encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    parent = {r["Factor"]: r["Parent"] for r in rows}
    out = []
    for r in rows:
        if r["Type"] in ("Issue", "Intermediate"):
            issue = r["Factor"] if r["Type"] == "Issue" else parent[r["Factor"]]
            out.append((r["Factor"], issue))
    return out


def _schema(factors: list[tuple[str, str]]) -> CueSchema:
    cues = [Cue("limb", "categorical", "procedure", "limb of Article 6",
                {"criminal": "criminal", "civil": "civil", "both": "criminal and civil"})]
    for factor, issue in factors:
        text = factor.strip()
        # Issues are upper case in the ADM ("FAIR"); sub-factors are title case.
        phrase = (f"{text.lower()} (overall issue)" if text.isupper()
                  else text[0] + text[1:].lower())
        # An Issue's finding is the court's outcome for that issue (a violation
        # case has at least one Issue "not satisfied" in 466 of 491 cases, a
        # no-violation case in none of 204): it defines the reference.
        cues.append(Cue(_slug(text), "categorical", issue.strip().lower(), phrase, dict(LEVELS),
                        defines_outcome=text.isupper()))
    return CueSchema(tuple(cues), positive_label="Violation", negative_label="No violation",
                     question="whether the court found a violation of Article 6 "
                     "(the right to a fair trial)")


def _majority(counts: list[int]) -> str:
    pos, neg, none = counts
    total = pos + neg + none
    if pos * 2 > total:
        return "satisfied"
    if neg * 2 > total:
        return "not_satisfied"
    return "not_at_issue"


def _limb(counts: list[int]) -> str:
    yes, no, both = counts
    best = max(yes, no, both)
    return "criminal" if yes == best else ("civil" if no == best else "both")


def _read_lines(path: Path) -> list[tuple[str, dict]]:
    if not path.is_file():
        raise LensauditError(f"data file not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                ((case_id, factors),) = obj.items()
            except Exception:
                raise LensauditError(f"{path}: line {lineno} is not one JSON object "
                                     "{case id: {factor: [pos, neg, none]}}") from None
            out.append((case_id, factors))
    return out


def load_echr_article6(path: str | Path | None = None) -> CaseSet:
    """Load the ECHR Article 6 annotation summaries.

    Args:
      path: a folder holding Overall_vio_stats.json, Overall_non_stats.json and
        art6_angelic_design.csv (default: the shipped copy).

    Returns:
      A `CaseSet` named "echr_article6" (case_id = HUDOC item id). The number of
      cases excluded for having no annotation is in `table.attrs["excluded"]`.
    """
    folder = Path(path) if path else echr_dir()
    factors = adm_factors(folder / "art6_angelic_design.csv")
    schema = _schema(factors)
    rows, excluded = [], {"violation": 0, "no violation": 0}
    for fname, outcome in (("Overall_vio_stats.json", 1), ("Overall_non_stats.json", 0)):
        for case_id, ann in _read_lines(folder / fname):
            if all(sum(v) == 0 for v in ann.values()):
                excluded["violation" if outcome else "no violation"] += 1
                continue
            row = {"case_id": case_id}
            for (factor, _), cue in zip(factors, schema.cues[1:]):
                counts = ann.get(factor)
                if counts is None or len(counts) != 3:
                    raise LensauditError(f"{folder / fname}: case {case_id}: factor "
                                         f"'{factor}' missing or not [pos, neg, none]")
                row[cue.name] = _majority(counts)
            row["limb"] = _limb(ann.get(LIMB_KEY, [0, 0, 0]))
            row["decision"] = outcome
            rows.append(row)
    table = pd.DataFrame(rows)
    if table["case_id"].duplicated().any():
        dup = table.loc[table["case_id"].duplicated(), "case_id"].iloc[0]
        raise LensauditError(f"{folder}: case {dup} is in both the violation and the "
                             "no-violation file")
    table.attrs["excluded"] = excluded
    return CaseSet("echr_article6", table, schema)
