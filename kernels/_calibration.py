"""Calibration studies: simulated decision-makers with known policies.

Used by the calibration tests (asserted at n = 600, p = 20) and by
`benchmarks/calibration.py` (printed at n = 1,000, p = 45). Everything is
batched: all repetitions' fits and bootstrap refits go through `fit_policies`
in a few calls.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from kernels._alignment import (
    bootstrap_interval,
    cosine,
    disattenuated_cosine,
    permutation_pvalue,
)
from kernels._policy import fit_policies
from kernels._resample import bootstrap_weights, permutations


def binary_design(rng: np.random.Generator, n: int, p: int) -> np.ndarray:
    """`[n, p]` independent fair binary cues, standardised."""
    X = (rng.random((n, p)) < 0.5).astype(float)
    return (X - X.mean(0)) / X.std(0)


def simulate_decisions(rng: np.random.Generator, X: np.ndarray, beta: np.ndarray,
                       reps: int, intercept: float = 0.0) -> np.ndarray:
    """`[reps, n]` 0/1 decisions of a logistic decision-maker with policy `beta`."""
    prob = 1.0 / (1.0 + np.exp(-(intercept + X @ beta)))
    return (rng.random((reps, X.shape[0])) < prob).astype(float)


def policies_with_cosine(rng: np.random.Generator, p: int, cos: float,
                         norm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two random `[p]` policies of the given norm whose cosine is exactly `cos`."""
    a = rng.standard_normal(p)
    a /= np.linalg.norm(a)
    u = rng.standard_normal(p)
    u -= (u @ a) * a
    u /= np.linalg.norm(u)
    return norm * a, norm * (cos * a + np.sqrt(1 - cos**2) * u)


class CoverageStudy(NamedTuple):
    population_cos: float
    coverage: dict  # interval method -> share of repetitions whose interval covers
    mean_r_cos: float
    mean_r_cos_adj: float
    reps: int


def coverage_study(rng: np.random.Generator, key: jax.Array, *, n: int, p: int,
                   population_cos: float, norm: float = 2.0, reps: int = 400,
                   n_bootstrap: int = 200, methods=("basic", "percentile")) -> CoverageStudy:
    """Coverage of bootstrap intervals for r_cos, and the means of r_cos and r_cos_adj."""
    X = binary_design(rng, n, p)
    beta_org, beta_dm = policies_with_cosine(rng, p, population_cos, norm)
    y_org = simulate_decisions(rng, X, beta_org, reps)
    y_dm = simulate_decisions(rng, X, beta_dm, reps)
    org = fit_policies(X, y_org)
    dm = fit_policies(X, y_dm)
    W = np.asarray(bootstrap_weights(key, n, reps * n_bootstrap))
    boot_org = fit_policies(X, y_org.repeat(n_bootstrap, axis=0), W)
    boot_dm = fit_policies(X, y_dm.repeat(n_bootstrap, axis=0), W)
    if not (bool(np.all(boot_org.converged)) and bool(np.all(boot_dm.converged))):
        raise RuntimeError("some bootstrap refits did not converge")
    bo = np.asarray(boot_org.beta).reshape(reps, n_bootstrap, p)
    bd = np.asarray(boot_dm.beta).reshape(reps, n_bootstrap, p)
    obs = np.asarray(cosine(org.beta, dm.beta))
    boot_r = np.asarray(cosine(bo, bd))  # [reps, B]
    covered = {m: [] for m in methods}
    adj = []
    for r in range(reps):
        for m in methods:
            ci = bootstrap_interval(obs[r], boot_r[r], method=m)
            covered[m].append(float(ci.low) <= population_cos <= float(ci.high))
        adj.append(float(disattenuated_cosine(org.beta[r], dm.beta[r], bo[r], bd[r])))
    return CoverageStudy(population_cos, {m: float(np.mean(v)) for m, v in covered.items()},
                         float(obs.mean()), float(np.nanmean(adj)), reps)


class NullStudy(NamedTuple):
    pvalues: np.ndarray  # [sets]
    rejection_rate: float  # share of p <= 0.05


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
