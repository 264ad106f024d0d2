"""The soft lens's kernels: least squares on log-odds, the residual world, and a
decision-maker that gives one answer throughout while its probabilities follow
a known policy."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import Ridge

import kernels
from kernels._calibration import cue_design, policies_with_cosine, simulate_decisions
from kernels._logit_ls import LOGIT_CLIP, fit_logit_ls, logit_targets
from kernels._world import draw_decisions, logit_residuals


def test_logit_targets_are_clipped_log_odds():
    t = logit_targets([0.0, 0.5, 0.9, 1.0])
    assert t[1] == 0 and t[2] == pytest.approx(np.log(9))
    assert t[0] == -LOGIT_CLIP and t[3] == LOGIT_CLIP


def test_fit_logit_ls_is_sklearns_ridge_single_weighted_and_batched(rng):
    n, d, C = 150, 6, 0.5
    X = rng.normal(size=(n, d))
    P = 1 / (1 + np.exp(-(0.3 + X @ rng.normal(size=d) + 0.5 * rng.normal(size=(3, n)))))
    W = rng.integers(0, 3, (3, n)).astype(float)
    one = fit_logit_ls(X, P[0], C=C)
    ref = Ridge(alpha=1 / C).fit(X, logit_targets(P[0]))
    np.testing.assert_allclose(one.beta, ref.coef_, atol=1e-10)
    assert one.intercept == pytest.approx(ref.intercept_, abs=1e-10) and one.beta.shape == (d,)
    weighted = fit_logit_ls(X, P, W, C=C)  # each row its own labels and weights
    for b in range(3):
        r = Ridge(alpha=1 / C).fit(X, logit_targets(P[b]), sample_weight=W[b])
        np.testing.assert_allclose(weighted.beta[b], r.coef_, atol=1e-10)
    shared = fit_logit_ls(X, P, C=C)  # one matrix for every row of labels
    np.testing.assert_allclose(shared.beta[1], fit_logit_ls(X, P[1], C=C).beta, atol=1e-12)
    assert bool(np.all(weighted.converged))


def test_residuals_are_zero_for_exact_probabilities_and_the_world_adds_them_back(rng):
    n, d = 300, 4
    X = rng.normal(size=(n, d))
    beta = rng.normal(size=d)
    p = 1 / (1 + np.exp(-(0.2 + X @ beta)))
    assert np.abs(logit_residuals(p, [0.2], beta[None], X)).max() < 1e-9
    noisy = 1 / (1 + np.exp(-(0.2 + X @ beta + rng.normal(size=n))))
    e = logit_residuals(noisy, [0.2], beta[None], X)
    assert e.shape == (1, n) and abs(e.mean()) < 1e-12 and 0.8 < e.std() < 1.2
    key = jax.random.PRNGKey(0)
    exact = draw_decisions(key, X, [0.2], beta[None], 5, trials=None)
    assert exact.shape == (1, 5, n) and np.allclose(exact, p)
    world = draw_decisions(key, X, [0.2], beta[None], 5, trials=None, residuals=e)
    spread = logit_targets(world) - (0.2 + X @ beta)
    assert 0.8 < spread.std() < 1.2  # each draw resamples the residuals over the cases


def test_one_answer_decisions_are_undefined_and_their_probabilities_are_not(rng):
    """A decision-maker sure of one answer in every case (greedy decoding, a large
    shift) whose probabilities follow a policy of cosine 0.8 with the organisation's."""
    n, d = 600, 8  # the shapes of test_compare_policies_recovers_a_shared_policy: one compile
    X = cue_design(rng, n, d)
    beta_org, beta_dm = policies_with_cosine(rng, d, 0.8, 1.3)
    y_org = simulate_decisions(rng, X, beta_org, 1)[0]
    p = 1 / (1 + np.exp(-(8.0 + X @ beta_dm + 0.5 * rng.normal(size=n))))
    y = (p > 0.5).astype(float)
    assert y.min() == 1  # one answer for every case
    key = jax.random.PRNGKey(3)
    ref = kernels.lens_reference(X, y_org, key=key, n_bootstrap=200)
    hard = kernels.compare_policies(X, y_org, y, p, key=key, n_bootstrap=200,
                                    n_permutations=200, reference=ref)
    assert np.isnan(hard.r_cos_cf) and "~0" in hard.r_cos_cf_reason
    soft = kernels.compare_policies(X, y_org, p, p, key=key, n_bootstrap=200,
                                    n_permutations=200, reference=ref, dm_loss="logit_ls")
    lo, hi = soft.r_cos_cf_ci
    # One data set: its interval holds the population cosine or ends near it
    # (the soft lens's coverage over data sets: tests/kernels/test_calibration.py).
    assert lo <= soft.r_cos_cf <= hi and lo - 0.05 <= 0.8 <= hi + 0.05 and hi - lo < 0.5
    assert soft.p_perm < 0.05 and soft.boot_beta_dm.shape == (200, d)
    # The soft fit is least squares on the log-odds, its bootstrap on the shared resamples.
    np.testing.assert_allclose(soft.beta_dm, fit_logit_ls(X, p).beta, atol=1e-10)
    with pytest.raises(ValueError, match="dm_loss"):
        kernels.compare_policies(X, y_org, p, key=key, n_bootstrap=200, n_permutations=200,
                                 reference=ref, dm_loss="probit")
