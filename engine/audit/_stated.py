"""Stated versus used: the cues a decision-maker's reasons cite, against the
cues its fitted policy weighs (issue 20).

**The matcher** (`cue_pattern`). A reason mentions a cue when one of the cue's
own words appears in it, case-insensitively, as a whole word or phrase (not
inside a longer word: "car" does not match "career"):

* its phrase ("checking account") and its name, as written ("checking_account")
  and with spaces ("checking account");
* the plain-language text of one of its levels ("below 0 DM", "radio/television"),
  when that text names this cue alone: a level text that another cue shares
  ("requirement satisfied" in every ECHR factor), or that is generic ("yes",
  "no", "none", "other", "unknown"), does not count.

Known misses: a paraphrase ("the applicant's bank balance" for checking
account), a number on its own ("48 months" without "duration"), a negation
("regardless of age" counts as citing age), and a level word that is also an
everyday word of another meaning. Deterministic and tested on hand-written
reasons (tests/audit/test_stated.py).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pandas as pd

import kernels
from engine.datasets import Cue, CueSchema

#: Level texts too common in reasons to name a cue.
GENERIC = frozenset({"yes", "no", "none", "other", "unknown", "not at issue", "true", "false"})
#: A cue weighed (its interval excludes 0) but cited in fewer reasons than this: "used, never cited".
NEVER_CITED = 0.05
#: A cue cited in more reasons than this while no interval of its weight excludes 0: "cited, not used".
OFTEN_CITED = 0.25


def cue_terms(cue: Cue, schema: CueSchema) -> list[str]:
    """The words that count as citing `cue`, longest first."""
    shared: dict[str, int] = {}
    for c in schema.cues:
        for text in set(c.levels.values()):
            shared[text.lower()] = shared.get(text.lower(), 0) + 1
    terms = {cue.phrase, cue.name, cue.name.replace("_", " ")}
    terms |= {t for t in cue.levels.values()
              if t.lower() not in GENERIC and shared[t.lower()] == 1}
    return sorted((t for t in terms if t.strip()), key=len, reverse=True)


def cue_pattern(cue: Cue, schema: CueSchema) -> re.Pattern:
    """A case-insensitive pattern of `cue_terms` as whole words."""
    alternatives = "|".join(re.escape(t) for t in cue_terms(cue, schema))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


def mentions(texts, schema: CueSchema) -> np.ndarray:
    """`[n, k]` 1 where reason i cites cue k, 0 where it does not, NaN where
    there is no reason (a decision made in choice mode, or none given)."""
    patterns = [cue_pattern(c, schema) for c in schema.cues]
    out = np.full((len(texts), len(patterns)), np.nan)
    for i, text in enumerate(texts):
        if isinstance(text, str) and text.strip():
            out[i] = [bool(p.search(text)) for p in patterns]
    return out


def mentions_by_case(rows: pd.DataFrame, ids: list[str], schema: CueSchema) -> np.ndarray:
    """`[n, k]` per case (in `ids` order): the share of its decisions' reasons
    that cite each cue; NaN for a case with no reason."""
    m = mentions(rows["reasoning"].tolist(), schema)
    frame = pd.DataFrame(m, index=rows["case_id"].astype(str).to_numpy())
    return frame.groupby(level=0).mean().reindex(ids).to_numpy(float)


class StatedUsed(NamedTuple):
    """Per cue and overall: how often the reasons cite each cue and how much the
    decisions weigh it."""

    table: pd.DataFrame  # cue, phrase, protected, mention_rate, weight, used, finding,
    #                      direction_agreement
    spearman: float  # rank correlation of mention rate and weight across cues
    low: float
    high: float
    n_reasons: int  # cases with at least one reason
    # Where a reason cites a cue: the share of those citations whose cue value
    # pushes the decision-maker's own policy toward the answer it gave.
    direction: float = float("nan")
    direction_low: float = float("nan")
    direction_high: float = float("nan")


def cue_index(schema: CueSchema, column_cues: list[Cue]) -> np.ndarray:
    """`[d]` the index of the cue behind each encoded column (`Encoding.cues`)."""
    return np.array([schema.cues.index(c) for c in column_cues])


def _per_cue(values: np.ndarray, owner: np.ndarray, k: int) -> np.ndarray:
    """`[..., k]` the largest |value| over each cue's columns (CALM's attribute weight)."""
    a = np.abs(values)
    return np.stack([a[..., owner == j].max(-1) for j in range(k)], -1)


def contributions(X: np.ndarray, beta: np.ndarray, owner: np.ndarray, k: int) -> np.ndarray:
    """`[n, k]` each cue's part of each case's log-odds under the policy `beta`
    `[d]`: x_ij beta_j summed over the cue's columns."""
    return (np.asarray(X) * np.asarray(beta, float)) @ (owner[:, None] == np.arange(k))


