"""The cross-fitted cosine with an interval from a calibrated parametric bootstrap.

Why a parametric bootstrap. At German Credit's size and signal (n = 1,000,
p = 63, |beta| = 1.3, population cosine 0.8) the cross-fitted cosine's
standard deviation over repeated samples is 0.065. The pairs (case) bootstrap
put it at 0.090 and the delete-a-group jackknife at 0.079: both overstate the
variance of logistic fits once p/n is not small (El Karoui and Purdom 2018),
and their intervals covered 100% and 99%. A world with the estimated policies,
from which decisions are drawn as the data were, put it at 0.066 and covered
95% (`benchmarks/README.md`, "calibration").

The world. Two policies in the plane of the fitted vectors, with the
cross-fitted squared norms and cosine, and the fitted intercepts. A squared
norm estimated from half-sample fits is the population's times the
half-sample inflation of logistic maximum likelihood (Sur and Candes 2019;
about 1.15 at 500 cases and 63 columns), so a pilot world measures that
inflation and the main world divides it out; without the pilot the world's
signal is too strong and the interval too narrow (coverage 0.91).

The interval inverts the world (a Neyman construction): it keeps every
population cosine t whose world holds the observed raw estimate within its
central 95%. The world is run once, at the estimate; its reading at any other
cosine shifts the candidate's half fits by the change of its policy
(`_world_at_cosines`), so the inversion costs no refits. Near +-1 the raw
estimate's spread changes with the cosine, and the basic interval (one shape of
deviations, [r - q_hi(r* - c), r - q_lo(r* - c)]) had covered 0.87 at a
population cosine of 0.95 and 1.00 at 1 (`benchmarks/README.md`); it stays
the fallback where no cosine's world holds the estimate.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import jax
import numpy as np
from numpy.typing import ArrayLike

from kernels._alignment import Interval, cosine_undefined_reason
from kernels._logit_ls import LOGIT_CLIP, logit_targets
from kernels._crossfit import (
    cross_sq,
    cross_terms,
    crossfit_cosine,
    crossfit_undefined_reason,
    fit_halves,
    half_splits,
)
from kernels._ridge_logistic import WARM_TOL_FLOAT32
from kernels._rows import DrawnDecisions
from kernels._x64 import x64


#: Gradient tolerance (per unit weight) of the simulation world's half fits:
#: float32's, where its gradients are still accurate (`refit_batch`'s
#: float32 phase alone). A world's fits feed only the spread of simulated
#: estimates; at this tolerance their weights are within about 1e-5 of the
#: exact fits', which moves a world's cosines by 1e-5 or less, a hundredth of
#: the Monte Carlo error of its interval ends (measured: `benchmarks/README.md`,
#: "Statistics at scale"). The float64 finish it saves was half of every
#: world's time.
WORLD_TOL = WARM_TOL_FLOAT32


def _plane(beta_a: np.ndarray, beta_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal `u` (along beta_a) and `v` spanning the plane of the fitted
    policies. Shapes: `[R, d]` each, in and out."""
    u = beta_a / np.linalg.norm(beta_a, axis=-1, keepdims=True)
    v = beta_b - np.sum(beta_b * u, -1, keepdims=True) * u
    parallel = np.linalg.norm(v, axis=-1) < 1e-12 * np.linalg.norm(beta_b, axis=-1)
    if parallel.any():
        # Parallel fits: any direction orthogonal to u spans the plane.
        w = np.roll(u, 1, axis=-1)
        v = np.where(parallel[:, None], w - np.sum(w * u, -1, keepdims=True) * u, v)
    return u, v / np.linalg.norm(v, axis=-1, keepdims=True)


def _at_cosine(u: np.ndarray, v: np.ndarray, sq: ArrayLike, cos: ArrayLike) -> np.ndarray:
    """`[R, d]` policies of squared norm `sq` `[R]` at cosine `cos` `[R]` with u,
    in the plane of the orthonormal u and v `[R, d]` (`_plane`)."""
    c = np.clip(np.asarray(cos, np.float64), -1.0, 1.0)[:, None]
    return np.sqrt(np.asarray(sq, np.float64))[:, None] * (c * u + np.sqrt(1.0 - c * c) * v)


