"""Calibration of the alignment estimate and its interval, printed (not asserted).

    python benchmarks/calibration.py --grid [--reps 200 --world 200 --bootstrap 200] [--jobs 16]
    python benchmarks/calibration.py --point 1000,63,1.3,0.8 [--point ...] [--directions 10]
    python benchmarks/calibration.py --change [--change-point 600,63,1.3,0.5,0.8 ...] [--jobs 16]
    python benchmarks/calibration.py --soft [--soft-point 600,20,1.3,0.8,NOISE,SHIFT,GREEDY ...]
                                     [--jobs 16]

--grid runs every point of n x p x |beta| x population cosine (the sizes and
signal strengths of the shipped studies: German Credit has 1,000 cases, 63
encoded columns and |beta| about 1.3) and prints, per point: the bias of the
primary estimate (the cross-fitted cosine), the coverage and mean width of its
interval, the share of data sets where it is defined, its standard deviation
against the simulation world's estimate of it, and the two candidates it
replaced (the plain r_cos with its pairs-bootstrap basic interval, and
r_cos_adj). With --bootstrap > 0 it also measures the organisation's per-cue
weights (median scale of the fitted against the population weights; coverage of
every population weight by the pairs-bootstrap basic and percentile intervals)
and the share of sum |beta| on a "protected" third of the cues (bias, coverage).
Rows are printed as they finish and written to --csv. Then the permutation
test's p-values under the null.

--directions K spreads a point's data sets over K designs and population
directions of the policies (the same n, p, |beta| and cosine) and pools them:
at weak signal the estimate's spread depends on the direction, which a grid
point does not fix, so one direction gives a coverage conditional on it.
--unmatched-world measures the world as it was before 2026-12-05 (grid points
only): each draw's split noise from the world's own 4 splits, not scaled to
the estimate's 20 (`kernels._world._split_matched`).

The last column judges each point with n >= 600 against the issue's target
(coverage in [0.92, 0.98], |bias| < 0.03; `target`): "met"; "chance" where it
lies outside but a true value inside would give as much 5% of the time or
more (a binomial tail from the band's nearer edge for the coverage, 1.96
Monte Carlo sds for the bias: at 200 data sets a point of true coverage 0.95
reads outside the band about 4% of the time); "bound" where only the bias misses, at a population cosine of +-1, and
the unbounded estimate (`raw bias`) meets it; "MISS" otherwise.

--change measures the paired change in alignment between two conditions of
one decision-maker (population cosines COS0 -> COS1 with the organisation):
the bias of the change and the coverage and width of its interval, on
CHANGE_GRID (or the --change-point values).

--soft measures the soft lens (the candidate's policy fitted to its
probabilities) beside the hard one on the same simulated cases, both ways of
fitting it (least squares on the log-odds, the product's; ridge-logistic on the
probabilities as fractional targets), on SOFT_GRID (or the --soft-point values):
bias, coverage, width, the world's sd against the estimate's, and the hard
lens's coverage and width (undefined where every answer is the same).

--soft-change measures the soft lens's paired change between two conditions
whose probabilities share case-level quirks (correlation SHARED of the
per-case log-odds terms of sd NOISE): bias, coverage and width of the change,
its sd over data sets against the world's, on SOFT_CHANGE_GRID (or the
--soft-change-point values).

The tests assert a reduced grid (`tests/kernels/test_calibration.py`).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import csv
import itertools
import multiprocessing
import os
import time

import jax
import numpy as np
import scipy.stats

from engine.datasets import check_sample_size
from kernels._calibration import (
    change_point,
    grid_point,
    permutation_null_study,
    pooled_point,
    soft_change_point,
    soft_point,
)

GRID_N = (600, 1000, 100)  # the targets first; n = 100 is reported, not targeted
GRID_P = (20, 45, 63)
GRID_NORM = (0.7, 1.3, 2.0)
GRID_COS = (0.0, 0.5, 0.8, 0.95, 1.0)
# Changes a steering condition makes: none, towards the organisation, away from it.
CHANGE_GRID = [(n, p, 1.3, c0, c1) for n in (600, 1000) for p in (20, 63)
               for c0, c1 in ((0.8, 0.8), (0.5, 0.8), (0.8, 0.95), (0.8, 0.5))]

# (n, p, |beta|, cos, noise sd, shift, greedy): sampled answers with moderate
# probabilities, with what the cues leave unexplained, and a model sure of one
# answer in every case at temperature 0 (the case the soft lens exists for).
SOFT_GRID = [(n, p, 1.3, c, noise, shift, greedy) for n in (600, 1000) for p in (20, 63)
             for c in (0.5, 0.8) for noise, shift, greedy in ((0.0, 0.0, 0), (1.0, 0.0, 0),
                                                            (0.5, 8.0, 1))]

# (n, p, |beta|, cos0, cos1, noise sd, shared): no change and a step towards
# the organisation, with the two conditions' quirks independent or mostly shared.
SOFT_CHANGE_GRID = [(600, p, 1.3, c0, c1, 1.0, shared) for p in (20, 63)
                    for c0, c1 in ((0.5, 0.8), (0.8, 0.8)) for shared in (0.0, 0.9)]

COLUMNS = ("n", "p", "norm", "population_cos", "cf_bias", "cf_coverage", "cf_width",
           "cf_defined", "cf_sd", "cf_world_sd", "cf_basic_coverage", "plain_bias",
           "plain_basic_coverage",
           "adj_bias", "weight_scale", "weight_basic_coverage", "weight_percentile_coverage",
           "share_bias", "share_basic_coverage", "share_percentile_coverage", "cf_raw_bias",
           "cf_world_corrected_bias", "cf_bound_bias", "cf_raw_sd", "reps", "seconds")
BAND = (0.92, 0.98)  # the issue's coverage target at n >= 600
BIAS_TARGET = 0.03
TARGET_N = 600
Z_CHANCE = 1.96  # Monte Carlo sds outside the bias target still read as chance
CHANCE_P = 0.05  # a coverage outside the band at least this likely from its edge: chance


def _row(g, seconds: float) -> dict:
    row = g._asdict()
    row["seconds"] = seconds
    return {k: row[k] for k in COLUMNS}


def target(r: dict) -> str:
    """A row (n >= 600) against the issue's target: "met", "chance", "bound" or
    "MISS" (module docstring). Below 600 cases the stated result: "refused"
    where the estimate is never defined, "warned" where the audit's sample-size
    check warns of such a case set (`engine.datasets.check_sample_size`), "-"
    otherwise.

    Over the m data sets where the estimate is defined, a coverage outside the
    band is chance when a true coverage at the band's nearer edge gives one as
    far out with probability CHANCE_P or more (binomial tail); a bias, when it
    is within Z_CHANCE Monte Carlo sds (sd / sqrt(m)) of the target."""
    reps = float(r.get("reps", float("nan")))
    reps = reps if np.isfinite(reps) else 200.0  # the files before the column: 200
    defined = float(r["cf_defined"])
    if not defined > 0 or not np.isfinite(r["cf_coverage"]):
        return "refused"
    if r["n"] < TARGET_N:
        return "warned" if check_sample_size(int(r["n"]), None, int(r["p"]), "grid") else "-"
    m = int(round(reps * defined))
    k = int(round(float(r["cf_coverage"]) * m))
    if k > BAND[1] * m:
        cov_p = scipy.stats.binom.sf(k - 1, m, BAND[1])
    elif k < BAND[0] * m:
        cov_p = scipy.stats.binom.cdf(k, m, BAND[0])
    else:
        cov_p = 1.0
    slack = Z_CHANCE * float(r["cf_sd"]) / np.sqrt(m)
    bias = abs(float(r["cf_bias"]))
    if cov_p == 1.0 and bias < BIAS_TARGET:
        return "met"
    if cov_p >= CHANCE_P and bias < BIAS_TARGET + slack:
        return "chance"
    # At a population cosine of +-1 an estimate bounded by 1 can only read low.
    raw = float(r.get("cf_raw_bias", float("nan")))
    if (cov_p >= CHANCE_P and abs(float(r["population_cos"])) == 1.0
            and abs(raw) < BIAS_TARGET + slack):
        return "bound"
    return "MISS"


def read_rows(paths) -> list[dict]:
    """Rows of --csv files, later files replacing earlier ones point by point,
    in grid order (n as GRID_N ranks it, then p, |beta|, cosine). A column an
    older file lacks reads NaN."""
    rows = {}
    for path in paths:
        with open(path, newline="") as fh:
            for raw in csv.DictReader(fh):
                r = {k: float(v) if v not in ("", None) else float("nan")
                     for k, v in raw.items() if k in COLUMNS}
                r = {k: r.get(k, float("nan")) for k in COLUMNS}
                r["n"], r["p"] = int(r["n"]), int(r["p"])
                rows[(r["n"], r["p"], r["norm"], r["population_cos"])] = r
    rank = {n: i for i, n in enumerate(GRID_N)}
    return [rows[k] for k in sorted(rows, key=lambda k: (rank.get(k[0], len(rank)), k))]


def markdown_table(rows: list[dict]) -> str:
    """The rows as benchmarks/README.md records them, with each one's target."""
    def f(v, fmt):
        return "-" if v is None or not np.isfinite(v) else format(v, fmt)

    lines = ["| n | p | \\|beta\\| | cos | bias | raw bias | coverage | width | defined | sd | "
             "world sd | target |", "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['p']} | {r['norm']:.1f} | {r['population_cos']:.2f} | "
            f"{f(r['cf_bias'], '+.3f')} | {f(r['cf_raw_bias'], '+.3f')} | "
            f"{f(r['cf_coverage'], '.3f')} | {f(r['cf_width'], '.3f')} | "
            f"{f(r['cf_defined'], '.2f')} | {f(r['cf_sd'], '.3f')} | "
            f"{f(r['cf_world_sd'], '.3f')} | {target(r)} |")
    return "\n".join(lines)


