"""Cue diagnostics: what in a case set's columns would decide or weaken an audit.

Run before any decision (`check_cues`). Each rule reads the raw cue values
(before standardisation) and, for duplicates, the encoded columns:

* **One value sets a numeric cue's scale.** The share of the column's sum of
  squared deviations that leaves with its farthest case i,
  s = 1 - SS(other cases) / SS(all cases). Standardising divides the column by
  its standard deviation, so the other cases' values then span about sqrt(1 - s)
  of one: their variation, what the cue's weight is fitted on, is squeezed
  toward one number. At s >= `DOMINANT_SHARE_WARN` (one case outweighs all the
  others together), with the case at least `FAR_Z` robust standard deviations
  from the others' median, it is a warning; at s >= `DOMINANT_SHARE_REFUSE` (the other
  cases keep under 1% of the variance, a tenth of a standard deviation: the
  cue's weight is that one case's) or where the values overflow the
  arithmetic (1e308), the audit is refused. An ordinary sample comes nowhere
  near: German Credit's most skewed cue (credit amount) reaches 0.03. Where the
  other cases all share one value nothing is squeezed, and the next rule speaks.
* **Constant or nearly so.** A cue every case shares is encoded as 0 and gets
  weight 0 from every decision-maker, not a measured 0; a cue, a binary value
  or a categorical level that fewer than `FEW_CASES` cases hold (but some do)
  has a weight that rests on those cases alone. Levels no case holds are
  listed too (their weight is 0 by construction).
* **Columns that duplicate each other.** Two encoded columns of different
  cues with |correlation| >= `DUPLICATE_CORRELATION` carry the same
  information: the ridge penalty splits the weight between them, so each one's
  weight (and a protected share that reads one of them) is about halved.
  The one-hot columns of one cue are left out (a two-level cue's two columns
  are each other's negative by design).

Warnings are one line per rule (three items named, then how many more); the
first refusal is one `LensauditError` naming the case set, cue and case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.datasets._schema import CueSchema, Encoding, _levels, _numbers
from engine.errors import LensauditError

#: A case holding at least this share of a numeric cue's squared deviations
#: outweighs every other case together: warned.
DOMINANT_SHARE_WARN = 0.5
#: ... at least this share leaves the other cases under 1% of the variance: refused.
DOMINANT_SHARE_REFUSE = 0.99
#: ... and only a value this many robust standard deviations from the others'
#: median (`_robust_z`): in a small or skewed sample of ordinary values one
#: case can hold half the variance without being an error (lognormal incomes,
#: sigma 0.5, 10 cases: 40% of samples), and almost never lies this far out
#: (0.6%; none of 1,000 samples at 100 cases or more).
FAR_Z = 20.0
#: A value or level held by fewer cases than this (and by at least one) is
#: called rare: its weight rests on those cases alone.
FEW_CASES = 5
#: Encoded columns of two cues correlated at least this much duplicate each other.
DUPLICATE_CORRELATION = 0.99
#: Items named per warning line before "and N more".
NAMED = 3


@dataclass(frozen=True)
class CueFinding:
    """One thing a rule found.

    Attributes:
      rule: "scale", "constant", "rare", "absent" or "duplicate".
      refuse: True when it makes an estimate meaningless.
      item: what it is about, in words ("income = 1e+308 for case A17").
    """

    rule: str
    refuse: bool
    item: str


#: The warning line of each rule, with "{items}" for what it names.
_WARNING = {
    "scale": "one value sets the scale of a numeric cue (it holds at least half of the cue's "
             "variance, so every other case's values are squeezed together and the cue's "
             "weight rests mostly on that case; check the value and its unit, or give the "
             "cue on a log scale): {items}",
    "constant": "a cue is the same for every case, so its weight is 0 for every decision-maker, "
                "not measured: {items}",
    "rare": f"a cue value or level is held by fewer than {FEW_CASES} cases, so its weight rests "
            "on those cases alone: {items}",
    "absent": "a level no case holds (its weight is 0 by construction, not measured): {items}",
    "duplicate": "two cues' columns carry the same information (the ridge penalty splits the "
                 "weight between them, so each one's weight is about halved): {items}",
}


def _ids(case_ids: np.ndarray, mask: np.ndarray) -> str:
    held = [str(c) for c in case_ids[mask]]
    return ", ".join(held[:NAMED]) + (f" and {len(held) - NAMED} more" if len(held) > NAMED else "")


def _cases(k: int) -> str:
    return f"{k} case" + ("" if k == 1 else "s")


def _numeric_findings(name: str, x: np.ndarray, case_ids: np.ndarray) -> list[CueFinding]:
    """`x`: `[n]` a numeric cue's raw values (finite)."""
    values, counts = np.unique(x, return_counts=True)
    if len(values) == 1:
        return [CueFinding("constant", False, f"{name} (every case: {values[0]:g})")]
    common = values[np.argmax(counts)]
    others = x != common
    if others.sum() < FEW_CASES:  # the weight rests on a few cases: that is the finding
        return [CueFinding("rare", False, f"{name} other than {common:g} "
                           f"({_cases(int(others.sum()))}: {_ids(case_ids, others)})")]
    i, share = _dominant_case(x)
    with np.errstate(over="ignore", invalid="ignore"):
        overflows = not np.isfinite(np.std(x))
    if overflows or (share >= DOMINANT_SHARE_WARN and _robust_z(x, i) >= FAR_Z):
        median = float(np.median(x))
        times = f", {_times(abs(x[i] / median))} times the median {median:g}" if median else ""
        what = (f"{name} = {x[i]:g} for case {case_ids[i]}{times}, "
                + ("beyond what standardisation can compute" if overflows
                   else f"holding {np.floor(share * 1e4) / 100:.2f}% of the cue's variance"))
        return [CueFinding("scale", overflows or share >= DOMINANT_SHARE_REFUSE, what)]
    return []


