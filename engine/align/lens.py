"""The lens audit of steered ADMs: which attribute differences drive each ADM's
choices on two-choice probes, against its backbone's baseline.

The probes become a case set of their own (`lens_encoding`: one column per
attribute), each backbone's baseline its reference, and every steered ADM a
cell, audited by the audit stage's own path (`engine.audit.audit_cell`): the
same refits, intervals, reasons and warnings as any lens audit, under the
job's `statistics.*` settings, with the baseline's side computed once per
backbone and shared by its ADMs (the same resamples, so their comparisons stay
paired).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.align.data import Probe
from engine.audit import (AuditResult, CellDecisions, OrgPolicy, StatisticsPlace, StatisticsSpec,
                          audit_cells, audit_result, lme_reference, org_reference, tabulate)
from engine.datasets import Cue, Encoding

#: Fewer merged two-choice probes than this: no lens audit (five is already
#: mostly ridge penalty; the figures then say why they are missing).
MIN_PROBES = 5


def lens_design(probes: list[Probe], attributes: list[str]) -> tuple[list[str], np.ndarray]:
    """Two-choice probes (merged by probe id) and their cue matrix `[n, k]`: per
    attribute, (score of choice 1 - score of choice 0) / 10, 0 where the probe
    does not measure it; then standardised (a constant column stays 0)."""
    merged: dict[str, dict] = {}
    for p in probes:
        if len(p.choices) != 2:
            continue
        row = merged.setdefault(p.probe_id, {})
        for a in p.attributes:
            if a in attributes:
                s = p.score(a)
                row[a] = (s[1] - s[0]) / 10.0
    ids = sorted(merged)
    X = np.array([[merged[i].get(a, 0.0) for a in attributes] for i in ids], float)
    sd = X.std(0)
    X = np.where(sd > 0, (X - X.mean(0)) / np.where(sd > 0, sd, 1), 0.0)
    return ids, X


def lens_encoding(X: np.ndarray, attributes: list[str]) -> Encoding:
    """The probes' cue matrix (`lens_design`, standardised already) as the audit's
    encoding: one column per attribute; an attribute no two-choice probe tells
    apart is a constant column, whose weight the tables report as not measured."""
    constant = [a for a, s in zip(attributes, np.asarray(X).std(0)) if s == 0]
    k = len(attributes)
    cues = [Cue(a, "numeric", a, a.replace("_", " ")) for a in attributes]
    return Encoding(np.asarray(X, float), list(attributes), constant, np.zeros(k), np.ones(k),
                    labels=list(attributes), cues=cues)


def backbone_cells(decisions: pd.DataFrame, ids: list[str], probes: list[Probe]):
    """Per backbone with a baseline answer on every lens probe: (model, the
    baseline's majority choice `[n]`, {condition: `CellDecisions`}) for each
    steered ADM that answered every probe (y: its share of choice 1 over its
    samples, trials: how many answers that share is the mean of)."""
    pid_of = {p.item_id: p.probe_id for p in probes}
    d = decisions.assign(probe_id=decisions["case_id"].map(pid_of))
    d = d[d["probe_id"].isin(ids) & (d["y"] >= 0)]
    for model, dm in d.groupby("model"):
        grouped = dm.groupby(["condition", "probe_id"])["y"]
        share = grouped.mean().unstack("condition").reindex(ids)
        count = grouped.size().unstack("condition").reindex(ids)
        if "baseline" not in share or share["baseline"].isna().any():
            continue
        y_base = (share["baseline"].to_numpy(float) > 0.5).astype(float)
        cells = {c: CellDecisions(share[c].to_numpy(float), share[c].to_numpy(float),
                                  count[c].to_numpy(float))
                 for c in share.columns if c != "baseline" and not share[c].isna().any()}
        yield model, y_base, cells


def lens_audit(decisions: pd.DataFrame, probes: list[Probe], attributes: list[str], *,
               stats: StatisticsSpec, place: StatisticsPlace | None = None
               ) -> dict[str, AuditResult]:
    """Each steered ADM against its backbone's baseline, in the lens model: per
    backbone, an `AuditResult` whose reference is its baseline (`org`: the
    baseline's policy; no cross-validated ceiling) and whose cells are its ADMs.
    `place`: where the cells' statistics run (`statistics.device`, `workers`);
    here by default. Empty with fewer than `MIN_PROBES` two-choice probes; a
    backbone without a steered ADM that answered every probe has no entry."""
    ids, X = lens_design(probes, attributes)
    if len(ids) < MIN_PROBES:
        return {}
    enc = lens_encoding(X, attributes)
    place = place if place is not None else StatisticsPlace("cpu")
    audits = {}
    for model, y_base, dms in backbone_cells(decisions, ids, probes):
        if not dms:
            continue  # a baseline and no steered ADM: nothing to compare with it
        reference = place.run(org_reference, enc, y_base, stats)
        lme = place.run(lme_reference, enc, y_base, reference, stats)
        cells, tables, protected = [], {}, {}
        for cell in audit_cells(enc, y_base, {(model, c): dm for c, dm in dms.items()}, stats,
                                reference, lme, place=place):
            tabulate(cell, enc, stats, cells, tables, protected)
        fit = reference.fit  # the baseline's policy, fitted once with its resamples
        audits[model] = audit_result(
            OrgPolicy(float(fit.intercept), np.asarray(fit.beta), np.nan, np.nan), cells, tables,
            protected, [], level=stats.level, seed=stats.seed)
    return audits


#: lens_by_attribute.csv: per ADM x attribute.
LENS_COLUMNS = ("model", "condition", "attribute", "beta_baseline", "beta_baseline_low",
                "beta_baseline_high", "beta_condition", "beta_condition_low",
                "beta_condition_high", "change", "change_low", "change_high", "status",
                "r_cos_cf_vs_baseline", "r_cos_cf_low", "r_cos_cf_high", "r_cos_vs_baseline",
                "p_perm", "n_probes", "note")


def lens_table(audits: dict[str, AuditResult]) -> pd.DataFrame:
    """The lens audit as one long table (`LENS_COLUMNS`): each ADM's and its
    baseline's weight on each attribute with intervals, the change with a paired
    interval, the cross-fitted alignment with its interval (the primary
    figure), the plain r_cos and the permutation p-value; `status` says why an
    attribute's weights are missing, `note` why the alignment is or, where it
    is defined, what to know of it (as summary.csv's `note`)."""
    rows = []
    for audit in audits.values():
        for cell in audit.cells:
            c, table = cell.comparison, audit.policy_tables[(cell.model, cell.condition)]
            common = {"model": cell.model, "condition": cell.condition,
                      "r_cos_cf_vs_baseline": c.r_cos_cf, "r_cos_cf_low": c.r_cos_cf_ci.low,
                      "r_cos_cf_high": c.r_cos_cf_ci.high, "r_cos_vs_baseline": c.r_cos,
                      "p_perm": c.p_perm, "n_probes": cell.n_cases,
                      "note": cell.alignment_reason or cell.alignment_note or ""}
            for t in table.itertuples():
                rows.append({**common, "attribute": t.column, "beta_baseline": t.beta_org,
                             "beta_baseline_low": t.beta_org_low,
                             "beta_baseline_high": t.beta_org_high, "beta_condition": t.beta_dm,
                             "beta_condition_low": t.beta_dm_low,
                             "beta_condition_high": t.beta_dm_high, "change": t.beta_diff,
                             "change_low": t.beta_diff_low, "change_high": t.beta_diff_high,
                             "status": t.status})
    return pd.DataFrame(rows, columns=list(LENS_COLUMNS))


def lens_tags(audits: dict[str, AuditResult]) -> dict[tuple[str, str], dict[str, str]]:
    """Per (model, condition): the MLflow tags saying why its alignment with its
    baseline is missing or what to know of it (`CellResult.alignment_tags`)."""
    return {(cell.model, cell.condition): cell.alignment_tags()
            for audit in audits.values() for cell in audit.cells}