def _print_judged(rows: list[dict]) -> None:
    for at, label, kinds in ((True, f"against the target at n >= {TARGET_N} (coverage in "
                             f"[{BAND[0]}, {BAND[1]}], |bias| < {BIAS_TARGET})",
                             ("met", "chance", "bound", "MISS", "refused")),
                            (False, f"stated below n = {TARGET_N}", ("refused", "warned", "-"))):
        judged = collections.Counter(target(r) for r in rows if (r["n"] >= TARGET_N) == at)
        if judged:
            print(f"{label}: " + ", ".join(f"{judged[k]} {k}" for k in kinds if judged[k]))


def _print_header():
    print(f"{'n':>5} {'p':>3} {'|b|':>4} {'cos':>5} | {'bias':>7} {'cover':>6} {'width':>6} "
          f"{'defined':>7} {'sd':>6} {'world sd':>8} {'basic':>6} | {'plain bias':>10} {'plain cover':>11} "
          f"{'adj bias':>8} | {'w scale':>7} {'w basic':>7} {'w pct':>6} | {'sh bias':>7} "
          f"{'sh basic':>8} {'sh pct':>6} | {'raw bias':>8} {'at bound':>8} {'target':>6} | {'s':>5}")


def _print_row(r: dict):
    print(f"{r['n']:5d} {r['p']:3d} {r['norm']:4.1f} {r['population_cos']:5.2f} | "
          f"{r['cf_bias']:+7.3f} {r['cf_coverage']:6.3f} {r['cf_width']:6.3f} "
          f"{r['cf_defined']:7.2f} {r['cf_sd']:6.3f} {r['cf_world_sd']:8.3f} "
          f"{r['cf_basic_coverage']:6.3f} | "
          f"{r['plain_bias']:+10.3f} {r['plain_basic_coverage']:11.3f} {r['adj_bias']:+8.3f} | "
          f"{r['weight_scale']:7.3f} {r['weight_basic_coverage']:7.3f} "
          f"{r['weight_percentile_coverage']:6.3f} | {r['share_bias']:+7.3f} "
          f"{r['share_basic_coverage']:8.3f} {r['share_percentile_coverage']:6.3f} | "
          f"{r['cf_raw_bias']:+8.3f} {r['cf_bound_bias']:+8.3f} {target(r):>6} | "
          f"{r['seconds']:5.0f}", flush=True)


