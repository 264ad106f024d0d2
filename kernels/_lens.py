"""The lens-model comparison of two decision-makers on one case set.

`compare_policies` composes the pieces (fits, paired bootstrap, permutation
null, metrics) into one result of arrays. It is pure: the caller supplies the
random key and the data; nothing is read or logged here.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from kernels._alignment import (
    Interval,
    bootstrap_interval,
    cosine,
    holding,
    permutation_pvalue,
)
from kernels._metrics import accuracy, cohen_kappa, pearson_pvalue, pearson_r, positive_rate, roc_auc
from kernels._crossfit import LOSSES
from kernels._logit_ls import fit_logit_ls, logit_targets
from kernels._padding import pad_rows, padded_rows
from kernels._policy import RESAMPLE_TOL, PolicyFit, fit_policies, fit_policy
from kernels._resample import stratified_folds
from kernels._rows import BootstrapCounts, LeaveOneOut, PermutedLabels, Repeated
from kernels._world import (
    CrossFitReference,
    CrossFitted,
    cross_fitted_alignment,
    crossfit_change,
    crossfit_reference,
    crossfit_stand_in,
)
from kernels._x64 import x64


class LensComparison(NamedTuple):
    """Reference ("org") vs candidate decision-maker on the same n cases, d cues.

    Shapes: B bootstrap resamples, P permutations.
    """

    beta_org: np.ndarray  # [d]
    intercept_org: float
    beta_dm: np.ndarray  # [d]
    intercept_dm: float
    r_cos: float  # the paper's plain cosine; NaN when undefined
    r_cos_ci: Interval  # its pairs-bootstrap interval (undercovers at real sizes)
    r_cos_cf: float  # the primary figure: cross-fitted cosine in [-1, 1]; NaN when undefined
    r_cos_cf_raw: float  # before clipping to [-1, 1]
    r_cos_cf_ci: Interval  # from the calibrated simulation world; NaN when refused
    r_cos_cf_reason: str | None  # why r_cos_cf or its interval is undefined
    r_cos_cf_world: np.ndarray  # [W] simulation-world deviations by draw (`alignment_change`)
    # The estimate's mean minus +-1 in its world at a population cosine of +-1
    # (the bound on its side): what it would read were the policies the same.
    r_cos_cf_bound_bias: float
    p_perm: float
    beta_org_ci: Interval  # each [d]
    beta_dm_ci: Interval  # each [d]
    boot_beta_org: np.ndarray  # [B, d]
    boot_beta_dm: np.ndarray  # [B, d]
    boot_r_cos: np.ndarray  # [B]
    null_r_cos: np.ndarray  # [P]
    accuracy: float
    auc_vs_org: float  # of p_dm against the org's decisions
    kappa: float
    propensity_r_vs_org_fit: float  # Pearson r of p_dm with the org policy's in-sample fitted probability
    positive_rate_dm: float
    positive_rate_org: float
    n_unconverged: int  # refits flagged as not converged (should be 0)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _binary(y) -> bool:
    return bool(np.all((y == 0) | (y == 1)))


class _Padded(NamedTuple):
    """Every fit runs on m >= n rows, the padding weighted 0 (see ROW_BUCKET)."""

    X: np.ndarray  # [m, d]
    w: np.ndarray  # [m] 1 for a case, 0 for padding

    @classmethod
    def of(cls, X: np.ndarray) -> "_Padded":
        n, m = X.shape[0], padded_rows(X.shape[0])
        return cls(pad_rows(X, m), pad_rows(np.ones(n), m, fill=0.0))

    def rows(self, A: np.ndarray, axis: int = 0) -> np.ndarray:
        return pad_rows(A, self.X.shape[0], axis=axis, fill=None if axis == 0 else 0.0)


#: Up to this many cases, a vector every resample shares (the bootstrap's
#: labels, the permutations' weights) is passed as a `[B, m]` batch, so that
#: the bootstrap's and the permutations' refits share one compiled program
#: (about 3 s of compiling per process, more than their refits take at a few
#: thousand cases). Above it, compiling is a small part of the refits, and a
#: shared vector saves a `[chunk, m]` array of memory and of traffic per gradient.
SHARED_PROGRAM_ROWS = 16_384


def _as_batch(v: np.ndarray, B: int):
    """A vector every resample shares, as the refits take it (`SHARED_PROGRAM_ROWS`)."""
    return Repeated(v, B) if v.shape[0] <= SHARED_PROGRAM_ROWS else v


class LensReference(NamedTuple):
    """The reference side of `compare_policies`: its fit, its refits on the
    bootstrap resamples and its cross-fitted side. None of it depends on the
    candidate, so an audit computes it once and compares every cell with it
    (same key: the cells' statistics stay paired, and equal to computing it
    in every cell)."""

    X: np.ndarray  # [n, d]
    y: np.ndarray  # [n]
    fit: PolicyFit
    boot: PolicyFit  # [B] refits on the bootstrap resamples
    boot_weights: BootstrapCounts  # [B, n] their case counts, made a chunk at a time
    jackknife: PolicyFit | None  # [n] leave-one-out refits (interval "bca" only)
    crossfit: CrossFitReference
    key: jax.Array
    C: float


def _streams(key: jax.Array):
    """(bootstrap, permutation, cross-fit) keys of a comparison: the reference
    and every comparison with it split `key` alike."""
    return jax.random.split(key, 3)


def _world_draws(n_bootstrap: int) -> int:
    """Simulation-world draws behind the cross-fitted interval."""
    return max(n_bootstrap, 100)


#: The parts of `lens_reference` that separate processes can compute at once
#: (`join_reference` puts them together): the bootstrap (and jackknife) refits,
#: and the cross-fitted side with its simulation world.
REFERENCE_PARTS = ("resamples", "crossfit")


@x64
def lens_reference(X: ArrayLike, y_org: ArrayLike, *, key: jax.Array, n_bootstrap: int = 1000,
                   C: float = 1.0, interval: str = "basic", n_splits: int = 20,
                   part: str | None = None) -> LensReference:
    """Fit the reference decision-maker once for `compare_policies` (same key and
    settings as the comparisons that will use it).

    `part`: one of `REFERENCE_PARTS` computes only that part (the other's
    fields None); None computes both.
    """
    if part not in (None, *REFERENCE_PARTS):
        raise ValueError(f"part must be one of {REFERENCE_PARTS} or None, got {part!r}")
    X = np.asarray(X, np.float64)
    y = np.asarray(y_org, np.float64)
    n = X.shape[0]
    k_boot, _, k_cf = _streams(key)
    pad = _Padded.of(X)
    fit = fit_policy(pad.X, pad.rows(y), pad.w, C=C)
    # Made a chunk at a time wherever it is used, never held whole ([B, n]).
    W = BootstrapCounts(k_boot, n, n_bootstrap)
    boot = jackknife = cf = None
    if part != "crossfit":
        labels = _as_batch(pad.rows(y), n_bootstrap)
        if interval == "bca":
            jackknife = fit_policies(pad.X, _as_batch(pad.rows(y), n), LeaveOneOut(n), C=C,
                                     tol=RESAMPLE_TOL)
        boot = fit_policies(pad.X, labels, W, C=C, tol=RESAMPLE_TOL)
    if part != "resamples":
        cf = crossfit_reference(X, y, (float(fit.intercept), np.asarray(fit.beta)), key=k_cf,
                                trials=1 if _binary(y) else None, C=C, n_splits=n_splits,
                                n_world=_world_draws(n_bootstrap))
    return LensReference(X, y, fit, boot, W, jackknife, cf, key, C)


@x64
def stand_in_reference(resamples: LensReference, n_splits: int = 20, *,
                       cross_fitted: bool = True) -> LensReference:
    """The 'resamples' part of a reference completed with a stand-in for its
    cross-fitted side (`kernels._world.crossfit_stand_in`): a comparison with
    it compiles what a comparison with the whole reference does; its
    cross-fitted numbers mean nothing.

    `cross_fitted=False`: the stand-in's cross-fitted side is refused, so a
    comparison with it leaves out the cross-fitted figure and compiles none of
    its programs (the half fits, the simulation world's), for a process that
    rehearses beside one compiling them for the real cross-fitted part."""
    _, _, k_cf = _streams(resamples.key)
    fit = resamples.fit
    cf = crossfit_stand_in(resamples.X, (float(fit.intercept), np.asarray(fit.beta)), key=k_cf,
                           C=resamples.C, n_splits=n_splits,
                           n_world=_world_draws(resamples.boot_weights.shape[0]))
    if not cross_fitted:
        cf = cf._replace(refused="a stand-in without its cross-fitted side")
    return resamples._replace(crossfit=cf)


def join_reference(resamples: LensReference, crossfit: LensReference) -> LensReference:
    """The whole reference from its two parts (`lens_reference(part=...)`)."""
    if resamples.boot is None or crossfit.crossfit is None:
        raise ValueError("join_reference needs the 'resamples' part and the 'crossfit' part")
    _check_reference(resamples, crossfit.X, crossfit.y, crossfit.key,
                     crossfit.boot_weights.shape[0], crossfit.C, "basic")
    return resamples._replace(crossfit=crossfit.crossfit)


def _check_reference(ref: LensReference, X, y_org, key, n_bootstrap, C, interval) -> None:
    """A reference made with other data or settings would silently unpair the cells."""
    same = (ref.X.shape == X.shape and np.array_equal(ref.X, X) and np.array_equal(ref.y, y_org)
            and np.array_equal(np.asarray(ref.key), np.asarray(key)) and ref.C == C
            and ref.boot_weights.shape[0] == n_bootstrap
            and (interval != "bca" or ref.jackknife is not None))
    if not same:
        raise ValueError("reference was made with other cases, decisions, key or settings "
                         "(n_bootstrap, C, interval) than this comparison")


@x64
def compare_policies(
    X: ArrayLike,
    y_org: ArrayLike,
    y_dm: ArrayLike,
    p_dm: ArrayLike | None = None,
    *,
    key: jax.Array,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    C: float = 1.0,
    level: float = 0.95,
    interval: str = "basic",
    dm_trials=None,
    n_splits: int = 20,
    reference: LensReference | None = None,
    dm_loss: str = "logistic",
) -> LensComparison:
    """Fit both policies, bootstrap them on paired resamples, test by permutation.

    Args:
      X: `[n, d]` encoded, standardised cues.
      y_org: `[n]` reference decisions (0/1); y_dm: `[n]` candidate decisions,
        0/1 or a share in [0, 1] (the mean over samples, or over a group's
        members): the policy is fitted on the share, accuracy and kappa use
        the majority (share > 0.5).
      p_dm: `[n]` candidate's probability of the positive decision (for AUC and
        the propensity correlation); defaults to y_dm.
      key: JAX PRNG key; the bootstrap and permutation streams are split from it.
      n_bootstrap, n_permutations: B and P; B is also the number of
        simulation-world draws behind r_cos_cf's interval.
      interval: "basic" (default), "percentile" or "bca", for the pairs-bootstrap
        intervals (plain r_cos, weights).
      dm_trials: decisions behind each case's y_dm: 1 for one, k (or `[n]`
        counts) for a share of samples or group members, None for a
        probability without sampling noise. Default: 1 when y_dm is 0/1,
        else None.
      n_splits: random half splits behind r_cos_cf.
      reference: the organisation's side from `lens_reference` (same key and
        settings), shared by every comparison with it; computed here if None.
      dm_loss: how the candidate's policy is fitted: "logistic" (ridge-logistic,
        the organisation's fit), or "logit_ls" for the soft lens: y_dm are the
        candidate's probabilities and its policy is ridge least squares on
        their log-odds (`kernels._logit_ls`; dm_trials is then None).
    """
    X = np.asarray(X, np.float64)
    y_org = np.asarray(y_org, np.float64)
    y_dm = np.asarray(y_dm, np.float64)
    p_dm = y_dm if p_dm is None else np.asarray(p_dm, np.float64)
    n = X.shape[0]
    if reference is None:
        reference = lens_reference(X, y_org, key=key, n_bootstrap=n_bootstrap, C=C,
                                   interval=interval, n_splits=n_splits)
    else:
        _check_reference(reference, X, y_org, key, n_bootstrap, C, interval)
    if dm_loss not in LOSSES:
        raise ValueError(f"dm_loss must be one of {LOSSES}, got {dm_loss!r}")
    _, k_perm, _ = _streams(key)
    pad = _Padded.of(X)

    def fit_dm(Y, W=None):
        """The candidate's fits: one (Y `[n]`, W None) or a batch (Y or W a
        `[B, n]` source: `kernels._rows`)."""
        if dm_loss == "logit_ls":
            return fit_logit_ls(X, Y, W, C=C, log_odds=isinstance(Y, PermutedLabels))
        if W is None and np.ndim(Y) == 1:
            return fit_policy(pad.X, pad.rows(Y), pad.w, C=C)
        B = (W if W is not None else Y).shape[0]
        Y = _as_batch(pad.rows(Y), B) if np.ndim(Y) == 1 else Y
        return fit_policies(pad.X, Y, _as_batch(pad.w, B) if W is None else W, C=C,
                            tol=RESAMPLE_TOL)

    org, boot_org = reference.fit, reference.boot
    dm = fit_dm(y_dm)
    r_obs = float(cosine(org.beta, dm.beta))

    # Both policies on the same resamples, in one batched call each.
    boot_dm = fit_dm(y_dm, reference.boot_weights)
    boot_r = cosine(boot_org.beta, boot_dm.beta)

    jackknife = None
    if interval == "bca":
        jk_dm = fit_dm(y_dm, LeaveOneOut(n))
        jackknife = cosine(reference.jackknife.beta, jk_dm.beta)
    r_ci = bootstrap_interval(r_obs, boot_r, level=level, method=interval, jackknife=jackknife)

    # BCa needs jackknife values per statistic; only r_cos has them, so the other
    # intervals fall back to the percentile method under "bca".
    other_method = "percentile" if interval == "bca" else interval
    if dm_loss == "logit_ls":
        dm_trials = None  # probabilities, no sampling noise
    elif dm_trials is None and _binary(y_dm):
        dm_trials = 1
    cf = cross_fitted_alignment(X, y_dm, (float(dm.intercept), np.asarray(dm.beta)),
                                reference.crossfit, trials_b=dm_trials, level=level,
                                loss_b=dm_loss)

    beta_org_ci = bootstrap_interval(org.beta, boot_org.beta, level=level,
                                     method=other_method)
    beta_dm_ci = bootstrap_interval(dm.beta, boot_dm.beta, level=level,
                                    method=other_method)

    # The soft lens permutes its log-odds (the same permutations): each chunk
    # then needs no logarithm.
    null_fit = fit_dm(PermutedLabels(k_perm, logit_targets(y_dm) if dm_loss == "logit_ls"
                                     else y_dm, n_permutations))
    null_r = cosine(org.beta, null_fit.beta)
    p_perm = float(permutation_pvalue(r_obs, null_r))

    p_org = _sigmoid(float(org.intercept) + X @ np.asarray(org.beta))
    majority = (y_dm > 0.5).astype(np.float64)
    unconverged = int(
        (~np.asarray(boot_org.converged)).sum()
        + (~np.asarray(boot_dm.converged)).sum()
        + (~np.asarray(null_fit.converged)).sum()
        + (not bool(org.converged)) + (not bool(dm.converged))
    )
    return LensComparison(
        beta_org=np.asarray(org.beta),
        intercept_org=float(org.intercept),
        beta_dm=np.asarray(dm.beta),
        intercept_dm=float(dm.intercept),
        r_cos=r_obs,
        # A cosine lies in [-1, 1]; the basic interval can step outside it, and
        # past the estimate (it shifts the attenuated bootstrap up).
        r_cos_ci=holding(r_obs, r_ci, -1.0, 1.0),
        r_cos_cf=float(cf.estimate[0]),
        r_cos_cf_raw=float(cf.raw[0]),
        r_cos_cf_ci=Interval(float(cf.interval.low[0]), float(cf.interval.high[0])),
        r_cos_cf_reason=cf.reason[0],
        r_cos_cf_world=cf.world_dev[0],
        r_cos_cf_bound_bias=float(cf.bound_bias[0]),
        p_perm=p_perm,
        beta_org_ci=Interval(np.asarray(beta_org_ci.low), np.asarray(beta_org_ci.high)),
        beta_dm_ci=Interval(np.asarray(beta_dm_ci.low), np.asarray(beta_dm_ci.high)),
        boot_beta_org=np.asarray(boot_org.beta),
        boot_beta_dm=np.asarray(boot_dm.beta),
        boot_r_cos=np.asarray(boot_r),
        null_r_cos=np.asarray(null_r),
        accuracy=float(accuracy(y_org, majority)),
        auc_vs_org=float(roc_auc(y_org, p_dm)),
        kappa=float(cohen_kappa(y_org, majority)),
        propensity_r_vs_org_fit=float(pearson_r(p_dm, p_org)),
        positive_rate_dm=float(positive_rate(y_dm)),
        positive_rate_org=float(positive_rate(y_org)),
        n_unconverged=unconverged,
    )


class AlignmentChange(NamedTuple):
    delta: float  # r_cos_cf(other) - r_cos_cf(base); NaN when undefined
    interval: Interval
    reason: str | None


def _as_crossfitted(c: LensComparison) -> CrossFitted:
    one = lambda v: np.array([v], np.float64)  # noqa: E731
    return CrossFitted(one(c.r_cos_cf), one(c.r_cos_cf_raw),
                       Interval(one(c.r_cos_cf_ci.low), one(c.r_cos_cf_ci.high)),
                       [c.r_cos_cf_reason], np.full(1, np.nan), c.r_cos_cf_world[None],
                       one(c.r_cos_cf_bound_bias))


@x64
def alignment_change(base: LensComparison, other: LensComparison,
                     level: float = 0.95) -> AlignmentChange:
    """Change of the cross-fitted alignment between two comparisons that share
    one reference (`lens_reference`): a model's baseline and another condition.
    The interval pairs their simulation worlds by draw (`crossfit_change`)."""
    if base.r_cos_cf_world.shape != other.r_cos_cf_world.shape:
        raise ValueError("the two comparisons were not made with one reference")
    ch = crossfit_change(_as_crossfitted(base), _as_crossfitted(other), level)
    return AlignmentChange(float(ch.estimate[0]),
                           Interval(float(ch.interval.low[0]), float(ch.interval.high[0])),
                           ch.reason[0])


class CrossValidated(NamedTuple):
    accuracy: float
    auc: float
    oof_probability: np.ndarray  # [n] out-of-fold fitted probabilities


@x64
def cross_validated_policy(X: ArrayLike, y: ArrayLike, *, key: jax.Array, k: int = 10,
                           C: float = 1.0) -> CrossValidated:
    """Stratified k-fold accuracy and AUC of the ridge-logistic policy itself
    (the normative ceiling: how predictable the reference is from its cues).

    All k fits run as one batch: fold f's fit gets weight 0 on fold f's cases.
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    folds = np.asarray(stratified_folds(key, y, k))
    W = (folds[None, :] != np.arange(k)[:, None]).astype(np.float64)  # [k, n]
    pad = _Padded.of(X)
    fits = fit_policies(pad.X, pad.rows(y), pad.rows(W, axis=1), C=C)
    z_all = np.asarray(fits.intercept)[:, None] + np.asarray(fits.beta) @ X.T  # [k, n]
    prob = _sigmoid(z_all[folds, np.arange(X.shape[0])])
    return CrossValidated(
        accuracy=float(accuracy(y, (prob > 0.5).astype(np.float64))),
        auc=float(roc_auc(y, prob)),
        oof_probability=prob,
    )


class CellCorrelation(NamedTuple):
    r: float
    p_value: float
    ci: Interval
    n_cells: int


@x64
def cross_cell_correlation(x: ArrayLike, y: ArrayLike, *, key: jax.Array,
                           n_bootstrap: int = 2000, level: float = 0.95) -> CellCorrelation:
    """Pearson r across cells (e.g. r_cos vs accuracy), its t-test p-value and a
    percentile bootstrap interval over cells. Cells with a NaN are dropped."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    m = x.shape[0]
    if m < 3:
        nan = float("nan")
        return CellCorrelation(nan, nan, Interval(nan, nan), m)
    r = float(pearson_r(x, y))
    idx = np.asarray(jax.random.randint(key, (n_bootstrap, m), 0, m))
    reps = jax.vmap(pearson_r)(jnp.asarray(x[idx]), jnp.asarray(y[idx]))
    ci = bootstrap_interval(r, reps, level=level, method="percentile")
    return CellCorrelation(r, float(pearson_pvalue(r, m)), Interval(float(ci.low), float(ci.high)), m)
