"""The audit stage alone, the code at the start of issue 16 against this tree.

A `simulated` job on all 1,000 German Credit cases (63 encoded columns): ten
decision-makers (`simulated:cos=0.1` ... `simulated:cos=0.9`, `simulated:org`)
under baseline, org_externalized and introspective, B = P = 1,000. Its
decisions are computed once into a store; then each version of the code runs
the job in its own process, every decision reused, with the report and MLflow
logging switched off, so the figure is the statistics: the organisation's fit,
every cell's lens comparison, soft lens and protected shares. Prints wall time
and peak memory (maximum resident set) of both, their ratio, and the largest
difference of any statistic in the two summaries (same seeds, same resamples).

Each version runs twice: cold, with an empty JAX compilation cache, then warm,
reading the programs the first run wrote, as a second `lensaudit run` on the
same machine does (the CLI of both versions keeps that cache in
`$LENSAUDIT_CACHE/jax`). Compiling is most of the start-up (see README.md), so
the two ratios differ.

    python benchmarks/audit.py [--baseline REV] [--bootstrap 1000] [--permutations 1000]
                               [--workers auto] [--models 10] [--per-class N] [--once]

`--workers` is this tree's `statistics.workers` (auto: one pinned worker
process per core; 1: the cells in the driver, as the baseline runs them).

The baseline is checked out as a git worktree of this repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The commit at the start of issue 16 (the one-pipeline redesign).
BASELINE = "8946ae1"
MODELS = [f"simulated:cos=0.{k}" for k in range(1, 10)] + ["simulated:org"]

#: Run in a fresh process with the code under test first on sys.path: the job
#: with every decision in the store, report and MLflow off; prints the wall
#: time and peak memory as JSON and writes the summary table.
AUDIT = r"""
import importlib, json, resource, sys, time
sys.path.insert(0, sys.argv[1])
try:  # the job's module: engine/job/_run.py since the stage layout, engine/job.py before
    job = importlib.import_module("engine.job._run")
except ModuleNotFoundError:
    job = importlib.import_module("engine.job")
