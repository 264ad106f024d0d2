"""Public policy fitting: validation at the boundary, then the jitted solvers."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from kernels._padding import pad_cols, pad_rows, padded_batch, padded_rows
from kernels._ridge_logistic import (
    PolicyFit,
    add_intercept,
    hessian,
    newton_fit,
    penalty_vector,
    refit_batch,
    WARM_TOL_FLOAT32,
)
from kernels._x64 import x64

DEFAULT_TOL = {np.dtype("float64"): 1e-10, np.dtype("float32"): 1e-5}
#: Gradient tolerance of the refits that only feed a resampling distribution
#: (bootstrap and permutation refits, the simulation world's half fits). Their
#: weights come out within about 1e-7 of the 1e-10 fits', five orders below
#: the Monte Carlo error of any quantile or p-value taken from them (the
#: audit's statistics moved by at most 3e-8); the last decade of 1e-10 cost a
#: fifth of every refit batch (`benchmarks/README.md`, "The audit stage").
RESAMPLE_TOL = 1e-9
#: Problems per jitted refit call. At n = 1,000 a chunk holds a few [chunk, n]
#: arrays (about 16 MB each in float64), so peak memory stays far below 2 GB
#: at any B; the last chunk is padded to this size to avoid recompiling.
DEFAULT_CHUNK = 2048


class ConstantCueWarning(UserWarning):
    """A cue column has one value over the data; its weight is set to 0."""


def _as_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in DEFAULT_TOL:
        raise ValueError(f"dtype must be float64 or float32, got {dt}")
    return dt


def _check_X(X: ArrayLike, dt: np.dtype) -> np.ndarray:
    X = np.asarray(X, dtype=dt)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D [n_cases, n_cues], got shape {X.shape}")
    if X.shape[0] < 2:
        raise ValueError(f"X needs at least 2 cases, got {X.shape[0]}")
    if not np.all(np.isfinite(X)):
        bad = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"X has a non-finite value at case {bad[0]}, cue {bad[1]}")
    return X


def _check_labels(Y: ArrayLike, n: int, dt: np.dtype, name: str) -> np.ndarray:
    Y = np.asarray(Y, dtype=dt)
    if Y.shape[-1] != n or Y.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape [{n}] or [B, {n}], got {Y.shape}")
    if not np.all((Y >= 0) & (Y <= 1)):
        raise ValueError(f"{name} must lie in [0, 1] (decisions coded 0/1)")
    return Y


def _check_weights(W: ArrayLike | None, n: int, dt: np.dtype, name: str) -> np.ndarray:
    if W is None:
        return np.ones(n, dtype=dt)
    W = np.asarray(W, dtype=dt)
    if W.shape[-1] != n or W.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape [{n}] or [B, {n}], got {W.shape}")
    if not np.all(np.isfinite(W) & (W >= 0)):
        raise ValueError(f"{name} must be finite and non-negative")
    if np.any(W.reshape(-1, n).sum(axis=1) <= 0):
        raise ValueError(f"{name} has a weight vector that sums to 0")
    return W


def _zero_constant_cues(X: np.ndarray) -> np.ndarray:
    """Centre constant columns to 0 (their weight is then exactly 0) and warn."""
    constant = np.ptp(X, axis=0) == 0
    if np.any(constant):
        cols = ", ".join(str(j) for j in np.flatnonzero(constant))
        warnings.warn(
            f"cue column(s) {cols} are constant over the cases; their weight is 0",
            ConstantCueWarning,
            stacklevel=3,
        )
        X = X.copy()
        X[:, constant] = 0.0
    return X


def _start(y: jax.Array, w: jax.Array, k: int) -> jax.Array:
    """Intercept-only starting point: b0 = logit(weighted mean of y)."""
    ybar = jnp.clip(jnp.sum(w * y) / jnp.sum(w), 1e-3, 1 - 1e-3)
    return jnp.zeros(k, y.dtype).at[0].set(jnp.log(ybar / (1 - ybar)))


@jax.jit
def _single(Xa, y, w, pen, *, tol):
    theta, gnorm, _ = newton_fit(Xa, y, w, pen, _start(y, w, Xa.shape[1]), tol=tol)
    return theta, gnorm


@jax.jit
def _newton_batch(Xa, Y, W, pen, *, tol):
    def one(y, w):
        theta, gnorm, _ = newton_fit(Xa, y, w, pen, _start(y, w, Xa.shape[1]), tol=tol)
        return theta, gnorm

    return jax.vmap(one)(Y, W)


def _averaged_problem(Y: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and weights `[n]` of the batch-averaged objective (see module doc).

    Y and W are `[n]` or `[B, n]`; the objective is linear in y, so the averaged
    problem has weights mean(W) and labels mean(W * Y) / mean(W). In numpy: the
    compiled fit then does not depend on B.
    """
    w_ref = np.mean(np.atleast_2d(W), axis=0)
    wy = np.mean(np.atleast_2d(W * Y), axis=0)
    y_ref = np.where(w_ref > 0, wy / np.where(w_ref > 0, w_ref, 1), 0)
    return y_ref, w_ref


