"""`lensaudit view` at size: a 100,000-case x 30-cue simulated run.

Writes a synthetic case set (30 cues: 15 categorical with 4 levels, 10 numeric,
5 binary; a logistic reference decision), runs a `simulated` job on it (two
decision-makers, one condition, B = P = 10: the statistics are not what is
timed), then times `write_view` and, in headless Chromium, the page's first
render and a filter over every case. Prints the page size and the three times.

    python benchmarks/view.py [--cases 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def write_case_set(folder: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": [f"C{i:05d}" for i in range(n)]})
    cues, z = [], np.zeros(n)
    for k in range(15):
        name = f"category_{k}"
        df[name] = rng.choice(["a", "b", "c", "d"], n)
        z += rng.normal(0, 0.4) * (df[name] == "a") - rng.normal(0, 0.4) * (df[name] == "d")
        cues.append({"name": name, "kind": "categorical", "protected": k == 0})
    for k in range(10):
        name = f"amount_{k}"
        df[name] = rng.normal(100, 20, n).round(1)
        z += rng.normal(0, 0.3) * (df[name] - 100) / 20
        cues.append({"name": name, "kind": "numeric", "unit": "EUR"})
    for k in range(5):
        name = f"flag_{k}"
        df[name] = rng.choice(["yes", "no"], n)
        z += rng.normal(0, 0.3) * (df[name] == "yes")
        cues.append({"name": name, "kind": "binary"})
    df["decision"] = np.where(rng.random(n) < 1 / (1 + np.exp(-z)), "Approve", "Refuse")
    df.to_csv(folder / "cases.csv", index=False)
    path = folder / "cases.yaml"
    path.write_text(yaml.safe_dump({
        "name": "synthetic", "data": "cases.csv", "id": "id", "reference": "decision",
        "question": "whether to approve the application",
        "choices": {"positive": "Approve", "negative": "Refuse"}, "cues": cues}))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--keep", help="keep the run in this folder")
    args = ap.parse_args()

    from engine.job import run_job
    from engine.spec import JobSpec
    from engine.outputs.view import write_view

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="view-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    case_file = write_case_set(folder, args.cases)
    spec = JobSpec.model_validate({
        "name": "view_bench", "dataset": {"cases": str(case_file)},
        "models": ["simulated:org", "simulated:cos=0.5"], "conditions": ["baseline"],
        "statistics": {"bootstrap": 10, "permutations": 10},
        "output": {"run_dir": str(folder / "run"),
                   "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"}})
    start = time.perf_counter()
    run_job(spec, progress=False, log=lambda *_: None)
    print(f"job ({args.cases} cases, decisions and statistics): "
          f"{time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    page = write_view(folder / "run", folder / "bench_view.html")
    written = time.perf_counter() - start
    print(f"write_view: {written:.2f} s, page {page.stat().st_size / 1e6:.1f} MB")

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                    args=["--no-sandbox"])
        tab = browser.new_page()
        start = time.perf_counter()
        tab.goto(page.as_uri())
        tab.wait_for_selector("#rows tr.case")
        print(f"first render: {time.perf_counter() - start:.2f} s "
              f"({tab.inner_text('#summary')}, 100 rows a page)")
        start = time.perf_counter()
        tab.select_option("#filter", "pair")  # the change handler filters synchronously
        print(f"filter over every case: {time.perf_counter() - start:.2f} s "
              f"({tab.inner_text('#summary')})")
        browser.close()
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
