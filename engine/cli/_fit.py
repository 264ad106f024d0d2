"""`lensaudit fit`: the lens-model statistics on any decisions table, no model needed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from engine.audit import (CellDecisions, StatisticsSpec, audit_cell, cross_validated,
                          determined_reason, lme_reference, mentions, org_reference,
                          stated_vs_used)
from engine.cli._argtypes import int_at_least, level, positive_float
from engine.datasets import ENCODINGS, CaseSet, Cue, CueSchema, check_cues, check_sample_size
from engine.errors import LensauditError
from engine.files import read_table


def _binary(df: pd.DataFrame, col: str, path) -> np.ndarray:
    if col not in df.columns:
        raise LensauditError(f"{path}: no column '{col}'")
    v = pd.to_numeric(df[col], errors="coerce")
    if v.isna().any() or not v.isin([0, 1]).all():
        bad = df.index[v.isna() | ~v.isin([0, 1])][0]
        raise LensauditError(f"{path}: column '{col}' must be 0/1 (row {bad}: {df[col].iloc[bad]!r})")
    return v.to_numpy(float)


def _probability(df: pd.DataFrame, col: str, path) -> np.ndarray:
    if col not in df.columns:
        raise LensauditError(f"{path}: no column '{col}' (--candidate-prob)")
    v = pd.to_numeric(df[col], errors="coerce")
    bad = v.isna() | (v < 0) | (v > 1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise LensauditError(f"{path}: column '{col}' must hold probabilities in [0, 1] "
                             f"(row {row}: {df[col].astype(str).iloc[row]!r})")
    return v.to_numpy(float)


def _texts(df: pd.DataFrame, col: str, path) -> list:
    if col not in df.columns:
        raise LensauditError(f"{path}: no column '{col}' (--reasons)")
    return [v if isinstance(v, str) else None for v in df[col]]


def schema_from_table(df: pd.DataFrame, cues: list[str], path) -> CueSchema:
    """Numeric columns are numeric cues; anything else is categorical (one-hot)."""
    out = []
    for name in cues:
        if name not in df.columns:
            raise LensauditError(f"{path}: no cue column '{name}'")
        if df[name].isna().any():
            row = int(np.flatnonzero(df[name].isna().to_numpy())[0])
            raise LensauditError(f"{path}: cue column '{name}' is empty in row {row}")
        if pd.api.types.is_numeric_dtype(df[name]):
            out.append(Cue(name, "numeric", "cues", name))
        else:
            levels = sorted(df[name].astype(str).unique())
            out.append(Cue(name, "categorical", "cues", name, {lvl: lvl for lvl in levels}))
    return CueSchema(tuple(out), "1", "0", "whether the decision is positive")


def _clean(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def fit_table(path, cues, reference, candidates, *, bootstrap=1000, permutations=1000,
              seed=0, C=1.0, interval="basic", level=0.95, probabilities=None,
              encoding="onehot_standardised", reasons=None,
              warn=lambda message: None) -> list[dict]:
    """The audit of each candidate column against the reference column: the
    job's own audit of a cell (`engine.audit.audit_cell`), so a candidate gets
    the figures, under the names, that a job's cell gets (`fit_record`).

    `probabilities`: None, or one column name per candidate (None or "-" for a
    candidate without one) holding its probability of the positive answer;
    those candidates get the soft lens too (`r_cos_soft`), and their AUC is
    of the probabilities. `encoding`: one of `engine.datasets.ENCODINGS`.
    `reasons`: likewise one column per candidate holding the reason it gave
    for each decision: adds the stated-versus-used comparison (`stated_*`). The cue
    values (`check_cues`) and sizes (`check_sample_size`) are checked first: a
    table whose values or size make the audit meaningless is refused in one
    line; `warn` receives the warnings of what only weakens it.
    """
    probabilities, reasons = list(probabilities or []), list(reasons or [])
    for flag, given in (("--candidate-prob", probabilities), ("--reasons", reasons)):
        if given and len(given) != len(candidates):
            raise LensauditError(f"{flag} is given {len(given)} time(s) for {len(candidates)} "
                                 "--candidate(s): give one per candidate, '-' for one without")

    df = read_table(path)
    if not cues:
        raise LensauditError("--cues names no column")
    schema = schema_from_table(df, cues, path)
    table = df[cues].copy()
    table.insert(0, "case_id", [str(i) for i in range(len(df))])
    table["decision"] = _binary(df, reference, path).astype(int)
    candidate_y = {cand: _binary(df, cand, path) for cand in candidates}
    candidate_p = {cand: _probability(df, col, path)
                   for cand, col in zip(candidates, probabilities) if col not in (None, "-")}
    candidate_r = {cand: _texts(df, col, path)
                   for cand, col in zip(candidates, reasons) if col not in (None, "-")}
    cases = CaseSet(Path(path).name, table, schema)
    enc = cases.encode(encoding)
    for message in check_cues(table, schema, enc, source=str(path)) + check_sample_size(
            len(table), int(table["decision"].sum()), len(enc.columns),
            f"{path} (reference '{reference}')"):
        warn(message)
    y_org = table["decision"].to_numpy(float)
    stats = StatisticsSpec(C=C, bootstrap=bootstrap, permutations=permutations, seed=seed,
                           interval=interval, level=level, encoding=encoding)
    cv = cross_validated(enc.X, y_org, stats)  # as a job's ceiling
    determined = determined_reason(cv.accuracy, cv.auc)
    if determined:
        warn(f"{path} (reference '{reference}'): {determined}")
    # The reference's side once, shared by every candidate and lens (paired),
    # as a job shares the organisation's among its cells.
    ref = org_reference(enc, y_org, stats)
    extras = lme_reference(enc, y_org, ref, stats)
    results = []
    for cand, y in candidate_y.items():
        p = candidate_p.get(cand)
        dm = CellDecisions(y, y if p is None else p, np.ones(len(y)), p is not None)
        cell = audit_cell(enc, y_org, dm, model=cand, condition="fit", stats=stats,
                          reference=ref, lme=extras)
        if cand in candidate_r:
            cell.stated = stated_vs_used(mentions(candidate_r[cand], schema), schema, enc.cues,
                                         cell.comparison, ref.boot_weights, X=enc.X, y=y,
                                         level=level)
        results.append(fit_record(cand, cell, enc.columns))
    return results


def fit_record(candidate: str, cell, columns: list[str]) -> dict:
    """A candidate's audit as `lensaudit fit --json` prints it: the job cell's
    metrics under the job's names (`CellResult.metrics`), why a figure is
    missing or what to know of it (the job's tags, without their prefix), both
    policies, and the stated-versus-used table where there were reasons."""
    c = cell.comparison
    record = {"candidate": candidate, "n": cell.n_cases,
              **{k: _clean(float(v)) for k, v in cell.metrics().items()},
              **{tag.removeprefix("lensaudit."): text
                 for tag, text in cell.alignment_tags().items()},
              "beta_reference": dict(zip(columns, map(float, c.beta_org))),
              "beta_candidate": dict(zip(columns, map(float, c.beta_dm)))}
    if cell.soft is not None:
        record["beta_soft"] = dict(zip(columns, map(float, cell.soft.beta_dm)))
    if cell.stated is not None:
        record["stated_cues"] = [
            {k: (bool(v) if k in ("used", "protected") else _clean(v)
                 if isinstance(v, float) else v) for k, v in row.items()}
            for row in cell.stated.table.to_dict("records")]
    return record


def _cmd_fit(args) -> int:
    import sys

    results = fit_table(args.table, [c.strip() for c in args.cues.split(",") if c.strip()],
                        args.reference, args.candidate, bootstrap=args.bootstrap,
                        permutations=args.permutations, seed=args.seed, C=args.C,
                        interval=args.interval, level=args.level,
                        probabilities=args.candidate_prob, encoding=args.encoding,
                        reasons=args.reasons,
                        warn=lambda m: print(f"lensaudit: warning: {m}", file=sys.stderr))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        al = _alignment_text(r, "r_cos_cf")
        plain = "undefined" if r["r_cos"] is None else f"{r['r_cos']:+.3f}"
        soft = f"; soft lens {_alignment_text(r, 'r_cos_soft')}" if "r_cos_soft" in r else ""
        print(f"{r['candidate']}: alignment (cross-fitted cosine) {al}{soft}; plain r_cos "
              f"{plain}, p_perm {_num(r['p_perm'])}; accuracy {r['accuracy']:.3f}, "
              f"AUC vs reference {_num(r['auc_vs_org'])}, kappa {_num(r['kappa'])}")
        if "stated_cues" in r:
            print("  " + _stated_text(r))
    return 0


def _stated_text(st: dict) -> str:
    """The stated-versus-used comparison of a `fit_record` in one line."""
    ci = ("" if st["stated_spearman_low"] is None else
          f" [{st['stated_spearman_low']:+.2f}, {st['stated_spearman_high']:+.2f}]")
    text = (f"stated vs used ({st['n_reasons']:.0f} reasons): Spearman(mention rate, weight) "
            f"{_num(st['stated_spearman'])}{ci}; cited cues pointing to the answer given "
            f"{_num(st['stated_direction'])}")
    for finding in ("used, never cited", "cited, not used"):
        names = [c["cue"] + (" (protected)" if c["protected"] else "")
                 for c in st["stated_cues"] if c["finding"] == finding]
        if names:
            text += f"; {finding}: {', '.join(names)}"
    return text


def _num(v) -> str:
    return "undefined" if v is None else f"{0.0 if abs(v) < 5e-4 else v:.3f}"  # no "-0.000"


def _alignment_text(r: dict, name: str) -> str:
    why = r.get(f"{name}_undefined") or r.get(f"{name}_note") or ""
    if r[name] is None:
        return "undefined: " + why
    if r[f"{name}_ci_low"] is None:
        return f"{r[name]:+.3f}, no interval: {why}"
    return f"{r[name]:+.3f} [{r[name + '_ci_low']:+.3f}, {r[name + '_ci_high']:+.3f}]"


def add_fit_parser(sub) -> None:
    p = sub.add_parser("fit", help="lens-model statistics on a decisions table (CSV/Parquet)")
    p.add_argument("table")
    p.add_argument("--cues", required=True, help="comma-separated cue columns")
    p.add_argument("--reference", required=True, help="0/1 column of the reference decisions")
    p.add_argument("--candidate", required=True, action="append",
                   help="0/1 column of a candidate's decisions (repeatable)")
    p.add_argument("--candidate-prob", action="append", metavar="COLUMN",
                   help="the probability of the positive answer behind the candidate's "
                        "decisions, paired in order with --candidate ('-' for one without): "
                        "adds the soft lens (r_cos_soft), a policy fitted to the probabilities")
    p.add_argument("--reasons", action="append", metavar="COLUMN",
                   help="the reason the candidate gave for each decision, paired in order "
                        "with --candidate ('-' for one without): adds the stated-versus-used "
                        "comparison (which cues the reasons cite against the cues the "
                        "decisions weigh)")
    p.add_argument("--bootstrap", type=int_at_least(10), default=1000,
                   help="bootstrap resamples (at least 10)")
    p.add_argument("--permutations", type=int_at_least(10), default=1000,
                   help="permutation refits (at least 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--C", type=positive_float, default=1.0,
                   help="inverse ridge penalty (> 0), the same for every decision-maker")
    p.add_argument("--level", type=level, default=0.95, help="interval coverage, in (0, 1)")
    p.add_argument("--interval", choices=["basic", "percentile", "bca"], default="basic")
    p.add_argument("--encoding", choices=ENCODINGS, default=ENCODINGS[0],
                   help="onehot_standardised: one-hot, every column standardised (default); "
                        "label: one column per cue, categories as their position among the "
                        "sorted values, nothing standardised (the CALM analysis code's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_fit)
