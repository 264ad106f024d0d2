"""The pipeline and `lensaudit fit` at the sizes of real audits, the code at
the start of each scale issue beside this tree, in one run.

**Pipeline** (`--parts pipeline`). A simulated job's decision stage at
`--decisions` (2 simulated models x half as many tenancy applications,
`examples/tenancy`'s generator; one condition): in a fresh process per code,
the plan (case set read, checked and encoded; not timed as the stage), then
the stage as a job runs it: the requests, the reuse check, the decisions
(drawn, written to the store), the store read back and every cell's decisions
taken from it. Prints decisions per second, the stage's seconds and the
process's peak memory; then a fresh process's `DecisionStore.load()` of the
store (its load time); at the largest size, this tree's run killed with -9
after its first shard and run again (what it computed, what it reused, every
key once). Baseline: `--pipeline-baseline` (the pipeline issue's start).

**Fit** (`--parts fit`). A synthetic decisions table per size (8 cues: 4 numeric and 4 categorical
with 3 levels, 16 encoded columns; a reference and a candidate from known
logistic policies at cosine 0.8, the candidate with its probabilities, so the
soft lens runs too), audited by `lensaudit fit` with B = P = 1,000 in a fresh
process, once by this tree and once by the code at `--baseline` (a git
worktree of this repository), side by side in one run. Each code compiles
into a compilation cache of its own, empty at the start (a first run).
Prints per size and code: wall seconds, peak resident memory (the process's
maximum RSS), the growth exponent between sizes (log ratio of time, and of
memory, over log ratio of n).

At `--compare-at` cases every statistic of the two is printed side by side.
This tree draws its bootstrap counts, permutations and simulation-world
decisions row by row from the key (`kernels._rows`), the baseline as whole
arrays, so what depends on them differs by Monte Carlo error; that error is
measured as the standard deviation of each statistic over `--seeds` further
runs of this tree with other seeds, and a difference counts as within it
when it is below 3 standard deviations of a difference of two runs
(3 sqrt(2) sd). Point estimates must agree to 1e-6.

The baseline holds `[B, n]` arrays whole (about 110 GB at a million cases),
so it runs only up to `--baseline-max` cases; larger sizes print "not run".

    python benchmarks/scale.py [--parts pipeline,fit] [--decisions 10000,100000,1000000]
                               [--pipeline-baseline REV] [--sizes 1000,10000,100000,1000000]
                               [--baseline REV] [--baseline-max 100000] [--bootstrap 1000]
                               [--compare-at 10000] [--seeds 6]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
#: The code at the start of the statistics-at-scale issue.
BASELINE = "8de2b27"
#: The code at the start of the pipeline-at-scale issue (the same commit).
PIPELINE_BASELINE = "8de2b27"
NUMERIC = [f"x{k}" for k in range(4)]
CATEGORICAL = [f"c{k}" for k in range(4)]
LEVELS = ("a", "b", "c")


def write_table(path: Path, n: int, seed: int = 0) -> Path:
    """A decisions table of n cases: cues, `org` and `llm` (0/1), `llm_p`."""
    rng = np.random.default_rng(seed)
    cols = {name: rng.normal(0, 1, n) for name in NUMERIC}
    cols |= {name: rng.choice(LEVELS, n) for name in CATEGORICAL}
    table = pd.DataFrame(cols)
    onehot = np.column_stack([table[NUMERIC].to_numpy()]
                             + [(table[c].to_numpy() == lv).astype(float)
                                for c in CATEGORICAL for lv in LEVELS])
    onehot = (onehot - onehot.mean(0)) / onehot.std(0)
    d = onehot.shape[1]
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    v = rng.standard_normal(d)
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    beta_org, beta_llm = 1.3 * u, 1.3 * (0.8 * u + 0.6 * v)  # cosine 0.8
    p_org = 1 / (1 + np.exp(-onehot @ beta_org))
    p_llm = 1 / (1 + np.exp(-onehot @ beta_llm))
    table["org"] = (rng.random(n) < p_org).astype(int)
    table["llm"] = (rng.random(n) < p_llm).astype(int)
    table["llm_p"] = p_llm
    table.to_parquet(path, index=False)
    return path


#: Run in a fresh process with the code under test first on sys.path: `lensaudit
#: fit --json`, then its wall time and peak memory as the last line.
FIT = r"""
import json, resource, sys, time, io, contextlib
sys.path.insert(0, sys.argv[1])
from engine.cli import main
buf = io.StringIO()
t0 = time.perf_counter()
with contextlib.redirect_stdout(buf):
    code = main(["fit", *sys.argv[2:]])
