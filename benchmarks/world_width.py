"""How the simulation world's width depends on the norms it is built at.

For one calibration point, per data set: the world's sd of the raw
cross-fitted cosine against the cross-fitted squared norms it was built at,
fitted as log sd = c + a log |a|^2 + b log |b|^2; printed beside the raw
estimate's sd over the data sets (what the world's sd estimates), with the
signal a world policy carries along the fitted direction against the
population's (u'(X'X/n)u). `--seeds` compares the world along the fitted
directions with the world along the population's; `--settings` compares world
sizes and splits on the same data sets.
benchmarks/README.md, "The world's width at both ends" and "Under-coverage on
wide designs", has runs.

    python benchmarks/world_width.py --point 600,63,0.7,0.8 --reps 80
    python benchmarks/world_width.py --point 1000,45,1.3,0 --reps 20 --settings 200:4,800:4
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from kernels import cross_fitted_alignment, crossfit_reference
from kernels._calibration import simulate_pair
from kernels._crossfit import cross_terms, fit_halves


def by_direction(n, p, norm, cos, reps, n_world, seed):
    """Raw sd, world sd and coverage at one seed, the world along the fitted
    directions and along the population's."""
    X, beta_a, beta_b, ya, yb, org, dm = simulate_pair(
        np.random.default_rng(seed), n=n, p=p, norm=norm, population_cos=cos, reps=reps)
    for label, fa, fb in (("fitted", org.beta, dm.beta),
                          ("population", np.tile(beta_a, (reps, 1)), np.tile(beta_b, (reps, 1)))):
        # Only the world's policies take these directions: the estimate comes
        # from the half fits of the data either way.
        ref = crossfit_reference(X, ya, (org.intercept, np.asarray(fa)),
                                 key=jax.random.PRNGKey(1), n_world=n_world)
        cf = cross_fitted_alignment(X, yb, (dm.intercept, np.asarray(fb)), ref)
        has = np.isfinite(cf.interval.low)
        low, high = cf.interval.low[has], cf.interval.high[has]
        # Where the misses fall, and the world's own bias beside the estimate's.
        below, above = np.mean(high < cos), np.mean(low > cos)
        world_bias = np.nanmean(cf.world_dev[has], axis=1)
        print(f"seed {seed}, world along the {label:10} directions: raw sd "
              f"{np.std(cf.raw[has]):.3f}, world sd median {np.median(cf.world_sd[has]):.3f}, "
              f"coverage {np.mean((low <= cos) & (cos <= high)):.3f} (the truth above the "
              f"interval {below:.3f}, below it {above:.3f}), width {np.mean(high - low):.3f}; "
              f"raw bias {np.mean(cf.raw[has]) - cos:+.3f}, world's mean deviation "
              f"{np.median(world_bias):+.3f}", flush=True)