def direction_agreement(M: np.ndarray, contrib: np.ndarray, y: np.ndarray) -> float:
    """The share of citations (`M` `[n, k]`, a case's mention shares, maybe
    weighted) whose cue's contribution `[n, k]` points to the answer given
    (`y` > 0.5: the positive one)."""
    toward = np.where(np.asarray(y)[:, None] > 0.5, contrib > 0, contrib < 0)
    m = np.nan_to_num(M)
    return float((m * toward).sum() / max(m.sum(), 1e-12))


def used_cues(comparison: kernels.LensComparison, owner: np.ndarray, k: int,
               level: float) -> np.ndarray:
    """`[k]` whether each cue is used: the basic bootstrap interval of one of
    its m columns' weights, at level 1 - (1 - level) / m (Bonferroni within the
    cue, so that a cue with many levels is not "used" by chance more often
    than one with a single column), excludes 0."""
    beta, boot = np.asarray(comparison.beta_dm), np.asarray(comparison.boot_beta_dm)
    out = np.zeros(k, bool)
    for j in range(k):
        cols = owner == j
        ci = kernels.bootstrap_interval(beta[cols], boot[:, cols],
                                        level=1 - (1 - level) / cols.sum(), method="basic")
        low, high = np.asarray(ci.low), np.asarray(ci.high)
        out[j] = bool(np.nan_to_num((low > 0) | (high < 0), nan=0).any())
    return out


def stated_vs_used(M: np.ndarray, schema: CueSchema, column_cues: list[Cue],
                   comparison: kernels.LensComparison, boot_weights: np.ndarray | None, *,
                   X: np.ndarray | None = None, y: np.ndarray | None = None,
                   level: float = 0.95) -> StatedUsed | None:
    """The stated-versus-used comparison of one decision-maker.

    Args:
      M: `[n, k]` mention shares per case (`mentions_by_case`), NaN without a reason.
      column_cues: the cue behind each encoded column (`Encoding.cues`).
      comparison: its lens comparison on the same cases (weights, their basic
        intervals and bootstrap refits).
      boot_weights: `[B, >= n]` the resamples' case counts behind those refits
        (`LensReference.boot_weights`, made a chunk at a time), or None: then
        no interval.
      X, y: `[n, d]` the encoded cues and `[n]` the decision-maker's answers
        (mean over samples), for the direction check; None: no direction check.

    Returns None where no case has a reason. A cue is *used* when the interval
    of one of its columns' weights excludes 0 (`used_cues`); its *weight* is the
    largest |beta| of its columns. The Spearman interval is the percentile interval of
    the correlation recomputed on every resample (mention rates reweighted by
    the resample's case counts, weights from its refit). The direction check
    and its interval likewise: each citation of a cue counts as agreeing when
    the cue's part of the case's log-odds under the decision-maker's policy
    (`contributions`) points to the answer it gave.
    """
    has = np.isfinite(M).all(1)
    if not has.any():
        return None
    k, owner = len(schema.cues), cue_index(schema, column_cues)
    rate = M[has].mean(0)
    weight = _per_cue(comparison.beta_dm, owner, k)
    used = used_cues(comparison, owner, k, level)
    rho, low, high = kernels.spearman_r(rate, weight), np.nan, np.nan
    direction = d_low = d_high = np.nan
    per_cue_direction = np.full(k, np.nan)
    if X is not None and y is not None:
        contrib = contributions(X, comparison.beta_dm, owner, k)
        toward = np.where(np.asarray(y)[:, None] > 0.5, contrib > 0, contrib < 0)
        m = np.nan_to_num(M)
        cited = m.sum(0)
        per_cue_direction = np.where(cited > 0, (m * toward).sum(0) / np.maximum(cited, 1e-12),
                                     np.nan)
        direction = direction_agreement(M, contrib, y) if cited.sum() > 0 else np.nan
    a = (1 - level) / 2
    if boot_weights is not None:
        boot_beta = np.asarray(comparison.boot_beta_dm)
        rho_reps, direction_reps = [], []
        # The resamples a chunk at a time (`kernels._rows`): never [B, n] whole.
        for start, w in kernels.weight_chunks(boot_weights, 64):
            w = w[:, :M.shape[0]] * has
            betas = boot_beta[start:start + w.shape[0]]
            if np.isfinite(rho):
                rates = (w @ np.nan_to_num(M)) / np.maximum(w.sum(1, keepdims=True), 1e-12)
                rho_reps += [kernels.spearman_r(r, b)
                             for r, b in zip(rates, _per_cue(betas, owner, k))]
            if np.isfinite(direction):
                direction_reps += [direction_agreement(np.nan_to_num(M) * wb[:, None],
                                                       contributions(X, bb, owner, k), y)
                                   for wb, bb in zip(w, betas)]
        if np.isfinite(rho):
            low, high = _percentile(np.array(rho_reps), rho, a)
        if np.isfinite(direction):
            d_low, d_high = _percentile(np.array(direction_reps), direction, a)
    finding = np.where(used & (rate < NEVER_CITED), "used, never cited",
                       np.where(~used & (rate > OFTEN_CITED), "cited, not used", ""))
    table = pd.DataFrame({"cue": [c.name for c in schema.cues],
                          "phrase": [c.phrase for c in schema.cues],
                          "protected": [c.protected for c in schema.cues],
                          "mention_rate": rate, "weight": weight, "used": used,
                          "finding": finding, "direction_agreement": per_cue_direction})
    return StatedUsed(table, rho, low, high, int(has.sum()), direction, d_low, d_high)


