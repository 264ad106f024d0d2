"""The cross-fitted cosine: alignment without the attenuation of estimation noise.

A fitted policy is the population policy plus estimation noise, and noise adds
orthogonal components to both vectors, so the plain cosine of two fitted
policies reads low (at German Credit's size and signal, 0.66 for a population
0.8). Here each policy is fitted on two disjoint halves of the cases. Noise in
one half is independent of noise in the other, so inner products taken across
halves have the noise-free expectation: a1.a2 estimates |a|^2, and
(a1.b2 + a2.b1) / 2 estimates a.b. Averaging the three terms over many random
splits removes most of the split-to-split noise, as cross-validated distances
do in representational similarity analysis. The ratio

    r_cf = mean(a1.b2 + a2.b1) / 2 / sqrt(mean(a1.a2) mean(b1.b2))

is the cross-fitted cosine. It is not bounded by construction (the
Cauchy-Schwarz bound holds for one pair of vectors, not across halves): near a
population cosine of 1 about half its values exceed 1. Callers report it
clipped to [-1, 1] and say so (`kernels.CrossFitted`).

Shapes: S splits, B problems (datasets or resamples) sharing the cue matrix.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import numpy as np
from numpy.typing import ArrayLike

from kernels._logit_ls import log_odds_solver, logit_targets
from kernels._padding import pad_rows, padded_batch, padded_rows
from kernels._policy import (
    DEFAULT_CHUNK,
    DEFAULT_TOL,
    ConstantCueWarning,
    clean_cues,
    fit_policies,
    Pipeline,
    dispatch,
    newton_refits,
    refit_problem,
)
from kernels._rows import DrawnDecisions, HalfMembers, Rows, chunk_rows, weight_chunks
from kernels._x64 import x64


@x64
def half_splits(key: jax.Array, n: int, num: int) -> np.ndarray:
    """`[num, n]` random permutations of range(n); the first n // 2 of each row
    form half A, the rest half B."""
    keys = jax.random.split(key, num)
    return np.stack([np.asarray(jax.random.permutation(k, n)) for k in keys])


#: How a policy is fitted: ridge-logistic (decisions, shares, probabilities) or
#: ridge least squares on the log-odds of probabilities (`kernels._logit_ls`).
LOSSES = ("logistic", "logit_ls")


@x64
def fit_halves(X: ArrayLike, Y, splits: np.ndarray, *, C: float = 1.0,
               loss: str = "logistic", tol: float | None = None) -> np.ndarray:
    """Policies fitted on each half of each split.

    Args:
      X: `[n, d]` cues; Y: `[B, n]` decisions (or shares, probabilities) in
        [0, 1], or a `kernels._rows.Rows` source of them (a simulation world's
        draws), made a chunk at a time and never held whole.
      splits: `[S, n]` permutations from `half_splits`.
      loss: one of `LOSSES`.
      tol: the logistic fits' gradient tolerance (`fit_policies`' default if
        None; `RESAMPLE_TOL` for a simulation world's draws).

    Returns:
      `[S, 2, B, d]` weights (the intercepts are not needed).

    Each half is fitted on its own rows (half the work of weighting the other
    half to zero); both halves are padded to one row count with zero-weight
    rows so that every call shares one compiled program. A chunk of Y's rows
    is made once and fitted on every half of every split before the next.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    X = np.asarray(X, np.float64)
    if not isinstance(Y, Rows):
        Y = np.atleast_2d(np.asarray(Y, np.float64))
    n, d = X.shape
    B = Y.shape[0]
    half = n // 2
    if loss == "logistic" and B * 2 * splits.shape[0] <= FEW_HALF_FITS:
        return _fit_halves_at_once(X, Y, splits, C, tol)
    # Each half's cases in their order in the data: a fit does not depend on
    # the order of its rows, and gathering a chunk's columns in order reads
    # memory forwards (three times faster than in a permutation's order).
    parts = [(s, h, np.sort(idx)) for s, perm in enumerate(splits)
             for h, idx in enumerate((perm[:half], perm[half:]))]
    out = np.empty((splits.shape[0], 2, B, d))
    chunk = int(min(chunk_rows(n, half_fit_chunk()), padded_batch(B)))
    if loss == "logit_ls":  # closed form: no padding, nothing compiled
        solve = {(s, h): log_odds_solver(X[idx], C) for s, h, idx in parts}
        for start, T in _chunks(Y, chunk, log_odds=True):
            for s, h, idx in parts:
                out[s, h, start:start + T.shape[0]] = solve[s, h](np.take(T, idx, axis=1))
        return out
    rows = padded_rows(n - half)
    weights = [pad_rows(np.ones(k), rows, fill=0.0) for k in (half, n - half)]
    # Each half's columns padded as `pad_rows` pads (copies of its first case,
    # weighted 0), gathered from a chunk in one pass.
    gather = {(s, h): pad_rows(idx, rows) for s, h, idx in parts}
    tol = DEFAULT_TOL[np.dtype(np.float64)] if tol is None else float(tol)
    mean = Y.expected() if isinstance(Y, Rows) else Y.mean(axis=0)
    problems = {}
    with warnings.catch_warnings():
        # A rare level missing from one half is expected: its weight there is
        # 0, which only shrinks the inner products.
        warnings.simplefilter("ignore", ConstantCueWarning)
        for s, h, idx in parts:
            problems[s, h] = refit_problem(pad_rows(clean_cues(X[idx]), rows),
                                           pad_rows(mean[idx], rows), weights[h], C=C,
                                           dtype=np.dtype(np.float64), tol=tol)
    late = {key: [] for key in problems}

    def store(s, h, start, got):
        def put(th, gn):
            out[s, h, start:start + got] = th[:got, 1:d + 1]
            late[s, h].extend(start + np.flatnonzero(gn[:got] > tol))
        return put

    # Each half fit is taken two fits late: the next halves are gathered (and
    # the next chunk drawn) while it computes, and no more than three halves'
    # labels are held at once.
    with Pipeline(lag=2) as pipe:
        for start, Yc in _chunks(Y, chunk):
            got = Yc.shape[0]
            if got < chunk:  # one compiled shape: the last chunk's last row repeated
                Yc = np.concatenate([Yc, np.repeat(Yc[-1:], chunk - got, axis=0)])
            for s, h, idx in parts:
                pipe.then(dispatch(problems[s, h], np.take(Yc, gather[s, h], axis=1),
                                   weights[h]), store(s, h, start, got))
    for (s, h), which in late.items():
        if which:  # the few L-BFGS left unconverged, by exact Newton
            Yl = Y.take(which) if isinstance(Y, Rows) else Y[which]
            th, _ = newton_refits(problems[s, h], np.take(Yl, gather[s, h], axis=1),
                                  np.broadcast_to(weights[h], (len(which), rows)))
            out[s, h, which] = th[:, 1:d + 1]
    return out


