"""Audits without a reference (issue 15, item 5): no organisation to align to.

A case set without a `reference` column is audited decision-maker by
decision-maker and pair by pair: each one's policy with bootstrap intervals,
the share of |beta| it puts on protected cues, and every two decision-makers
compared by the audit of a cell with one of them in the organisation's place
(`audit_cell`: the same function, figures and names as a job's cells).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

import kernels
from engine.audit._cells import (STATUS_TEXT, CellDecisions, audit_cell, cell_key,
                                 format_estimate, interval_method, lme_reference, org_reference,
                                 policy_undefined_reason, protected_share)
from engine.audit._settings import StatisticsSpec
from engine.datasets import CaseSet, Encoding

PEER_COLUMNS = ["model", "condition", "n_cases", "positive_rate", "protected_share",
                "protected_share_low", "protected_share_high", "policy_note"]
PAIR_COLUMNS = ["a", "b", "n_cases", "r_cos_cf", "r_cos_cf_ci_low", "r_cos_cf_ci_high", "r_cos",
                "p_perm", "agreement", "note"]


@dataclass
class Peer:
    """One decision-maker of a reference-free audit: its decisions and policy."""

    model: str
    condition: str
    cases: CaseSet  # the cases it decided (an import may have judged some)
    enc: Encoding
    dm: CellDecisions
    policy: pd.DataFrame | None = None  # per-column weights with intervals
    share: tuple[float, float, float] | None = None  # protected share, low, high
    note: str = ""  # why its weights are undefined, if they are
    twins: pd.DataFrame | None = None  # counterfactual effects, as a model cell's

    @property
    def label(self) -> str:
        return f"{self.model} x {self.condition}"

    def metrics(self) -> dict[str, float]:
        """Its figures: cases, positive rate, protected share with its interval."""
        share = self.share or (np.nan, np.nan, np.nan)
        return {"n_cases": float(len(self.dm.y)), "positive_rate": float(np.mean(self.dm.y)),
                "protected_share": share[0], "protected_share_low": share[1],
                "protected_share_high": share[2]}


def _refits(X: np.ndarray, y: np.ndarray, st: StatisticsSpec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.ConstantCueWarning)
        return kernels.lens_reference(X, y, key=cell_key(st), n_bootstrap=st.bootstrap,
                                      C=st.C, interval=st.interval)


def fit_peer(peer: Peer, st: StatisticsSpec) -> Peer:
    """The decision-maker's policy table and protected share, with intervals."""
    ref = _refits(peer.enc.X, peer.dm.y, st)
    beta, boot = np.asarray(ref.fit.beta), np.asarray(ref.boot.beta)
    method = interval_method(st.interval)
    ci = kernels.bootstrap_interval(beta, boot, level=st.level, method=method)
    cues = peer.enc.cues
    table = pd.DataFrame({
        "column": peer.enc.columns, "label": peer.enc.labels,
        "family": [c.family for c in cues], "protected": [c.protected for c in cues],
        "beta_org": np.nan, "beta_org_low": np.nan, "beta_org_high": np.nan,
        "beta_dm": beta, "beta_dm_low": np.asarray(ci.low), "beta_dm_high": np.asarray(ci.high)})
    table["status"] = [STATUS_TEXT.get(x, x) for x in peer.enc.column_status()]
    table.loc[table["status"] != "", ["beta_dm", "beta_dm_low", "beta_dm_high"]] = np.nan
    peer.note = policy_undefined_reason(beta) or ""
    if peer.note:
        table[["beta_dm", "beta_dm_low", "beta_dm_high"]] = np.nan
    peer.policy = table
    mask = table["protected"].to_numpy(bool)
    if mask.any() and not peer.note:
        obs, _, ci = protected_share(beta, boot, mask, level=st.level)
        peer.share = (obs, ci.low, ci.high)
    return peer


