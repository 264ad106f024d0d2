"""How close to unbiased any estimate bounded by [-1, 1] can come at the grid's cosines.

Issue 14 asks |bias| < 0.03 at every grid point with n >= 600, population
cosines 0, 0.5, 0.8, 0.95 and 1 included. The product's estimate is the
cross-fitted cosine clipped to [-1, 1]; at a cosine of 1 it can only read
short, and at the weakest signal it misses. This asks whether another bounded
function g of the raw cross-fitted cosine could do better, by linear
programming: g is a free value on each of a fine grid of raw values, held in
[-1, 1], and the program finds the smallest worst |bias| over the grid's
cosines that any g of a class reaches. Classes, from the strictest:

  clipped         g = clip(raw, -1, 1), the product's (no program)
  slope <= 1      non-decreasing, never moving more than the raw estimate moves
  slope <= 2      non-decreasing, at most doubling the raw estimate's noise
  non-decreasing  any non-decreasing g (steps allowed)
  any             any g at all (it may jump and reverse)

Two sources for the raw estimate's distribution at each cosine:

  --gaussian S,...  raw ~ N(cos, S^2): unbiased raw of spread S;
  --point N,P,NORM  raw cross-fitted cosines (20 splits, the product's) of
                    data sets simulated at the grid's cosines, over
                    --directions designs and population directions (--reps
                    each). g is chosen on the first half of the directions
                    and its worst |bias| is measured on both halves: on the
                    second, what g chosen for this point gives on fresh data.

Either way the program is lenient with g: it knows the point (a real estimate
must hold at every point at once) and only the five cosines bind it. So each
figure is a lower bound on the worst |bias| of any bounded function of the
raw estimate (an estimate built from other statistics of the data is not
covered). Runs: benchmarks/README.md, "What a bounded estimate can reach at a
population cosine of 1".

    python benchmarks/bound_limit.py --gaussian 0.075,0.1,0.15,0.2,0.25
    python benchmarks/bound_limit.py --point 600,63,0.7 --directions 40 --reps 50
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from scipy.optimize import linprog
from scipy.stats import norm as normal

from kernels._calibration import simulate_pair
from kernels._crossfit import cross_terms, crossfit_cosine, fit_halves, half_splits

#: The grid's population cosines (`benchmarks/calibration.py`).
COSINES = (0.0, 0.5, 0.8, 0.95, 1.0)
#: The classes of g, with the bound on the slope between neighbouring raw
#: values (None: none) and whether g must be non-decreasing.
CLASSES = {"slope <= 1": (1.0, True), "slope <= 2": (2.0, True),
           "non-decreasing": (None, True), "any": (None, False)}
#: Width of the grid of raw values g is free on.
STEP = 0.01


def raw_grid(spread: float) -> np.ndarray:
    """`[K]` raw values g is free on: [-1, 1] widened by five spreads."""
    reach = 1.0 + 5.0 * spread
    return np.arange(-reach, reach + STEP / 2, STEP)


def nearest_edges(centres: np.ndarray) -> np.ndarray:
    """`[K + 1]` edges of the raw values nearest each centre (open at both ends)."""
    return np.concatenate([[-np.inf], (centres[1:] + centres[:-1]) / 2, [np.inf]])


def gaussian_weights(centres: np.ndarray, spread: float, cosines=COSINES) -> np.ndarray:
    """`[C, K]` probability that raw ~ N(cos, spread^2) falls nearest each centre."""
    z = (nearest_edges(centres)[None, :] - np.asarray(cosines)[:, None]) / spread
    return np.diff(normal.cdf(z), axis=1)


def empirical_weights(centres: np.ndarray, raw_by_cos: list[np.ndarray]) -> np.ndarray:
    """`[C, K]` share of each cosine's raw values nearest each centre (the
    values beyond the grid count at its ends)."""
    edges = nearest_edges(centres)
    return np.stack([np.histogram(r, edges)[0] / len(r) for r in raw_by_cos])


def least_worst_bias(W: np.ndarray, cosines, slope: float | None,
                     monotone: bool) -> tuple[float, np.ndarray]:
    """The smallest max over cosines of |E g(raw) - cos| over g in [-1, 1]^K
    of the class, and that g. `W`: `[C, K]` from the weights above."""
    C, K = W.shape
    mu = np.asarray(cosines, float)
    # Variables: g (K values) and t, the worst |bias|; minimise t.
    cost = np.zeros(K + 1)
    cost[-1] = 1.0
    ones = np.ones((C, 1))
    rows = [np.hstack([W, -ones]), np.hstack([-W, -ones])]  # +-(W g - mu) <= t
    bounds = [mu, -mu]
    diff = np.zeros((K - 1, K + 1))  # g_k - g_{k+1}
    diff[np.arange(K - 1), np.arange(K - 1)] = 1.0
    diff[np.arange(K - 1), np.arange(1, K)] = -1.0
    if monotone:
        rows.append(diff)
        bounds.append(np.zeros(K - 1))
    if slope is not None:
        rows.append(-diff)
        bounds.append(np.full(K - 1, slope * STEP))
    fit = linprog(cost, A_ub=np.vstack(rows), b_ub=np.concatenate(bounds),
                  bounds=[(-1.0, 1.0)] * K + [(0.0, None)], method="highs")
    if fit.status != 0:
        raise RuntimeError(f"linear program failed: {fit.message}")
    return float(fit.fun), fit.x[:K]


def worst(W: np.ndarray, g: np.ndarray, cosines=COSINES) -> tuple[float, np.ndarray]:
    """The worst |bias| of g and its bias at each cosine."""
    bias = W @ g - np.asarray(cosines)
    return float(np.max(np.abs(bias))), bias


def gaussian_table(spreads: list[float]) -> None:
    print(f"raw ~ N(cos, s^2) at cosines {COSINES}: the smallest worst |bias| of a "
          "bounded g(raw), by class")
    print("| s | clipped | " + " | ".join(CLASSES) + " |")
    print("|---" * (len(CLASSES) + 2) + "|")
    for s in spreads:
        centres = raw_grid(s)
        W = gaussian_weights(centres, s)
        cells = [worst(W, np.clip(centres, -1, 1))[0]]
        cells += [least_worst_bias(W, COSINES, *CLASSES[c])[0] for c in CLASSES]
        print(f"| {s:.3f} | " + " | ".join(f"{v:.3f}" for v in cells) + " |", flush=True)


def raw_estimates(n: int, p: int, norm: float, cos: float, direction: int,
                  reps: int) -> np.ndarray:
    """`[reps]` raw cross-fitted cosines (20 splits) of data sets at one design
    and population direction, seeded by (cos, direction); NaN: undefined."""
    pair = simulate_pair(np.random.default_rng([14, direction, round(cos * 100)]), n=n, p=p,
                         norm=norm, population_cos=cos, reps=reps)
    splits = half_splits(jax.random.PRNGKey(direction), n, 20)
    return crossfit_cosine(cross_terms(fit_halves(pair.X, pair.y_org, splits),
                                       fit_halves(pair.X, pair.y_dm, splits)))


def point_table(n: int, p: int, norm: float, directions: int, reps: int) -> None:
    half = directions // 2
    raw = {c: [raw_estimates(n, p, norm, c, d, reps) for d in range(directions)]
           for c in COSINES}
    def defined(parts):  # the estimates that exist (NaN: undefined)
        r = np.concatenate(parts)
        return r[np.isfinite(r)]

    fit_on = [defined(raw[c][:half]) for c in COSINES]
    held = [defined(raw[c][half:]) for c in COSINES]
    both = [np.concatenate(pair) for pair in zip(fit_on, held)]
    print(f"({n}, {p}, {norm}): {directions} directions x {reps} data sets per cosine; "
          f"g chosen on directions 0-{half - 1}, measured on those and on {half}-{directions - 1}")
    for c, r in zip(COSINES, both):
        print(f"  cos {c:.2f}: raw bias {r.mean() - c:+.3f} (sd {r.std():.3f}, Monte Carlo sd "
              f"of the mean {r.std() / np.sqrt(len(r)):.3f}); clipped "
              f"{np.clip(r, -1, 1).mean() - c:+.3f}")
    centres = raw_grid(max(float(np.std(r)) for r in both))
    W_fit, W_held = empirical_weights(centres, fit_on), empirical_weights(centres, held)
    print("| class | worst \\|bias\\|, chosen on | worst, held out | bias at cos "
          + ", ".join(f"{c:g}" for c in COSINES) + ", held out |")
    print("|---|---|---|---|")
    rows = {"clipped": np.clip(centres, -1, 1)}
    rows.update({c: least_worst_bias(W_fit, COSINES, *CLASSES[c])[1] for c in CLASSES})
    for label, g in rows.items():
        on, _ = worst(W_fit, g)
        off, bias = worst(W_held, g)
        print(f"| {label} | {on:.3f} | {off:.3f} | "
              + ", ".join(f"{b:+.3f}" for b in bias) + " |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gaussian", metavar="S,...", help="spreads of an unbiased raw estimate")
    ap.add_argument("--point", metavar="N,P,NORM", action="append",
                    help="simulate the raw estimate here (repeatable)")
    ap.add_argument("--directions", type=int, default=40)
    ap.add_argument("--reps", type=int, default=50, help="data sets per direction and cosine")
    args = ap.parse_args()
    if args.gaussian:
        gaussian_table([float(s) for s in args.gaussian.split(",")])
    for point in args.point or []:
        n, p, norm = (float(v) for v in point.split(","))
        point_table(int(n), int(p), norm, args.directions, args.reps)
    if not (args.gaussian or args.point):
        ap.error("give --gaussian or --point")


if __name__ == "__main__":
    main()