def _chunks(Y, size: int, log_odds: bool = False):
    """(start, `[c, n]` rows) of a batch, `size` rows at a time; `log_odds`:
    as clipped log-odds (drawn directly where the source can)."""
    if log_odds and isinstance(Y, DrawnDecisions) and Y.trials is None:
        for start in range(0, Y.shape[0], size):
            yield start, Y.take_log_odds(np.arange(start, min(start + size, Y.shape[0])))
        return
    for start, rows in weight_chunks(Y, size):
        yield start, logit_targets(rows) if log_odds else rows


#: On a CPU, a batch of half fits runs in calls of at most this many problems.
#: Measured on German Credit's half samples (512 rows, 63 columns), 1,000
#: simulation-world draws on one core: one call of 1,024 took 85.9 ms, four of
#: 256 took 85.9 ms; so a world's pilot (250 draws) and its main draws (1,000)
#: share one compiled program where they compiled two (2.2 s each, on the
#: critical path of a job's start). On an accelerator one wide call is faster,
#: and every half fit is one call (`fit_policies`' default chunk).
CPU_HALF_FIT_CHUNK = 256


def half_fit_chunk() -> int:
    """Problems per call of `fit_halves`' batches on JAX's default backend."""
    return CPU_HALF_FIT_CHUNK if jax.default_backend() == "cpu" else DEFAULT_CHUNK


