"""Batches made a chunk at a time (`kernels._rows`): the same rows at any chunk
size, the same fits as the whole array, and memory that does not grow with B x n."""

import tracemalloc

import jax
import numpy as np
import pytest

import kernels
from kernels import _rows
from kernels._crossfit import fit_halves, half_splits
from kernels._logit_ls import fit_logit_ls, logit_targets
from kernels._rows import (BootstrapCounts, DrawnDecisions, HalfMembers, LeaveOneOut,
                           PermutedLabels, Repeated, chunk_rows)


def synthetic(rng, n, p, scale=0.5):
    X = rng.standard_normal((n, p))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ (rng.standard_normal(p) * scale))))).astype(float)
    return X, y


def test_a_row_is_the_same_whichever_chunk_asks_for_it():
    key = jax.random.PRNGKey(3)
    y = np.arange(50.0) % 2
    for src in (BootstrapCounts(key, 50, 40), PermutedLabels(key, y, 40),
                DrawnDecisions(key, np.linspace(-2, 2, 50), 40),
                DrawnDecisions(key, np.linspace(-2, 2, 50), 40, trials=None,
                               residuals=np.linspace(-1, 1, 50))):
        whole = np.asarray(src)
        assert whole.shape == (40, 50)
        np.testing.assert_array_equal(src.take([7, 31]), whole[[7, 31]])
        np.testing.assert_array_equal(np.concatenate([c for _, c in src.chunks(16)]), whole)
        assert not np.array_equal(whole[0], whole[1])  # rows differ
    other = BootstrapCounts(jax.random.PRNGKey(4), 50, 40)
    assert not np.array_equal(np.asarray(other), np.asarray(BootstrapCounts(key, 50, 40)))


def test_rows_are_what_they_say():
    key = jax.random.PRNGKey(0)
    n = 400
    counts = np.asarray(BootstrapCounts(key, n, 300))
    assert (counts.sum(1) == n).all() and (counts >= 0).all()
    # Multinomial(n, 1/n): each count has mean 1, variance (1 - 1/n).
    assert abs(counts.mean() - 1) < 1e-12 and abs(counts.var() - (1 - 1 / n)) < 0.02
    y = np.random.default_rng(0).random(n)
    perms = np.asarray(PermutedLabels(key, y, 20))
    assert all(np.array_equal(np.sort(r), np.sort(y)) for r in perms)
    p = 1 / (1 + np.exp(-np.linspace(-3, 3, n)))
    draws = np.asarray(DrawnDecisions(key, np.linspace(-3, 3, n), 2000))
    assert set(np.unique(draws)) <= {0.0, 1.0}
    # 2,000 Bernoulli draws per case: 5 binomial sd at the widest.
    assert np.max(np.abs(draws.mean(0) - p) / np.sqrt(p * (1 - p) / 2000)) < 5
    shares = np.asarray(DrawnDecisions(key, np.zeros(n), 500, trials=4))
    assert set(np.unique(shares)) <= {0, 0.25, 0.5, 0.75, 1}
    soft = DrawnDecisions(key, np.linspace(-3, 3, n), 5, trials=None,
                          residuals=np.linspace(-0.5, 0.5, n))
    np.testing.assert_allclose(soft.take_log_odds(range(5)), logit_targets(np.asarray(soft)),
                               atol=1e-9)
    members = np.asarray(HalfMembers(half_splits(key, 9, 2), per=3))
    assert members.shape == (12, 9)
    np.testing.assert_array_equal(members[0:3].sum(1), 4)  # half A of split 0, thrice
    np.testing.assert_array_equal(members[0] + members[3], 1)  # the halves partition
    np.testing.assert_array_equal(np.asarray(LeaveOneOut(4)), 1 - np.eye(4))
    np.testing.assert_array_equal(np.asarray(Repeated(y[:5], 3)), np.tile(y[:5], (3, 1)))


@pytest.mark.parametrize("chunk", [16, 64])
def test_fits_on_a_source_equal_fits_on_its_array(rng, chunk):
    X, y = synthetic(rng, 300, 6)
    key = jax.random.PRNGKey(1)
    for Y, W in ((y, BootstrapCounts(key, 300, 70)), (PermutedLabels(key, y, 70), None),
                 (Repeated(y, 70), BootstrapCounts(key, 300, 70))):
        lazy = kernels.fit_policies(X, Y, W, chunk_size=chunk, tol=1e-10)
        whole = kernels.fit_policies(X, np.asarray(Y) if not isinstance(Y, np.ndarray) else Y,
                                     None if W is None else np.asarray(W), tol=1e-10)
        assert lazy.converged.all()
        # Both converge to 1e-10 from different starts (the source's expected
        # problem, the array's mean): equal to far below any resampling error.
        np.testing.assert_allclose(lazy.beta, whole.beta, atol=1e-7)
    # Refits L-BFGS leaves unconverged are refitted by Newton from the source's rows.
    few = kernels.fit_policies(X, y, BootstrapCounts(key, 300, 20), max_iter=1, tol=1e-10)
    assert few.converged.all()
    np.testing.assert_allclose(few.beta, kernels.fit_policies(
        X, y, np.asarray(BootstrapCounts(key, 300, 20)), tol=1e-10).beta, atol=1e-7)
    P = 1 / (1 + np.exp(-(X @ np.ones(6))))
    soft = fit_logit_ls(X, P, BootstrapCounts(key, 300, 70), chunk_size=chunk)
    np.testing.assert_allclose(soft.beta, fit_logit_ls(X, P, np.asarray(
        BootstrapCounts(key, 300, 70))).beta, atol=1e-12)
    perm = fit_logit_ls(X, PermutedLabels(key, logit_targets(P), 70), log_odds=True,
                        chunk_size=chunk)
    np.testing.assert_allclose(perm.beta, fit_logit_ls(X, np.asarray(
        PermutedLabels(key, P, 70))).beta, atol=1e-12)