def _one_point(task) -> tuple[int, dict]:
    """A point's row: its data sets on one design and population direction
    (seeded by the point's place), or spread over --directions of them (the
    j-th seeded by the place and j) and pooled (`pooled_point`)."""
    seed, (n, p, norm, cos), args = task
    start = time.perf_counter()
    k = max(1, args.directions)

    def seeded(j):  # one direction: the point's own seed, as in the recorded grid
        if k == 1:
            return np.random.default_rng(seed), jax.random.PRNGKey(seed)
        return np.random.default_rng([seed, j]), jax.random.fold_in(jax.random.PRNGKey(seed), j)

    parts = [grid_point(*seeded(j), n=int(n), p=int(p), norm=norm, population_cos=cos,
                        reps=args.reps // k + (j < args.reps % k), n_world=args.world,
                        n_bootstrap=args.bootstrap,
                        split_matched=not args.unmatched_world)
             for j in range(k)]
    return seed, _row(pooled_point(parts), time.perf_counter() - start)


def _run_points(tasks, jobs: int, one=_one_point):
    """`one(task)` of every task as each finishes: in this process, or in
    `jobs` processes of one XLA thread each (one point per core). A task's
    second item is its point, whose first two values (n, p) rank its cost."""
    if jobs <= 1:
        yield from map(one, tasks)
        return
    # The workers read XLA's flags when they import JAX (spawned: a fresh interpreter).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                               "=false intra_op_parallelism_threads=1").strip()
    # The slowest points first, so the last to finish are short ones.
    tasks = sorted(tasks, key=lambda t: -t[1][0] * t[1][1])
    with concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in concurrent.futures.as_completed([pool.submit(one, t) for t in tasks]):
            yield done.result()


