"""Calibration studies: simulated decision-makers with known policies.

`grid_point` measures, at one (n, p, |beta|, population cosine), the bias of
each alignment estimator and the coverage and width of each interval, running
the product's own code (`cross_fitted_alignment`) on many data sets at once.
The calibration tests assert it on a reduced grid; `benchmarks/calibration.py
--grid` prints the full grid. Refits are batched through `fit_policies`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kernels._alignment import (
    ZERO_POLICY_NORM,
    bootstrap_interval,
    cosine,
    family_shares,
    permutation_pvalue,
)
from kernels._logit_ls import fit_logit_ls
from kernels._policy import fit_policies
from kernels._resample import bootstrap_weights, permutations
from kernels._ridge_logistic import PolicyFit
from kernels._world import _basic, cross_fitted_alignment, crossfit_change, crossfit_reference
from kernels._x64 import x64


@x64
def binary_design(rng: np.random.Generator, n: int, p: int) -> np.ndarray:
    """`[n, p]` independent fair binary cues, standardised."""
    X = (rng.random((n, p)) < 0.5).astype(float)
    return (X - X.mean(0)) / X.std(0)


@x64
def cue_design(rng: np.random.Generator, n: int, p: int) -> np.ndarray:
    """`[n, p]` independent binary cues of varied prevalence (0.15 to 0.85, like
    the levels of the shipped studies' common categories), standardised."""
    prevalence = rng.uniform(0.15, 0.85, p)
    X = (rng.random((n, p)) < prevalence).astype(float)
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)


@x64
def simulate_decisions(rng: np.random.Generator, X: np.ndarray, beta: np.ndarray,
                       reps: int, intercept: float = 0.0) -> np.ndarray:
    """`[reps, n]` 0/1 decisions of a logistic decision-maker with policy `beta`."""
    prob = 1.0 / (1.0 + np.exp(-(intercept + X @ beta)))
    return (rng.random((reps, X.shape[0])) < prob).astype(float)


