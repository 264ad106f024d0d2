"""Public policy fitting: validation at the boundary, then the jitted solvers."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from kernels._padding import pad_cols, pad_rows, padded_batch, padded_rows
from kernels._rows import Rows, chunk_rows
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
#: Problems per jitted refit call, at most. At n = 1,000 a chunk holds a few
#: [chunk, n] arrays (about 16 MB each in float64); at larger n the chunk
#: shrinks so that each stays within `kernels._rows.CHUNK_BYTES`. The last
#: chunk is padded to the chunk's size to avoid recompiling.
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
_refit_jit = jax.jit(refit_batch, static_argnames=("max_iter", "float32_first", "float32_only"))


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
    Y: ArrayLike | Rows,
    W: ArrayLike | Rows | None = None,
    C: float = 1.0,
    *,
    dtype=np.float64,
    tol: float | None = None,
    chunk_size: int | None = None,
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
      Y: `[n]` (shared) or `[B, n]` decisions in [0, 1], or a `kernels._rows.Rows`
        source of them (made a chunk at a time; its columns past its own n,
        up to X's rows, are weighted 0 by W).
      W: None, `[n]` (shared), `[B, n]` non-negative weights, or a `Rows` source.
      C: inverse penalty strength, as in `fit_policy`.
      dtype: float64 (default) or float32.
      tol: gradient tolerance per unit weight (default 1e-10 / 1e-5 by dtype).
      chunk_size: problems per jitted call; None: as many as the memory allows
        at this n (`kernels._rows.chunk_rows`), at most `DEFAULT_CHUNK`.

    Returns:
      `PolicyFit` with intercept `[B]`, beta `[B, d]`, max_abs_grad `[B]`,
      converged `[B]`.

    A `Rows` source is never held whole: peak memory is a few `[chunk, n]`
    arrays. Its refits start from its `expected` problem (arrays: their mean),
    so a row's refit does not depend on the chunk it was fitted in.
    """
    dt = _as_dtype(dtype)
    if not C > 0:
        raise ValueError(f"C must be positive, got {C}")
    X = _zero_constant_cues(_check_X(X, dt))
    n, d = X.shape
    Y = _batch(Y, n, dt, "Y", _check_labels)
    W = _batch(W, n, dt, "W", _check_weights)
    if np.ndim(Y) == 1 and np.ndim(W) == 1:
        raise ValueError("fit_policies needs Y or W to be a [B, n] batch; use fit_policy")
    B = Y.shape[0] if np.ndim(Y) == 2 else W.shape[0]
    if np.ndim(Y) == 2 and np.ndim(W) == 2 and Y.shape[0] != W.shape[0]:
        raise ValueError(f"Y has {Y.shape[0]} rows but W has {W.shape[0]}")
    tol = DEFAULT_TOL[dt] if tol is None else float(tol)

    problem = refit_problem(X, *_start_problem(Y, W, n), C=C, dtype=dt, tol=tol)
    chunk = chunk_rows(n, DEFAULT_CHUNK) if chunk_size is None else chunk_size
    theta, gnorm = refit_chunks(problem, Y, W, B, chunk=chunk, max_iter=max_iter)
    late = np.flatnonzero(gnorm > tol)
    if late.size:
        theta[late], gnorm[late] = newton_refits(problem, _picked(Y, late, B, n, dt),
                                                 _picked(W, late, B, n, dt))
    # numpy results: slicing device arrays costs a dispatch per slice.
    return PolicyFit(theta[:, 0], theta[:, 1:d + 1], gnorm, gnorm <= tol)


class RefitProblem(NamedTuple):
    """What every refit of a batch shares: the cues with the intercept column
    and zero columns (`[m, k]`), the penalty `[k]`, and the start (the minimiser
    `[k]` and Hessian `[k, k]` of the problem the batch is drawn around)."""

    Xa: np.ndarray
    pen: np.ndarray
    theta_ref: jax.Array
    H_ref: jax.Array
    tol: float
    dtype: np.dtype


def refit_problem(X: np.ndarray, y_ref: np.ndarray, w_ref: np.ndarray, *, C: float,
                  dtype: np.dtype, tol: float) -> RefitProblem:
    """The shared part of a batch of refits on validated cues X `[m, d]`,
    starting from the problem of labels y_ref and weights w_ref `[m]`."""
    # Zero columns up to a bucket (their weight is 0, the others' unchanged):
    # one compiled program serves many cue counts (`kernels._padding`).
    Xa = add_intercept(pad_cols(X))
    pen = penalty_vector(Xa.shape[1] - 1, C, dtype)
    theta_ref, H_ref = _reference(Xa, y_ref, w_ref, pen, tol=tol)
    return RefitProblem(Xa, pen, theta_ref, H_ref, tol, dtype)