def _times(ratio: float) -> str:
    """A ratio as a reader says it: 2.5, 1,000, 4.3e+304."""
    return f"{ratio:.2g}" if ratio < 10 else f"{ratio:,.0f}" if ratio < 1e7 else f"{ratio:.2g}"


def _robust_z(x: np.ndarray, i: int) -> float:
    """How far x[i] lies from the other cases, in robust standard deviations:
    |x_i - median| / (1.4826 MAD) over the others, or with the scaled mean
    absolute deviation (1.2533 MeanAD) where more than half of them are equal
    (Iglewicz and Hoaglin's modified z-score)."""
    others = np.delete(x, i)
    median = np.median(others)
    spread = 1.4826 * np.median(np.abs(others - median))
    if spread == 0:
        spread = 1.2533 * np.mean(np.abs(others - median))
    with np.errstate(over="ignore", divide="ignore"):
        return float(np.abs(x[i] - median) / spread) if spread > 0 else np.inf


def _log_variance(x: np.ndarray) -> float:
    """log of `x`'s variance, computed without overflow (-inf when constant)."""
    top = np.max(np.abs(x))
    if top == 0:
        return -np.inf
    v = np.var(x / top)
    return 2 * np.log(top) + np.log(v) if v > 0 else -np.inf


def _dominant_case(x: np.ndarray) -> tuple[int, float]:
    """(i, share): the case farthest from the mean, and the share of the
    column's variance that leaves with it, 1 - var(others) / var(all) (the
    others' own spread, so a column whose other cases are all equal has
    nothing to squeeze: share 0, and the rare-value rule speaks instead)."""
    top = np.max(np.abs(x))
    scaled = x / top  # scale-free, and 1e308 squared would overflow
    i = int(np.argmax(np.abs(scaled - scaled.mean())))
    others = np.delete(x, i)
    log_rest = _log_variance(others)
    if not np.isfinite(log_rest):
        return i, 0.0
    ratio = np.exp(log_rest - _log_variance(x)) * (len(others) / len(x))
    return i, float(max(0.0, 1.0 - ratio))


