"""Cue diagnostics at load (`engine.datasets.check_cues`): each rule on data
made to trip it and on data made not to, the shipped case sets with only the
warnings true of them, and a job and `lensaudit fit` that refuse or warn by name."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import assert_one_line_error, run_cli

from engine.datasets import (Cue, CueSchema, check_cues, diagnose_cues, load_case_file,
                             load_shipped)
from engine.datasets._diagnostics import (DOMINANT_SHARE_REFUSE, DOMINANT_SHARE_WARN,
                                          _dominant_case)
from engine.errors import LensauditError

ROOT = Path(__file__).resolve().parents[2]
TENANCY = ROOT / "examples" / "tenancy"


def _table(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], **columns})


def _schema(*cues: Cue) -> CueSchema:
    return CueSchema(tuple(cues), "Yes", "No", "whether to say yes")


def _cue(name: str, kind: str = "numeric", levels=()) -> Cue:
    return Cue(name, kind, "family", name.replace("_", " "), {lv: lv for lv in levels})


INCOME = _cue("income")


def _incomes(n=400, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(2500), 0.5, n)


def test_the_share_is_the_variance_that_leaves_with_the_farthest_case():
    x = _incomes()
    x[17] = 40 * np.median(x)
    i, share = _dominant_case(x)
    others = np.delete(x, i)
    brute = 1 - ((others - others.mean()) ** 2).sum() / ((x - x.mean()) ** 2).sum()
    assert i == 17 and share == pytest.approx(brute, rel=1e-12)
    # scale-free, and computed where the squares would overflow
    assert _dominant_case(x * 1e200)[1] == pytest.approx(share, rel=1e-9)


@pytest.mark.parametrize("times,refused", [(1000, True), (30, None), (10, False)])
def test_one_value_that_sets_a_numeric_cue_scale(times, refused):
    x = _incomes()
    x[5] = times * np.median(x)
    cases = _table(income=x)
    share = _dominant_case(x)[1]
    if refused:
        assert share >= DOMINANT_SHARE_REFUSE
        with pytest.raises(LensauditError, match=r"set 'x': cue income = .* for case c5, "
                           r"1,000 times the median .* holding 99\.\d\d% of the cue's variance"):
            check_cues(cases, _schema(INCOME), source="set 'x'")
    elif refused is None:  # 30 times: between the two thresholds, a warning
        assert DOMINANT_SHARE_WARN <= share < DOMINANT_SHARE_REFUSE
        (line,) = check_cues(cases, _schema(INCOME), source="set 'x'")
        assert line.startswith("set 'x': one value sets the scale of a numeric cue") \
            and "income = " in line and "for case c5, 30 times the median" in line
    else:  # 10 times the median among 400 lognormal incomes: an ordinary tail
        assert share < DOMINANT_SHARE_WARN
        assert check_cues(cases, _schema(INCOME)) == []


def test_a_value_beyond_the_arithmetic_is_refused():
    x = _incomes()
    x[3] = 1e308
    with pytest.raises(LensauditError, match="cue income = 1e[+]308 for case c3, .*beyond what "
                       "standardisation can compute"):
        check_cues(_table(income=x), _schema(INCOME))


def test_ordinary_samples_never_warn():
    """Normal, uniform and lognormal (sigma 0.5, as incomes) numeric cues at
    10 to 1,000 cases, 100 samples each (fixed seeds): none is warned of. In
    small or skewed samples one case often holds half the variance; the rule
    also asks it to lie `FAR_Z` robust standard deviations out."""
    schema = _schema(INCOME)
    for n in (10, 100, 1000):
        rng = np.random.default_rng(n)
        for x in [draw for _ in range(100) for draw in (
                rng.normal(0, 1, n), rng.uniform(0, 1, n), rng.lognormal(0, 0.5, n))]:
            assert diagnose_cues(_table(income=x), schema) == []


def test_constant_rare_absent_and_duplicate_are_warned_with_the_cases():
    n = 60
    rng = np.random.default_rng(2)
    region = np.array(["north"] * 28 + ["south"] * 29 + ["east"] * 3)
    level = rng.integers(0, 5, n).astype(float)
    cases = _table(
        constant=np.full(n, 4.0),
        nearly=np.r_[np.zeros(n - 2), 1.0, 2.0],
        flag=np.r_[np.zeros(n - 1), 1.0],
        region=region,
        level=level, level_again=2 * level + 1,  # the same information, another unit
    )
    schema = _schema(_cue("constant"), _cue("nearly"), _cue("flag", "binary"),
                     _cue("region", "categorical", ("north", "south", "east", "west")),
                     _cue("level"), _cue("level_again"))
    from engine.datasets import encode

    lines = check_cues(cases, schema, encode(cases, schema), source="set 'y'")
    text = "\n".join(lines)
    assert len(lines) == 4, text  # constant, rare, absent, duplicate: one line each
    assert "the same for every case, so its weight is 0 for every decision-maker, not " \
           "measured: constant (every case: 4)" in text
    assert "nearly other than 0 (2 cases: c58, c59)" in text
    assert "flag=1 (1 case: c59)" in text and "region=east (3 cases: c57, c58, c59)" in text
    assert "a level no case holds (its weight is 0 by construction, not measured): " \
           "region=west" in text
    assert "level and level_again (correlation +1.000)" in text
    # a two-level cue's two one-hot columns are each other's negative by design
    two = _table(side=np.array(["left", "right"] * 30))
    from engine.datasets import encode as enc2

    schema2 = _schema(_cue("side", "categorical", ("left", "right")))
    assert check_cues(two, schema2, enc2(two, schema2)) == []


def test_warnings_name_three_then_how_many_more():
    n = 40
    cases = _table(**{f"f{k}": np.r_[np.zeros(n - 1), 1.0] for k in range(5)})
    schema = _schema(*(_cue(f"f{k}", "binary") for k in range(5)))
    (rare, duplicate) = check_cues(cases, schema, load_like(cases, schema))
    assert rare.endswith("; and 2 more") and rare.count("(1 case: c39)") == 3
    assert "and 7 more" in duplicate  # 10 pairs of identical columns


def load_like(cases, schema):
    from engine.datasets import encode

    return encode(cases, schema)


def _levels_held_by(cases, rule_items: list[str]) -> None:
    """Every rare-level item names a level and as many cases as hold it."""
    for item in rule_items:
        name, rest = item.split("=", 1)
        level, count = rest.split(" (", 1)
        k = int(count.split(" case")[0])
        assert (cases.table[name].astype(str) == level).sum() == k, item


@pytest.mark.parametrize("name", ["german_credit", "echr_article6"])
def test_shipped_case_sets_warn_only_what_is_true_of_them(name):
    cases = load_shipped(name)
    findings = diagnose_cues(cases.table, cases.schema, cases.encode(), source=name)
    assert {f.rule for f in findings} <= {"rare", "absent"}, findings
    assert not any(f.refuse for f in findings)
    _levels_held_by(cases, [f.item for f in findings if f.rule == "rare"])
    for f in (f for f in findings if f.rule == "absent"):
        cue, level = f.item.split("=", 1)
        assert level in cases.schema.cue(cue).levels
        assert not (cases.table[cue].astype(str) == level).any(), f.item


def test_the_tenancy_example_has_nothing_to_warn():
    cases = load_case_file(TENANCY / "tenancy.yaml")
    assert diagnose_cues(cases.table, cases.schema, cases.encode()) == []


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = tmp_path / "tenancy"
    shutil.copytree(TENANCY, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _set_income(folder: Path, row: int, value) -> str:
    table = pd.read_csv(folder / "tenancy.csv")
    table["monthly_income"] = table["monthly_income"].astype(float)
    table.loc[row, "monthly_income"] = value(table["monthly_income"]) if callable(value) else value
    table.to_csv(folder / "tenancy.csv", index=False)
    return table.loc[row, "application"]


@pytest.mark.parametrize("value", [1e308, lambda col: 1000 * col.median()], ids=["1e308", "x1000"])
def test_a_job_refuses_a_value_that_sets_the_scale_before_any_decision(study, capsys, value):
    case = _set_income(study, 7, value)
    for flag in (["--dry-run"], []):
        code, _, err = run_cli(capsys, "run", study / "job.yaml", *flag)
        assert_one_line_error(code, err, "case set 'tenancy': cue monthly_income = ")
        assert f"for case {case}" in err
    assert not (study.parent / "runs").exists()  # refused before anything was written


def test_a_job_states_a_weakening_value_in_plan_summary_and_results(study, capsys):
    case = _set_income(study, 7, lambda col: 30 * col.median())
    args = ["run", study / "job.yaml", "--set", "conditions=[baseline]", "--set", "imports=[]",
            "--set", "counterfactual=null", "--set", "statistics.bootstrap=10",
            "--set", "statistics.permutations=10"]
    code, out, err = run_cli(capsys, *args, "--dry-run")
    assert code == 0, err
    expected = "warning: case set 'tenancy': one value sets the scale of a numeric cue"
    assert expected in out and f"for case {case}" in out
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert out.count(expected) == 2  # the plan, then the summary
    results = json.loads(Path("runs/tenancy/results.json").read_text())
    (warning,) = results["warnings"]
    assert warning.startswith("case set 'tenancy': one value sets the scale") and case in warning
    assert results["tags"]["lensaudit.warning.job.0"] == warning


def test_fit_refuses_by_name(tmp_path, capsys):
    rng = np.random.default_rng(3)
    n = 200
    df = pd.DataFrame({"income": rng.normal(3000, 500, n), "age": rng.integers(20, 70, n)})
    df["org"] = (rng.random(n) < 1 / (1 + np.exp(-(df["income"] - 3000) / 500))).astype(int)
    df["llm"] = df["org"]
    df.loc[11, "income"] = 1e308
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    code, _, err = run_cli(capsys, "fit", path, "--cues", "income,age", "--reference", "org",
                           "--candidate", "llm")
    assert_one_line_error(code, err, f"{path}: cue income = 1e+308 for case 11")


@pytest.mark.parametrize("job", sorted(p.name for p in (ROOT / "jobs").glob("*.yaml")
                                       if p.name != "mta_align.yaml") + ["tenancy"])
def test_shipped_jobs_plan_only_warnings_true_of_their_cases(job):
    from engine.job import plan
    from engine.spec import load_job

    path = TENANCY / "job.yaml" if job == "tenancy" else ROOT / "jobs" / job
    the_plan, cases = plan(load_job(str(path)))
    findings = diagnose_cues(cases.table, cases.schema, cases.encode())
    assert {f.rule for f in findings} <= {"rare", "absent"}, findings
    _levels_held_by(cases, [f.item for f in findings if f.rule == "rare"])
    cue_lines = [w for w in the_plan.warnings if "encoded col" not in w]
    assert len(cue_lines) == len({f.rule for f in findings})