@x64
def policies_with_cosine(rng: np.random.Generator, p: int, cos: float,
                         norm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two random `[p]` policies of the given norm whose cosine is exactly `cos`."""
    org, others = policies_with_cosines(rng, p, [cos], norm)
    return org, others[0]


@x64
def policies_with_cosines(rng: np.random.Generator, p: int, cosines, norm: float = 1.0):
    """A random `[p]` reference policy and `[k, p]` others, one per cosine with
    it, all in one plane (a condition that turns a decision-maker towards the
    reference or away from it)."""
    a = rng.standard_normal(p)
    a /= np.linalg.norm(a)
    u = rng.standard_normal(p)
    u -= (u @ a) * a
    u /= np.linalg.norm(u)
    c = np.asarray(cosines, float)[:, None]
    return norm * a, norm * (c * a + np.sqrt(1 - c**2) * u)


@x64
def disattenuated_cosine(beta_a, beta_b, boot_a, boot_b) -> jax.Array:
    """r_cos_adj, the estimator the cross-fitted cosine replaced (kept to measure
    it beside it): the cosine with the estimation-noise norm removed.

    r_adj = a.b / sqrt((|a|^2 - tr S_a)(|b|^2 - tr S_b)), S = bootstrap covariance.

    Args:
      beta_a, beta_b: `[d]` point estimates.
      boot_a, boot_b: `[B, d]` bootstrap refits of each (paired resamples).

    Returns:
      `[]`, NaN when a corrected squared norm is not positive. It is not clipped
      to [-1, 1]: clipping would bias its mean, which is what it corrects.
    """
    tr_a = jnp.sum(jnp.var(boot_a, axis=0, ddof=1))
    tr_b = jnp.sum(jnp.var(boot_b, axis=0, ddof=1))
    return _adjusted(beta_a, beta_b, tr_a, tr_b)


def _adjusted(a, b, tr_a, tr_b):
    na = jnp.sum(a * a, axis=-1)
    nb = jnp.sum(b * b, axis=-1)
    qa, qb = na - tr_a, nb - tr_b
    # A ~0 policy has no direction: undefined here too, as for the plain cosine.
    ok = (qa > 0) & (qb > 0) & (na > ZERO_POLICY_NORM**2) & (nb > ZERO_POLICY_NORM**2)
    return jnp.where(ok, jnp.sum(a * b, axis=-1) / jnp.sqrt(jnp.where(ok, qa * qb, 1.0)), jnp.nan)



class NullStudy(NamedTuple):
    pvalues: np.ndarray  # [sets]
    rejection_rate: float  # share of p <= 0.05


@x64
def permutation_null_study(rng: np.random.Generator, key: jax.Array, *, n: int, p: int,
                           sets: int = 300, n_permutations: int = 99) -> NullStudy:
    """Permutation p-values for decision-makers that ignore the cues (the null is true)."""
    X = binary_design(rng, n, p)
    y_org = simulate_decisions(rng, X, rng.standard_normal(p), sets)
    y_dm = (rng.random((sets, n)) < 0.5).astype(float)
    org = fit_policies(X, y_org)
    dm = fit_policies(X, y_dm)
    obs = np.asarray(cosine(org.beta, dm.beta))
    idx = np.asarray(permutations(key, n, sets * n_permutations))
    Y_null = y_dm.repeat(n_permutations, axis=0)[np.arange(sets * n_permutations)[:, None], idx]
    null = fit_policies(X, Y_null)
    if not bool(np.all(null.converged)):
        raise RuntimeError("some permutation refits did not converge")
    null_cos = np.asarray(cosine(org.beta.repeat(n_permutations, axis=0), null.beta))
    null_cos = null_cos.reshape(sets, n_permutations)
    pvals = np.array([float(permutation_pvalue(o, nc)) for o, nc in zip(obs, null_cos)])
    return NullStudy(pvals, float(np.mean(pvals <= 0.05)))


class SimulatedPair(NamedTuple):
    """One design, an organisation's and a decision-maker's population policies
    at a given cosine, `reps` data sets of both deciding every case once, and
    each data set's full-sample fit."""
    X: np.ndarray  # [n, p]
    beta_org: np.ndarray  # [p]
    beta_dm: np.ndarray  # [p]
    y_org: np.ndarray  # [reps, n]
    y_dm: np.ndarray  # [reps, n]
    org: PolicyFit  # beta [reps, p], intercept [reps]
    dm: PolicyFit


@x64
def simulate_pair(rng: np.random.Generator, *, n: int, p: int, norm: float,
                  population_cos: float, reps: int) -> SimulatedPair:
    """The data sets of a grid point, drawn in the order the recorded grids
    were (design, policies, the organisation's decisions, the decision-maker's):
    `grid_point` and the probes in `benchmarks/` share this, so a seed gives
    them the same data sets."""
    X = cue_design(rng, n, p)
    beta_org, beta_dm = policies_with_cosine(rng, p, population_cos, norm)
    y_org = simulate_decisions(rng, X, beta_org, reps)
    y_dm = simulate_decisions(rng, X, beta_dm, reps)
    return SimulatedPair(X, beta_org, beta_dm, y_org, y_dm,
                         fit_policies(X, y_org), fit_policies(X, y_dm))


class GridPoint(NamedTuple):
    """Bias, coverage and width at one grid point (NaN: not measured)."""

    n: int
    p: int
    norm: float
    population_cos: float
    reps: int
    cf_bias: float  # mean(estimate) - population, over defined estimates
    cf_coverage: float  # share of defined intervals that cover the population
    cf_width: float  # mean interval width
    cf_defined: float  # share of data sets where the estimate and interval exist
    cf_sd: float  # standard deviation of the estimate over data sets
    cf_world_sd: float  # median of the world's standard deviation (its estimate of cf_sd)
    cf_basic_coverage: float  # the basic interval on the same world draws (before inversion)
    plain_bias: float  # plain r_cos
    plain_basic_coverage: float  # pairs-bootstrap basic interval on plain r_cos
    adj_bias: float  # r_cos_adj (bootstrap-variance disattenuation)
    # Per-cue weights of the organisation's policy (every cue, every data set)
    # and the share of sum |beta| on a "protected" third of the cues, each
    # against its population value, with pairs-bootstrap intervals.
    weight_scale: float  # median |beta_hat| / |beta| over the weights (1: unbiased scale)
    weight_basic_coverage: float
    weight_percentile_coverage: float
    share_bias: float
    share_basic_coverage: float
    share_percentile_coverage: float
    # The unbounded cross-fitted cosine's bias (before clipping to [-1, 1]):
    # at a population cosine of +-1 what the bound costs is cf_bias minus it.
    cf_raw_bias: float = float("nan")
    # A candidate: the raw estimate less its world's mean deviation (the
    # simulation world's bias at the estimate), clipped to [-1, 1].
    cf_world_corrected_bias: float = float("nan")
    # The world's own reading of the bias at the bound (median over data sets of
    # `CrossFitted.bound_bias`): at a population cosine of +-1, cf_bias's estimate.
    cf_bound_bias: float = float("nan")
    # The raw estimate's sd over data sets: what the world's sd (of raw
    # deviations) estimates, before clipping narrows the estimate's near +-1.
    cf_raw_sd: float = float("nan")


@x64
def grid_point(rng: np.random.Generator, key: jax.Array, *, n: int, p: int, norm: float,
               population_cos: float, reps: int = 200, n_world: int = 200,
               world_splits: int = 4, n_splits: int = 20, n_bootstrap: int = 0,
               level: float = 0.95, split_matched: bool = True) -> GridPoint:
    """Simulate `reps` data sets (one organisation, one decision-maker, each
    deciding every case once) and measure the estimators on them.

    `n_bootstrap` > 0 also measures the pairs-bootstrap candidates (plain r_cos
    with its basic interval, r_cos_adj); 0 skips them (they are the slow part).
    `split_matched`: the world's split noise matched to the estimate's splits
    (`cross_fitted_alignment`, the product's); False measures the world as it
    was before 2026-12-05.
    """
    X, beta_org, _, y_org, y_dm, org, dm = simulate_pair(
        rng, n=n, p=p, norm=norm, population_cos=population_cos, reps=reps)
    plain = np.asarray(cosine(org.beta, dm.beta))
    k_cf, k_boot = jax.random.split(key)
    ref = crossfit_reference(X, y_org, (org.intercept, org.beta), key=k_cf, n_splits=n_splits,
                             n_world=n_world, world_splits=world_splits)
    cf = cross_fitted_alignment(X, y_dm, (dm.intercept, dm.beta), ref, level=level,
                                split_matched=split_matched)
    est, lo, hi = cf.estimate, cf.interval.low, cf.interval.high
    has = np.isfinite(lo)
    nan = float("nan")
    basic = [_basic(cf.raw[r], est[r], cf.world_dev[r][np.isfinite(cf.world_dev[r])], level)
             for r in np.flatnonzero(has)]
    basic_cov = adj_bias = nan
    weights = dict(weight_scale=nan, weight_basic_coverage=nan, weight_percentile_coverage=nan,
                   share_bias=nan, share_basic_coverage=nan, share_percentile_coverage=nan)
    if n_bootstrap:
        W = np.asarray(bootstrap_weights(k_boot, n, reps * n_bootstrap))
        bo = np.asarray(fit_policies(X, y_org.repeat(n_bootstrap, 0), W).beta)
        bd = np.asarray(fit_policies(X, y_dm.repeat(n_bootstrap, 0), W).beta)
        bo, bd = bo.reshape(reps, n_bootstrap, p), bd.reshape(reps, n_bootstrap, p)
        boot_r = np.asarray(cosine(bo, bd))
        ci = bootstrap_interval(plain, boot_r.T, level=level, method="basic")
        low, high = np.clip(np.asarray(ci.low), -1, 1), np.clip(np.asarray(ci.high), -1, 1)
        basic_cov = float(np.mean((low <= population_cos) & (population_cos <= high)))
        adj = [float(disattenuated_cosine(org.beta[r], dm.beta[r], bo[r], bd[r]))
               for r in range(reps)]
        adj_bias = float(np.nanmean(adj)) - population_cos
        weights = _weight_coverage(np.asarray(org.beta), bo, beta_org, level)
    return GridPoint(
        n, p, norm, population_cos, reps,
        cf_bias=float(np.nanmean(est)) - population_cos if np.isfinite(est).any() else nan,
        cf_coverage=float(np.mean((lo[has] <= population_cos) & (population_cos <= hi[has])))
        if has.any() else nan,
        cf_width=float(np.mean(hi[has] - lo[has])) if has.any() else nan,
        cf_defined=float(np.mean(has)),
        cf_sd=float(np.nanstd(est)),
        cf_world_sd=float(np.nanmedian(cf.world_sd)) if has.any() else nan,
        cf_basic_coverage=float(np.mean([a <= population_cos <= b for a, b in basic]))
        if basic else nan,
        plain_bias=float(np.nanmean(plain)) - population_cos,
        plain_basic_coverage=basic_cov,
        adj_bias=adj_bias,
        **weights,
        cf_raw_bias=float(np.mean(cf.raw[has])) - population_cos if has.any() else nan,
        cf_world_corrected_bias=float(np.mean(np.clip(
            cf.raw[has] - np.nanmean(cf.world_dev[has], axis=1), -1, 1))) - population_cos
        if has.any() else nan,
        cf_bound_bias=float(np.nanmedian(cf.bound_bias)) if has.any() else nan,
        cf_raw_sd=float(np.std(cf.raw[has])) if has.any() else nan,
    )


def pooled_point(parts: list[GridPoint]) -> GridPoint:
    """One `GridPoint` from the same (n, p, |beta|, cosine) measured on several
    designs and population directions (`grid_point` with different seeds).

    A point of the grid fixes n, p, |beta| and the cosine, not the direction
    of the policies; at weak signal the estimate's spread and bias depend on
    that direction (`benchmarks/README.md`), so one direction's coverage is a
    conditional one. Pooled: coverage, width and bias over every defined data
    set; the sd around the pooled mean (within and between directions); the
    world's sd and the weights' scale as the median of the parts' medians; the
    rest as means weighted by data sets.
    """
    if not parts:
        raise ValueError("pooled_point needs at least one GridPoint")
    first = parts[0]
    if any(g[:4] != first[:4] for g in parts):
        raise ValueError("pooled_point: the parts are not one (n, p, |beta|, cosine)")
    reps = np.array([g.reps for g in parts], float)
    defined = reps * np.array([g.cf_defined for g in parts])

    def mean(field, weights=reps):
        v = np.array([getattr(g, field) for g in parts], float)
        ok = np.isfinite(v) & (weights > 0)
        return float(np.average(v[ok], weights=weights[ok])) if ok.any() else float("nan")

    def median(field):
        v = np.array([getattr(g, field) for g in parts], float)
        return float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")

    def pooled_sd(sd_field, bias_field):  # around the pooled mean: within and between parts
        centre = mean(bias_field, defined)
        spread = np.array([getattr(g, sd_field) ** 2 + (getattr(g, bias_field) - centre) ** 2
                           for g in parts])
        ok = np.isfinite(spread) & (defined > 0)
        return float(np.sqrt(np.average(spread[ok], weights=defined[ok]))) if ok.any() \
            else float("nan")

    bias = mean("cf_bias", defined)
    sd = pooled_sd("cf_sd", "cf_bias")
    return GridPoint(
        *first[:4], int(reps.sum()),
        cf_bias=bias, cf_coverage=mean("cf_coverage", defined),
        cf_width=mean("cf_width", defined),
        cf_defined=mean("cf_defined"), cf_sd=sd, cf_world_sd=median("cf_world_sd"),
        cf_basic_coverage=mean("cf_basic_coverage", defined), plain_bias=mean("plain_bias"),
        plain_basic_coverage=mean("plain_basic_coverage"), adj_bias=mean("adj_bias"),
        weight_scale=median("weight_scale"), weight_basic_coverage=mean("weight_basic_coverage"),
        weight_percentile_coverage=mean("weight_percentile_coverage"),
        share_bias=mean("share_bias"), share_basic_coverage=mean("share_basic_coverage"),
        share_percentile_coverage=mean("share_percentile_coverage"),
        cf_raw_bias=mean("cf_raw_bias", defined),
        cf_world_corrected_bias=mean("cf_world_corrected_bias", defined),
        cf_bound_bias=median("cf_bound_bias"), cf_raw_sd=pooled_sd("cf_raw_sd", "cf_raw_bias"))


def _weight_coverage(beta: np.ndarray, boot: np.ndarray, truth: np.ndarray,
                     level: float) -> dict:
    """Coverage of the population weights and protected share by the pairs
    bootstrap (basic and percentile), as the audit's weight tables report them.

    beta `[R, p]` fits, boot `[R, B, p]` their refits, truth `[p]`."""
    p = truth.shape[0]
    family = (np.arange(p) < max(1, p // 3)).astype(int)  # the first third "protected"
    out = {"weight_scale": float(np.median(np.abs(beta) / np.maximum(np.abs(truth), 1e-12)))}

    def covered(ci, value):
        return float(np.mean((np.asarray(ci.low) <= value) & (value <= np.asarray(ci.high))))

    share = np.asarray(family_shares(beta, family, 2))[:, 1]  # [R]
    share_boot = np.asarray(family_shares(boot, family, 2))[..., 1]  # [R, B]
    share_true = float(np.asarray(family_shares(truth, family, 2))[1])
    out["share_bias"] = float(np.mean(share)) - share_true
    for method in ("basic", "percentile"):
        w = bootstrap_interval(beta, np.swapaxes(boot, 0, 1), level=level, method=method)
        out[f"weight_{method}_coverage"] = covered(w, truth[None, :])
        sh = bootstrap_interval(share, share_boot.T, level=level, method=method)
        out[f"share_{method}_coverage"] = covered(sh, share_true)
    return out


class ChangePoint(NamedTuple):
    """Bias, coverage and width of the paired change in cross-fitted alignment
    between two conditions of one decision-maker, at one grid point."""

    n: int
    p: int
    norm: float
    cos_base: float
    cos_other: float
    reps: int
    bias: float  # mean(change) - (cos_other - cos_base), over defined changes
    coverage: float  # share of defined intervals that cover the population change
    width: float
    defined: float
    sd: float  # standard deviation of the change over data sets
    # Each condition's own alignment, at its population cosine (the grid's
    # measures, for free on the same data sets).
    base_bias: float
    base_coverage: float
    other_bias: float
    other_coverage: float


@x64
def change_point(rng: np.random.Generator, key: jax.Array, *, n: int, p: int, norm: float,
                 cos_base: float, cos_other: float, reps: int = 200, n_world: int = 200,
                 world_splits: int = 4, n_splits: int = 20, level: float = 0.95) -> ChangePoint:
    """Simulate `reps` studies of one organisation and one decision-maker under
    two conditions (population cosines `cos_base`, `cos_other`; the conditions
    decide independently, the organisation once) and measure the change."""
    X = cue_design(rng, n, p)
    beta_org, (beta_0, beta_1) = policies_with_cosines(rng, p, [cos_base, cos_other], norm)
    y_org, y_0, y_1 = (simulate_decisions(rng, X, b, reps) for b in (beta_org, beta_0, beta_1))
    org, fit_0, fit_1 = (fit_policies(X, y) for y in (y_org, y_0, y_1))
    ref = crossfit_reference(X, y_org, (org.intercept, org.beta), key=key, n_splits=n_splits,
                             n_world=n_world, world_splits=world_splits)
    cf_0, cf_1 = (cross_fitted_alignment(X, y, (f.intercept, f.beta), ref, level=level)
                  for y, f in ((y_0, fit_0), (y_1, fit_1)))
    ch = crossfit_change(cf_0, cf_1, level)
    truth = cos_other - cos_base
    lo, hi = ch.interval
    has = np.isfinite(lo)
    nan = float("nan")
    return ChangePoint(
        n, p, norm, cos_base, cos_other, reps,
        bias=float(np.nanmean(ch.estimate)) - truth if np.isfinite(ch.estimate).any() else nan,
        coverage=float(np.mean((lo[has] <= truth) & (truth <= hi[has]))) if has.any() else nan,
        width=float(np.mean(hi[has] - lo[has])) if has.any() else nan,
        defined=float(np.mean(has)),
        sd=float(np.nanstd(ch.estimate)),
        base_bias=_summary(cf_0, cos_base)[0], base_coverage=_summary(cf_0, cos_base)[1],
        other_bias=_summary(cf_1, cos_other)[0], other_coverage=_summary(cf_1, cos_other)[1],
    )


class SoftPoint(NamedTuple):
    """The soft lens (a policy fitted to the candidate's probabilities) beside
    the hard one (fitted to its decisions) on the same simulated cases."""

    n: int
    p: int
    norm: float
    population_cos: float
    noise_sd: float  # sd of the candidate's log-odds beyond its policy, per case
    shift: float  # added to the candidate's intercept
    loss: str  # how the soft policy was fitted
    greedy: bool  # hard decisions are the likelier answer (temperature 0)
    reps: int
    soft_bias: float
    soft_coverage: float
    soft_width: float
    soft_defined: float
    soft_sd: float
    soft_world_sd: float
    hard_bias: float
    hard_coverage: float
    hard_width: float
    hard_defined: float
    one_answer: float  # share of data sets whose hard decisions are all one answer


def _summary(cf, truth: float) -> tuple[float, float, float, float]:
    """(bias, coverage, mean width, share defined) of cross-fitted results."""
    lo, hi = cf.interval
    has = np.isfinite(lo)
    nan = float("nan")
    if not has.any():
        return nan, nan, nan, 0.0
    return (float(np.nanmean(cf.estimate[has])) - truth,
            float(np.mean((lo[has] <= truth) & (truth <= hi[has]))),
            float(np.mean(hi[has] - lo[has])), float(np.mean(has)))


@x64
def soft_point(rng: np.random.Generator, key: jax.Array, *, n: int, p: int, norm: float,
               population_cos: float, noise_sd: float = 0.0, shift: float = 0.0,
               greedy: bool = False, reps: int = 200, n_world: int = 200,
               world_splits: int = 4, n_splits: int = 20, level: float = 0.95,
               loss: str = "logistic") -> SoftPoint:
    """Simulate `reps` studies in which the candidate reports its probability of
    the positive answer as well as its answer, and measure the soft lens
    (`cross_fitted_alignment` on the probabilities, trials None) beside the
    hard one on the same cases.

    The candidate's log-odds are its policy's plus `shift` plus a per-case
    normal term of sd `noise_sd` (what its cues do not explain, new in every
    data set); its answer is drawn from that probability, or with `greedy` is
    the likelier one. The population cosine is that of the policies: noise
    independent of the cues shrinks the soft policy's norm, not its direction.
    `loss`: how the soft policy is fitted (`kernels._crossfit.LOSSES`).
    """
    X = cue_design(rng, n, p)
    beta_org, beta_dm = policies_with_cosine(rng, p, population_cos, norm)
    y_org = simulate_decisions(rng, X, beta_org, reps)
    z = shift + X @ beta_dm + noise_sd * rng.standard_normal((reps, n))
    prob = 1.0 / (1.0 + np.exp(-z))
    y_dm = (prob > 0.5 if greedy else rng.random((reps, n)) < prob).astype(float)
    org = fit_policies(X, y_org)
    ref = crossfit_reference(X, y_org, (org.intercept, org.beta), key=key, n_splits=n_splits,
                             n_world=n_world, world_splits=world_splits)
    soft_fit = fit_policies(X, prob) if loss == "logistic" else fit_logit_ls(X, prob)
    soft = cross_fitted_alignment(X, prob, (soft_fit.intercept, soft_fit.beta), ref,
                                  trials_b=None, level=level, loss_b=loss)
    one_answer = (y_dm.min(1) == y_dm.max(1))
    sb, sc, sw, sdef = _summary(soft, population_cos)
    nan = float("nan")
    hb, hc, hw, hdef = nan, nan, nan, 0.0
    if not one_answer.all():  # one answer everywhere: the hard lens is undefined (kernels test)
        hard_fit = fit_policies(X, y_dm)
        hard = cross_fitted_alignment(X, y_dm, (hard_fit.intercept, hard_fit.beta), ref,
                                      level=level)
        hb, hc, hw, hdef = _summary(hard, population_cos)
    has = np.isfinite(soft.interval.low)
    return SoftPoint(n, p, norm, population_cos, noise_sd, shift, loss, greedy, reps,
                     soft_bias=sb, soft_coverage=sc, soft_width=sw, soft_defined=sdef,
                     soft_sd=float(np.nanstd(soft.estimate)),
                     soft_world_sd=float(np.nanmedian(soft.world_sd)) if has.any() else float("nan"),
                     hard_bias=hb, hard_coverage=hc, hard_width=hw, hard_defined=hdef,
                     one_answer=float(np.mean(one_answer)))


class SoftChangePoint(NamedTuple):
    """The paired change in the soft lens between two conditions of one
    decision-maker whose probabilities share case-level quirks."""

    n: int
    p: int
    norm: float
    cos_base: float
    cos_other: float
    noise_sd: float  # sd of each condition's log-odds beyond its policy, per case
    shared: float  # correlation of the two conditions' per-case terms
    reps: int
    bias: float  # mean(change) - (cos_other - cos_base), over changes with an interval
    coverage: float
    width: float
    defined: float
    sd: float  # the change's sd over data sets
    world_sd: float  # median over data sets of the world's sd of the change


@x64
def soft_change_point(rng: np.random.Generator, key: jax.Array, *, n: int, p: int,
                      norm: float, cos_base: float, cos_other: float, noise_sd: float = 1.0,
                      shared: float = 0.0, reps: int = 200, n_world: int = 200,
                      level: float = 0.95) -> SoftChangePoint:
    """Simulate `reps` studies of one organisation and one decision-maker that
    reports its probabilities under two conditions, and measure the soft
    lens's change between them (`crossfit_change`, fitted as the product fits
    probabilities, least squares on their log-odds).

    Each condition's log-odds are its policy's plus a per-case normal term of
    sd `noise_sd`, correlated `shared` between the conditions: what a model
    makes of a case beyond its cues, much of which persists across prompts.
    Noise independent of the cues leaves the policies' directions, so the
    population change is `cos_other - cos_base` whatever `shared` is.
    """
    X = cue_design(rng, n, p)
    beta_org, betas = policies_with_cosines(rng, p, [cos_base, cos_other], norm)
    y_org = simulate_decisions(rng, X, beta_org, reps)
    quirk = rng.standard_normal((reps, n))  # the part both conditions share

    def probabilities(beta):
        own = rng.standard_normal((reps, n))
        z = X @ beta + noise_sd * (np.sqrt(shared) * quirk + np.sqrt(1.0 - shared) * own)
        return 1.0 / (1.0 + np.exp(-z))

    probs = [probabilities(b) for b in betas]
    org = fit_policies(X, y_org)
    ref = crossfit_reference(X, y_org, (org.intercept, org.beta), key=key, n_world=n_world)
    fits = [fit_logit_ls(X, prob) for prob in probs]
    base, other = [cross_fitted_alignment(X, prob, (f.intercept, f.beta), ref, trials_b=None,
                                          level=level, loss_b="logit_ls")
                   for prob, f in zip(probs, fits)]
    ch = crossfit_change(base, other, level)
    bias, coverage, width, defined = _summary(ch, cos_other - cos_base)
    has = np.isfinite(ch.interval.low)
    world_sd = np.nanstd(other.world_dev - base.world_dev, axis=1)
    return SoftChangePoint(
        n, p, norm, cos_base, cos_other, noise_sd, shared, reps, bias=bias, coverage=coverage,
        width=width, defined=defined, sd=float(np.nanstd(ch.estimate)),
        world_sd=float(np.median(world_sd[has])) if has.any() else float("nan"))