from engine.spec import load_job
job.write_report = lambda *a, **k: []
job.save_lens_results = lambda *a, **k: None
job.log_run_dir = lambda *a, **k: ("", "")
job.write_view = lambda *a, **k: None  # (the code at the baseline has no view)
spec = load_job(sys.argv[2], sys.argv[4:])
t0 = time.perf_counter()
result = job.run_job(spec, progress=False, log=lambda *_: None)
wall = time.perf_counter() - t0
result.summary.to_csv(sys.argv[3], index=False)
print(json.dumps({"wall_s": wall,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def write_job(folder: Path, models: list[str], per_class: int | None) -> Path:
    import yaml

    dataset = {"name": "german_credit"}
    if per_class is not None:
        dataset["subset"] = {"per_class": per_class, "seed": 0}
    job = {"name": "audit_bench", "dataset": dataset, "models": models,
           "conditions": ["baseline", "org_externalized", "introspective"],
           "output": {"run_dir": str(folder / "run"),
                      "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"}}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def run_audit(code: Path, job: Path, out_csv: Path, overrides: list[str],
              cache: Path | None = None) -> dict:
    """The job's audit stage by the code at `code`, in a fresh process; `cache`:
    JAX's persistent compilation cache for it (as the CLI sets it), else none."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(code))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    done = subprocess.run([sys.executable, "-c", AUDIT, str(code), str(job), str(out_csv),
                           *overrides], capture_output=True, text=True, env=env, cwd=code)
    if done.returncode != 0:
        sys.exit(f"audit at {code} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


#: Intervals whose method changed after the baseline by design (issue 14: the
#: cross-fitted and soft intervals invert the world, whose draws' split noise
#: is matched to the estimate's since 2026-12-05, which moves the changes'
#: intervals too; the plain cosine's holds its estimate), left out of the
#: comparison.
CHANGED_SINCE_BASELINE = ("r_cos_cf_ci_low", "r_cos_cf_ci_high", "r_cos_soft_ci_low",
                          "r_cos_soft_ci_high", "r_cos_ci_low", "r_cos_ci_high",
                          "alignment_change_low", "alignment_change_high",
                          "alignment_change_soft_low", "alignment_change_soft_high")


def largest_difference(a: Path, b: Path) -> tuple[float, str]:
    import numpy as np
    import pandas as pd

    x, y = pd.read_csv(a), pd.read_csv(b)
    x = x.drop(columns=[c for c in CHANGED_SINCE_BASELINE if c in x])
    if list(x["model"]) != list(y["model"]) or list(x["condition"]) != list(y["condition"]):
        return float("inf"), "the two summaries list different cells"
    worst, where = 0.0, ""
    for col in x.columns:
        if col in y and pd.api.types.is_numeric_dtype(x[col]) \
                and pd.api.types.is_numeric_dtype(y[col]):
            u, v = x[col].to_numpy(float), y[col].to_numpy(float)
            if (np.isnan(u) != np.isnan(v)).any():
                return float("inf"), f"{col}: defined in one summary only"
            d = np.nanmax(np.abs(u - v)) if np.isfinite(u).any() else 0.0
            if d > worst:
                worst, where = float(d), col
    return worst, where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the old code")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--workers", default="auto", help="this tree's statistics.workers")
    ap.add_argument("--models", type=int, default=len(MODELS),
                    help=f"how many of the {len(MODELS)} decision-makers, from simulated:org "
                    "down the cosines")
    ap.add_argument("--once", action="store_true",
                    help="each version once, cold (no warm rerun)")
    ap.add_argument("--per-class", type=int,
                    help="audit a subset: this many cases of each decision (default: all 1,000)")
    args = ap.parse_args()
    models = MODELS[-args.models:]
    stats = [f"statistics.bootstrap={args.bootstrap}",
             f"statistics.permutations={args.permutations}"]
    with tempfile.TemporaryDirectory(prefix="lensaudit-audit-bench-") as tmp:
        tmp = Path(tmp)
        job = write_job(tmp, models, args.per_class)
        old = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.baseline],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            # The decisions, once (simulated: seconds), shared by both versions.
            run_audit(ROOT, job, tmp / "decisions.csv", ["statistics.bootstrap=10",
                                                        "statistics.permutations=10"])
            ours = stats + [f"statistics.workers={args.workers}"]
            runs = {}
            # cold: each version's first run writes its cache; warm: the second reads it
            for when in ("cold",) if args.once else ("cold", "warm"):
                for name, code, extra in (("baseline", old, stats), ("this tree", ROOT, ours)):
                    runs[(name, when)] = run_audit(code, job, tmp / f"{name}-{when}.csv", extra,
                                                   cache=tmp / f"cache-{name}")
                    print(f"{name}, {when}: {runs[(name, when)]}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           capture_output=True)
        diff, where = largest_difference(tmp / "baseline-cold.csv", tmp / "this tree-cold.csv")
        warm_diff, _ = (largest_difference(tmp / "baseline-warm.csv", tmp / "this tree-warm.csv")
                        if not args.once else (float("nan"), ""))
    cases = "1,000" if args.per_class is None else f"{2 * args.per_class}"
    print(f"audit stage: {len(models)} models x 3 conditions, {cases} cases, 63 columns, "
          f"B = {args.bootstrap}, P = {args.permutations}; {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores")
    print(f"  {'code':34} {'cache':5} {'wall s':>8} {'peak MB':>8} {'worker MB':>9}  (peak of the "
          "driver; of one worker process)")
    for (name, when), r in runs.items():
        label = f"baseline {args.baseline}" if name == "baseline" else \
            f"this tree, workers {args.workers}"
        workers = f"{r['worker_peak_mb']:9.0f}" if name != "baseline" else ""
        print(f"  {label:34} {when:5} {r['wall_s']:8.1f} {r['peak_mb']:8.0f} {workers}")
    for when in sorted({when for _, when in runs}):
        before, after = runs[("baseline", when)], runs[("this tree", when)]
        print(f"  {when}: speed-up {before['wall_s'] / after['wall_s']:.2f}x, peak memory ratio "
              f"{after['peak_mb'] / before['peak_mb']:.2f}")
    print(f"  largest difference of any statistic (but CHANGED_SINCE_BASELINE) {diff:.2e}"
          + (f" ({where})" if where else "") + f"; warm runs {warm_diff:.2e}")


if __name__ == "__main__":
    main()
