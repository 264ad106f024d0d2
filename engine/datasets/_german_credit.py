"""Statlog German Credit (UCI; CC BY 4.0): 1,000 applicants, 20 attributes.

The bank's decision is the organisation's: Good (class 1) -> decision 1,
Bad (class 2) -> decision 0. Codes and their meanings are from german.doc,
shipped beside german.data with PROVENANCE.txt and LICENSE.txt.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from engine.datasets._schema import CaseSet, Cue, CueSchema
from engine.errors import LensauditError

FINANCE = "financial standing"
TERMS = "loan terms"
HISTORY = "credit history"
STABILITY = "employment and stability"
PERSONAL = "personal attributes"

GERMAN_CREDIT_CUES: tuple[Cue, ...] = (
    Cue("checking_account", "categorical", FINANCE, "checking account", {
        "A11": "below 0 DM", "A12": "0 to 200 DM",
        "A13": "200 DM or more / salary assigned for at least 1 year",
        "A14": "no checking account"}),
    Cue("duration", "numeric", TERMS, "loan duration", unit="months"),
    Cue("credit_history", "categorical", HISTORY, "credit history", {
        "A30": "no credits taken / all credits paid back duly",
        "A31": "all credits at this bank paid back duly",
        "A32": "existing credits paid back duly till now",
        "A33": "delay in paying off in the past",
        "A34": "critical account / other credits existing (not at this bank)"}),
    Cue("purpose", "categorical", TERMS, "purpose", {
        "A40": "new car", "A41": "used car", "A42": "furniture/equipment",
        "A43": "radio/television", "A44": "domestic appliances", "A45": "repairs",
        "A46": "education", "A47": "vacation", "A48": "retraining", "A49": "business",
        "A410": "other"}),
    Cue("credit_amount", "numeric", TERMS, "credit amount", unit="DM"),
    Cue("savings", "categorical", FINANCE, "savings account/bonds", {
        "A61": "below 100 DM", "A62": "100 to 500 DM", "A63": "500 to 1000 DM",
        "A64": "1000 DM or more", "A65": "unknown / no savings account"}),
    Cue("employment_since", "categorical", STABILITY, "present employment since", {
        "A71": "unemployed", "A72": "less than 1 year", "A73": "1 to 4 years",
        "A74": "4 to 7 years", "A75": "7 years or more"}),
    Cue("installment_rate", "numeric", TERMS,
        "installment rate (% of disposable income, 1-4 scale)"),
    Cue("personal_status_sex", "categorical", PERSONAL, "personal status and sex", {
        "A91": "male, divorced/separated", "A92": "female, divorced/separated/married",
        "A93": "male, single", "A94": "male, married/widowed", "A95": "female, single"},
        protected=True),
    Cue("other_debtors", "categorical", HISTORY, "other debtors/guarantors", {
        "A101": "none", "A102": "co-applicant", "A103": "guarantor"}),
    Cue("residence_since", "numeric", STABILITY, "present residence since (1-4 scale)"),
    Cue("property", "categorical", FINANCE, "property", {
        "A121": "real estate", "A122": "building society savings agreement / life insurance",
        "A123": "car or other", "A124": "unknown / no property"}),
    Cue("age", "numeric", PERSONAL, "age", unit="years", protected=True),
    Cue("other_installment_plans", "categorical", HISTORY, "other installment plans", {
        "A141": "bank", "A142": "stores", "A143": "none"}),
    Cue("housing", "categorical", STABILITY, "housing", {
        "A151": "rent", "A152": "own", "A153": "for free"}),
    Cue("existing_credits", "numeric", HISTORY, "number of existing credits at this bank"),
    Cue("job", "categorical", STABILITY, "job", {
        "A171": "unemployed/unskilled, non-resident", "A172": "unskilled, resident",
        "A173": "skilled employee/official",
        "A174": "management/self-employed/highly qualified employee/officer"}),
    Cue("people_liable", "numeric", STABILITY, "number of people liable to provide maintenance for"),
    Cue("telephone", "categorical", STABILITY, "telephone", {
        "A191": "none", "A192": "yes, registered under the customer's name"}),
    Cue("foreign_worker", "categorical", PERSONAL, "foreign worker", {
        "A201": "yes", "A202": "no"}, protected=True),
)

GERMAN_CREDIT_SCHEMA = CueSchema(
    cues=GERMAN_CREDIT_CUES,
    positive_label="Good",
    negative_label="Bad",
    question="whether the applicant is a good credit risk (the loan would be repaid)",
)


def german_credit_path() -> Path:
    """The shipped german.data."""
    return Path(str(resources.files("engine") / "data" / "german_credit" / "german.data"))


def load_german_credit(path: str | Path | None = None) -> CaseSet:
    """Load german.data (whitespace separated, 20 attributes + class).

    Returns:
      A `CaseSet` of 1,000 cases; case_id = 1-based row number;
      decision = 1 for Good (class 1), 0 for Bad (class 2).
    """
    path = Path(path) if path else german_credit_path()
    if not path.is_file():
        raise LensauditError(f"data file not found: {path}")
    names = [c.name for c in GERMAN_CREDIT_CUES] + ["class"]
    try:
        raw = pd.read_csv(path, sep=r"\s+", header=None, names=names, dtype=str)
    except Exception as exc:  # parse errors name the file
        raise LensauditError(f"{path}: cannot parse German Credit data ({exc})") from None
    if raw.isna().any().any():
        line = int(raw.isna().any(axis=1).to_numpy().argmax()) + 1
        raise LensauditError(f"{path}: line {line} has fewer than 21 fields")
    if not raw["class"].isin(["1", "2"]).all():
        line = int((~raw["class"].isin(["1", "2"])).to_numpy().argmax()) + 1
        raise LensauditError(f"{path}: line {line}: class must be 1 (Good) or 2 (Bad)")
    table = raw.drop(columns="class")
    for c in GERMAN_CREDIT_CUES:
        if c.kind != "categorical":
            table[c.name] = pd.to_numeric(table[c.name], errors="coerce")
            if table[c.name].isna().any():
                line = int(table[c.name].isna().to_numpy().argmax()) + 1
                raise LensauditError(f"{path}: line {line}: '{c.name}' is not a number")
    table.insert(0, "case_id", [str(i) for i in range(1, len(raw) + 1)])
    table["decision"] = (raw["class"] == "1").astype(int)
    return CaseSet("german_credit", table, GERMAN_CREDIT_SCHEMA)