def _percentile(reps: np.ndarray, estimate: float, a: float) -> tuple[float, float]:
    """The percentile interval of finite replicates, widened to hold the
    estimate; NaN with fewer than 10."""
    reps = reps[np.isfinite(reps)]
    if reps.size < 10:
        return np.nan, np.nan
    low, high = (float(q) for q in np.quantile(reps, [a, 1 - a]))
    return min(low, estimate), max(high, estimate)


def stated_metrics(s: StatedUsed) -> dict[str, float]:
    """The figures of `stated_vs_used` for the summary and MLflow."""
    f = s.table["finding"]
    return {"stated_spearman": s.spearman, "stated_spearman_low": s.low,
            "stated_spearman_high": s.high, "n_reasons": float(s.n_reasons),
            "n_used_not_cited": float((f == "used, never cited").sum()),
            "n_cited_not_used": float((f == "cited, not used").sum()),
            "stated_direction": s.direction, "stated_direction_low": s.direction_low,
            "stated_direction_high": s.direction_high}


def format_stated(model: str, condition: str, s: StatedUsed) -> list[str]:
    """Console lines: the correlation, then the cues used but never cited and
    cited but not used (protected cues marked)."""
    ci = "" if not np.isfinite(s.low) else f" [{s.low:+.2f}, {s.high:+.2f}]"
    rho = "undefined" if not np.isfinite(s.spearman) else f"{s.spearman:+.2f}{ci}"
    lines = [f"  {model} x {condition}: stated vs used over {s.n_reasons} reasons: "
             f"Spearman(mention rate, weight) {rho}"]
    if np.isfinite(s.direction):
        ci = "" if not np.isfinite(s.direction_low) else \
            f" [{s.direction_low:.2f}, {s.direction_high:.2f}]"
        lines.append(f"    cited cues that point to the answer given: {s.direction:.2f}{ci}")
    for finding in ("used, never cited", "cited, not used"):
        rows = s.table[s.table["finding"] == finding]
        if len(rows):
            names = ", ".join(r.phrase + (" (PROTECTED)" if r.protected else "")
                              for r in rows.itertuples())
            lines.append(f"    {finding}: {names}")
    return lines