def _one_change(task) -> str:
    i, (n, p, norm, c0, c1), args = task
    start = time.perf_counter()
    ch = change_point(np.random.default_rng(1000 + i), jax.random.PRNGKey(1000 + i),
                      n=int(n), p=int(p), norm=norm, cos_base=c0, cos_other=c1, reps=args.reps,
                      n_world=args.world)
    return (f"{ch.n:5d} {ch.p:3d} {ch.norm:4.1f} {c0:5.2f} {c1:5.2f} | {ch.bias:+7.3f} "
            f"{ch.coverage:6.3f} {ch.width:6.3f} {ch.defined:7.2f} {ch.sd:6.3f} | "
            f"{time.perf_counter() - start:5.0f}")


def grid_tasks(points, grid, args) -> list[tuple]:
    """(seed, point, args) per point: a point's seed is its place in `grid`
    (the full grid), so a subset or a parallel run reproduces the rows of one
    run of the whole grid; a point off the grid gets a place after it."""
    grid = list(grid)
    return [(grid.index(pt) if pt in grid else len(grid) + i, pt, args)
            for i, pt in enumerate(points)]


def run_changes(points, args):
    print(f"paired change between two conditions: {len(points)} points, {args.reps} data sets "
          f"each, {args.world} world draws (nominal 95% intervals)")
    print(f"{'n':>5} {'p':>3} {'|b|':>4} {'cos0':>5} {'cos1':>5} | {'bias':>7} {'cover':>6} "
          f"{'width':>6} {'defined':>7} {'sd':>6} | {'s':>5}")
    for line in _run_points(grid_tasks(points, CHANGE_GRID, args), args.jobs, _one_change):
        print(line, flush=True)


