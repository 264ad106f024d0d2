"""How two weight vectors agree beyond their cosine: CALM's secondary analyses.

Pearson and Spearman correlations of the coefficients, the share of cues whose
weights have the same sign, and the overlap of the k strongest cues.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from kernels._x64 import x64


class CoefficientAgreement(NamedTuple):
    pearson: float
    spearman: float
    sign_agreement: float  # share of columns whose two weights have the same sign
    top_overlap: dict[int, float]  # k -> |top-k(a) & top-k(b)| / k, by |weight|


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as scipy's rankdata does."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    da, db = a - a.mean(), b - b.mean()
    denom = np.sqrt((da @ da) * (db @ db))
    return float(da @ db / denom) if denom > 0 else float("nan")


def spearman_r(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman's rank correlation of two `[k]` vectors (average ranks for ties,
    as scipy's `spearmanr`); NaN where either is constant."""
    return _pearson(_ranks(np.asarray(a, np.float64)), _ranks(np.asarray(b, np.float64)))


@x64
def coefficient_agreement(a: ArrayLike, b: ArrayLike, *, mask: ArrayLike | None = None,
                          ks: tuple[int, ...] = (5, 10)) -> CoefficientAgreement:
    """Agreement of two `[d]` weight vectors over the columns in `mask` (default all).

    Columns outside the mask (a level no case has, a constant column: weight 0
    by construction) are left out. Top-k overlap is NaN when fewer than k
    columns are compared.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.ones(a.shape, bool) if mask is None else np.asarray(mask, bool)
    a, b = a[keep], b[keep]
    top = {}
    for k in ks:
        if len(a) < k:
            top[k] = float("nan")
            continue
        ta = set(np.argsort(-np.abs(a), kind="stable")[:k])
        tb = set(np.argsort(-np.abs(b), kind="stable")[:k])
        top[k] = len(ta & tb) / k
    return CoefficientAgreement(_pearson(a, b), _pearson(_ranks(a), _ranks(b)),
                                float(np.mean(np.sign(a) == np.sign(b))) if len(a) else float("nan"),
                                top)
