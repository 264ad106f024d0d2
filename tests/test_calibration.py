"""Statistical calibration (DESIGN.md): honest p-values, intervals that cover.

Everything is batched (see `kernels._calibration`): all data sets' refits go
through a few `fit_policies` calls, so each test takes under a minute.
`benchmarks/calibration.py` prints the same figures at n = 1,000, p = 45.
"""

import jax
import numpy as np
import pytest
import scipy.stats

from kernels._calibration import coverage_study, permutation_null_study


def test_permutation_pvalues_are_uniform_under_the_null():
    study = permutation_null_study(np.random.default_rng(0), jax.random.PRNGKey(1),
                                   n=200, p=5, sets=300, n_permutations=99)
    ks = scipy.stats.kstest(study.pvalues, "uniform")
    print(f"KS p = {ks.pvalue:.3f}, rejection rate at 0.05 = {study.rejection_rate:.3f}")
    assert ks.pvalue > 0.01
    assert 0.02 <= study.rejection_rate <= 0.08


@pytest.mark.parametrize("population_cos", [0.5, 0.8, 0.95])
def test_basic_interval_covers_the_population_cosine(population_cos):
    # 800 repetitions: the Monte Carlo error of a coverage near 0.92 is then
    # about 0.01 (at 400 it was 0.013, and two seeds at cos 0.5 gave 0.907 and
    # 0.935). |beta| = 2 on standardised cues gives the attenuation DESIGN.md
    # measured (r_cos about 0.03 to 0.04 below a population 0.8).
    study = coverage_study(np.random.default_rng(int(population_cos * 100)),
                           jax.random.PRNGKey(5), n=600, p=20,
                           population_cos=population_cos, norm=2.0, reps=800, n_bootstrap=200)
    print(f"population {population_cos}: coverage {study.coverage}, mean r_cos "
          f"{study.mean_r_cos:.3f} (attenuation {population_cos - study.mean_r_cos:+.3f}), "
          f"mean r_cos_adj {study.mean_r_cos_adj:.3f}")
    assert 0.91 <= study.coverage["basic"] <= 0.995
    assert abs(study.mean_r_cos_adj - population_cos) <= 0.02
    # The reason the percentile interval is not the default (DESIGN.md).
    assert study.coverage["percentile"] < study.coverage["basic"]
