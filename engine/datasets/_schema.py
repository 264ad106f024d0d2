"""Cue schemas, case sets and the shared encoding (DESIGN.md, "Case set").

The encoding belongs to the schema so that the organisation and every LLM are
fitted in the same feature space. Two encodings (`ENCODINGS`):

* `onehot_standardised` (the default, and the public CALM code's normative
  weights): categorical cues one-hot with every level kept, then every column
  standardised to mean 0, variance 1 over the case set;
* `label` (the CALM analysis code's): one column per cue, a categorical cue as
  its value's position in the sorted list of the values present (scikit-learn's
  `LabelEncoder`), numeric and binary cues raw, nothing standardised.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd

from engine.errors import LensauditError

CueKind = Literal["binary", "numeric", "categorical"]


@dataclass(frozen=True)
class Cue:
    """One interpretable cue.

    Attributes:
      name: column name in the case table (snake_case).
      kind: binary, numeric or categorical.
      family: a group of related cues (e.g. "financial standing").
      phrase: how the cue is named in a prompt ("checking account").
      levels: categorical only: code -> plain-language value.
      unit: numeric only: unit appended in prompts ("months").
      protected: a protected attribute (age, sex, nationality, ...).
      defines_outcome: the cue is (part of) the reference decision itself, as
        ECHR's Issue-level findings are of the court's outcome: left out of
        the cues by default (`CaseSet.without_outcome_cues`), since an audit
        on it measures whether a model reads the answer off a cue.
    """

    name: str
    kind: CueKind
    family: str
    phrase: str
    levels: dict[str, str] = field(default_factory=dict)
    unit: str = ""
    protected: bool = False
    defines_outcome: bool = False

    def render(self, value) -> str:
        """Plain-language value of this cue for one case."""
        if self.kind == "categorical":
            return self.levels.get(str(value), str(value))
        if self.kind == "binary":
            return "yes" if float(value) > 0.5 else "no"
        v = float(value)
        text = f"{int(v)}" if v.is_integer() else f"{v:g}"
        return f"{text} {self.unit}".strip()

    def render_many(self, values) -> list[str]:
        """`render` of each of `values`, each distinct value rendered once."""
        seen: dict = {}
        out = []
        for v in values:
            try:
                text = seen[v]
            except KeyError:
                text = seen[v] = self.render(v)
            except TypeError:  # an unhashable value
                text = self.render(v)
            out.append(text)
        return out


@dataclass(frozen=True)
class CueSchema:
    """The cues of a case set and the meaning of its decisions.

    Attributes:
      cues: the cues, in prompt order.
      positive_label / negative_label: the answer words for decision 1 / 0.
      question: what is decided, in words that follow "decide": "whether the
        applicant is a good credit risk".
      role: who the decision-maker is ("You are a letting agent."), or None
        for the neutral "You are a decision-maker".
    """

    cues: tuple[Cue, ...]
    positive_label: str
    negative_label: str
    question: str
    role: str | None = None

    @property
    def choices(self) -> tuple[str, str]:
        return (self.positive_label, self.negative_label)

    def cue(self, name: str) -> Cue:
        for c in self.cues:
            if c.name == name:
                return c
        raise KeyError(name)

    def columns(self) -> list[str]:
        """Encoded column names: `cue` or `cue=level` for categorical cues."""
        out: list[str] = []
        for c in self.cues:
            if c.kind == "categorical":
                out.extend(f"{c.name}={lvl}" for lvl in c.levels)
            else:
                out.append(c.name)
        return out

    def column_cue(self) -> list[Cue]:
        """The cue behind each encoded column, aligned with `columns()`."""
        out: list[Cue] = []
        for c in self.cues:
            out.extend([c] * (len(c.levels) if c.kind == "categorical" else 1))
        return out

    def column_labels(self) -> list[str]:
        """Readable label per encoded column ("checking account: below 0 DM")."""
        out = []
        for c in self.cues:
            if c.kind == "categorical":
                out.extend(f"{c.phrase}: {text}" for text in c.levels.values())
            else:
                out.append(c.phrase)
        return out

    def families(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.cues:
            seen.setdefault(c.family, None)
        return list(seen)


@dataclass(frozen=True)
class Encoding:
    """The encoded cue matrix of a case set.

    Attributes:
      X: `[n, d]` encoded columns (standardised in the default encoding).
      columns: the d column names.
      constant: names of columns constant over the case set (encoded as 0,
        so their weight is 0 for every decision-maker).
      mean, scale: per-column statistics used for standardisation.
      absent: names of one-hot columns of levels that no case has (a subset
        of `constant`): nothing about them is measured.
    """

    X: np.ndarray
    columns: list[str]
    constant: list[str]
    mean: np.ndarray
    scale: np.ndarray
    absent: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # readable label per column
    cues: list[Cue] = field(default_factory=list)  # the cue behind each column
    method: str = "onehot_standardised"  # one of ENCODINGS

    def column_status(self) -> list[str]:
        """Per column: "" (measured), "absent" (no case has this level) or
        "constant" (every case has the same value); weights of the last two
        are 0 by construction, not by measurement."""
        absent, constant = set(self.absent), set(self.constant)
        return ["absent" if c in absent else "constant" if c in constant else ""
                for c in self.columns]


def _cue_column(cases: pd.DataFrame, c: Cue, source: str) -> pd.Series:
    if c.name not in cases.columns:
        raise LensauditError(f"{source}: missing cue column '{c.name}'")
    return cases[c.name]


def _levels(cases: pd.DataFrame, c: Cue, source: str) -> np.ndarray:
    """`[n]` a categorical cue's codes as strings, each one of the cue's levels."""
    codes = _cue_column(cases, c, source).astype(str)
    unknown = set(codes) - set(c.levels)
    if unknown:
        raise LensauditError(f"{source}: cue '{c.name}' has unknown level(s) {sorted(unknown)[:5]}")
    return codes.to_numpy()


def _numbers(cases: pd.DataFrame, c: Cue, source: str) -> np.ndarray:
    """`[n]` a numeric or binary cue's values."""
    values = pd.to_numeric(_cue_column(cases, c, source), errors="coerce").to_numpy(float)
    if not np.all(np.isfinite(values)):
        case = cases["case_id"].iloc[int(np.flatnonzero(~np.isfinite(values))[0])]
        raise LensauditError(f"{source}: cue '{c.name}' is not numeric for case {case}")
    return values


