"""Calibration figures at the paper's larger size, printed (not asserted).

The calibration tests assert these at n = 600, p = 20; this prints the same
study at n = 1,000, p = 45 (or any --n/--p): basic and percentile interval
coverage of the population cosine, plain r_cos's attenuation and r_cos_adj's
mean, and the permutation test's p-value uniformity under the null.

    python benchmarks/calibration.py [--n 1000 --p 45 --reps 400 --bootstrap 200]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import scipy.stats

from kernels._calibration import coverage_study, permutation_null_study


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--p", type=int, default=45)
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--norm", type=float, default=2.0, help="|beta| of both simulated policies")
    ap.add_argument("--null-sets", type=int, default=300)
    args = ap.parse_args()

    print(f"n={args.n} p={args.p} |beta|={args.norm} reps={args.reps} "
          f"bootstrap={args.bootstrap} (nominal 95% intervals)")
    head = (f"{'population':>10} {'basic cov':>9} {'pctl cov':>9} {'mean r_cos':>10} "
            f"{'attenuation':>11} {'mean r_adj':>10} {'seconds':>7}")
    print(head)
    print("-" * len(head))
    for cos in (0.5, 0.8, 0.95):
        start = time.perf_counter()
        s = coverage_study(np.random.default_rng(int(cos * 100)), jax.random.PRNGKey(5),
                           n=args.n, p=args.p, population_cos=cos, norm=args.norm,
                           reps=args.reps, n_bootstrap=args.bootstrap)
        print(f"{cos:>10.2f} {s.coverage['basic']:9.3f} {s.coverage['percentile']:9.3f} "
              f"{s.mean_r_cos:10.3f} {cos - s.mean_r_cos:+11.3f} {s.mean_r_cos_adj:10.3f} "
              f"{time.perf_counter() - start:7.1f}", flush=True)
    null = permutation_null_study(np.random.default_rng(0), jax.random.PRNGKey(1), n=args.n,
                                  p=args.p, sets=args.null_sets, n_permutations=99)
    ks = scipy.stats.kstest(null.pvalues, "uniform")
    print(f"permutation test under the null ({args.null_sets} data sets, 99 permutations): "
          f"KS p = {ks.pvalue:.3f}, rejection rate at 0.05 = {null.rejection_rate:.3f}")


if __name__ == "__main__":
    main()