def refit_chunks(problem: RefitProblem, Y, W, B: int, *, chunk: int,
                 max_iter: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """L-BFGS refits of B problems, `chunk` at a time (at most; the batch is
    padded up to a power of two so that one compiled program serves many B).

    Y, W: `[m]` (shared), `[B, m]` or `Rows` sources. Returns (theta `[B, k]`,
    max|grad| per unit weight `[B]`); those above the tolerance are not refitted
    by Newton here (`newton_refits`).
    """
    m, dt = problem.Xa.shape[0], problem.dtype
    chunk = int(min(chunk, padded_batch(B)))
    theta, gnorm = np.empty((B, problem.Xa.shape[1])), np.empty(B)
    with Pipeline() as pipe:
        for start in range(0, B, chunk):
            stop = min(start + chunk, B)
            # A shared [m] label or weight vector stays [m]: broadcasting it inside
            # the kernel saves a [chunk, m] array of memory traffic per gradient.
            fits = dispatch(problem, _rows_of(Y, start, stop, chunk, m, dt),
                            _rows_of(W, start, stop, chunk, m, dt), max_iter=max_iter)

            def store(th, gn, start=start, stop=stop):
                theta[start:stop], gnorm[start:stop] = th[: stop - start], gn[: stop - start]

            pipe.then(fits, store)
    return theta, gnorm


def dispatch(problem: RefitProblem, Y, W, *, max_iter: int = 30):
    """Start the L-BFGS refits of one chunk (`[c, m]` or shared `[m]` Y and W);
    returns (theta, max|grad|) as device arrays, computed while the caller goes on."""
    dt = problem.dtype
    return _refit_jit(problem.Xa, Y, W, problem.pen, problem.theta_ref, problem.H_ref,
                      tol=problem.tol, max_iter=max_iter,
                      float32_first=bool(dt == np.float64 and problem.tol < WARM_TOL_FLOAT32),
                      float32_only=bool(dt == np.float64 and problem.tol >= WARM_TOL_FLOAT32))


class Pipeline:
    """Results of dispatched refits taken one chunk late.

    JAX returns from a compiled call at once and computes on its own threads;
    taking a chunk's result (`np.asarray`) waits for it. Taken one chunk late,
    the next chunk's rows (drawn, gathered, padded in numpy) are made while
    the previous chunk computes.
    """

    def __init__(self, lag: int = 1):
        self.lag, self.pending = lag, []

    def __enter__(self):
        return self

    def then(self, fits, store) -> None:
        """Queue `store(theta, gnorm)` (numpy) for the dispatched `fits`."""
        self.pending.append((fits, store))
        while len(self.pending) > self.lag:
            self._take()

    def _take(self) -> None:
        (th, gn), store = self.pending.pop(0)
        store(np.asarray(th), np.asarray(gn))

    def __exit__(self, *exc):
        while self.pending and exc[0] is None:
            self._take()
        self.pending.clear()
        return False


def newton_refits(problem: RefitProblem, Y: np.ndarray,
                  W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact Newton refits of the `[L, m]` problems (Y, W) that L-BFGS left
    unconverged. Returns (theta `[L, k]`, max|grad| per unit weight `[L]`)."""
    L = Y.shape[0]
    # Pad to a power of two, at least 16, so that varying counts reuse a few
    # compilations (a Newton step on 16 small problems costs less than one).
    padded = np.resize(np.arange(L), max(16, 1 << int(np.ceil(np.log2(L)))))
    # In the refits' dtype: a world's 0/1 draws come as float32 (`kernels._rows`).
    th, gn = _newton_batch(problem.Xa, jnp.asarray(Y[padded], problem.dtype),
                           jnp.asarray(W[padded], problem.dtype), problem.pen, tol=problem.tol)
    return np.asarray(th)[:L], np.asarray(gn)[:L]


def clean_cues(X: ArrayLike, dtype=np.float64) -> np.ndarray:
    """Validated cues `[n, d]`, constant columns set to 0 (`ConstantCueWarning`)."""
    return _zero_constant_cues(_check_X(X, _as_dtype(dtype)))


def _batch(A, n: int, dt: np.dtype, name: str, check):
    """A validated array, or a `Rows` source (made by the kernels: only its shape is checked)."""
    if not isinstance(A, Rows):
        return check(A, n, dt, name)
    if A.n > n:
        raise ValueError(f"{name} has rows of {A.n} cases for {n}")
    return A


def _start_problem(Y, W, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and weights `[n]` of the problem every refit starts from: the
    batch-averaged one (`_averaged_problem`), or where a batch is a `Rows`
    source, the problem of its expected rows."""
    if not isinstance(Y, Rows) and not isinstance(W, Rows):
        return _averaged_problem(Y, W)

    def expected(A):
        if isinstance(A, Rows):
            return pad_rows(A.expected(), n, fill=0.0)
        return A if A.ndim == 1 else A.mean(axis=0)

    return expected(Y), expected(W)


def _rows_of(A, start: int, stop: int, chunk: int, n: int, dt: np.dtype):
    """Rows start..stop of a batch as `[chunk, n]`, the last ones repeated to
    fill the chunk; a shared `[n]` vector as it is."""
    if isinstance(A, Rows):
        out = A.take(np.arange(start, stop), width=n).astype(dt, copy=False)
    elif A.ndim == 1:
        return A
    elif start == 0 and stop == chunk == A.shape[0]:
        return A
    else:
        out = A[start:stop]
    if out.shape[0] < chunk:
        out = np.concatenate([out, np.repeat(out[-1:], chunk - out.shape[0], axis=0)])
    return out


def _picked(A, idx: np.ndarray, B: int, n: int, dt: np.dtype) -> np.ndarray:
    """`[len(idx), n]` rows of a batch (a shared vector repeated)."""
    if isinstance(A, Rows):
        return A.take(idx, width=n).astype(dt, copy=False)
    return np.broadcast_to(A, (B, n))[idx]