def _one_soft_change(task) -> str:
    i, (n, p, norm, c0, c1, noise, shared), args = task
    start = time.perf_counter()
    s = soft_change_point(np.random.default_rng(3000 + i), jax.random.PRNGKey(3000 + i),
                          n=int(n), p=int(p), norm=norm, cos_base=c0, cos_other=c1,
                          noise_sd=noise, shared=shared, reps=args.reps, n_world=args.world)
    return (f"{s.n:5d} {s.p:3d} {s.norm:4.1f} {c0:5.2f} {c1:5.2f} {noise:5.1f} {shared:6.2f} | "
            f"{s.bias:+7.3f} {s.coverage:6.3f} {s.width:6.3f} {s.defined:7.2f} {s.sd:6.3f} "
            f"{s.world_sd:6.3f} | {time.perf_counter() - start:5.0f}")


def run_soft_changes(points, args):
    print(f"the soft lens's change between two conditions: {len(points)} points, {args.reps} "
          f"data sets each, {args.world} world draws (nominal 95% intervals)")
    print(f"{'n':>5} {'p':>3} {'|b|':>4} {'cos0':>5} {'cos1':>5} {'noise':>5} {'shared':>6} | "
          f"{'bias':>7} {'cover':>6} {'width':>6} {'defined':>7} {'sd':>6} {'w.sd':>6} | "
          f"{'s':>5}")
    for line in _run_points(grid_tasks(points, SOFT_CHANGE_GRID, args), args.jobs,
                            _one_soft_change):
        print(line, flush=True)


def _one_soft(task) -> str:
    i, (n, p, norm, cos, noise, shift, greedy), args = task
    lines = []
    for loss in args.soft_fit or ("logit_ls", "logistic"):
        start = time.perf_counter()
        s = soft_point(np.random.default_rng(2000 + i), jax.random.PRNGKey(2000 + i),
                       n=int(n), p=int(p), norm=norm, population_cos=cos, noise_sd=noise,
                       shift=shift, greedy=bool(greedy), reps=args.reps, n_world=args.world,
                       loss=loss)
        hard = (f"{s.hard_coverage:10.3f} {s.hard_width:6.3f}" if s.hard_defined
                else f"{'-':>10} {'-':>6}")
        lines.append(f"{s.n:5d} {s.p:3d} {s.norm:4.1f} {cos:5.2f} {noise:5.1f} {shift:5.1f} "
                     f"{'yes' if greedy else 'no':>6} {loss:>8} | {s.soft_bias:+7.3f} "
                     f"{s.soft_coverage:6.3f} {s.soft_width:6.3f} {s.soft_sd:6.3f} "
                     f"{s.soft_world_sd:6.3f} | {hard} | {time.perf_counter() - start:5.0f}")
    return "\n".join(lines)