def _common(a: Peer, b: Peer) -> tuple[Encoding, np.ndarray, CellDecisions]:
    """The encoding of the cases both decided (standardised over them), a's
    answers and b's decisions on them."""
    ids_a = a.cases.table["case_id"].astype(str).to_numpy()
    ids_b = b.cases.table["case_id"].astype(str).to_numpy()
    if len(ids_a) == len(ids_b) and (ids_a == ids_b).all():
        return a.enc, a.dm.y, b.dm
    both = np.intersect1d(ids_a, ids_b)
    ia, ib = (pd.Index(ids).get_indexer(both) for ids in (ids_a, ids_b))
    sub = CaseSet(a.cases.name, a.cases.table.iloc[ia].reset_index(drop=True), a.cases.schema)
    dm = CellDecisions(b.dm.y[ib], b.dm.p[ib], b.dm.trials[ib], b.dm.has_probability)
    return sub.encode(a.enc.method), a.dm.y[ia], dm


def compare_pair(a: Peer, b: Peer, st: StatisticsSpec, sides: dict | None = None) -> dict:
    """Two decision-makers compared: the audit of a cell (`audit_cell`) with
    `a` in the organisation's place, so a pair reports a cell's figures under
    its names (`r_cos_cf` with its interval, `r_cos`, `p_perm`, the soft lens
    where `b` has probabilities, ...), and `agreement`, the share of cases
    they answer alike. `sides`: a's organisation side on its own cases (its
    reference and Lens Model extras), kept there for a's other pairs, as a
    job's cells share the organisation's."""
    enc, ya, dm = _common(a, b)
    row = {"a": a.label, "b": b.label}
    if len(ya) < 10 or a.note or b.note:
        why = a.note or b.note or f"only {len(ya)} cases decided by both"
        return {**row, "n_cases": float(len(ya)), "agreement": np.nan, "note": why}
    reference = extras = None
    if sides is not None and enc is a.enc:  # on cases b shares only in part: its own side
        if id(a) not in sides:
            ref = org_reference(enc, ya, st)
            sides[id(a)] = (ref, lme_reference(enc, ya, ref, st))
        reference, extras = sides[id(a)]
    cell = audit_cell(enc, ya, dm, model=b.model, condition=b.condition, stats=st,
                      reference=reference, lme=extras)
    return {**row, **cell.metrics(), "agreement": float(np.mean((ya > 0.5) == (dm.y > 0.5))),
            "note": cell.alignment_reason or cell.alignment_note or ""}


def pairwise(peers: list[Peer], st: StatisticsSpec) -> pd.DataFrame:
    """Every two decision-makers compared (`compare_pair`), in listing order:
    `PAIR_COLUMNS` first, then every other figure of the cells' audit."""
    sides: dict = {}
    rows = [compare_pair(a, b, st, sides) for a, b in itertools.combinations(peers, 2)]
    table = pd.DataFrame(rows)
    for column in PAIR_COLUMNS:
        if column not in table:
            table[column] = np.nan if column not in ("a", "b", "note") else ""
    return table[PAIR_COLUMNS + [c for c in table.columns if c not in PAIR_COLUMNS]]


def peer_table(peers: list[Peer]) -> pd.DataFrame:
    """One row per decision-maker: its positive rate and protected share."""
    rows = [{"model": p.model, "condition": p.condition, **p.metrics(), "policy_note": p.note}
            for p in peers]
    table = pd.DataFrame(rows, columns=PEER_COLUMNS)
    return table.astype({"n_cases": int})


def format_peers(peers: list[Peer], pairs: pd.DataFrame, level: float) -> list[str]:
    """Console lines of a reference-free audit."""
    lines = ["no reference: each decision-maker's policy, and every two compared "
             f"(cross-fitted cosine of their policies [{level:.0%} interval])"]
    width = max([34, *(len(p.label) for p in peers)])
    lines.append(f"{'decision-maker':{width}} {'cases':>6} {'pos':>5}  share of |beta| on "
                 "protected [interval]")
    for p in peers:
        share = (f"{p.share[0]:.3f} [{p.share[1]:.3f}, {p.share[2]:.3f}]" if p.share
                 else ("undefined: " + p.note if p.note else "-"))
        lines.append(f"{p.label:{width}} {len(p.dm.y):6d} {np.mean(p.dm.y):5.2f}  {share}")
    lines.append("pairs:")
    for r in pairs.itertuples():
        fig = format_estimate(r.r_cos_cf, r.r_cos_cf_ci_low, r.r_cos_cf_ci_high)
        lines.append(f"  {r.a} ~ {r.b}: {fig}, agreement {r.agreement:.2f} ({r.n_cases:.0f} cases)"
                     + (f"; {r.note}" if r.note else ""))
    return lines