@jax.jit
def _reference(Xa, y_ref, w_ref, pen, *, tol):
    """Minimiser and Hessian of the batch-averaged objective (`_averaged_problem`)."""
    theta, _, _ = newton_fit(Xa, y_ref, w_ref, pen, _start(y_ref, w_ref, Xa.shape[1]), tol=tol)
    return theta, hessian(theta, Xa, w_ref, pen)


# The tolerance is traced, not static: fits to 1e-10 and resampling refits to
# RESAMPLE_TOL of one shape share a compiled program (4-5 s of compiling each).
_refit_jit = jax.jit(refit_batch, static_argnames=("max_iter", "float32_first"))


@x64
def fit_policy(
    X: ArrayLike,
    y: ArrayLike,
    sample_weight: ArrayLike | None = None,
    C: float = 1.0,
    *,
    dtype=np.float64,
    tol: float | None = None,
) -> PolicyFit:
    """Fit one ridge-logistic policy (DESIGN.md, "Policy").

    Args:
      X: `[n, d]` cues (standardised by the caller; constant columns get weight 0
        and a `ConstantCueWarning`).
      y: `[n]` decisions in {0, 1} (fractions in [0, 1] are accepted).
      sample_weight: `[n]` non-negative case weights, default 1.
      C: inverse penalty strength; the penalty is ||beta||^2 / (2 C).
      dtype: float64 (default) or float32.
      tol: max |gradient| per unit weight at which the fit counts as converged.

    Returns:
      `PolicyFit` with intercept `[]`, beta `[d]`; `converged` is False when the
      tolerance was not reached (never silently: `PolicyFit.converged`).

    Example:
      >>> fit = fit_policy([[0.], [1.], [2.], [3.]], [0, 0, 1, 1])
      >>> bool(fit.converged), float(fit.beta[0]) > 0
      (True, True)
    """
    dt = _as_dtype(dtype)
    if not C > 0:
        raise ValueError(f"C must be positive, got {C}")
    X = _zero_constant_cues(_check_X(X, dt))
    n, d = X.shape
    y = _check_labels(y, n, dt, "y")
    if y.ndim != 1:
        raise ValueError("y must be 1-D for fit_policy; use fit_policies for a batch")
    w = _check_weights(sample_weight, n, dt, "sample_weight")
    if w.ndim != 1:
        raise ValueError("sample_weight must be 1-D for fit_policy")
    tol = DEFAULT_TOL[dt] if tol is None else float(tol)
    Xp = pad_cols(X)  # zero columns: their weight is 0, the others' unchanged
    # Zero-weight rows up to the bucket the refits pad to: the job's workers
    # then load this program from the compilation cache its first fit wrote
    # (1.3 s of compiling each, measured cold on 1,000 cases).
    rows = padded_rows(n)
    theta, gnorm = _single(add_intercept(pad_rows(Xp, rows)), pad_rows(y, rows),
                           pad_rows(w, rows, fill=0.0), penalty_vector(Xp.shape[1], C, dt),
                           tol=tol)
    theta, gnorm = np.asarray(theta)[: d + 1], np.asarray(gnorm)[()]
    return PolicyFit(theta[0], theta[1:], gnorm, gnorm <= tol)