def _raw_columns(cases: pd.DataFrame, schema: CueSchema, source: str) -> np.ndarray:
    """`[n, d]` one-hot (every level kept) and numeric columns, unstandardised."""
    blocks = []
    for c in schema.cues:
        if c.kind == "categorical":
            codes = _levels(cases, c, source)
            blocks.append(np.stack([(codes == lvl).astype(float) for lvl in c.levels], 1))
        else:
            blocks.append(_numbers(cases, c, source)[:, None])
    return np.concatenate(blocks, axis=1)


#: The encodings a job (`statistics.encoding`) or `lensaudit fit --encoding` may ask for.
ENCODINGS = ("onehot_standardised", "label")


def encode(cases: pd.DataFrame, schema: CueSchema, source: str = "case set",
           method: str = "onehot_standardised") -> Encoding:
    """The cue matrix of `cases` in one of `ENCODINGS` (the default: one-hot,
    every level kept, then every column standardised over `cases`)."""
    if method == "label":
        return label_encode(cases, schema, source)
    if method != "onehot_standardised":
        raise LensauditError(f"unknown encoding '{method}' (known: {', '.join(ENCODINGS)})")
    raw = _raw_columns(cases, schema, source)
    one_hot = np.concatenate([np.full(len(c.levels), True) if c.kind == "categorical"
                              else np.array([False]) for c in schema.cues])
    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    constant = std == 0
    scale = np.where(constant, 1.0, std)
    X = np.where(constant, 0.0, (raw - mean) / scale)
    columns = schema.columns()
    absent = one_hot & (mean == 0)
    return Encoding(X, columns, [columns[j] for j in np.flatnonzero(constant)], mean, scale,
                    [columns[j] for j in np.flatnonzero(absent)], schema.column_labels(),
                    schema.column_cue())


