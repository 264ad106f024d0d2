"""Case sets from files: a YAML case-set file names a data table and says what
its columns mean (issue 15, item 1).

    name: tenancy
    data: tenancy.csv            # CSV or Parquet, relative to this file
    id: application              # default: the row number
    reference: agent_decision    # 0/1, true/false, or the choice words
    question: whether to offer the tenancy to this applicant
    choices: {positive: Offer, negative: Decline}
    role: You are a letting agent.
    cues:
      - {name: income, kind: numeric, unit: EUR a month}
      - {name: pets, kind: binary, phrase: has pets}
      - {name: nationality, kind: categorical, protected: true,
         levels: {DE: German, FR: French}}

Every error is one line naming the file and the key path
(`tenancy.yaml: cues.3.kind: ...`) or the case id and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.datasets._schema import TWIN_SEPARATOR, CaseSet, Cue, CueSchema
from engine.errors import LensauditError
from engine.files import read_table, read_yaml_mapping, validation_message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CueEntry(_Strict):
    name: str = Field(min_length=1, description="the cue's column in the data table")
    kind: Literal["numeric", "categorical", "binary"]
    phrase: str | None = Field(None, description="how prompts name it (default: the name in words)")
    levels: dict[str, str] | None = Field(
        None, description="categorical: code -> words (default: the codes as they are)")
    unit: str = Field("", description="numeric: appended to the value in prompts")
    family: str = Field("cues", description="a group of related cues")
    protected: bool = Field(False, description="a protected attribute")
    defines_outcome: bool = Field(
        False, description="the cue is (part of) the reference decision itself: left out of "
        "audits unless the job sets dataset.outcome_cues: include")

    @model_validator(mode="after")
    def _levels_only_for_categorical(self):
        if self.levels is not None and self.kind != "categorical":
            raise ValueError(f"levels are for categorical cues, not {self.kind}")
        return self


class ChoicesEntry(_Strict):
    positive: str = Field(min_length=1)
    negative: str = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self):
        if self.positive.strip().lower() == self.negative.strip().lower():
            raise ValueError("positive and negative must differ")
        # Constrained to the choices, a model's first answer token that begins
        # both could still become either, so its probabilities cannot be read.
        short, other = sorted((self.positive.strip(), self.negative.strip()), key=len)
        if other.lower().startswith(short.lower()):
            raise ValueError(f"'{short}' begins '{other}': a model's answer could not be told "
                             "apart from its first token; choose two neither of which begins "
                             "the other")
        return self


class CaseFile(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data: str = Field(min_length=1, description="CSV or Parquet, relative to the case-set file")
    id: str | None = Field(None, description="the case-id column (default: the row number)")
    reference: str | None = Field(None, description="the organisation's decisions")
    question: str = Field(min_length=1, description="what is decided: 'whether to ...'")
    choices: ChoicesEntry
    role: str | None = Field(None, description="who the decision-maker is")
    cues: list[CueEntry] = Field(min_length=1)

    @field_validator("cues")
    @classmethod
    def _unique_cues(cls, cues):
        names = [c.name for c in cues]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"cue '{dup}' is listed twice")
        return cues


def read_case_file(path: str | Path) -> CaseFile:
    """The validated case-set file (no data read yet)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "case-set file")
    try:
        return CaseFile.model_validate(raw)
    except ValidationError as exc:
        raise LensauditError(validation_message(path.name, exc)) from None


def _read_data(path: Path, source: str) -> pd.DataFrame:
    try:
        return read_table(path, text=True)
    except LensauditError as exc:
        raise LensauditError(f"{source}: data: {exc}") from None


_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


def _value(v) -> str:
    return "empty" if pd.isna(v) else repr(v)


def binary_values(col: pd.Series, ids: pd.Series, what: str, source: str,
                  words: tuple[str, str] = ()) -> np.ndarray:
    """0/1 from 0/1, true/false, yes/no or the two choice words (case-insensitive)."""
    true = _TRUE | ({words[0].strip().lower()} if words else set())
    false = _FALSE | ({words[1].strip().lower()} if words else set())
    text = col.astype(str).str.strip().str.lower()
    bad = ~text.isin(true | false) | col.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        allowed = "0/1, true/false" + (f" or {words[0]}/{words[1]}" if words else ", yes/no")
        raise LensauditError(f"{source}: case {ids.iloc[i]}: column '{col.name}' ({what}) is "
                             f"{_value(col.iloc[i])}, not {allowed}")
    return text.isin(true).to_numpy(int)