def _count_findings(name: str, labels: np.ndarray, levels: list[str] | None,
                    case_ids: np.ndarray) -> list[CueFinding]:
    """A binary or categorical cue: `labels` `[n]` its values as strings,
    `levels` the categorical cue's declared levels (None for a binary one)."""
    present, counts = np.unique(labels, return_counts=True)
    if len(present) == 1:
        return [CueFinding("constant", False, f"{name} (every case: {present[0]})")]
    out = []
    for level, k in zip(present, counts):
        if k < FEW_CASES:
            out.append(CueFinding("rare", False, f"{name}={level} ({_cases(int(k))}: "
                                  f"{_ids(case_ids, labels == level)})"))
    out += [CueFinding("absent", False, f"{name}={lvl}")
            for lvl in (levels or []) if lvl not in set(present)]
    return out


def _duplicate_findings(enc: Encoding) -> list[CueFinding]:
    """Pairs of encoded columns of different cues correlated >= `DUPLICATE_CORRELATION`."""
    X = np.asarray(enc.X, float)
    mean = X.mean(axis=0)
    # One [d, d] product and no standardised copy of X: memory stays that of the data.
    cov = X.T @ X / len(X) - np.outer(mean, mean)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    live = np.flatnonzero(sd > 1e-12 * (1 + np.abs(mean)))
    if len(live) < 2:
        return []
    corr = cov[np.ix_(live, live)] / np.outer(sd[live], sd[live])
    cue = [enc.cues[j].name if enc.cues else enc.columns[j] for j in live]
    out = []
    for a, b in zip(*np.nonzero(np.triu(np.abs(corr) >= DUPLICATE_CORRELATION, k=1))):
        if cue[a] != cue[b]:
            r = corr[a, b]
            out.append(CueFinding("duplicate", False, f"{enc.columns[live[a]]} and "
                                  f"{enc.columns[live[b]]} (correlation {r:+.3f})"))
    return out


def diagnose_cues(cases: pd.DataFrame, schema: CueSchema, enc: Encoding | None = None, *,
                  source: str = "case set") -> list[CueFinding]:
    """Every finding of the rules above on `cases` (a table with `case_id` and
    one raw column per cue), the duplicate rule on `enc` where given."""
    case_ids = cases["case_id"].astype(str).to_numpy()
    out = []
    for c in schema.cues:
        if c.kind == "numeric":
            out += _numeric_findings(c.name, _numbers(cases, c, source), case_ids)
        elif c.kind == "categorical":
            out += _count_findings(c.name, _levels(cases, c, source), list(c.levels), case_ids)
        else:
            out += _count_findings(c.name, np.array([f"{v:g}" for v in _numbers(cases, c, source)]),
                                   None, case_ids)
    if enc is not None and not any(f.refuse for f in out):
        out += _duplicate_findings(enc)
    return out


def cue_warnings(findings: list[CueFinding], source: str) -> list[str]:
    """One warning line per rule that found something (refusals left out)."""
    lines = []
    for rule, text in _WARNING.items():
        items = [f.item for f in findings if f.rule == rule and not f.refuse]
        if items:
            named = "; ".join(items[:NAMED])
            more = f"; and {len(items) - NAMED} more" if len(items) > NAMED else ""
            lines.append(f"{source}: {text.format(items=named + more)}")
    return lines


def check_cues(cases: pd.DataFrame, schema: CueSchema, enc: Encoding | None = None, *,
               source: str = "case set") -> list[str]:
    """Refuse a case set whose cue values make an estimate meaningless (one
    `LensauditError` naming the case set, cue and case); return the warning
    lines for what only weakens one."""
    findings = diagnose_cues(cases, schema, enc, source=source)
    refused = next((f for f in findings if f.refuse), None)
    if refused is not None:
        raise LensauditError(
            f"{source}: cue {refused.item}: one value sets the cue's whole scale, so "
            "standardising squeezes every other case's value to one number and the cue's weight "
            "would be that case's alone; correct the value (a unit or entry error?), drop the "
            "case, or leave the cue out")
    return cue_warnings(findings, source)