def label_encode(cases: pd.DataFrame, schema: CueSchema, source: str = "case set") -> Encoding:
    """One column per cue, unstandardised (the CALM analysis code's encoding):
    a categorical cue's value as its position in the sorted list of the values
    present in `cases` (as scikit-learn's `LabelEncoder`), other cues raw.

    A constant column is set to 0: with the intercept unpenalised its ridge
    weight is 0 at any value, so this changes nothing but the reporting.
    """
    blocks = []
    for c in schema.cues:
        if c.kind == "categorical":
            codes = _levels(cases, c, source)
            blocks.append(np.searchsorted(np.unique(codes), codes).astype(float))
        else:
            blocks.append(_numbers(cases, c, source))
    raw = np.stack(blocks, axis=1)
    constant = raw.std(axis=0) == 0
    columns = [c.name for c in schema.cues]
    d = len(columns)
    return Encoding(np.where(constant, 0.0, raw), columns,
                    [columns[j] for j in np.flatnonzero(constant)], np.zeros(d), np.ones(d),
                    [], [c.phrase for c in schema.cues], list(schema.cues), "label")


def encode_like(cases: pd.DataFrame, schema: CueSchema, enc: Encoding,
                source: str = "case set") -> np.ndarray:
    """`[n, d]` rows encoded with another case set's standardisation (`enc`):
    counterfactual twins in the feature space of the cases they copy."""
    raw = _raw_columns(cases, schema, source)
    constant = np.isin(enc.columns, enc.constant)
    return np.where(constant, 0.0, (raw - enc.mean) / enc.scale)


#: Separates a case id from the change that made a counterfactual twin of it:
#: "T0001~nationality=PL" is case T0001 with nationality set to PL.
TWIN_SEPARATOR = "~"


def base_case_id(case_id: str) -> str:
    """The case a twin copies ("T0001~age=24" -> "T0001"); a case's own id otherwise."""
    return str(case_id).split(TWIN_SEPARATOR, 1)[0]


#: The smallest case set lensaudit fits a policy on, and the fewest cases of
#: each reference decision. Below these a bootstrap resample often holds one
#: class only, so a cosine and its interval say nothing (3 cases gave
#: r_cos -1.000 [-1.000, -1.000]).
MIN_CASES = 10
MIN_PER_DECISION = 5
#: The fewest cases per encoded column at which the calibration grid found the
#: cross-fitted cosine calibrated (n = 600, 63 columns: bias within 0.035 and
#: coverage 0.94-0.99); at 5 or fewer (n = 100 with 20 or 45 columns) it read
#: low by up to 0.40 and its interval covered as little as 0.89
#: (benchmarks/README.md, "calibration.py").
CALIBRATED_CASES_PER_COLUMN = 600 / 63


def check_sample_size(n: int, n_positive: int | None, n_columns: int,
                      source: str) -> list[str]:
    """Refuse a case set too small to audit; warn where only the ridge penalty
    keeps the fit defined.

    The rule (README, "How small a case set may be"): at least `MIN_CASES`
    cases and `MIN_PER_DECISION` of each reference decision, or a one-line
    LensauditError naming the numbers. More encoded columns than cases is
    allowed (the ridge fit is unique for any n, as in the public CALM code)
    but returned as a warning: weights are shrunk toward 0 and intervals are
    wide; so is a case set too small for the cross-fitted alignment figure
    (`kernels.cross_fitted_alignment`), or with fewer cases per column than
    the calibration grid found calibrated. Returns the warnings. `n_positive`
    None: a case set without a reference (only the number of cases counts).
    """
    if n == 0:
        raise LensauditError(f"{source}: no cases")
    if n_positive is None:
        if n < MIN_CASES:
            raise LensauditError(f"{source}: {n} cases are too few to audit: at least "
                                 f"{MIN_CASES} are needed")
    elif n < MIN_CASES or min(n_positive, n - n_positive) < MIN_PER_DECISION:
        raise LensauditError(
            f"{source}: {n} cases ({n_positive} positive, {n - n_positive} negative reference "
            f"decisions) are too few to audit: at least {MIN_CASES} cases and "
            f"{MIN_PER_DECISION} of each decision are needed")
    out = []
    if n_columns > n:
        out.append(f"{source}: {n_columns} encoded cue columns for {n} cases: the policies are "
                   "defined only through the ridge penalty, so weights are shrunk toward 0 and "
                   "intervals are wide")
    if n_columns >= n // 2:
        out.append(f"{source}: the alignment figure (cross-fitted cosine) needs each half of the "
                   f"cases to outnumber the {n_columns} encoded columns; with {n} cases it will "
                   f"be reported undefined (at least {2 * n_columns + 2} cases are needed)")
    elif n < CALIBRATED_CASES_PER_COLUMN * n_columns:
        out.append(f"{source}: {n} cases for {n_columns} encoded columns ({n / n_columns:.1f} per "
                   f"column): below {CALIBRATED_CASES_PER_COLUMN:.1f} per column the calibration "
                   "grid found the alignment figure (r_cos_cf) biased low by up to 0.4 and its "
                   "interval covering as little as 0.89; read it as indicative")
    return out


