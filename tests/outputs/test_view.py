"""`lensaudit view`: the page of a small simulated job, checked against the
decision store in pandas and in a real headless Chromium (Debian's package,
driven by Playwright). On CI (CI=true) a missing browser fails the test."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from engine.decisions import DecisionStore
from engine.errors import LensauditError
from engine.job import run_job
from engine.spec import load_job
from engine.outputs.view import data_of_page, view_data, write_view
from helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[2]
MODEL_A, MODEL_B = "simulated:org", "simulated:cos=0.3"


def chromium() -> str:
    """Debian's chromium, or skip (fail on CI: `make test` installs it)."""
    path = shutil.which("chromium")
    try:
        import playwright  # noqa: F401 (only whether it is installed)
    except ImportError:
        path = None
    if path is None:
        message = "no headless browser: Debian's chromium and PyPI's playwright are needed"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (make test installs both)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two simulated decision-makers x two conditions in reasoning mode, 60
    German Credit cases, counterfactual twins on one cue."""
    tmp = tmp_path_factory.mktemp("view")
    spec = load_job("jobs/german_credit_demo.yaml", [
        f"models=[{MODEL_A},{MODEL_B}]", "dataset.subset.per_class=30",
        "conditions=[baseline,org_externalized]", "decision.mode=reasoning",
        "counterfactual={cues: [foreign_worker]}", "statistics.bootstrap=20",
        "statistics.permutations=20", f"output.run_dir={tmp / 'run'}",
        f"output.tracking_uri=sqlite:///{tmp / 'mlflow.db'}"])
    run_job(spec, progress=False, log=lambda *_: None)
    return tmp / "run"


def store_cell(run_dir: Path, model: str, condition: str) -> pd.DataFrame:
    """One cell's decisions on the audited cases (twins left out), by case id."""
    d = DecisionStore(run_dir).load()
    d = d[(d["model"] == model) & (d["condition"] == condition) & ~d["case_id"].str.contains("~")]
    return d.set_index("case_id")


@contextlib.contextmanager
def opened_page(page_file: Path):
    """The page in headless Chromium, its first rows rendered: (the page, the
    seconds that took, the page's script errors so far and later)."""
    from playwright.sync_api import sync_playwright

    browser_path = chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True,
                                    args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 820})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            start = time.perf_counter()
            page.goto(page_file.as_uri())
            page.wait_for_selector("#rows tr.case")
            yield page, time.perf_counter() - start, errors
        finally:
            browser.close()


def cases_values(data: dict, cue: str) -> list[str]:
    """A cue's shown values per case, whether listed or coded by level."""
    v = data["values"][cue]
    return v if isinstance(v, list) else [v["levels"][k] for k in v["codes"]]


def test_the_job_writes_the_page_and_its_data_matches_the_store(run):
    assert (run / "view.html").is_file()  # every job writes it, and logs it with the run
    data = view_data(run)
    cases = pd.read_parquet(run / "cases.parquet")
    assert data["n"] == len(cases) == 60 and data["ids"] == cases["case_id"].tolist()
    assert [c["key"] for c in data["columns"]] == [
        f"{m} | {c}" for m in (MODEL_A, MODEL_B) for c in ("baseline", "org_externalized")]
    checking = data["values"]["checking_account"]  # 60 cases, 4 levels: coded
    assert checking["levels"][checking["codes"][0]] == cases_values(data, "checking_account")[0]
    assert len(data["cues"]) == 20 and cases_values(data, "checking_account")[0] in (
        "below 0 DM", "0 to 200 DM", "200 DM or more / salary assigned for at least 1 year",
        "no checking account")  # the schema's words, not the codes
    a = data["columns"][0]
    d = store_cell(run, MODEL_A, "baseline").loc[data["ids"]]
    assert a["y"] == d["y"].astype(float).tolist() and a["reasoning"] == d["reasoning"].tolist()
    flips = data["twins"][a["key"]]["flips"]
    assert sum(flips) > 0 and len(flips) == 60


def test_reasoning_that_writes_a_closing_script_tag_cannot_end_the_page(run, tmp_path):
    from engine.outputs.view._page import page_html

    data = view_data(run)
    data["columns"][0]["reasoning"][0] = "</script><script>alert(1)</script>"
    html = page_html(data)
    assert html.count("</script>") == 2  # the data element's and the code's own


