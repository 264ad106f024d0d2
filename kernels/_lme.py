"""Brunswik's Lens Model Equation (Tucker 1964; Hursch, Hammond and Hursch 1964).

The organisation's decisions are the criterion y_e, the decision-maker's the
judgment y_s; both are modelled linearly on the same encoded cues X by least
squares with an intercept. Then

    r_a = G * R_e * R_s + C * sqrt(1 - R_e^2) * sqrt(1 - R_s^2)

holds exactly in sample, where r_a = corr(y_e, y_s) is achievement, R_e =
corr(y_e, yhat_e) the environment's predictability, R_s = corr(y_s, yhat_s) the
judge's consistency, G = corr(yhat_e, yhat_s) matching (the linear knowledge),
and C = corr(y_e - yhat_e, y_s - yhat_s) the agreement the cues do not model.

On bootstrap resamples (case weights) every term is recomputed; the weighted
normal equations' pseudo-inverse depends only on the cues and the weights, so
`lens_model_reference` computes it, and the criterion's fit, once for all the
decision-makers compared on the same resamples.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from kernels._logit_ls import weighted_grams
from kernels._rows import Rows, chunk_rows, weight_chunks
from kernels._x64 import x64


class LensModel(NamedTuple):
    """The Lens Model Equation's terms; each `[]`, or `[B]` on resamples."""

    r_a: np.ndarray
    R_e: np.ndarray
    R_s: np.ndarray
    G: np.ndarray
    C: np.ndarray


class LensModelReference(NamedTuple):
    """What every judgment's terms on the same cases and weights share."""

    Xa: np.ndarray  # [n, k] cues with an intercept column
    w: np.ndarray | Rows  # [B, n] case weights (one row of ones on the cases themselves)
    ginv: np.ndarray  # [B, k, k] pseudo-inverse of each weighted normal matrix
    y_e: np.ndarray  # [n] criterion
    coef_e: np.ndarray  # [B, k] its least-squares coefficients on each weighting


def _wcorr(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlation along the last axis; NaN where a side is constant."""
    w = w / w.sum(-1, keepdims=True)
    da = a - (w * a).sum(-1, keepdims=True)
    db = b - (w * b).sum(-1, keepdims=True)
    cov = (w * da * db).sum(-1)
    va, vb = (w * da * da).sum(-1), (w * db * db).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(va * vb)
    scale = np.maximum(np.abs(a).max(-1), np.abs(b).max(-1)) ** 2 + 1e-300
    return np.where((va > 1e-24 * scale) & (vb > 1e-24 * scale), np.clip(r, -1, 1), np.nan)


def _coefficients(Xa: np.ndarray, ginv: np.ndarray, w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`[c, k]` weighted least-squares coefficients of y on the cues, per weighting
    (through the pseudo-inverse: collinear one-hot columns are fine)."""
    return np.einsum("bkl,bl->bk", ginv, (w * y) @ Xa)


@x64
def lens_model_reference(X: ArrayLike, y_e: ArrayLike, W=None, *,
                         chunk: int | None = None) -> LensModelReference:
    """The shared side of `lens_model_equation` on the cases (W None) or on `[B, n]`
    case weights (an array or a `kernels._rows.Rows` source, made `chunk`
    weightings at a time: memory does not grow with B x n)."""
    X = np.asarray(X, np.float64)
    n = X.shape[0]
    Xa = np.concatenate([np.ones((n, 1)), X], axis=1)
    w = np.ones((1, n)) if W is None else W if isinstance(W, Rows) else np.atleast_2d(
        np.asarray(W, np.float64))
    chunk = chunk or chunk_rows(n, 64)
    y_e = np.asarray(y_e, np.float64)
    ginv = np.empty((w.shape[0], Xa.shape[1], Xa.shape[1]))
    coef = np.empty((w.shape[0], Xa.shape[1]))
    for start, wc in weight_chunks(w, chunk):
        stop = start + wc.shape[0]
        ginv[start:stop] = np.linalg.pinv(weighted_grams(Xa, wc), rcond=1e-12, hermitian=True)
        coef[start:stop] = _coefficients(Xa, ginv[start:stop], wc, y_e)
    return LensModelReference(Xa, w, ginv, y_e, coef)


@x64
def lens_model_equation(X: ArrayLike, y_e: ArrayLike, y_s: ArrayLike,
                        W: ArrayLike | None = None, *,
                        reference: LensModelReference | None = None) -> LensModel:
    """The Lens Model Equation's terms, on the cases or on weighted resamples.

    Args:
      X: `[n, d]` encoded cues (shared by both sides).
      y_e: `[n]` criterion (the organisation's decisions).
      y_s: `[n]` judgment (the decision-maker's decisions, or shares).
      W: None, or `[B, n]` case weights (bootstrap counts; an array or a
        `Rows` source): then every term is `[B]`, computed on each resample
        (zero-weight cases drop out).
      reference: `lens_model_reference(X, y_e, W)`, shared by the judgments
        compared on the same weights; computed here when None.

    Returns:
      `LensModel`; a term is NaN where it is undefined (a side constant on the
      cases, or fitted exactly so that its residuals vanish, for C).
    """
    ref = lens_model_reference(X, y_e, W) if reference is None else reference
    y_s = np.asarray(y_s, np.float64)
    Xa, y_e = ref.Xa, ref.y_e
    terms = np.empty((5, ref.w.shape[0]))
    for start, w in weight_chunks(ref.w, chunk_rows(Xa.shape[0], 64)):
        stop = start + w.shape[0]
        fe = ref.coef_e[start:stop] @ Xa.T
        fs = _coefficients(Xa, ref.ginv[start:stop], w, y_s) @ Xa.T
        terms[:, start:stop] = (_wcorr(y_e, y_s, w), _wcorr(y_e, fe, w), _wcorr(y_s, fs, w),
                                _wcorr(fe, fs, w), _wcorr(y_e - fe, y_s - fs, w))
    out = LensModel(*terms)
    return LensModel(*(t[0] for t in out)) if W is None and reference is None else out


@x64
def cross_validated_consistency(X: ArrayLike, y_s: ArrayLike, folds: ArrayLike) -> float:
    """Out-of-fold R_s: corr(y_s, its least-squares prediction from the other folds).

    Args:
      X: `[n, d]` cues; y_s: `[n]` judgments; folds: `[n]` fold index per case.
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y_s, np.float64)
    folds = np.asarray(folds)
    Xa = np.concatenate([np.ones((X.shape[0], 1)), X], axis=1)
    pred = np.empty_like(y)
    for k in np.unique(folds):
        test = folds == k
        coef = np.linalg.pinv(Xa[~test], rcond=1e-10) @ y[~test]
        pred[test] = Xa[test] @ coef
    return float(_wcorr(y, pred, np.ones_like(y)))