@dataclass(frozen=True)
class CaseSet:
    """Cases with cues, the reference decision and a plain-language profile.

    `table` has `case_id` (unique), one column per cue (raw values), `decision`
    (0/1: the reference decision-maker; absent for a case set without a
    reference), and optional extra columns.
    """

    name: str
    table: pd.DataFrame
    schema: CueSchema

    def __post_init__(self):
        t = self.table
        if "case_id" not in t.columns:
            raise LensauditError(f"case set '{self.name}': missing column 'case_id'")
        if t["case_id"].duplicated().any():
            dup = t.loc[t["case_id"].duplicated(), "case_id"].iloc[0]
            raise LensauditError(f"case set '{self.name}': duplicate case_id {dup}")
        if self.has_reference and not t["decision"].isin([0, 1]).all():
            raise LensauditError(f"case set '{self.name}': 'decision' must be 0/1")

    def __len__(self) -> int:
        return len(self.table)

    @property
    def has_reference(self) -> bool:
        """Whether the case set holds the organisation's decisions."""
        return "decision" in self.table.columns

    def without_outcome_cues(self) -> "CaseSet":
        """The case set with the cues that define the reference decision left out."""
        keep = tuple(c for c in self.schema.cues if not c.defines_outcome)
        if len(keep) == len(self.schema.cues):
            return self
        if not keep:
            raise LensauditError(f"case set '{self.name}': every cue defines the outcome; "
                                 "set dataset.outcome_cues: include to audit on them")
        return CaseSet(self.name, self.table, replace(self.schema, cues=keep))

    @property
    def outcome_cues(self) -> list[str]:
        """The names of the cues that define the reference decision."""
        return [c.name for c in self.schema.cues if c.defines_outcome]

    def encode(self, method: str = "onehot_standardised") -> Encoding:
        """The cue matrix in one of `ENCODINGS`."""
        return encode(self.table, self.schema, f"case set '{self.name}'", method)

    def profile(self, row: pd.Series) -> str:
        """The case as a bulleted plain-language profile, cues in schema order."""
        return "\n".join(f"- {c.phrase}: {c.render(row[c.name])}" for c in self.schema.cues)

    @functools.cached_property
    def profiles(self) -> list[str]:
        """Every case's `profile`, in table order: rendered once, as every
        model and condition asks about the same cases (30 cells of 1,000 cases
        rendered them again each, 6 s of a job's audit stage)."""
        # A column at a time, each distinct value rendered once (a row at a
        # time took 17 s for 100,000 cases). The values are those `iterrows`
        # handed `profile`: the whole table interleaved into one array.
        values = self.table.values
        where = {name: j for j, name in enumerate(self.table.columns)}
        lines = [[f"- {cue.phrase}: {text}" for text in cue.render_many(values[:, where[cue.name]])]
                 for cue in self.schema.cues]
        return ["\n".join(parts) for parts in zip(*lines)] if lines else [""] * len(self)

    def subset(self, *, per_class: int | None = None, n: int | None = None,
               seed: int = 0) -> "CaseSet":
        """A seeded subset: `per_class` cases of each decision, or `n` in all.

        A class with fewer cases than asked is taken whole.
        """
        rng = np.random.default_rng(seed)
        t = self.table
        if per_class is not None:
            if not self.has_reference:
                raise LensauditError(f"dataset.subset.per_class draws from each reference "
                                     f"decision, and case set '{self.name}' has none; use "
                                     "dataset.subset.n")
            parts = []
            for label in (0, 1):
                idx = np.flatnonzero(t["decision"].to_numpy() == label)
                take = min(per_class, idx.size)
                parts.append(np.sort(rng.choice(idx, size=take, replace=False)))
            keep = np.sort(np.concatenate(parts))
        elif n is not None:
            keep = np.sort(rng.choice(len(t), size=min(n, len(t)), replace=False))
        else:
            return self
        return CaseSet(self.name, t.iloc[keep].reset_index(drop=True), self.schema)
