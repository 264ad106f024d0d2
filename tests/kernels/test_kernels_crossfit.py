"""The cross-fitted cosine and its simulation world, piece by piece (kernels._crossfit,
kernels._world). Their calibration at real sizes: tests/kernels/test_calibration.py."""

import jax
import numpy as np
import pytest

import kernels
from kernels._crossfit import CrossTerms, cross_terms, crossfit_cosine, crossfit_undefined_reason, \
    fit_halves, half_splits
from kernels._world import _basic, draw_decisions, world_policies


def test_half_splits_are_permutations():
    s = half_splits(jax.random.PRNGKey(0), 11, 5)
    assert s.shape == (5, 11)
    for row in s:
        assert sorted(row) == list(range(11))
    assert len({tuple(r) for r in s}) == 5


def test_cross_terms_are_the_population_products_without_noise():
    a, b = np.array([3.0, 0.0, 1.0]), np.array([1.0, 2.0, 0.0])
    halves = lambda v: np.broadcast_to(v, (4, 2, 1, 3))  # noqa: E731  [S, 2, B, d]
    t = cross_terms(halves(a), halves(b))
    assert t.dot[0] == pytest.approx(a @ b) and t.sq_a[0] == pytest.approx(a @ a)
    assert crossfit_cosine(t)[0] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_cross_terms_drop_noise_that_the_plain_cosine_keeps():
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0] + [0.0] * 38)
    b = np.array([0.8, 0.6] + [0.0] * 38)  # cosine 0.8
    noise = lambda: rng.normal(0, 0.15, (400, 2, 1, 40))  # noqa: E731
    ha, hb = a + noise(), b + noise()
    plain = np.mean([kernels.cosine(x, y) for x, y in zip(ha[:, 0, 0], hb[:, 0, 0])])
    cf = crossfit_cosine(cross_terms(ha, hb))[0]
    assert plain < 0.65  # noise on 40 axes attenuates it
    assert cf == pytest.approx(0.8, abs=0.02)


def test_crossfit_undefined_when_the_halves_disagree():
    t = CrossTerms(np.array([0.1]), np.array([-0.2]), np.array([1.0]))
    assert np.isnan(crossfit_cosine(t)[0])
    assert "organisation" in crossfit_undefined_reason(t)
    assert crossfit_undefined_reason(CrossTerms(np.array([0.1]), np.array([1.0]), np.array([1.0]))) is None


def test_fit_halves_fits_each_half_on_its_own_rows(rng):
    X = rng.standard_normal((40, 3))
    y = (rng.random(40) < 0.5).astype(float)
    splits = half_splits(jax.random.PRNGKey(1), 40, 2)
    got = fit_halves(X, y[None], splits)
    assert got.shape == (2, 2, 1, 3)
    idx = splits[1][20:]
    ref = kernels.fit_policy(X[idx], y[idx])
    np.testing.assert_allclose(got[1, 1, 0], np.asarray(ref.beta), atol=1e-8)


def test_a_wide_batch_of_half_fits_runs_in_chunks_and_fits_each_problem(rng, monkeypatch):
    """More problems than `half_fit_chunk` go through the refit program in
    several calls (on a CPU: 256 each, so a world's pilot and main draws share
    one compiled program); every problem's fit is its own Newton fit."""
    import kernels._crossfit as crossfit
    import kernels._policy as policy

    X = rng.standard_normal((60, 3))
    Y = (rng.random((300, 60)) < 1 / (1 + np.exp(-X @ [1.0, -0.5, 0.3]))).astype(float)
    splits = half_splits(jax.random.PRNGKey(2), 60, 1)
    calls = []
    refit = policy._refit_jit
    monkeypatch.setattr(policy, "_refit_jit",
                        lambda *a, **k: calls.append(a[1].shape) or refit(*a, **k))
    got = fit_halves(X, Y, splits, tol=1e-10)
    assert crossfit.half_fit_chunk() == crossfit.CPU_HALF_FIT_CHUNK  # (JAX on a CPU here)
    assert [shape[0] for shape in calls] == [256, 256] * 2  # two calls per half
    idx = splits[0][:30]
    for b in (0, 255, 256, 299):  # either side of the chunks' seam
        alone = kernels.fit_policy(X[idx], Y[b, idx])
        np.testing.assert_allclose(got[0, 0, b], np.asarray(alone.beta), atol=1e-7)