@pytest.mark.parametrize("loss,trials", [("logistic", 1), ("logit_ls", None)])
def test_half_fits_of_a_world_source_equal_those_of_its_array(rng, loss, trials):
    X, _ = synthetic(rng, 400, 5)
    draws = DrawnDecisions(jax.random.PRNGKey(2), X @ np.full(5, 0.4), 70, trials=trials,
                           residuals=None if trials else rng.normal(0, 0.3, 400))
    splits = half_splits(jax.random.PRNGKey(5), 400, 3)
    lazy = fit_halves(X, draws, splits, loss=loss, tol=1e-10)
    whole = fit_halves(X, np.asarray(draws), splits, loss=loss, tol=1e-10)
    np.testing.assert_allclose(lazy, whole, atol=1e-7)


def test_chunks_follow_the_memory():
    assert chunk_rows(1_000, 2048, budget=128 * 2**20) == 2048
    assert chunk_rows(100_000, 2048, budget=128 * 2**20) == 128
    assert chunk_rows(1_000_000, 2048, budget=128 * 2**20) == 32  # the floor
    assert chunk_rows(10**9, 2048, budget=1) == 32  # never below 32 problems


def test_fits_never_hold_a_batch_whole(rng, monkeypatch):
    """Peak numpy memory of the refits behind a comparison (the bootstrap's,
    the permutations', a simulation world's half fits) stays far below one
    `[B, n]` array: its batches are made, fitted and dropped a chunk at a time."""
    n, B = 20_000, 1_000
    X, y = synthetic(rng, n, 8, 0.3)
    key = jax.random.PRNGKey(0)
    whole = B * n * 8  # 160 MB
    monkeypatch.setattr(_rows, "CHUNK_BYTES", 4 * 2**20)  # chunks of 32 problems
    for fit in (lambda: kernels.fit_policies(X, y, BootstrapCounts(key, n, B), tol=1e-6),
                lambda: kernels.fit_policies(X, PermutedLabels(key, y, B), tol=1e-6),
                lambda: fit_halves(X, DrawnDecisions(key, X @ np.full(8, 0.3), B),
                                   half_splits(key, n, 2), tol=1e-6)):
        tracemalloc.start()
        fit()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < whole / 8, f"peak {peak / 2**20:.0f} MB; one [B, n] is {whole / 2**20:.0f} MB"


def test_the_chunk_size_changes_no_statistic(monkeypatch):
    rng = np.random.default_rng(5)
    X, y = synthetic(rng, 2_000, 8, 0.3)
    y_dm = (rng.random(2_000) < 1 / (1 + np.exp(-(X @ np.full(8, 0.2))))).astype(float)

    def compare():
        return kernels.compare_policies(X, y, y_dm, key=jax.random.PRNGKey(0), n_bootstrap=200,
                                        n_permutations=200)

    default = compare()
    monkeypatch.setattr(_rows, "CHUNK_BYTES", 2**16)  # chunks of 32 problems
    small = compare()
    # Every refit starts from its batch's expected problem whatever its chunk:
    # the statistics agree to the refits' tolerance.
    for field in ("r_cos", "r_cos_cf", "p_perm"):
        assert abs(getattr(small, field) - getattr(default, field)) < 1e-6
    for field in ("r_cos_ci", "r_cos_cf_ci"):
        a, b = getattr(small, field), getattr(default, field)
        assert abs(a.low - b.low) < 1e-6 and abs(a.high - b.high) < 1e-6


def test_world_fits_at_float32s_tolerance_are_within_it_of_exact_ones(rng):
    """The simulation world's half fits run in float32 alone to a gradient of
    1e-6 per unit weight (`kernels._world.WORLD_TOL`): each weight lands within
    about 1e-5 of the fit to 1e-10, and every one is flagged converged."""
    from kernels._world import WORLD_TOL

    X, _ = synthetic(rng, 2_000, 10)
    draws = DrawnDecisions(jax.random.PRNGKey(8), X @ np.full(10, 0.3), 64)
    loose = kernels.fit_policies(X, draws, tol=WORLD_TOL)
    exact = kernels.fit_policies(X, draws, tol=1e-10)
    assert loose.converged.all() and (loose.max_abs_grad <= WORLD_TOL).all()
    # |d beta| <= |H^-1| |gradient|: curvature per unit weight >= 0.1 here.
    assert np.max(np.abs(loose.beta - exact.beta)) < 5e-5
