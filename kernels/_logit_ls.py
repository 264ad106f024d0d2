"""Ridge least squares on log-odds: a soft policy fitted to probabilities.

A decision-maker that reports its probability p of the positive answer has a
policy in its log-odds, logit(p) = b0 + x.beta + e. Least squares on the
log-odds reads beta where the probabilities lie; the ridge-logistic fit to
fractional targets (cross-entropy against p) reads it through the logistic
curve, whose slope p(1 - p) vanishes for a model that is nearly sure of one
answer in every case, so there the penalty outweighs the data. Which of the
two the soft lens uses is measured on the calibration grid
(`kernels._calibration.soft_point`, benchmarks/README.md).

Closed form, in numpy: no compiled program per shape.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from kernels._ridge_logistic import PolicyFit, add_intercept, penalty_vector
from kernels._x64 import x64

#: Log-odds are clipped to +-this (p within 5e-5 of 0 or 1): a model's
#: "certain" answers would otherwise give log-odds of any size, set by its
#: floating-point rounding.
LOGIT_CLIP = 10.0


@x64
def logit_targets(p: ArrayLike) -> np.ndarray:
    """Clipped log-odds of probabilities, same shape."""
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore"):  # p of exactly 0 or 1: clipped
        return np.clip(np.log(p) - np.log1p(-p), -LOGIT_CLIP, LOGIT_CLIP)


@x64
def fit_logit_ls(X: ArrayLike, P: ArrayLike, W: ArrayLike | None = None,
                 C: float = 1.0) -> PolicyFit:
    """Minimise 1/2 sum_i w_i (logit(p_i) - b0 - x_i.beta)^2 + |beta|^2 / (2 C).

    Args:
      X: `[n, d]` cues; P: `[n]` or `[B, n]` probabilities in [0, 1].
      W: None, `[n]` or `[B, n]` non-negative case weights (bootstrap counts).
      C: inverse penalty, as in `fit_policy` (the same C for both lenses).

    Returns:
      `PolicyFit` with intercept `[B]` (or `[]`), beta `[B, d]` (or `[d]`);
      exact, so max_abs_grad 0 and converged True.
    """
    X = np.asarray(X, np.float64)
    Xa = add_intercept(X)
    n, k = Xa.shape
    T = logit_targets(P)
    single = T.ndim == 1 and (W is None or np.ndim(W) == 1)
    T2 = np.atleast_2d(T)
    pen = np.diag(penalty_vector(k - 1, C, np.float64))
    if W is None or np.ndim(W) == 1:
        w = np.ones(n) if W is None else np.asarray(W, np.float64)
        A = (Xa.T * w) @ Xa + pen
        theta = np.linalg.solve(A, (Xa.T * w) @ T2.T).T  # one matrix, every target row
    else:
        Wb = np.asarray(W, np.float64)
        T2 = np.broadcast_to(T2, Wb.shape)
        A = weighted_grams(Xa, Wb) + pen
        rhs = (Wb * T2) @ Xa
        theta = np.linalg.solve(A, rhs[..., None])[..., 0]
    if single:
        theta = theta[0]
    zero = np.zeros(theta.shape[:-1])
    return PolicyFit(theta[..., 0], theta[..., 1:], zero, zero == 0)


@x64
def weighted_grams(Xa: np.ndarray, W: np.ndarray) -> np.ndarray:
    """`[B, k, k]` Gram matrices Xa' diag(w_b) Xa of one `[n, k]` matrix under
    `[B, n]` case weights.

    One GEMM of the weights with the cases' outer products (upper triangle
    only), not B products through a `[B, k, n]` temporary: at B = n = 1,000
    and k = 64 that temporary is 0.5 GB, and forming it took most of a soft
    lens's bootstrap.
    """
    n, k = Xa.shape
    iu = np.triu_indices(k)
    outer = Xa[:, iu[0]] * Xa[:, iu[1]]  # [n, k (k + 1) / 2]
    upper = W @ outer
    G = np.empty((W.shape[0], k, k))
    G[:, iu[0], iu[1]] = upper
    G[:, iu[1], iu[0]] = upper
    return G