wall = time.perf_counter() - t0
print(buf.getvalue())
print(json.dumps({"code": code, "wall_s": wall,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_fit(code: Path, table: Path, args: argparse.Namespace, cache: Path,
            seed: int = 0) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(code), LENSAUDIT_CACHE=str(cache))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    fit_args = [str(table), "--cues", ",".join(NUMERIC + CATEGORICAL), "--reference", "org",
                "--candidate", "llm", "--candidate-prob", "llm_p",
                "--bootstrap", str(args.bootstrap), "--permutations", str(args.bootstrap),
                "--seed", str(seed), "--json"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", FIT, str(code), *fit_args], cwd=code, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:200],
                "wall_s": time.perf_counter() - start}
    lines = done.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    out["result"] = json.loads("\n".join(lines[:-1]))
    return out


#: Run in a fresh process with the code under test first on sys.path: the
#: decision stage of a simulated job (argv: code, job file, "stage"), or a load
#: of its store (argv: code, job file, "load"); one JSON line.
STAGE = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from engine.spec import load_job
spec = load_job(sys.argv[2])
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if sys.argv[3] == "load":
    from engine.decisions import DecisionStore
    t0 = time.perf_counter()
    rows = len(DecisionStore(spec.run_dir()).load())
    print(json.dumps({"load_s": time.perf_counter() - t0, "rows": rows, "peak_mb": peak()}))
    sys.exit()
import engine.job as job
from engine.audit import decisions_for_cell, fit_weights
from engine.decisions import DecisionStore
from engine.decisions import backends
from engine.prompts import PromptContext, build_requests
t0 = time.perf_counter()
plan, cases = job.plan(spec)
enc = cases.encode()
fit = fit_weights(enc, cases.table["decision"].to_numpy(float), spec.statistics)
drawn_from = (float(fit.intercept), fit.beta)
x_by_case = dict(zip(cases.table["case_id"].astype(str), enc.X))
t1 = time.perf_counter()
d = spec.decision
store = DecisionStore(spec.run_dir())
context = PromptContext(org=None, tiers=d.tiers, custom=spec.custom_instructions(),
                        prompts=d.prompts, role=d.role)
requests = [r for m in spec.models for r in build_requests(cases, m.name, "baseline", d.samples,
                                                           context, spec.mode_of("baseline"))]
again = job.check_reused(requests, store, d, lambda *a: None)
if hasattr(backends, "run_simulated"):
    simulate = lambda todo: backends.run_simulated(todo, store, x_by_case, *drawn_from, seed=d.seed,
                                                   columns=enc.columns, progress=False)
else:
    simulate = lambda todo: backends.simulated_rows(todo, x_by_case, *drawn_from, seed=d.seed,
                                                    columns=enc.columns)
computed = job.decide(spec, requests, store, {}, {m.name: "simulated" for m in spec.models},
                      None, progress=False, simulate=simulate, again=again)
decisions = store.load()
cells = [decisions_for_cell(decisions, cases, m.name, "baseline") for m in spec.models]
t2 = time.perf_counter()
print(json.dumps({"plan_s": t1 - t0, "stage_s": t2 - t1, "decisions": len(requests),
                  "computed": computed, "peak_mb": peak()}))
"""


def write_pipeline_job(folder: Path, decisions: int) -> Path:
    """A simulated job of `decisions` decisions: two models x decisions / 2
    tenancy applications, one condition."""
    sys.path.insert(0, str(ROOT / "examples" / "tenancy"))
    from make_tenancy import applications, log_odds

    n = decisions // 2
    rng = np.random.default_rng(0)
    cases = applications(rng, n)
    cases["application"] = [f"T{i:07d}" for i in range(n)]
    offer = rng.random(n) < 1 / (1 + np.exp(-log_odds(cases, biased=False)))
    cases["agent_decision"] = np.where(offer, "Offer", "Decline")
    folder.mkdir(parents=True, exist_ok=True)
    cases.to_csv(folder / "tenancy.csv", index=False)
    (folder / "tenancy.yaml").write_text((ROOT / "examples/tenancy/tenancy.yaml").read_text())
    job = folder / "job.yaml"
    job.write_text(json.dumps({
        "name": f"pipeline_{decisions}", "dataset": {"cases": "tenancy.yaml"},
        "models": ["simulated:cos=0.8", "simulated:cos=0.5"], "conditions": ["baseline"],
        "statistics": {"bootstrap": 10, "permutations": 10},
        "output": {"run_dir": str(folder / "run"),
                   "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"}}))
    return job


@contextlib.contextmanager
def checkout(rev: str, path: Path):
    """The code at `rev`, a git worktree of this repository at `path` while
    the block runs."""
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT,
                       capture_output=True)


def stage_process(code: Path, job: Path, phase: str) -> tuple[list[str], dict]:
    """The command and environment of a `STAGE` process of `code`."""
    return ([sys.executable, "-c", STAGE, str(code), str(job), phase],
            dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(code)))


def run_stage(code: Path, job: Path, phase: str = "stage") -> dict:
    command, env = stage_process(code, job, phase)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:200],
                "wall_s": time.perf_counter() - start}
    return json.loads(done.stdout.strip().splitlines()[-1])


def killed_and_resumed(job: Path) -> str:
    """This tree's stage killed with -9 after its first shard, then run again."""
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from engine.decisions import DecisionStore
    from engine.spec import load_job

    store = DecisionStore(load_job(job).run_dir())
    command, env = stage_process(ROOT, job, "stage")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not store.shards() and proc.poll() is None:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    kept = sum(pq.ParquetFile(s).metadata.num_rows for s in store.shards())
    again = run_stage(ROOT, job)
    keys = pd.concat([pq.read_table(s, columns=["model", "condition", "case_id", "sample"])
                      .to_pandas() for s in store.shards()])
    once = not keys.duplicated().any()
    return (f"killed after {kept:,} decisions were stored; the re-run computed "
            f"{again.get('computed', 0):,} in {again.get('stage_s', float('nan')):.1f} s and "
            f"reused the rest: {len(keys):,} keys in the store, "
            + ("every key once" if once and len(keys) == again.get("decisions") else
               "NOT every key once"))


def pipeline(args: argparse.Namespace, tmp: Path) -> None:
    sizes = [int(s) for s in args.decisions.split(",")]
    print(f"\ndecision stage, simulated backend, 2 models x decisions / 2 cases; "
          f"baseline {args.pipeline_baseline}", flush=True)
    rows = []
    with checkout(args.pipeline_baseline, tmp / "pipeline-baseline") as old:
        for n in sizes:
            for name, code in ((f"baseline {args.pipeline_baseline}", old), ("this tree", ROOT)):
                job = write_pipeline_job(tmp / f"pipeline-{n}-{name.split()[0]}", n)
                r = run_stage(code, job)
                if "error" not in r:
                    r |= {"load": run_stage(code, job, "load")}
                rows.append((name, n, r))
                print(f"  {name:18} {n:>9,} decisions: " + (
                    f"failed: {r['error']}" if "error" in r else
                    f"{r['decisions'] / r['stage_s']:>8,.0f}/s, stage {r['stage_s']:6.1f} s, "
                    f"plan {r['plan_s']:5.1f} s, peak {r['peak_mb']:6.0f} MB, store load "
                    f"{r['load'].get('load_s', float('nan')):5.2f} s"), flush=True)
    resumed = killed_and_resumed(write_pipeline_job(tmp / "resume", sizes[-1]))
    print(f"\n{'code':18} {'decisions':>10} {'per s':>8} {'stage s':>8} {'plan s':>7} "
          f"{'peak MB':>8} {'load s':>7}   (plan: the case set read, checked and encoded, and "
          "the organisation's policy fitted)")
    for name, n, r in rows:
        if "error" in r:
            print(f"{name:18} {n:>10,} failed: {r['error']}")
            continue
        load_s = r["load"].get("load_s", float("nan"))
        print(f"{name:18} {n:>10,} {r['decisions'] / r['stage_s']:>8,.0f} {r['stage_s']:>8.1f} "
              f"{r['plan_s']:>7.1f} {r['peak_mb']:>8.0f} {load_s:>7.2f}")
    for n in sizes:
        old_r, new_r = (r for name, m, r in rows if m == n)
        if "error" not in old_r and "error" not in new_r:
            print(f"{n:,} decisions: stage {old_r['stage_s'] / new_r['stage_s']:.1f}x as fast, "
                  f"store load {old_r['load']['load_s'] / new_r['load']['load_s']:.1f}x")
    print(f"resume at {sizes[-1]:,} decisions: {resumed}")


def leaves(result, path: str = "") -> dict[str, float]:
    """Every finite number in a result, by its path."""
    if isinstance(result, dict):
        return {k: v for key, val in result.items() for k, v in leaves(val, f"{path}.{key}").items()}
    if isinstance(result, list):
        return {k: v for i, val in enumerate(result) for k, v in leaves(val, f"{path}[{i}]").items()}
    if isinstance(result, (int, float)) and not isinstance(result, bool) and math.isfinite(result):
        return {path: float(result)}
    return {}


#: Statistics that no random stream touches: the fits on the cases themselves
#: and their agreement figures. (The cross-fitted estimate's splits come from
#: the key, which `lensaudit fit` now takes as a job's cell does.)
POINT = ("r_cos", "accuracy", "auc_vs_org", "kappa", "positive_rate", "n", "beta_reference",
         "beta_candidate", "beta_soft")


def side_by_side(old: dict, new: dict, seeds: list[dict], permutations: int) -> list[str]:
    """A line per statistic: baseline, this tree, difference, Monte Carlo sd
    (over the other seeds' runs; for a permutation p-value at least the
    binomial sd sqrt(p (1 - p) / P), which a few seeds' spread of a count
    near 0 understates), and whether the difference is within it."""
    a, b = leaves(old), leaves(new)
    others = [leaves(r) for r in seeds]
    lines, worst = [], 0.0
    groups: dict[str, list] = {}
    for path in a:
        if path not in b:
            continue
        name = path.split(".")[1] if path.count(".") >= 1 else path
        diff = abs(a[path] - b[path])
        vals = [o[path] for o in others if path in o]
        sd = float(np.std(vals, ddof=1)) if len(vals) >= 2 else float("nan")
        if name.startswith("p_perm"):
            p = min(max(b[path], 1.0 / (permutations + 1)), 1.0)
            sd = max(np.nan_to_num(sd), math.sqrt(p * (1 - p) / permutations))
        point = name in POINT
        ok = diff <= 1e-6 if point else (diff <= 1e-6 or diff <= 3 * math.sqrt(2) * sd)
        worst = max(worst, diff / (math.sqrt(2) * sd) if sd > 0 and not point else 0.0)
        groups.setdefault(path.rsplit(".", 1)[0] if name.startswith("beta") else path, []).append(
            (path, a[path], b[path], diff, sd, point, ok))
    lines.append(f"{'statistic':34} {'baseline':>12} {'this tree':>12} {'|diff|':>9} "
                 f"{'MC sd':>9}  verdict")
    for key, rows in groups.items():
        if len(rows) == 1:
            path, x, y, diff, sd, point, ok = rows[0]
            verdict = ("equal" if diff <= 1e-6 else "within MC error" if ok else "DIFFERS")
            lines.append(f"{path.lstrip('.')[:34]:34} {x:12.6f} {y:12.6f} {diff:9.2e} {sd:9.2e}  "
                         f"{verdict}{'' if point else ' (random streams)'}")
        else:
            diff = max(r[3] for r in rows)
            ok = all(r[6] for r in rows)
            lines.append(f"{key.lstrip('.')[:34]:34} {'(' + str(len(rows)) + ' values)':>12} "
                         f"{'':>12} {diff:9.2e} {'':>9}  "
                         f"{'equal' if diff <= 1e-6 else 'within MC error' if ok else 'DIFFERS'}")
    lines.append(f"largest difference in units of its Monte Carlo sd: {worst:.2f}")
    return lines


def largest_difference(a, b, path: str = "") -> tuple[float, str]:
    """The largest absolute difference between two results' numbers, and where."""
    if isinstance(a, dict) and isinstance(b, dict):
        pairs = [largest_difference(a[k], b[k], f"{path}.{k}") for k in a if k in b]
        return max(pairs, default=(0.0, ""), key=lambda p: p[0])
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = [largest_difference(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
        return max(pairs, default=(0.0, ""), key=lambda p: p[0])
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and math.isfinite(a) and math.isfinite(b):
        return abs(float(a) - float(b)), path
    return 0.0, ""


def _exponent(rows: list[dict], key: str) -> list[str]:
    out = ["-"]
    for before, after in zip(rows, rows[1:]):
        if key in before and key in after:
            out.append(f"{math.log(after[key] / before[key]) / math.log(after['n'] / before['n']):.2f}")
        else:
            out.append("-")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the old code")
    ap.add_argument("--baseline-max", type=int, default=100_000,
                    help="the largest n the baseline runs at (its memory grows with B x n)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="B = P")
    ap.add_argument("--compare-at", type=int, default=10_000,
                    help="n at which every statistic is shown side by side")
    ap.add_argument("--seeds", type=int, default=6,
                    help="further runs of this tree at --compare-at for the Monte Carlo error")
    ap.add_argument("--parts", default="pipeline,fit", help="pipeline, fit or both")
    ap.add_argument("--decisions", default="10000,100000,1000000",
                    help="decision counts of the pipeline part")
    ap.add_argument("--pipeline-baseline", default=PIPELINE_BASELINE,
                    help="git revision of the old pipeline")
    args = ap.parse_args()
    parts = args.parts.split(",")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", flush=True)
    if "pipeline" in parts:
        with tempfile.TemporaryDirectory(prefix="lensaudit-pipeline-") as tmp:
            pipeline(args, Path(tmp))
    if "fit" in parts:
        fit_part(args)


def fit_part(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"\nlensaudit fit, 16 encoded columns, B = P = {args.bootstrap}", flush=True)
    with tempfile.TemporaryDirectory(prefix="lensaudit-scale-") as tmp:
        tmp = Path(tmp)
        rows = {"baseline": [], "this tree": []}
        seeds: dict[int, list] = {}
        with checkout(args.baseline, tmp / "baseline") as old:
            for n in sizes:
                table = write_table(tmp / f"table_{n}.parquet", n)
                for name, code in (("baseline", old), ("this tree", ROOT)):
                    if name == "baseline" and n > args.baseline_max:
                        rows[name].append({"n": n, "skipped": True})
                        continue
                    r = run_fit(code, table, args, tmp / f"cache-{name.replace(' ', '-')}")
                    r["n"] = n
                    rows[name].append(r)
                    print(f"  {name:9} n={n:>9,}: "
                          + (f"{r['wall_s']:8.1f} s {r['peak_mb']:8.0f} MB" if "error" not in r
                             else f"failed after {r['wall_s']:.0f} s: {r['error']}"), flush=True)
                if n == args.compare_at:
                    seeds[n] = [run_fit(ROOT, table, args, tmp / "cache-this-tree", seed)
                                for seed in range(1, args.seeds + 1)]
    print(f"\n{'code':28} {'n':>9} {'wall s':>8} {'peak MB':>8} {'time exp':>8} {'mem exp':>8}")
    for name, label in (("baseline", f"baseline {args.baseline}"), ("this tree", "this tree")):
        ok = [r for r in rows[name] if "wall_s" in r and "error" not in r]
        t_exp, m_exp = _exponent(ok, "wall_s"), _exponent(ok, "peak_mb")
        k = 0
        for r in rows[name]:
            if r.get("skipped"):
                print(f"{label:28} {r['n']:>9,} {'not run':>8}")
            elif "error" in r:
                print(f"{label:28} {r['n']:>9,} {'failed':>8}  {r['error']}")
            else:
                print(f"{label:28} {r['n']:>9,} {r['wall_s']:8.1f} {r['peak_mb']:8.0f} "
                      f"{t_exp[k]:>8} {m_exp[k]:>8}")
                k += 1
    for old_r, new_r in zip(rows["baseline"], rows["this tree"]):
        if "result" in old_r and "result" in new_r:
            diff, where = largest_difference(old_r["result"], new_r["result"])
            print(f"n={old_r['n']:,}: speed-up {old_r['wall_s'] / new_r['wall_s']:.2f}x, peak "
                  f"memory ratio {new_r['peak_mb'] / old_r['peak_mb']:.2f}, largest difference "
                  f"of any statistic {diff:.2e}" + (f" ({where})" if where else ""))
    for old_r, new_r in zip(rows["baseline"], rows["this tree"]):
        runs = [r["result"] for r in seeds.get(new_r["n"], []) if "result" in r]
        if "result" in old_r and "result" in new_r and runs:
            print(f"\nn={new_r['n']:,}, every statistic side by side (Monte Carlo sd over "
                  f"{len(runs)} other seeds of this tree):")
            print("\n".join(side_by_side(old_r["result"], new_r["result"], runs,
                                          args.bootstrap)))


if __name__ == "__main__":
    main()