def test_world_policies_have_the_asked_norms_and_cosine(rng):
    ba, bb = rng.standard_normal((1, 6)), rng.standard_normal((1, 6))
    a, b = world_policies(ba, bb, np.array([4.0]), np.array([9.0]), np.array([0.3]))
    assert np.linalg.norm(a) == pytest.approx(2) and np.linalg.norm(b) == pytest.approx(3)
    assert float(kernels.cosine(a[0], b[0])) == pytest.approx(0.3)
    assert float(kernels.cosine(a[0], ba[0])) == pytest.approx(1)
    # b lies in the plane of the fitted vectors.
    basis = np.linalg.qr(np.vstack([ba, bb]).T)[0]
    assert np.linalg.norm(b[0] - basis @ (basis.T @ b[0])) < 1e-9


def test_draw_decisions_as_the_data_were(rng):
    X = rng.standard_normal((50, 2))
    beta = np.array([[1.0, -1.0]])
    p = 1 / (1 + np.exp(-(0.5 + X @ beta[0])))
    soft = draw_decisions(jax.random.PRNGKey(0), X, [0.5], beta, 3, trials=None)
    np.testing.assert_allclose(soft[0, 2], p)
    hard = draw_decisions(jax.random.PRNGKey(0), X, [0.5], beta, 4000, trials=1)
    assert set(np.unique(hard)) <= {0.0, 1.0}
    np.testing.assert_allclose(hard[0].mean(0), p, atol=0.05)
    shares = draw_decisions(jax.random.PRNGKey(0), X, [0.5], beta, 2, trials=4)
    assert set(np.unique(shares * 4)) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_basic_interval_holds_its_estimate_inside_the_bounds():
    dev = np.linspace(-0.1, 0.1, 201)
    lo, hi = _basic(0.5, 0.5, dev, 0.95)
    assert lo == pytest.approx(0.405) and hi == pytest.approx(0.595)
    # Above 1 by noise: reported as 1, the interval ends at 1 and keeps a width.
    lo, hi = _basic(1.3, 1.0, dev, 0.95)
    assert hi == 1.0 and lo < 1.0 and lo <= 1.0 <= hi
    # A world that says the estimate sits far below its draws still holds it.
    lo, hi = _basic(0.2, 0.2, dev + 0.5, 0.95)
    assert lo <= 0.2 <= hi


def test_a_world_without_spread_gives_no_interval_not_one_at_the_bound():
    # Deviations all 0 (two candidates with one world): never moved to -bound.
    assert _basic(0.0, 0.0, np.zeros(100), 0.95, bound=2.0) == (0.0, 0.0)


def test_the_change_between_the_same_decisions_is_zero_without_an_interval(rng):
    """A decision-maker the condition does not move (the same decisions case
    by case, as a `simulated` model's probabilities in every condition): the
    two worlds are the same draws, so the change is exactly 0 and is given
    with the reason, not with a zero-width interval at -2 (what the German
    Credit job printed for `alignment_change_soft`). Different decisions keep
    an interval that holds the change."""
    from kernels._world import SAME_DECISIONS, crossfit_change

    n, d = 300, 4
    X = rng.standard_normal((n, d))
    beta = np.array([1.0, -0.8, 0.5, 0.0])
    y_org = (rng.random(n) < 1 / (1 + np.exp(-X @ beta))).astype(float)
    org = kernels.fit_policy(X, y_org)
    ref = kernels.crossfit_reference(X, y_org, (org.intercept, org.beta),
                                     key=jax.random.PRNGKey(3), n_world=60)

    def candidate(y):
        f = kernels.fit_policy(X, y)
        return kernels.cross_fitted_alignment(X, y, (f.intercept, f.beta), ref)

    y_a = (rng.random(n) < 1 / (1 + np.exp(-X @ (0.8 * beta)))).astype(float)
    y_b = (rng.random(n) < 1 / (1 + np.exp(-X @ (0.8 * beta)))).astype(float)
    a, b = candidate(y_a), candidate(y_b)
    same = crossfit_change(a, candidate(y_a.copy()))
    assert same.estimate[0] == 0.0 and np.isnan(same.interval.low[0])
    assert np.isnan(same.interval.high[0]) and same.reason[0] == SAME_DECISIONS
    moved = crossfit_change(a, b)
    assert moved.reason[0] is None
    assert moved.interval.low[0] < moved.estimate[0] < moved.interval.high[0]