def test_view_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "view", tmp_path)
    assert_one_line_error(code, err, "no results.json")


def test_a_study_hands_the_viewer_its_own_reader(run, tmp_path):
    """A run of another kind (ALIGN's) is read by the reader its study hands
    the viewer, and refused in one line without one (the viewer imports no study)."""
    other = tmp_path / "other"
    shutil.copytree(run, other)
    results = other / "results.json"
    payload = json.loads(results.read_text())
    results.write_text(json.dumps({**payload, "kind": "alignment"}))
    with pytest.raises(LensauditError, match="a run of kind 'alignment'"):
        view_data(other)
    seen = view_data(other, {"alignment": lambda run_dir, p, spec: {"kind": p["kind"],
                                                                    "job": spec.name}})
    assert seen == {"kind": "alignment", "job": payload["spec"]["name"]}


def test_the_page_in_a_real_browser(run, tmp_path, capsys):
    """Counts against the store, the disagreement filter against pandas, a
    reasoning cell expanded, the policies tab; a screenshot is saved (set
    LENSAUDIT_VIEW_SCREENSHOT=docs/viewer.png to refresh the README's)."""
    chromium()  # (skips, or fails on CI, before any work without a browser)
    page_file = write_view(run, tmp_path / "view.html")
    cases = pd.read_parquet(run / "cases.parquet").set_index("case_id")
    a = store_cell(run, MODEL_A, "baseline").loc[cases.index]
    b = store_cell(run, MODEL_B, "org_externalized").loc[cases.index]
    with opened_page(page_file) as (page, seconds, errors):
        with capsys.disabled():  # shown in the suite's output, not asserted
            print(f"\n[view] first render of {len(cases)} cases in Chromium: {seconds:.3f} s")

        assert page.inner_text("#summary") == "60 of 60 cases"
        assert page.locator("#rows tr.case").count() == 60
        # case, organisation, 4 decision-maker x condition columns, 20 cues
        assert page.locator("#head th").count() == 1 + 1 + 4 + 20

        page.select_option("#colA", label=f"{MODEL_A} | baseline")
        page.select_option("#filter", "org")
        off = int(((a["y"] > 0.5).astype(int) != cases["decision"]).sum())
        assert 0 < off < 60
        assert page.inner_text("#summary") == f"{off} of 60 cases"

        page.select_option("#colB", label=f"{MODEL_B} | org_externalized")
        page.select_option("#filter", "pair")
        apart = int(((a["y"] > 0.5) != (b["y"] > 0.5)).sum())
        assert page.inner_text("#summary") == f"{apart} of 60 cases"

        page.select_option("#filter", "all")
        page.fill("#search", "checking_account=A14")  # a cue the reasoning names
        named = int(pd.concat([store_cell(run, m, c)["reasoning"] for m in (MODEL_A, MODEL_B)
                               for c in ("baseline", "org_externalized")], axis=1)
                    .loc[cases.index].fillna("")
                    .apply(lambda r: r.str.contains("checking_account=A14", regex=False).any(),
                           axis=1)
                    .sum())
        assert page.inner_text("#summary") == f"{named} of 60 cases"
        page.fill("#search", "")

        first = cases.index[0]
        page.locator("#rows tr.case").first.locator("td.dec").first.click()
        assert page.inner_text("#rows tr.detail .reasoning") == a.loc[first, "reasoning"]

        page.click("#tab-policies")
        assert page.locator("#policies tbody tr").count() == len(
            pd.read_csv(next((run / "cells").glob("*/policies.csv"))))
        page.locator("a.cue-link").first.click()
        assert page.locator("th.hl").count() == 1 and page.is_visible("#cases")
        screenshot(page, tmp_path / "viewer.png")
        assert errors == []
    assert (tmp_path / "viewer.png").stat().st_size > 10_000


