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

from kernels._rows import LOGIT_CLIP, Rows, chunk_rows, rows_between
from kernels._ridge_logistic import PolicyFit, add_intercept, penalty_vector
from kernels._x64 import x64



@x64
def logit_targets(p: ArrayLike) -> np.ndarray:
    """Clipped log-odds of probabilities, same shape."""
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore"):  # p of exactly 0 or 1: clipped
        return np.clip(np.log(p) - np.log1p(-p), -LOGIT_CLIP, LOGIT_CLIP)


@x64
def fit_logit_ls(X: ArrayLike, P, W=None, C: float = 1.0, *, log_odds: bool = False,
                 chunk_size: int | None = None) -> PolicyFit:
    """Minimise 1/2 sum_i w_i (logit(p_i) - b0 - x_i.beta)^2 + |beta|^2 / (2 C).

    Args:
      X: `[n, d]` cues; P: `[n]` or `[B, n]` probabilities in [0, 1], or a
        `kernels._rows.Rows` source of them (made a chunk at a time).
      W: None, `[n]`, `[B, n]` or a `Rows` source of non-negative case weights
        (bootstrap counts).
      C: inverse penalty, as in `fit_policy` (the same C for both lenses).
      log_odds: P holds the (clipped) log-odds themselves, not probabilities.
      chunk_size: problems per chunk of a batch; None: as the memory allows.

    Returns:
      `PolicyFit` with intercept `[B]` (or `[]`), beta `[B, d]` (or `[d]`);
      exact, so max_abs_grad 0 and converged True.
    """
    X = np.asarray(X, np.float64)
    Xa = add_intercept(X)
    n, k = Xa.shape
    pen = np.diag(penalty_vector(k - 1, C, np.float64))

    def targets(A):
        return A if log_odds else logit_targets(A)

    batched = [A for A in (P, W) if isinstance(A, Rows) or np.ndim(A) == 2]
    if not batched:
        w = np.ones(n) if W is None else np.asarray(W, np.float64)
        A = (Xa.T * w) @ Xa + pen
        theta = np.linalg.solve(A, (Xa.T * w) @ targets(np.asarray(P, np.float64)))
        return PolicyFit(theta[0], theta[1:], np.zeros(()), np.ones((), bool))
    B = batched[0].shape[0]
    chunk = chunk_rows(n, 1024) if chunk_size is None else chunk_size

    shared_w = W is None or (not isinstance(W, Rows) and np.ndim(W) == 1)
    if shared_w:
        w = np.ones(n) if W is None else np.asarray(W, np.float64)
        A_shared = (Xa.T * w) @ Xa + pen
    P_shared = None if isinstance(P, Rows) or np.ndim(P) == 2 else targets(np.asarray(P, np.float64))
    theta = np.empty((B, k))
    for start in range(0, B, chunk):
        stop = min(start + chunk, B)
        T = P_shared if P_shared is not None else targets(rows_between(P, start, stop))
        if shared_w:
            theta[start:stop] = np.linalg.solve(A_shared, ((np.atleast_2d(T) * w) @ Xa).T).T
            continue
        Wc = rows_between(W, start, stop)
        A = weighted_grams(Xa, Wc) + pen
        rhs = (Wc * T) @ Xa
        theta[start:stop] = np.linalg.solve(A, rhs[..., None])[..., 0]
    zero = np.zeros(B)
    return PolicyFit(theta[:, 0], theta[:, 1:], zero, zero == 0)


@x64
def log_odds_solver(X: ArrayLike, C: float = 1.0):
    """The weights `[c, d]` of log-odds targets `[c, n]` on the cues X `[n, d]`
    (`fit_logit_ls` with unit weights), its matrix factored once for every call."""
    Xa = add_intercept(np.asarray(X, np.float64))
    A = Xa.T @ Xa + np.diag(penalty_vector(Xa.shape[1] - 1, C, np.float64))
    lower = np.linalg.cholesky(A)

    def solve(T: np.ndarray) -> np.ndarray:
        rhs = (np.atleast_2d(T) @ Xa).T  # [k, c]
        theta = np.linalg.solve(lower.T, np.linalg.solve(lower, rhs))
        return theta[1:].T

    return solve


#: Cases per block of `weighted_grams`' outer products: a block of
#: [cases, k (k + 1) / 2] stays near 64 MB at k = 65.
GRAM_BLOCK = 4096


@x64
def weighted_grams(Xa: np.ndarray, W: np.ndarray) -> np.ndarray:
    """`[B, k, k]` Gram matrices Xa' diag(w_b) Xa of one `[n, k]` matrix under
    `[B, n]` case weights.

    GEMMs of the weights with the cases' outer products (upper triangle
    only), not B products through a `[B, k, n]` temporary: at B = n = 1,000
    and k = 64 that temporary is 0.5 GB, and forming it took most of a soft
    lens's bootstrap. The outer products are formed a block of cases at a
    time, so memory does not grow with n.
    """
    n, k = Xa.shape
    iu = np.triu_indices(k)
    upper = np.zeros((W.shape[0], iu[0].size))
    for start in range(0, n, GRAM_BLOCK):
        blk = Xa[start:start + GRAM_BLOCK]
        upper += W[:, start:start + GRAM_BLOCK] @ (blk[:, iu[0]] * blk[:, iu[1]])
    G = np.empty((W.shape[0], k, k))
    G[:, iu[0], iu[1]] = upper
    G[:, iu[1], iu[0]] = upper
    return G