def test_cross_fitted_alignment_refuses_more_columns_than_half_the_cases(rng):
    X = rng.standard_normal((40, 25))
    y = (rng.random(40) < 0.5).astype(float)
    fit = kernels.fit_policy(X, y)
    ref = kernels.crossfit_reference(X, y, (fit.intercept, fit.beta), key=jax.random.PRNGKey(0),
                                     n_world=50)
    cf = kernels.cross_fitted_alignment(X, y, (fit.intercept, fit.beta), ref)
    assert np.isnan(cf.estimate[0]) and np.isnan(cf.interval.low[0])
    assert "each half of the 40 cases (20) must outnumber the 25 encoded columns" in cf.reason[0]


def test_few_half_fits_in_one_weighted_batch_equal_fits_on_each_half():
    """A comparison's own half fits run as one batch on all the cases (each
    half weighted 1, the rest 0): the same policies as fitting each half alone."""
    from kernels._crossfit import FEW_HALF_FITS, _fit_halves_at_once, fit_halves, half_splits

    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 12))
    y = (rng.random(300) < 1 / (1 + np.exp(-X @ rng.standard_normal(12) * 0.4))).astype(float)
    splits = half_splits(jax.random.PRNGKey(0), 300, 5)
    assert 2 * len(splits) <= FEW_HALF_FITS
    together = fit_halves(X, y, splits)
    alone = np.stack([np.stack([np.asarray(kernels.fit_policy(X[idx], y[idx]).beta)[None]
                                for idx in (perm[:150], perm[150:])]) for perm in splits])
    np.testing.assert_allclose(together, alone, atol=1e-8)
    np.testing.assert_allclose(_fit_halves_at_once(X, y[None], splits, 1.0), together, atol=0)


def test_the_world_read_at_another_cosine_matches_a_world_refitted_there(rng):
    """The inverted interval reads the world at every cosine by shifting the
    candidate's half fits (`_world_at_cosines`); a world drawn and refitted at
    that cosine gives the same spread of raw estimates, and at the world's own
    cosine the shift is nothing."""
    from kernels._calibration import cue_design, policies_with_cosines
    from kernels._world import _plane, _world_at_cosines

    n, d = 600, 10
    X = cue_design(rng, n, d)
    a, (b_half, b_most) = policies_with_cosines(rng, d, [0.5, 0.9], 1.3)
    splits = half_splits(jax.random.PRNGKey(0), n, 4)

    def halves(key, beta):
        Y = draw_decisions(jax.random.PRNGKey(key), X, [0.0], beta[None], 300)[0]
        return fit_halves(X, Y, splits)

    A, B_half, B_most = halves(1, a), halves(2, b_half), halves(3, b_most)
    u, v = _plane(a[None], b_half[None])
    read = _world_at_cosines(A, B_half, b_half, u[0], v[0], 0.5, np.array([0.5, 0.9]))
    np.testing.assert_allclose(read[0], crossfit_cosine(cross_terms(A, B_half)), atol=1e-12)
    refitted = crossfit_cosine(cross_terms(A, B_most))
    q = [0.025, 0.5, 0.975]
    np.testing.assert_allclose(np.quantile(read[1], q), np.quantile(refitted, q), atol=0.03)
    # Different from where it started: the test can tell the two cosines apart.
    assert np.median(read[1]) - np.median(read[0]) > 0.3