def scaled_copy(run: Path, out: Path, n: int) -> Path:
    """The run with its cases and its cells' decisions repeated to `n` cases
    (new ids), in the run's own files: what a job of that size leaves."""
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("decisions", "view.html"))
    cases = pd.read_parquet(run / "cases.parquet")
    reps = -(-n // len(cases))
    ids = {f"{c}": [f"{c}-{k}" for k in range(reps)] for c in cases["case_id"]}
    big = pd.concat([cases.assign(case_id=[ids[c][k] for c in cases["case_id"]])
                     for k in range(reps)], ignore_index=True).head(n)
    big.to_parquet(out / "cases.parquet", index=False)
    keep = set(big["case_id"])
    for path in (run / "cells").glob("*/decisions.parquet"):
        d = pd.read_parquet(path)
        parts = d["case_id"].str.partition("~")
        base, twin = parts[0], parts[2]
        copies = [d.assign(case_id=[f"{b}-{k}" + (f"~{t}" if t else "")
                                    for b, t in zip(base, twin)]) for k in range(reps)]
        d = pd.concat(copies, ignore_index=True)
        d[d["case_id"].str.partition("~")[0].isin(keep)].to_parquet(
            out / path.relative_to(run), index=False)
    return out


def test_the_page_at_a_hundred_thousand_cases(run, tmp_path, capsys):
    """100,000 cases in the browser: the first page renders, and a filter and
    a search over every case count what pandas counts (how fast: `python
    benchmarks/view.py`, recorded in benchmarks/README.md)."""
    chromium()  # (skips, or fails on CI, before any work without a browser)
    big = scaled_copy(run, tmp_path / "big", 100_000)
    start = time.perf_counter()
    page_file = write_view(big)
    written = time.perf_counter() - start
    data = view_data(big)
    with capsys.disabled():
        print(f"\n[view] copy and data: {time.perf_counter() - start:.1f} s")
    a, b = data["columns"][0], data["columns"][1]
    cases = pd.read_parquet(big / "cases.parquet")
    off = int(((pd.Series(a["y"]) > 0.5).astype(int) != cases["decision"]).sum())
    query = "no checking account"  # as the page searches: id, cue values, reasonings
    texts = [" ".join(t).lower() for t in zip(
        data["ids"], *(cases_values(data, c["name"]) for c in data["cues"]),
        *([r or "" for r in col["reasoning"]] for col in data["columns"]))]
    found = sum(query in t for t in texts)
    with opened_page(page_file) as (page, seconds, errors):
        with capsys.disabled():  # shown in the suite's output, not asserted
            print(f"\n[view] 100,000 cases: page written in {written:.1f} s "
                  f"({page_file.stat().st_size / 1e6:.1f} MB), first render in Chromium "
                  f"{seconds:.2f} s")
        assert page.inner_text("#summary") == "100000 of 100000 cases"
        assert page.locator("#rows tr.case").count() == 100
        assert page.inner_text("#page") == "page 1 of 1000"
        page.select_option("#colA", label=a["key"])
        page.select_option("#filter", "org")
        assert 0 < off < 100_000 and page.inner_text("#summary") == f"{off} of 100000 cases"
        page.select_option("#filter", "all")
        page.fill("#search", query)
        assert 0 < found < 100_000 and page.inner_text("#summary") == f"{found} of 100000 cases"
        last = page.locator("#rows tr.case").last.locator("td").first.inner_text()
        assert last in set(cases["case_id"])
        assert errors == [] and b["key"] != a["key"]


def screenshot(page, path: Path) -> None:
    """The cases tab from its top, with one reasoning open: the README's picture."""
    page.click("#tab-cases")
    page.evaluate("document.querySelector('main').scrollTo(0, 0)")
    page.screenshot(path=str(path))
    target = os.environ.get("LENSAUDIT_VIEW_SCREENSHOT")
    if target:
        shutil.copy(path, ROOT / target)


def test_serve_answers_on_localhost(run):
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "view", str(run), "--serve",
                             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        url = re.search(r"http://127\.0\.0\.1:\d+/view\.html", "".join(lines)).group(0)
        body = urllib.request.urlopen(url, timeout=30).read().decode()
        assert "lensaudit view" in body and data_of_page(body)["n"] == 60
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_on_a_port_in_use_is_one_line(run, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(capsys, "view", run, "--serve", "--port", port)
    assert_one_line_error(code, err, f"--port {port}: cannot serve on 127.0.0.1")