def load_case_file(path: str | Path, data: str | Path | None = None) -> CaseSet:
    """A `CaseSet` from a case-set file and its data table.

    `data`: read this table instead of the one the file names (same columns).
    """
    path = Path(path)
    spec = read_case_file(path)
    source = path.name
    df = _read_data(Path(data) if data is not None else path.parent / spec.data, source)
    for key, col in (("id", spec.id), ("reference", spec.reference),
                     *((f"cues.{i}.name", c.name) for i, c in enumerate(spec.cues))):
        if col is not None and col not in df.columns:
            raise LensauditError(f"{source}: {key}: no column '{col}' in {spec.data}")
    ids = (df[spec.id].astype(str) if spec.id else pd.Series([str(i) for i in range(len(df))]))
    twin_like = ids.str.contains(TWIN_SEPARATOR, regex=False)
    if twin_like.any():
        raise LensauditError(f"{source}: id: case {ids[twin_like].iloc[0]}: '{TWIN_SEPARATOR}' "
                             "marks counterfactual twins and cannot be part of a case id")
    if ids.duplicated().any():
        raise LensauditError(f"{source}: id: case {ids[ids.duplicated()].iloc[0]} appears twice "
                             f"in column '{spec.id}'")
    table = pd.DataFrame({"case_id": ids.to_numpy()})
    if spec.reference is not None:  # without one, the audit compares decision-makers
        table["decision"] = binary_values(df[spec.reference], ids, "reference", source,
                                           (spec.choices.positive, spec.choices.negative))
    cues = []
    for c in spec.cues:
        col = df[c.name]
        if col.isna().any():
            i = int(np.flatnonzero(col.isna().to_numpy())[0])
            raise LensauditError(f"{source}: case {ids.iloc[i]}: column '{c.name}' is empty")
        if c.kind == "numeric":
            values = pd.to_numeric(col, errors="coerce")
            if values.isna().any():
                i = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise LensauditError(f"{source}: case {ids.iloc[i]}: column '{c.name}' is "
                                     f"{col.iloc[i]!r}, not a number")
            table[c.name] = values.to_numpy(float)
        elif c.kind == "binary":
            table[c.name] = binary_values(col, ids, "binary cue", source)
        else:
            codes = col.astype(str).str.strip()
            levels = c.levels if c.levels is not None else {v: v for v in sorted(codes.unique())}
            unlisted = ~codes.isin(list(levels))
            if unlisted.any():
                i = int(np.flatnonzero(unlisted.to_numpy())[0])
                raise LensauditError(f"{source}: case {ids.iloc[i]}: column '{c.name}' has level "
                                     f"{codes.iloc[i]!r}, not listed in cues' levels")
            table[c.name] = codes.to_numpy()
            c = c.model_copy(update={"levels": levels})
        cues.append(Cue(c.name, c.kind, c.family, c.phrase or c.name.replace("_", " "),
                        dict(c.levels or {}), c.unit, c.protected, c.defines_outcome))
    schema = CueSchema(tuple(cues), spec.choices.positive, spec.choices.negative, spec.question,
                       spec.role)
    return CaseSet(spec.name, table, schema)


def schema_entries(s: CueSchema) -> dict:
    """A schema as a case-set file's entries (question, choices, role, cues)."""
    cues = []
    for c in s.cues:
        entry = {"name": c.name, "kind": c.kind, "phrase": c.phrase}
        if c.kind == "categorical":
            entry["levels"] = dict(c.levels)
        if c.unit:
            entry["unit"] = c.unit
        entry["family"] = c.family
        if c.protected:
            entry["protected"] = True
        if c.defines_outcome:
            entry["defines_outcome"] = True
        cues.append(entry)
    out = {"question": s.question,
           "choices": {"positive": s.positive_label, "negative": s.negative_label}}
    if s.role:
        out["role"] = s.role
    return {**out, "cues": cues}


def schema_from_entries(entries: dict) -> CueSchema:
    """The schema `schema_entries` wrote (a run's results.json keeps one)."""
    cues = tuple(Cue(c["name"], c["kind"], c.get("family", "cues"), c.get("phrase", c["name"]),
                     dict(c.get("levels", {})), c.get("unit", ""), c.get("protected", False),
                     c.get("defines_outcome", False)) for c in entries["cues"])
    return CueSchema(cues, entries["choices"]["positive"], entries["choices"]["negative"],
                     entries["question"], entries.get("role"))


def case_file_entries(cases: CaseSet, data: str) -> dict:
    """The case-set file that describes `cases`, as a mapping (see `write_case_file`)."""
    entries = schema_entries(cases.schema)
    return {"name": cases.name, "data": data, "id": "case_id", "reference": "decision",
            **entries}


def write_case_file(cases: CaseSet, path: str | Path, *, header: str = "") -> Path:
    """Write `cases` as a case-set file and its CSV beside it (`<stem>.csv`):
    case_id, the cues' raw values, and the reference decision in words.
    `header`: comment lines for the top of the YAML (provenance)."""
    import yaml

    path = Path(path)
    data = path.with_suffix(".csv")
    s = cases.schema
    table = cases.table[["case_id", *(c.name for c in s.cues)]].copy()
    table["decision"] = np.where(cases.table["decision"] == 1, s.positive_label, s.negative_label)
    table.to_csv(data, index=False)
    text = yaml.safe_dump(case_file_entries(cases, data.name), sort_keys=False, width=100,
                          allow_unicode=True)
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    path.write_text(comment + text)
    return path