def test_the_inverted_interval_keeps_the_cosines_whose_world_holds_the_estimate():
    from kernels._world import WORLD_COSINES, _inverted

    z = np.random.default_rng(0).standard_normal(4000)
    t = WORLD_COSINES[:, None]
    # A world whose spread does not change with the cosine: the basic interval.
    flat = t + 0.1 * z
    lo, hi = _inverted(0.3, 0.3, flat, 0.95)
    assert lo == pytest.approx(0.3 - 0.196, abs=0.01) and hi == pytest.approx(0.3 + 0.196, abs=0.01)
    # A world whose spread shrinks towards 1: the upper end comes closer to the
    # estimate than the lower one, where the world's 2.5% quantile meets it.
    narrowing = t + 0.1 * (1.2 - t) * z
    lo, hi = _inverted(0.8, 0.8, narrowing, 0.95)
    assert hi - 0.8 < 0.8 - lo
    assert np.quantile(hi + 0.1 * (1.2 - hi) * z, 0.025) == pytest.approx(0.8, abs=0.005)
    # At the boundary: a raw estimate above 1 that the world at 1 holds gives an
    # interval ending at 1 around the clipped estimate.
    lo, hi = _inverted(1.05, 1.0, flat, 0.95)
    assert hi == 1.0 and lo == pytest.approx(1.05 - 0.196, abs=0.01)
    # No cosine's world holds it: None (the caller falls back to the basic interval).
    assert _inverted(1.5, 1.0, flat, 0.95) is None
    # A world with too few defined draws says nothing.
    assert _inverted(0.3, 0.3, np.full_like(flat, np.nan), 0.95) is None


def test_split_matched_terms_carry_the_split_noise_of_the_estimates_splits(rng):
    """`_split_matched` (the world of `cross_fitted_alignment`; without it:
    benchmarks/calibration.py --unmatched-world): the draws' split-averaged
    terms keep their mean, and their covariance loses (1/Sw - 1/S) of the
    within-draw split covariance;
    with as many splits as the estimate, nothing changes. Checked against a
    world of the terms with S splits drawn from the same two components."""
    from kernels._world import _split_matched

    N, Sw, S = 20000, 4, 20
    between = rng.standard_normal((N, 3)) @ np.array([[1.0, 0.3, 0.2], [0, 0.5, 0.1], [0, 0, 0.4]])
    split_noise = np.array([[0.8, 0.2, 0.1], [0, 0.6, 0.0], [0, 0, 0.7]])

    def terms(s):  # [3, s, N]: each draw's data terms plus independent split noise
        noise = rng.standard_normal((s, N, 3)) @ split_noise
        return np.moveaxis(between[None] + noise, -1, 0) + np.array([1.0, 2.0, 3.0])[:, None, None]

    few = terms(Sw)
    got = _split_matched(few, S)
    assert got.shape == (3, N)
    np.testing.assert_allclose(got.mean(1), few.mean(1).mean(1), atol=1e-12)
    within = np.mean([np.cov(few[:, :, k]) for k in range(0, N, 50)], axis=0)
    np.testing.assert_allclose(np.cov(got), np.cov(few.mean(1)) - (1 / Sw - 1 / S) * within,
                               atol=0.02)
    np.testing.assert_allclose(np.cov(got), np.cov(terms(S).mean(1)), atol=0.03)
    np.testing.assert_array_equal(_split_matched(few, Sw), few.mean(1))


def test_the_bound_bias_is_what_the_clipped_estimate_reads_at_the_bound_on_its_side():
    from kernels._world import WORLD_COSINES, _bound_bias

    z = np.random.default_rng(1).standard_normal(20000)
    world = WORLD_COSINES[:, None] + 0.1 * z
    # Normal raw estimates of sd 0.1 around 1, clipped at 1: 0.1 * phi(0) short.
    expected = -0.1 * np.exp(0) / np.sqrt(2 * np.pi)
    assert _bound_bias(world, 0.7) == pytest.approx(expected, abs=0.003)
    # A negative estimate's bound is -1, where the clipped estimate reads above it.
    assert _bound_bias(world, -0.2) == pytest.approx(-expected, abs=0.003)
    # The raw estimate reading high at 1 (as at weak signal) makes it less short.
    assert _bound_bias(world + 0.06, 0.9) > expected
    # Without the world's draws there: undefined.
    assert np.isnan(_bound_bias(np.full_like(world, np.nan), 0.9))