def by_setting(n, p, norm, cos, reps, settings, direction):
    """Coverage, width and sds at one design and population direction (seeded
    by `direction`), the same data sets under each world setting (n_world,
    world_splits): what the world's size and splits change, paired."""
    X, _, _, ya, yb, org, dm = simulate_pair(
        np.random.default_rng([99, direction]), n=n, p=p, norm=norm, population_cos=cos,
        reps=reps)
    for n_world, world_splits in settings:
        ref = crossfit_reference(X, ya, (org.intercept, org.beta),
                                 key=jax.random.PRNGKey(direction), n_world=n_world,
                                 world_splits=world_splits)
        cf = cross_fitted_alignment(X, yb, (dm.intercept, dm.beta), ref)
        low, high = cf.interval.low, cf.interval.high
        covered = (low <= cos) & (cos <= high)
        print(f"direction {direction}, world {n_world} draws x {world_splits} splits: coverage "
              f"{covered.mean():.3f} (the truth above the interval {np.mean(high < cos):.3f}, "
              f"below it {np.mean(low > cos):.3f}), width {np.mean(high - low):.3f}, raw sd "
              f"{np.std(cf.raw):.3f}, world sd median {np.median(cf.world_sd):.3f}; covered: "
              f"{''.join('1' if c else '0' for c in covered)}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--point", default="600,63,0.7,0.8", metavar="N,P,NORM,COS")
    ap.add_argument("--reps", type=int, default=80, help="data sets")
    ap.add_argument("--world", type=int, default=100, help="simulation-world draws per data set")
    ap.add_argument("--seeds", help="comma-separated: compare world directions per seed")
    ap.add_argument("--settings", metavar="DRAWS:SPLITS,...",
                    help="compare world sizes and splits on the same data sets, over "
                         "--directions designs and population directions (--reps each)")
    ap.add_argument("--directions", type=int, default=20, help="with --settings")
    args = ap.parse_args()
    n, p, norm, cos = (float(v) for v in args.point.split(","))
    n, p = int(n), int(p)
    if args.settings:
        settings = [tuple(int(x) for x in s.split(":")) for s in args.settings.split(",")]
        for direction in range(args.directions):
            by_setting(n, p, norm, cos, args.reps, settings, direction)
        return
    if args.seeds:
        for seed in (int(v) for v in args.seeds.split(",")):
            by_direction(n, p, norm, cos, args.reps, args.world, seed)
        return

    X, beta_a, _, ya, yb, org, dm = simulate_pair(
        np.random.default_rng(0), n=n, p=p, norm=norm, population_cos=cos, reps=args.reps)
    ref = crossfit_reference(X, ya, (org.intercept, org.beta), key=jax.random.PRNGKey(1),
                             n_world=args.world)
    cf = cross_fitted_alignment(X, yb, (dm.intercept, dm.beta), ref)
    terms = cross_terms(ref.halves, fit_halves(X, yb, ref.splits))

    ok = np.isfinite(cf.world_sd) & (terms.sq_a > 0) & (terms.sq_b > 0)
    sd, sq_a, sq_b = cf.world_sd[ok], terms.sq_a[ok], terms.sq_b[ok]
    design = np.column_stack([np.ones(ok.sum()), np.log(sq_a), np.log(sq_b)])
    coef, *_ = np.linalg.lstsq(design, np.log(sd), rcond=None)
    r2 = 1 - np.var(np.log(sd) - design @ coef) / np.var(np.log(sd))
    at_mean = float(np.exp(coef @ [1.0, np.log(sq_a.mean()), np.log(sq_b.mean())]))
    print(f"({n}, {p}, {norm}, {cos}), {ok.sum()} data sets: raw estimate's sd "
          f"{np.std(cf.raw[ok]):.3f}; world's sd median {np.median(sd):.3f}, mean {sd.mean():.3f}")
    print(f"cross-fitted |a|^2 mean {sq_a.mean():.3f} (cv {sq_a.std() / sq_a.mean():.2f}), "
          f"|b|^2 mean {sq_b.mean():.3f} (cv {sq_b.std() / sq_b.mean():.2f}); population "
          f"{norm ** 2:.3f}")
    print(f"log world sd = {coef[0]:.2f} {coef[1]:+.2f} log|a|^2 {coef[2]:+.2f} log|b|^2 "
          f"(R^2 {r2:.2f}); at the mean norms {at_mean:.3f}, mean over data sets "
          f"{sd.mean():.3f} (x{sd.mean() / at_mean:.2f})")
    # A world policy points along the fitted direction; at weak signal that is
    # mostly noise, which loads on the design's weaker directions.
    gram = X.T @ X / n
    u = np.asarray(org.beta) / np.linalg.norm(org.beta, axis=1, keepdims=True)
    t = beta_a / np.linalg.norm(beta_a)
    print(f"u'(X'X/n)u along the fitted direction {np.einsum('ri,ij,rj->r', u, gram, u).mean():.3f}"
          f", along the population's {t @ gram @ t:.3f}")


if __name__ == "__main__":
    main()