@x64
def fit_policies(
    X: ArrayLike,
    Y: ArrayLike,
    W: ArrayLike | None = None,
    C: float = 1.0,
    *,
    dtype=np.float64,
    tol: float | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    max_iter: int = 30,
) -> PolicyFit:
    """Fit a batch of policies that share the cue matrix, in vmapped calls.

    Use it with a `[B, n]` label matrix (permutations) or a `[B, n]` weight matrix
    (bootstrap: multinomial counts), or both. Each refit starts from the
    minimiser of the batch-averaged problem and runs BFGS with that problem's
    Hessian as its metric; the few that have not converged after `max_iter`
    steps are refitted by exact Newton. Any still unconverged are flagged.

    Args:
      X: `[n, d]` cues.
      Y: `[n]` (shared) or `[B, n]` decisions in [0, 1].
      W: None, `[n]` (shared) or `[B, n]` non-negative weights.
      C: inverse penalty strength, as in `fit_policy`.
      dtype: float64 (default) or float32.
      tol: gradient tolerance per unit weight (default 1e-10 / 1e-5 by dtype).
      chunk_size: problems per jitted call (bounds peak memory).

    Returns:
      `PolicyFit` with intercept `[B]`, beta `[B, d]`, max_abs_grad `[B]`,
      converged `[B]`.
    """
    dt = _as_dtype(dtype)
    if not C > 0:
        raise ValueError(f"C must be positive, got {C}")
    X = _zero_constant_cues(_check_X(X, dt))
    n, d = X.shape
    Y = _check_labels(Y, n, dt, "Y")
    W = _check_weights(W, n, dt, "W")
    if Y.ndim == 1 and W.ndim == 1:
        raise ValueError("fit_policies needs Y or W to be a [B, n] batch; use fit_policy")
    B = Y.shape[0] if Y.ndim == 2 else W.shape[0]
    if Y.ndim == 2 and W.ndim == 2 and Y.shape[0] != W.shape[0]:
        raise ValueError(f"Y has {Y.shape[0]} rows but W has {W.shape[0]}")
    tol = DEFAULT_TOL[dt] if tol is None else float(tol)

    # Zero columns up to a bucket (their weight is 0, the others' unchanged) and
    # problems up to a power of two (`kernels._padding`): one compiled program
    # serves many sizes.
    Xa = add_intercept(pad_cols(X))
    pen = penalty_vector(Xa.shape[1] - 1, C, dt)
    # A shared [n] label or weight vector stays [n]: broadcasting it inside the
    # kernel saves a [B, n] array of memory traffic per gradient.
    theta_ref, H_ref = _reference(Xa, *_averaged_problem(Y, W), pen, tol=tol)

    def rows(A, idx):
        if A.ndim == 1:
            return A
        return A if idx.size == A.shape[0] and idx[-1] == A.shape[0] - 1 else A[idx]

    chunk = int(min(chunk_size, padded_batch(B)))
    thetas, gnorms = [], []
    for start in range(0, B, chunk):
        idx = np.minimum(np.arange(start, start + chunk), B - 1)  # pad the last chunk
        th, gn = _refit_jit(Xa, rows(Y, idx), rows(W, idx), pen, theta_ref, H_ref,
                            tol=tol, max_iter=max_iter,
                            float32_first=bool(dt == np.float64 and tol < WARM_TOL_FLOAT32))
        keep = min(chunk, B - start)
        thetas.append(np.asarray(th)[:keep])
        gnorms.append(np.asarray(gn)[:keep])
    theta = np.concatenate(thetas)
    gnorm = np.concatenate(gnorms)

    late = np.flatnonzero(gnorm > tol)
    if late.size:
        # Pad to a power of two, at least 16, so that varying counts reuse a few
        # compilations (a Newton step on 16 small problems costs less than one).
        padded = np.resize(late, max(16, 1 << int(np.ceil(np.log2(late.size)))))
        Yl = np.broadcast_to(Y, (B, n))[padded]
        Wl = np.broadcast_to(W, (B, n))[padded]
        th, gn = _newton_batch(Xa, jnp.asarray(Yl), jnp.asarray(Wl), pen, tol=tol)
        theta[late] = np.asarray(th)[: late.size]
        gnorm[late] = np.asarray(gn)[: late.size]
    # numpy results: slicing device arrays costs a dispatch per slice.
    return PolicyFit(theta[:, 0], theta[:, 1:d + 1], gnorm, gnorm <= tol)
