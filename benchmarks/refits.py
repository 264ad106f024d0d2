"""Bootstrap refits: lensaudit's batched JAX kernel vs scikit-learn loops.

Prints one table, all columns measured in this run on this machine:
seconds for B refits with `kernels.fit_policies`, with a loop of scikit-learn
lbfgs fits and with a loop of newton-cholesky fits, the ratios, and the max
|beta difference| against newton-cholesky (tol 1e-10).

scikit-learn loops at B = 10,000 take minutes; by default they are timed on
`--sklearn-fits` of the B problems and scaled to B (per-fit cost does not depend
on B). `--full` times every fit.

    python benchmarks/refits.py [--full] [--sklearn-fits 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # sklearn loops: one thread each fit

import jax  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import kernels  # noqa: E402


def problem(n: int, p: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    beta = rng.standard_normal(p) * 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ beta))).astype(float)
    return X, y


def time_kernel(X, y, W, dtype):
    """Seconds for the first call (compiles for these shapes) and a warm call.

    An audit compiles once per (n, d, chunk) shape and reuses it for every cell
    and every later call in the process, so the warm call is the per-audit cost.
    The warm figure is the best of three calls (as `timeit` reports), which
    filters out noise from other processes on a shared machine.
    """
    # fit_policies returns numpy arrays: the device's work is done when it returns.
    start = time.perf_counter()
    kernels.fit_policies(X, y, W, dtype=dtype)
    first = time.perf_counter() - start
    warm = []
    for _ in range(3):
        start = time.perf_counter()
        fit = kernels.fit_policies(X, y, W, dtype=dtype)
        warm.append(time.perf_counter() - start)
    return min(warm), first - min(warm), fit


def time_sklearn(X, y, W, solver, tol):
    betas = []
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for w in W:
            m = LogisticRegression(C=1.0, solver=solver, tol=tol, max_iter=1000)
            betas.append(m.fit(X, y, sample_weight=w).coef_[0])
    return time.perf_counter() - start, np.array(betas)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="time every scikit-learn fit")
    ap.add_argument("--sklearn-fits", type=int, default=300)
    ap.add_argument("--sizes", default="600x20,1000x45")
    ap.add_argument("--B", default="1000,10000")
    args = ap.parse_args()

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    head = (f"{'n':>5} {'p':>3} {'B':>6} {'dtype':>7} {'jax s':>7} {'compile':>7} {'lbfgs s':>8} "
            f"{'newton s':>8} {'x lbfgs':>8} {'x newton':>8} {'max|dbeta|':>10} {'unconv':>6}")
    print(head)
    print("-" * len(head))
    for size in args.sizes.split(","):
        n, p = map(int, size.split("x"))
        X, y = problem(n, p)
        for B in map(int, args.B.split(",")):
            W = np.asarray(kernels.bootstrap_weights(jax.random.PRNGKey(B), n, B))
            m = B if args.full else min(B, args.sklearn_fits)
            t_lbfgs, _ = time_sklearn(X, y, W[:m], "lbfgs", 1e-4)
            t_newton, ref = time_sklearn(X, y, W[:m], "newton-cholesky", 1e-10)
            t_lbfgs *= B / m
            t_newton *= B / m
            for dtype in (np.float64, np.float32):
                t_jax, t_compile, fit = time_kernel(X, y, W, dtype)
                diff = np.max(np.abs(np.asarray(fit.beta[:m], np.float64) - ref))
                print(f"{n:>5} {p:>3} {B:>6} {np.dtype(dtype).name:>7} {t_jax:7.2f} "
                      f"{t_compile:7.2f} {t_lbfgs:8.1f} {t_newton:8.1f} {t_lbfgs / t_jax:8.1f} "
                      f"{t_newton / t_jax:8.1f} {diff:10.1e} "
                      f"{int((~np.asarray(fit.converged)).sum()):>6}", flush=True)
    if not args.full:
        print(f"(scikit-learn loops timed on {args.sklearn_fits} fits each and scaled to B; "
              "--full times them all)")
    print("jax s: best of three warm calls; compile: the first call's extra seconds, paid once per shape "
          "and process")


if __name__ == "__main__":
    main()