#: Up to this many half fits (problems x splits x 2) are fitted in one batch
#: on all the cases, each half's cases weighted 1 and the others 0: twice the
#: rows per fit, but one compiled call instead of one per half. A comparison's
#: own 20 splits took 40 calls of 5 ms each (a tenth of a 30-cell audit).
FEW_HALF_FITS = 256


def _fit_halves_at_once(X: np.ndarray, Y, splits: np.ndarray,
                        C: float, tol: float | None = None) -> np.ndarray:
    """`fit_halves` (logistic) as one weighted batch; same `[S, 2, B, d]` result."""
    n, d = X.shape
    S, B = splits.shape[0], Y.shape[0]
    rows = padded_rows(n)
    Y = np.asarray(Y, np.float64)  # few problems: a source held whole
    # The halves' weights are made a chunk at a time (`[2 S B, n]` is 2.5 GB
    # at a million cases); one data set's labels are shared by all of them.
    W = HalfMembers(splits, per=B)
    Yb = pad_rows(Y[0], rows) if B == 1 else pad_rows(np.tile(Y, (S * 2, 1)), rows, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantCueWarning)
        fit = fit_policies(pad_rows(X, rows), Yb, W, C=C, tol=tol)
    return np.asarray(fit.beta).reshape(S, 2, B, d)


class CrossTerms(NamedTuple):
    """Split-averaged inner products across halves, each `[B]`."""

    dot: np.ndarray  # estimates a.b
    sq_a: np.ndarray  # estimates |a|^2
    sq_b: np.ndarray  # estimates |b|^2


@x64
def cross_sq(halves: np.ndarray) -> np.ndarray:
    """Cross-fitted squared norms: the inner product of each split's two half
    fits, averaged over splits. `[S, 2, ..., d]` -> `[...]`."""
    return np.sum(halves[:, 0] * halves[:, 1], -1).mean(0)


@x64
def cross_terms(halves_a: np.ndarray, halves_b: np.ndarray) -> CrossTerms:
    """Inner products across halves, averaged over splits.

    Args:
      halves_a, halves_b: `[S, 2, B, d]` from `fit_halves` (same splits).
    """
    a1, a2 = halves_a[:, 0], halves_a[:, 1]
    b1, b2 = halves_b[:, 0], halves_b[:, 1]
    dot = 0.5 * (np.sum(a1 * b2, -1) + np.sum(a2 * b1, -1))
    return CrossTerms(dot.mean(0), cross_sq(halves_a), cross_sq(halves_b))


@x64
def crossfit_cosine(terms: CrossTerms) -> np.ndarray:
    """`[B]` cross-fitted cosines, unclipped; NaN where a squared-norm estimate
    is not positive (the noise swamps that policy's signal)."""
    ok = (terms.sq_a > 0) & (terms.sq_b > 0)
    denom = np.sqrt(np.where(ok, terms.sq_a * terms.sq_b, 1.0))
    return np.where(ok, terms.dot / denom, np.nan)


@x64
def crossfit_undefined_reason(terms: CrossTerms, index: int = 0,
                              names=("organisation", "decision-maker")) -> str | None:
    """Why `crossfit_cosine(terms)[index]` is undefined, or None."""
    for sq, name in zip((terms.sq_a[index], terms.sq_b[index]), names):
        if not sq > 0:
            return (f"the {name} policy fitted on one half of the cases does not agree with "
                    f"the one fitted on the other half (cross-fitted squared norm {sq:.2g}): "
                    "at this number of cases its cue weights are noise")
    return None