@x64
def world_policies(beta_a: ArrayLike, beta_b: ArrayLike, sq_a: ArrayLike, sq_b: ArrayLike,
                   cos: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Policies with squared norms `sq_a`, `sq_b` and cosine `cos`, in the plane
    of the fitted `beta_a` and `beta_b` (a along beta_a).

    Shapes: betas `[R, d]`, the rest `[R]`; returns two `[R, d]`.
    """
    u, v = _plane(np.atleast_2d(np.asarray(beta_a, np.float64)),
                  np.atleast_2d(np.asarray(beta_b, np.float64)))
    return np.sqrt(np.asarray(sq_a, np.float64))[:, None] * u, _at_cosine(u, v, sq_b, cos)


def _log_odds(X: ArrayLike, intercept: ArrayLike, beta: ArrayLike) -> np.ndarray:
    """`[R, n]` log-odds of R policies (intercept `[R]`, beta `[R, d]`) on X `[n, d]`."""
    X = np.asarray(X, np.float64)
    return np.atleast_1d(np.asarray(intercept, np.float64))[:, None] + np.atleast_2d(beta) @ X.T


@x64
def logit_residuals(p: ArrayLike, intercept: ArrayLike, beta: ArrayLike,
                    X: ArrayLike) -> np.ndarray:
    """Each case's log-odds beyond what the fitted policy explains, centred.

    What the cues leave unexplained of a model's probabilities is part of its
    policy's noise across cases: a world without it would be too sure of the
    soft policy. Shapes: p `[R, n]`, intercept `[R]`, beta `[R, d]`, X `[n, d]`;
    returns `[R, n]`.
    """
    z = _log_odds(X, intercept, beta)
    e = np.atleast_2d(logit_targets(p)) - np.clip(z, -LOGIT_CLIP, LOGIT_CLIP)
    return e - e.mean(axis=1, keepdims=True)


@x64
def world_draws(key: jax.Array, X: ArrayLike, intercept: ArrayLike, beta: ArrayLike,
                num: int, trials=1, residuals: ArrayLike | None = None) -> list[DrawnDecisions]:
    """Decisions of R logistic decision-makers, drawn as the data were, as
    sources that make them a chunk of draws at a time (`kernels._rows`).

    Args:
      X: `[n, d]`; intercept: `[R]`; beta: `[R, d]`; num: draws per decision-maker.
      trials: Bernoulli trials behind each case's value: 1 for one decision per
        case, k (or an `[n]` array) for the share of k samples or group
        members, None for a probability without sampling noise (the soft lens).
      residuals: with trials None, `[R, n]` log-odds residuals
        (`logit_residuals`); each draw adds them to the policy's log-odds,
        resampled over the cases. None: the policy's probabilities exactly.

    Returns:
      R sources of `[num, n]` values in [0, 1]; draw k of decision-maker i
      comes from the key, i and k alone.
    """
    z = _log_odds(X, intercept, beta)
    R, n = z.shape
    e = (None if residuals is None
         else np.broadcast_to(np.atleast_2d(np.asarray(residuals, np.float64)), (R, n)))
    return [DrawnDecisions(jax.random.fold_in(key, i), z[i], num, trials,
                           None if e is None else e[i]) for i in range(R)]


@x64
def draw_decisions(key: jax.Array, X: ArrayLike, intercept: ArrayLike, beta: ArrayLike,
                   num: int, trials=1, residuals: ArrayLike | None = None) -> np.ndarray:
    """`world_draws` held whole: `[R, num, n]` values in [0, 1] (small n only)."""
    return np.stack([np.asarray(src) for src in
                     world_draws(key, X, intercept, beta, num, trials, residuals)])


class CrossFitted(NamedTuple):
    """Cross-fitted cosines of R pairs of policies, each on its own data.

    Each field is `[R]` (R = 1 for one comparison).
    """

    estimate: np.ndarray  # clipped to [-1, 1]; NaN when undefined
    raw: np.ndarray  # before clipping (above 1: as aligned as the data can tell)
    interval: Interval  # contains `estimate`, inside [-1, 1]; NaN when undefined
    reason: list  # why each is undefined, or None
    world_sd: np.ndarray  # the world's standard deviation of the estimate
    world_dev: np.ndarray  # [R, n_world] each world draw's estimate minus the world's
    # cosine (NaN: undefined). Draw k of every candidate compared with one
    # reference shares that reference's k-th world data set, so the deviations
    # of two candidates pair by draw (`crossfit_change`).
    # The estimate's mean minus the bound on its side (+1, or -1 below 0) in the
    # world at that bound: what a population cosine of exactly +-1 would read
    # (short of it: the estimate is clipped there). NaN without a world.
    bound_bias: np.ndarray


def _basic(raw: float, estimate: float, dev: np.ndarray, level: float,
           bound: float = 1.0) -> tuple[float, float]:
    """The basic interval around the unclipped estimate `raw`, made to contain
    the reported (clipped) `estimate` and to lie in [-bound, bound] with a
    positive width (bound 1 for a cosine, 2 for a change of one).

    Built around the unclipped value so that at a population cosine of 1 the
    upper end falls below 1 as often as the level says, not never."""
    alpha = (1 - level) / 2
    lo = raw - float(np.quantile(dev, 1 - alpha))
    hi = raw - float(np.quantile(dev, alpha))
    lo, hi = min(lo, estimate), max(hi, estimate)
    width = hi - lo
    lo, hi = max(lo, -bound), min(hi, bound)
    if hi <= lo and width > 0:
        # The whole interval lay beyond the bound (an estimate far above 1 by
        # noise): keep its width, ending at the boundary it crossed.
        lo, hi = ((max(-bound, bound - width), bound) if raw > 0
                  else (-bound, min(bound, -bound + width)))
    return lo, hi


#: Population cosines at which the world is read again to invert it (steps of
#: 0.01; each end of the interval is interpolated between two of them).
WORLD_COSINES = np.linspace(-1.0, 1.0, 201)


def _split_matched(terms: np.ndarray, n_splits: int) -> np.ndarray:
    """Split-averaged cross terms of world draws, their split noise scaled
    from the world's few splits to the estimate's `n_splits`.

    A draw's terms averaged over S random splits are the terms of its data
    (averaged over every split) plus split noise of covariance Sigma / S, with
    Sigma the spread of one split's terms around its data's. The world fits
    Sw = 4 splits a draw where the estimate averages 20, so at weak signal its
    raw estimates spread wider than the estimate's (measured: `benchmarks/
    README.md`, "Over population directions"). Sigma is estimated by the
    within-draw covariance over the Sw splits; the draws' means are moved
    around their average by the affine map that takes their covariance C to
    C - (1 / Sw - 1 / n_splits) Sigma (second moments only; the map is the
    identity when Sw >= n_splits).

    Args:
      terms: `[3, Sw, ..., N]` one split's dot, sq_a and sq_b of each draw
        (the middle axes, e.g. cosines, are batched).

    Returns:
      `[3, ..., N]` the matched means.
    """
    sw = terms.shape[1]
    mean = terms.mean(1)  # [3, ..., N]
    if sw >= n_splits or sw < 2:
        return mean
    x = np.moveaxis(mean, 0, -1)  # [..., N, 3]
    centre = x.mean(-2, keepdims=True)
    xc = x - centre
    N = x.shape[-2]
    total = np.einsum("...ni,...nj->...ij", xc, xc) / max(N - 1, 1)  # [..., 3, 3]
    dev = np.moveaxis(terms - mean[:, None], (0, 1), (-1, -3))  # [..., Sw, N, 3]
    within = np.einsum("...sni,...snj->...ij", dev, dev) / ((sw - 1) * N)
    target = total - (1.0 / sw - 1.0 / n_splits) * within

    def power(m, a):  # symmetric m^a, eigenvalues floored at a tiny share of the trace
        w, v = np.linalg.eigh(m)
        floor = 1e-12 * np.maximum(np.trace(m, axis1=-2, axis2=-1), 1e-300)[..., None]
        w = np.maximum(w, floor)
        return np.einsum("...ij,...j,...kj->...ik", v, w ** a, v)

    A = power(target, 0.5) @ power(total, -0.5)  # [..., 3, 3]
    out = centre + np.einsum("...ij,...nj->...ni", A, xc)
    return np.moveaxis(out, -1, 0)


def _world_at_cosines(halves_a: np.ndarray, halves_b: np.ndarray, beta_w: np.ndarray,
                      u: np.ndarray, v: np.ndarray, cos: float,
                      cosines: np.ndarray = WORLD_COSINES, n_splits: int = 0) -> np.ndarray:
    """The world's raw cross-fitted cosines as if its candidate policy had each
    population cosine in `cosines` instead of `cos`, without refitting.

    A half fit of a world draw is its mean (k times the policy: the half-sample
    inflation and the penalty's shrinkage) plus estimation noise whose spread
    depends on the policy's norm and the cues, hardly on its direction in the
    plane. So the half fits at cosine t are taken as those at `cos` shifted by
    k times the change of the policy; the inner products across halves are
    then a few per-draw scalars and the shift's two coordinates.

    Args:
      halves_a, halves_b: `[Sw, 2, N, d]` half fits of the N world draws.
      beta_w: `[d]` the candidate's world policy (cosine `cos` with u).
      u, v: `[d]` orthonormal, u along the reference's policy (`_plane`).
      n_splits: the estimate's splits; the draws' split noise is matched to
        it (`_split_matched`); 0: as the world's own splits give it.

    Returns:
      `[T, N]` raw cross-fitted cosines (NaN where a squared norm is not positive).
    """
    a1, a2 = halves_a[:, 0], halves_a[:, 1]
    b1, b2 = halves_b[:, 0], halves_b[:, 1]
    k = float(np.mean(halves_b, axis=(0, 1, 2)) @ beta_w) / float(beta_w @ beta_w)
    nb = float(np.linalg.norm(beta_w))
    t = np.asarray(cosines, np.float64)[:, None]
    # The shift of every half fit: s_u u + s_v v, each [T, 1].
    s_u = k * nb * (t - cos)
    s_v = k * nb * (np.sqrt(1.0 - t * t) - np.sqrt(max(1.0 - cos * cos, 0.0)))
    if n_splits:  # each split's terms, [Sw, N] -> [3, Sw, T, N]
        mean_a, sum_b = 0.5 * (a1 + a2), b1 + b2
        s_u, s_v = s_u[:, None], s_v[:, None]  # [T, 1, 1]
        dot = 0.5 * (np.sum(a1 * b2, -1) + np.sum(a2 * b1, -1))
        sq_a = np.sum(a1 * a2, -1)
        sq_b = np.sum(b1 * b2, -1)
    else:  # averaged over splits first: [N]
        mean_a = 0.5 * (a1 + a2).mean(0)  # [N, d]
        sum_b = (b1 + b2).mean(0)
        dot = 0.5 * (np.sum(a1 * b2, -1) + np.sum(a2 * b1, -1)).mean(0)
        sq_a = np.sum(a1 * a2, -1).mean(0)
        sq_b = np.sum(b1 * b2, -1).mean(0)
    dot = dot + s_u * (mean_a @ u) + s_v * (mean_a @ v)
    sq_b = sq_b + s_u * (sum_b @ u) + s_v * (sum_b @ v) + s_u**2 + s_v**2
    sq_a = np.broadcast_to(sq_a, sq_b.shape)
    if n_splits:
        dot, sq_a, sq_b = _split_matched(np.swapaxes(np.stack([dot, sq_a, sq_b]), 1, 2),
                                         n_splits)
    ok = (sq_a > 0) & (sq_b > 0)
    return np.where(ok, dot / np.sqrt(np.where(ok, sq_a * sq_b, 1.0)), np.nan)


def _inverted(raw: float, estimate: float, world: np.ndarray, level: float,
              cosines: np.ndarray = WORLD_COSINES) -> tuple[float, float] | None:
    """The population cosines whose world holds the observed raw estimate
    within its central `level` (a Neyman construction), as [low, high] around
    the reported `estimate`; None where no cosine's world holds it.

    world: `[T, N]` from `_world_at_cosines`. Near +-1 the raw estimate's
    spread changes with the cosine, which the basic interval's one shape of
    deviations cannot follow (measured: 0.87 coverage at 0.95, 1.00 at 1).
    """
    alpha = (1 - level) / 2
    enough = np.sum(np.isfinite(world), 1) >= max(20, world.shape[1] // 2)
    if not enough.any():
        return None
    q_lo = np.full(len(cosines), np.nan)
    q_hi = q_lo.copy()
    # numpy's nanquantile sorts row by row: 4x the time where nothing is NaN.
    quantile = np.quantile if np.isfinite(world[enough]).all() else np.nanquantile
    q_lo[enough], q_hi[enough] = quantile(world[enough], [alpha, 1 - alpha], axis=1)
    keep = enough & (q_lo <= raw) & (raw <= q_hi)
    if not keep.any():
        return None
    i, j = np.flatnonzero(keep)[[0, -1]]

    def cross(q, a, b):  # where q crosses raw between cosines a and b
        if not (np.isfinite(q[a]) and np.isfinite(q[b])) or q[a] == q[b]:
            return cosines[b]
        w = np.clip((raw - q[a]) / (q[b] - q[a]), 0.0, 1.0)
        return cosines[a] + w * (cosines[b] - cosines[a])

    lo = cosines[i] if i == 0 else cross(q_hi, i - 1, i)
    hi = cosines[j] if j == len(cosines) - 1 else cross(q_lo, j + 1, j)
    return float(min(lo, estimate)), float(max(hi, estimate))


def _bound_bias(world: np.ndarray, estimate: float,
                cosines: np.ndarray = WORLD_COSINES) -> float:
    """The clipped estimate's mean minus the bound on the estimate's side, in
    the world at that bound. world: `[T, N]` raw estimates by population cosine.

    At a population cosine of exactly 1 the estimate, clipped there, can only
    read short; by how much grows with its spread (measured: 0.06 at n = 600,
    63 columns, |beta| = 0.7; `benchmarks/README.md`). A cell whose interval
    reaches the bound says so with this figure.
    """
    t = -1 if estimate >= 0 else 0
    bound = cosines[t]
    draws = world[t][np.isfinite(world[t])]
    return float(np.mean(np.clip(draws, -1.0, 1.0)) - bound) if draws.size else float("nan")


#: Why an interval is refused when too few world draws could estimate the policies.
NOISE_WORLD = ("in a simulation at the estimated policies, most repetitions could not "
               "estimate them at all: at this number of cases the policies' directions are noise")

#: Why a change between two conditions has no interval when their decisions
#: are the same case by case (a decision-maker the condition does not move).
SAME_DECISIONS = ("the decisions are the same in both conditions, case by case: the change is "
                  "exactly 0, with no interval (nothing differs between them to vary)")


class CrossFitReference(NamedTuple):
    """The reference policy's side of the cross-fitted comparison.

    None of it depends on the candidate: its half fits and the half fits of
    its simulation world's draws. Computed once, it is shared by
    every candidate compared with the same reference on the same cases, as the
    audit compares every cell with the organisation (same key, so the
    candidates' statistics stay paired). Ra = 1 (one reference for every
    candidate) or R (one per candidate: the calibration studies).
    """

    intercept: np.ndarray  # [Ra]
    beta: np.ndarray  # [Ra, d] full-sample fit
    splits: np.ndarray  # [S, n] the half splits; the first `world_splits` serve the world
    halves: np.ndarray  # [S, 2, Ra, d]
    world_halves: np.ndarray  # [Sw, 2, Ra, n_world, d] half fits of the world's draws
    key: jax.Array  # the candidates' world draws come from the same key
    C: float
    n_world: int
    refused: str | None  # why no candidate can be compared (too few cases)


def _keys(key: jax.Array):
    """(splits, pilot world, main world) keys; the reference draws from the
    first half of each world key, the candidate from the second."""
    return jax.random.split(key, 3)


@x64
def crossfit_reference(
    X: ArrayLike,
    y_a: ArrayLike,
    fit_a: tuple[ArrayLike, ArrayLike],
    *,
    key: jax.Array,
    trials=1,
    C: float = 1.0,
    n_splits: int = 20,
    n_world: int = 400,
    world_splits: int = 4,
) -> CrossFitReference:
    """The reference side of `cross_fitted_alignment`.

    Args:
      X: `[n, d]` cues shared by every comparison.
      y_a: `[n]` or `[Ra, n]` reference decisions (or shares, probabilities).
      fit_a: (intercept `[Ra]`, beta `[Ra, d]`) of the full-sample fit.
      trials: as in `draw_decisions` (None for probabilities).
      n_splits: random half splits for the estimate.
      n_world: world draws for the interval (a quarter as many more for the
        pilot that measures the half-sample inflation).
      world_splits: splits per world draw (the first of the estimate's).
    """
    X = np.asarray(X, np.float64)
    n, d = X.shape
    Ya = np.atleast_2d(np.asarray(y_a, np.float64))
    ia, ba = np.atleast_1d(np.asarray(fit_a[0], np.float64)), np.atleast_2d(fit_a[1])
    ra = Ya.shape[0]
    k_split, k_pilot, k_main = _keys(key)
    if d >= n // 2:
        # Measured (benchmarks/README.md): with more columns than cases in each
        # half, the half fits are the penalty's, not the data's; the interval
        # then spans most of [-1, 1] and the estimate is biased.
        why = (f"too few cases for a cross-fitted estimate: each half of the {n} cases "
               f"({n // 2}) must outnumber the {d} encoded columns")
        return CrossFitReference(ia, ba, np.empty((0, n), int), np.empty((0, 2, ra, d)),
                                 np.empty((0, 2, ra, n_world, d)), key, C, n_world, why)
    splits = half_splits(k_split, n, n_splits)
    halves = fit_halves(X, Ya, splits, C=C)
    sq = cross_sq(halves)
    ok = sq > 0
    # An undefined reference gets a stand-in world (never read) so every array keeps Ra rows.
    sq_ok = np.where(ok, sq, 1.0)
    world_split = splits[:world_splits]
    u = ba / np.linalg.norm(ba, axis=-1, keepdims=True)

    def world(key, sq, num):
        ka, _ = jax.random.split(key)
        draws = world_draws(ka, X, ia, np.sqrt(sq)[:, None] * u, num, trials)
        out = np.full((world_splits, 2, ra, num, d), np.nan)
        for i in np.flatnonzero(ok):
            # One batch per data set: its refits start from its own world's
            # expected fit, close to each of them (one batch across data sets
            # would start far from most and take several times as long).
            out[:, :, i] = fit_halves(X, draws[i], world_split, C=C, tol=WORLD_TOL)
        return out

    # The world's own estimate of its squared norm, over the norm it was given.
    pilot = world(k_pilot, sq_ok, max(n_world // 4, 25))
    inflation = cross_sq(pilot).mean(-1) / sq_ok
    world_sq = sq_ok / np.where(inflation > 0, inflation, 1.0)
    return CrossFitReference(ia, ba, splits, halves, world(k_main, world_sq, n_world), key, C,
                             n_world, None)


@x64
def crossfit_stand_in(X: ArrayLike, fit_a: tuple[ArrayLike, ArrayLike], *, key: jax.Array,
                      C: float = 1.0, n_splits: int = 20, n_world: int = 400,
                      world_splits: int = 4) -> CrossFitReference:
    """A `crossfit_reference` of the same shapes, splits and key in which every
    half fit is the full-sample fit `fit_a`, in a fraction of its time.

    A comparison with it runs every program a comparison with the real one
    compiles (JAX compiles per shape), so a process can compile them while
    another fits the real reference; its numbers mean nothing.
    """
    X = np.asarray(X, np.float64)
    n, d = X.shape
    if d >= n // 2:  # refused: the real one costs nothing
        return crossfit_reference(X, np.zeros(n), fit_a, key=key, C=C, n_splits=n_splits,
                                  n_world=n_world, world_splits=world_splits)
    ia, ba = np.atleast_1d(np.asarray(fit_a[0], np.float64)), np.atleast_2d(fit_a[1])
    ra = ba.shape[0]
    splits = half_splits(_keys(key)[0], n, n_splits)
    return CrossFitReference(ia, ba, splits, np.broadcast_to(ba, (n_splits, 2, ra, d)),
                             np.broadcast_to(ba[:, None], (world_splits, 2, ra, n_world, d)),
                             key, C, n_world, None)


@x64
def cross_fitted_alignment(
    X: ArrayLike,
    y_b: ArrayLike,
    fit_b: tuple[ArrayLike, ArrayLike],
    reference: CrossFitReference,
    *,
    trials_b=1,
    level: float = 0.95,
    loss_b: str = "logistic",
    split_matched: bool = True,
) -> CrossFitted:
    """Cross-fitted cosine of the reference policy a and the candidate b, with its interval.

    Args:
      X: `[n, d]` the reference's cues.
      y_b: `[n]` or `[R, n]` decisions or shares in [0, 1] (R data sets at
        once: the calibration studies run the product's code on many).
      fit_b: (intercept `[R]`, beta `[R, d]`) of each full-sample fit.
      reference: from `crossfit_reference` (one for all R, or one per data set);
        its splits, world size, key and C are used here too.
      trials_b: as in `draw_decisions`; None for probabilities (the soft lens),
        whose world adds back their log-odds residuals (`logit_residuals`).
      loss_b: how the candidate's policies are fitted (`kernels._crossfit.LOSSES`);
        fit_b must have been fitted the same way.
      split_matched: scale the world draws' split noise to the estimate's
        splits (`_split_matched`; measured on the whole n >= 600 grid,
        `benchmarks/README.md`). False: the world's own 4 splits, as before
        2026-12-05 (`benchmarks/calibration.py --unmatched-world`).
    """
    X = np.asarray(X, np.float64)
    ref = reference
    Yb = np.atleast_2d(np.asarray(y_b, np.float64))
    R = Yb.shape[0]
    ib, bb = np.atleast_1d(np.asarray(fit_b[0], np.float64)), np.atleast_2d(fit_b[1])
    ra = ref.beta.shape[0]
    if ra not in (1, R):
        raise ValueError(f"the reference has {ra} rows; the candidate has {R}")
    at = (lambda i: 0) if ra == 1 else (lambda i: i)  # noqa: E731
    nan = np.full(R, np.nan)
    n_world = ref.n_world
    no_world = np.full((R, n_world), np.nan)
    if ref.refused:
        return CrossFitted(nan, nan.copy(), Interval(nan.copy(), nan.copy()), [ref.refused] * R,
                           nan.copy(), no_world, nan.copy())
    _, k_pilot, k_main = _keys(ref.key)
    C = ref.C
    halves_a = np.broadcast_to(ref.halves, ref.halves.shape[:2] + (R,) + ref.halves.shape[3:])
    terms = cross_terms(halves_a, fit_halves(X, Yb, ref.splits, C=C, loss=loss_b))
    raw = crossfit_cosine(terms)
    reasons = [crossfit_undefined_reason(terms, i) for i in range(R)]
    # A policy of norm ~0 (one answer for every case) has no direction; its half
    # fits are the rounding of a flat fit, whose cross product can be positive.
    for i in range(R):
        why = cosine_undefined_reason(ref.beta[at(i)], bb[i])
        if why:
            raw[i], reasons[i] = np.nan, why
    ok = np.isfinite(raw)
    est = np.where(ok, np.clip(raw, -1.0, 1.0), np.nan)
    if not ok.any():
        return CrossFitted(est, raw, Interval(nan, nan.copy()), reasons, nan.copy(), no_world,
                           nan.copy())
    # Undefined cells get a stand-in world (never read) so every array keeps R rows.
    sq_b = np.where(ok, terms.sq_b, 1.0)
    c = np.nan_to_num(est)
    world_split = ref.splits[: ref.world_halves.shape[0]]
    n_splits = ref.splits.shape[0] if split_matched else 0
    ba = np.broadcast_to(ref.beta, bb.shape)
    # The plane the worlds' policies lie in (the pilot's and the main one's).
    u, v = _plane(np.asarray(ba, np.float64), np.asarray(bb, np.float64))

    # Decisions: each candidate's world draws its own, as two conditions of one
    # model decide independently in the study, so the key differs with the
    # candidate's data. Probabilities have no sampling noise; their world adds
    # back what the cues leave unexplained of them (`logit_residuals`),
    # resampled over the cases. What a model makes of a case beyond its cues
    # persists across prompts, so two candidates' residuals on one case go
    # together: both resample the same cases in draw k (a paired bootstrap),
    # keyed by the reference alone. Resampled independently, a change between
    # conditions whose residuals correlate 0.9 had a world sd 1.7 to 3.1 times
    # its own, and every interval covered (benchmarks/README.md, "The soft
    # change between conditions").
    tag = zlib.crc32(np.ascontiguousarray(Yb).tobytes()) & 0x7FFFFFFF
    resid = None if trials_b is not None else logit_residuals(Yb, ib, bb, X)

    def world(key, sq_b, num):
        kb = jax.random.split(key)[1]
        kb = kb if resid is not None else jax.random.fold_in(kb, tag)
        beta = _at_cosine(u, v, sq_b, c)
        draws = world_draws(kb, X, ib, beta, num, trials_b, resid)
        return beta, {i: fit_halves(X, draws[i], world_split, C=C, loss=loss_b,
                                    tol=WORLD_TOL) for i in np.flatnonzero(ok)}

    # The world's own estimate of its squared norm, over the norm it was given.
    _, pilot = world(k_pilot, sq_b, max(n_world // 4, 25))
    infl_b = np.ones(R)
    for i, h in pilot.items():
        infl_b[i] = cross_sq(h).mean() / sq_b[i]
    beta_w, main = world(k_main, sq_b / np.where(infl_b > 0, infl_b, 1.0), n_world)
    low, high, sd, bound_bias = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    world_dev = no_world.copy()
    for i, h in main.items():
        world_dev[i] = (_world_at_cosines(ref.world_halves[:, :, at(i)], h, beta_w[i], u[i],
                                          v[i], c[i], np.array([c[i]]), n_splits)[0]
                        if n_splits else crossfit_cosine(cross_terms(
                            ref.world_halves[:, :, at(i)], h))) - c[i]
        dev = world_dev[i][np.isfinite(world_dev[i])]
        if dev.size < max(20, n_world // 2):
            reasons[i] = NOISE_WORLD
            world_dev[i] = np.nan
            continue
        at_cosines = _world_at_cosines(ref.world_halves[:, :, at(i)], h, beta_w[i], u[i], v[i],
                                       c[i], n_splits=n_splits)
        low[i], high[i] = (_inverted(raw[i], est[i], at_cosines, level)
                           or _basic(raw[i], est[i], dev, level))
        sd[i] = float(np.std(dev))
        bound_bias[i] = _bound_bias(at_cosines, c[i])
    return CrossFitted(est, raw, Interval(low, high), reasons, sd, world_dev, bound_bias)


class CrossFittedChange(NamedTuple):
    """Change of the cross-fitted cosine from one candidate to another, both
    compared with one reference on the same cases (a model's baseline and
    another condition). Each field is `[R]`."""

    estimate: np.ndarray  # other minus base (clipped estimates); NaN when undefined
    interval: Interval  # contains `estimate`, inside [-2, 2]
    reason: list  # why each is undefined, or None


@x64
def crossfit_change(base: CrossFitted, other: CrossFitted, level: float = 0.95) -> CrossFittedChange:
    """The paired change `other - base` with a basic interval from the world.

    World draw k of both shares the reference's k-th data set, as the two
    conditions share the organisation's decisions, so the organisation's
    estimation noise cancels in the change as it does in the study; each
    candidate's own decisions are independent draws, keyed by its data (its
    probabilities' residuals are resampled on the same cases in both, as they
    pair in the study), so two candidates with the same decisions in every case
    have the same world: their change is exactly 0 and is given without an
    interval (`SAME_DECISIONS`), not a zero-width one.
    """
    est = other.estimate - base.estimate
    raw = other.raw - base.raw
    dev = other.world_dev - base.world_dev
    R = est.shape[0]
    low, high = np.full(R, np.nan), np.full(R, np.nan)
    reasons = []
    for i in range(R):
        why = None
        if not np.isfinite(est[i]):
            which, r = (("base", base.reason[i]) if not np.isfinite(base.estimate[i])
                        else ("other", other.reason[i]))
            why = f"the {which} alignment is undefined: {r}"
        else:
            d = dev[i][np.isfinite(dev[i])]
            if d.size < max(20, dev.shape[1] // 2):
                why = next((r for r in (base.reason[i], other.reason[i]) if r), NOISE_WORLD)
            elif raw[i] == 0 and not np.any(d):
                why = SAME_DECISIONS
            else:
                low[i], high[i] = _basic(raw[i], est[i], d, level, bound=2.0)
        reasons.append(why)
    return CrossFittedChange(est, Interval(low, high), reasons)