def run_soft(points, args):
    print(f"soft lens beside the hard one: {len(points)} points, {args.reps} data sets each, "
          f"{args.world} world draws (nominal 95% intervals); hard '-' where every answer is "
          "the same")
    print(f"{'n':>5} {'p':>3} {'|b|':>4} {'cos':>5} {'noise':>5} {'shift':>5} {'greedy':>6} "
          f"{'fit':>8} | {'bias':>7} {'cover':>6} {'width':>6} {'sd':>6} {'w.sd':>6} | "
          f"{'hard cover':>10} {'width':>6} | {'s':>5}")
    for lines in _run_points(grid_tasks(points, SOFT_GRID, args), args.jobs, _one_soft):
        print(lines, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", action="store_true", help="run the full grid")
    ap.add_argument("--point", action="append", default=[], metavar="N,P,NORM,COS")
    ap.add_argument("--reps", type=int, default=200, help="data sets per point")
    ap.add_argument("--world", type=int, default=200, help="simulation-world draws per data set")
    ap.add_argument("--unmatched-world", action="store_true",
                    help="the world as before 2026-12-05: its draws' split noise from its own "
                    "4 splits, not matched to the estimate's 20 (kernels._world._split_matched)")
    ap.add_argument("--directions", type=int, default=1,
                    help="designs and population directions a point's data sets are spread over "
                    "(1: one, as in the recorded full grid)")
    ap.add_argument("--bootstrap", type=int, default=200,
                    help="pairs-bootstrap resamples for the replaced candidates (0: skip)")
    ap.add_argument("--grid-n", type=int, action="append", default=[], metavar="N",
                    help="with --grid: only the points with this many cases (repeatable)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="points at once (--grid, --change, --soft, --soft-change), each in its "
                    "own process of one XLA thread")
    ap.add_argument("--csv", default="calibration_grid.csv")
    ap.add_argument("--null-sets", type=int, default=300)
    ap.add_argument("--change", action="store_true",
                    help="measure the paired change between conditions on CHANGE_GRID")
    ap.add_argument("--change-point", action="append", default=[], metavar="N,P,NORM,COS0,COS1")
    ap.add_argument("--soft", action="store_true",
                    help="measure the soft lens beside the hard one on SOFT_GRID")
    ap.add_argument("--soft-point", action="append", default=[],
                    metavar="N,P,NORM,COS,NOISE,SHIFT,GREEDY")
    ap.add_argument("--soft-fit", action="append", default=[], choices=("logit_ls", "logistic"),
                    help="with --soft: only this way of fitting the probabilities (repeatable; "
                    "default both)")
    ap.add_argument("--soft-change", action="store_true",
                    help="measure the soft lens's change between conditions on SOFT_CHANGE_GRID")
    ap.add_argument("--soft-change-point", action="append", default=[],
                    metavar="N,P,NORM,COS0,COS1,NOISE,SHARED")
    ap.add_argument("--table", nargs="+", metavar="CSV",
                    help="print the rows of these --csv files (later ones replace earlier "
                    "ones point by point) as a markdown table with each point's target, "
                    "and run nothing")
    args = ap.parse_args()

    if args.table:
        rows = read_rows(args.table)
        print(markdown_table(rows))
        _print_judged(rows)
        return

    if args.soft_change or args.soft_change_point:
        points = [tuple(float(v) for v in p.split(",")) for p in args.soft_change_point]
        run_soft_changes(points or SOFT_CHANGE_GRID, args)
        if not (args.grid or args.point or args.change or args.change_point or args.soft
                or args.soft_point):
            return

    if args.soft or args.soft_point:
        points = [tuple(float(v) for v in p.split(",")) for p in args.soft_point]
        run_soft(points or SOFT_GRID, args)
        if not (args.grid or args.point or args.change or args.change_point):
            return

    if args.change or args.change_point:
        points = [tuple(float(v) for v in p.split(",")) for p in args.change_point]
        run_changes(points or CHANGE_GRID, args)
        if not (args.grid or args.point):
            return

    points = [tuple(float(v) for v in p.split(",")) for p in args.point]
    if args.grid:
        points += [pt for pt in itertools.product(GRID_N, GRID_P, GRID_NORM, GRID_COS)
                   if not args.grid_n or pt[0] in args.grid_n]
    print(f"{len(points)} points, {args.reps} data sets each (over {args.directions} "
          f"population direction(s)), {args.world} world draws, "
          f"{args.bootstrap} pairs-bootstrap resamples (nominal 95% intervals)")
    _print_header()
    tasks = grid_tasks(points, itertools.product(GRID_N, GRID_P, GRID_NORM, GRID_COS), args)
    rows = {}
    with open(args.csv, "w", newline="") as fh:
        out = csv.DictWriter(fh, COLUMNS)
        out.writeheader()
        for seed, row in _run_points(tasks, args.jobs):
            _print_row(row)
            out.writerow(row)
            fh.flush()
            rows[seed] = row
    with open(args.csv, "w", newline="") as fh:  # in grid order
        out = csv.DictWriter(fh, COLUMNS)
        out.writeheader()
        out.writerows(rows[k] for k in sorted(rows))
    _print_judged(list(rows.values()))

    if args.null_sets:
        null = permutation_null_study(np.random.default_rng(0), jax.random.PRNGKey(1), n=1000,
                                      p=45, sets=args.null_sets, n_permutations=99)
        ks = scipy.stats.kstest(null.pvalues, "uniform")
        print(f"permutation test under the null (n=1000, p=45, {args.null_sets} data sets, "
              f"99 permutations): KS p = {ks.pvalue:.3f}, rejection rate at 0.05 = "
              f"{null.rejection_rate:.3f}")


if __name__ == "__main__":
    main()
