"""`lensaudit fit` on decisions tables (no model): the numbers equal the kernels'."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import kernels
from helpers import assert_one_line_error, run_cli

from engine.audit import StatisticsSpec
from engine.audit._cells import cell_key

ROOT = Path(__file__).resolve().parents[2]


def lensaudit_fit(capsys, *args):
    """`lensaudit fit ARGS` in this process (the console script is run as a program in
    test_fit_json_into_a_closed_pipe_exits_quietly)."""
    code, out, err = run_cli(capsys, "fit", *args)
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.fixture(scope="module")
def table():
    """Cues of mixed kinds; an aligned candidate, a reversed one, a one-answer one."""
    rng = np.random.default_rng(7)
    n = 300
    df = pd.DataFrame({
        "income": rng.normal(3000, 800, n),
        "years": rng.integers(0, 30, n).astype(float),
        "region": rng.choice(["north", "south", "east"], n),
    })
    z = (df["income"] - 3000) / 800 + 0.05 * (df["years"] - 15) + (df["region"] == "north") * 0.8
    df["org"] = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    df["aligned"] = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    df["reversed"] = (rng.random(n) < 1 / (1 + np.exp(z))).astype(int)
    df["always_yes"] = 1
    return df


def test_fit_json_matches_compare_policies(tmp_path, table, capsys):
    path = tmp_path / "decisions.parquet"
    table.to_parquet(path)
    out = lensaudit_fit(capsys, str(path), "--cues", "income,years,region", "--reference", "org",
                        "--candidate", "aligned", "--candidate", "reversed",
                        "--bootstrap", "200", "--permutations", "200", "--seed", "3", "--json")
    assert out.returncode == 0, out.stderr
    res = {r["candidate"]: r for r in json.loads(out.stdout)}
    for key in ("r_cos_cf", "r_cos_cf_ci_low", "r_cos_cf_ci_high", "r_cos", "r_cos_ci_low",
                "r_cos_ci_high",
                "p_perm", "accuracy", "auc_vs_org", "kappa"):
        assert key in res["aligned"]
    a = res["aligned"]
    assert a["r_cos_cf_ci_low"] <= a["r_cos_cf"] <= a["r_cos_cf_ci_high"] <= 1
    assert res["aligned"]["r_cos"] > 0.8 and res["aligned"]["p_perm"] < 0.05
    assert res["reversed"]["r_cos"] < -0.8
    assert (res["aligned"]["r_cos_ci_low"] <= res["aligned"]["r_cos"]
            <= res["aligned"]["r_cos_ci_high"])

    # Independent recomputation: standardised numeric cues, one-hot region (all levels).
    X = pd.get_dummies(table[["income", "years", "region"]], columns=["region"]).astype(float)
    X = ((X - X.mean()) / X.std(ddof=0)).to_numpy()
    c = kernels.compare_policies(X, table["org"], table["aligned"],
                                 key=cell_key(StatisticsSpec(seed=3)),
                                 n_bootstrap=200, n_permutations=200)
    assert res["aligned"]["r_cos"] == pytest.approx(c.r_cos, abs=1e-9)
    assert res["aligned"]["r_cos_cf"] == pytest.approx(c.r_cos_cf, abs=1e-9)
    assert res["aligned"]["accuracy"] == pytest.approx(np.mean(table["org"] == table["aligned"]))
    assert len(res["aligned"]["beta_reference"]) == 5  # 2 numeric + 3 region levels


@pytest.fixture(scope="module")
def categorical_table():
    """Two categorical cues whose codes sort in another order than they were
    listed, and a raw numeric cue on its own scale (years, not standardised)."""
    rng = np.random.default_rng(11)
    n = 400
    df = pd.DataFrame({"grade": rng.choice(["B", "A", "C"], n),
                       "region": rng.choice(["south", "north", "east", "west"], n),
                       "age": rng.integers(18, 70, n).astype(float)})
    z = ((df["grade"] == "A") * 1.0 - (df["grade"] == "C") * 0.8 + (df["region"] == "north") * 0.6
         + 0.03 * (df["age"] - 40))
    df["org"] = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    df["llm"] = (rng.random(n) < 1 / (1 + np.exp(-0.5 * z + 0.4 * (df["region"] == "east"))))
    df["llm"] = df["llm"].astype(int)
    return df


def _sklearn_cosine(X, a, b):
    from sklearn.linear_model import LogisticRegression

    # The same objective as LogisticRegression(C=1)'s default; an exact solver
    # and a tight tolerance, so that the reference is the optimum itself.
    fit = lambda y: LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-12,
                                       max_iter=1000).fit(X, y).coef_[0]
    u, v = fit(a), fit(b)
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


@pytest.mark.parametrize("encoding", ["label", "onehot_standardised"])
def test_fit_encodings_equal_scikit_learn(tmp_path, categorical_table, capsys, encoding):
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler

    df = categorical_table
    path = tmp_path / "decisions.csv"
    df.to_csv(path, index=False)
    out = lensaudit_fit(capsys, str(path), "--cues", "grade,region,age", "--reference", "org",
                        "--candidate", "llm", "--bootstrap", "10", "--permutations", "10",
                        "--encoding", encoding, "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)[0]
    if encoding == "label":  # the CALM analysis code: LabelEncoder per column, no scaling
        X = np.column_stack([LabelEncoder().fit_transform(df["grade"]),
                             LabelEncoder().fit_transform(df["region"]), df["age"]])
        assert list(got["beta_reference"]) == ["grade", "region", "age"]
    else:
        onehot = OneHotEncoder(sparse_output=False).fit_transform(df[["grade", "region"]])
        X = StandardScaler().fit_transform(np.column_stack([onehot, df["age"]]))
        assert len(got["beta_reference"]) == 3 + 4 + 1
    assert got["r_cos"] == pytest.approx(_sklearn_cosine(X, df["org"], df["llm"]), abs=1e-4)


def test_fit_csv_reports_undefined_cosine_with_reason(tmp_path, table, capsys):
    path = tmp_path / "decisions.csv"
    table.to_csv(path, index=False)
    out = lensaudit_fit(capsys, str(path), "--cues", "income,region", "--reference", "org",
                        "--candidate", "always_yes", "--bootstrap", "50", "--permutations", "50",
                        "--json")
    assert out.returncode == 0, out.stderr
    (res,) = json.loads(out.stdout)
    assert res["r_cos"] is None and "decision-maker" in res["r_cos_undefined"]
    assert res["r_cos_cf"] is None and "r_cos_soft" not in res

    # Its probabilities follow the organisation's own policy: the soft lens sees it.
    z = (table["income"] - 3000) / 800 + (table["region"] == "north") * 0.8
    table.assign(p_yes=1 / (1 + np.exp(-(6 + z)))).to_csv(path, index=False)
    args = [str(path), "--cues", "income,region", "--reference", "org", "--candidate",
            "always_yes", "--candidate", "aligned", "--bootstrap", "50", "--permutations", "50"]
    out = lensaudit_fit(capsys, *args, "--candidate-prob", "p_yes", "--candidate-prob", "-",
                        "--json")
    assert out.returncode == 0, out.stderr
    yes, aligned = json.loads(out.stdout)
    assert yes["r_cos_cf"] is None and yes["r_cos_soft_ci_low"] <= yes["r_cos_soft"]
    assert yes["r_cos_soft"] > 0.8 and "r_cos_soft_undefined" not in yes
    assert yes["auc_vs_org"] > 0.6  # of the probabilities, not of one answer (0.5)
    assert "r_cos_soft" not in aligned
    text = lensaudit_fit(capsys, *args, "--candidate-prob", "p_yes", "--candidate-prob", "-")
    assert "always_yes: alignment (cross-fitted cosine) undefined" in text.stdout
    assert "soft lens +" in text.stdout
    bad = lensaudit_fit(capsys, *args, "--candidate-prob", "p_yes")
    assert bad.returncode == 2 and "one per candidate" in bad.stderr
    bad = lensaudit_fit(capsys, *args, "--candidate-prob", "income", "--candidate-prob", "-")
    assert bad.returncode == 2 and "column 'income' must hold probabilities in [0, 1]" in bad.stderr


@pytest.mark.parametrize("args,message", [
    (["--cues", "income,salary", "--reference", "org", "--candidate", "aligned"],
     "no cue column 'salary'"),
    (["--cues", "income", "--reference", "org", "--candidate", "region"],
     "column 'region' must be 0/1"),
])
def test_fit_bad_columns_are_named(tmp_path, table, args, message, capsys):
    path = tmp_path / "decisions.csv"
    table.to_csv(path, index=False)
    out = lensaudit_fit(capsys, str(path), *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_fit_missing_table_is_named(tmp_path, capsys):
    out = lensaudit_fit(capsys, str(tmp_path / "nope.csv"), "--cues", "a", "--reference", "b",
                        "--candidate", "c")
    assert out.returncode == 2 and "table not found" in out.stderr


@pytest.fixture
def csv(tmp_path, table):
    path = tmp_path / "decisions.csv"
    table.to_csv(path, index=False)
    return path


FIT = ["--cues", "income,region", "--reference", "org", "--candidate", "aligned"]


@pytest.mark.parametrize("flags,expected", [
    (["--bootstrap", "0"], "argument --bootstrap: must be at least 10, got 0"),
    (["--permutations", "x"], "argument --permutations: expected an integer, got 'x'"),
    (["--C", "-1"], "argument --C: must be a positive finite number, got -1"),
    (["--C", "nan"], "argument --C: must be a positive finite number"),
    (["--level", "1.5"], "argument --level: must lie in (0, 1)"),
    (["--interval", "wide"], "argument --interval: invalid choice: 'wide'"),
])
def test_fit_bad_flags_are_named(csv, capsys, flags, expected):
    code, _, err = run_cli(capsys, "fit", csv, *FIT, *flags)
    assert_one_line_error(code, err, expected)


def test_fit_empty_and_headerless_tables_are_named(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text("income,region,org,aligned\n")
    for path, expected in [(empty, "the table is empty"), (header_only, "the table has no rows")]:
        code, _, err = run_cli(capsys, "fit", path, *FIT)
        assert_one_line_error(code, err, f"{path}: {expected}")


def test_fit_too_few_cases_is_refused_with_the_numbers(tmp_path, capsys, table):
    path = tmp_path / "three.csv"
    table.head(3).assign(org=[0, 1, 0]).to_csv(path, index=False)
    code, out, err = run_cli(capsys, "fit", path, *FIT)
    assert_one_line_error(code, err, "3 cases (1 positive, 2 negative reference decisions) are "
                          "too few to audit: at least 10 cases and 5 of each decision")
    assert out == ""


def test_fit_more_columns_than_cases_warns_and_fits(tmp_path, capsys):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"id_code": [f"c{i}" for i in range(30)], "x": rng.normal(size=30),
                       "org": [0, 1] * 15, "llm": rng.integers(0, 2, 30)})
    path = tmp_path / "wide.csv"
    df.to_csv(path, index=False)
    code, out, err = run_cli(capsys, "fit", path, "--cues", "id_code,x", "--reference", "org",
                             "--candidate", "llm", "--bootstrap", "20", "--permutations", "20",
                             "--json")
    assert code == 0
    assert "31 encoded cue columns for 30 cases" in err
    assert json.loads(out)[0]["n"] == 30


def test_fit_empty_cue_value_names_the_row(tmp_path, capsys, table):
    path = tmp_path / "holes.csv"
    t = table.copy()
    t.loc[7, "region"] = None
    t.to_csv(path, index=False)
    code, _, err = run_cli(capsys, "fit", path, *FIT)
    assert_one_line_error(code, err, "cue column 'region' is empty in row 7")


def test_fit_json_into_a_closed_pipe_exits_quietly(csv):
    """`lensaudit fit --json | head -c 20`: no BrokenPipeError, exit 0."""
    cmd = (f"{sys.executable} -m engine.cli fit {csv} --cues income,region --reference org "
           "--candidate aligned --candidate reversed --bootstrap 50 --permutations 50 --json "
           "| head -c 20; echo \" rc=${PIPESTATUS[0]}\" >&2")
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.stdout.startswith("[")
    assert out.stderr.strip() == "rc=0", out.stderr


def test_fit_and_a_job_give_the_same_fields_and_numbers_on_the_same_data(tmp_path):
    """One audit function: a job's cell and `lensaudit fit` on a table of the
    same cases and decisions report the same metrics, under the same names,
    with the same values."""
    from engine.cli._fit import fit_table
    from engine.decisions import DecisionStore
    from engine.job import run_job
    from engine.spec import JobSpec

    rng = np.random.default_rng(11)
    n = 300
    cues = {f"x{k}": rng.normal(0, 1, n).round(3) for k in range(4)}
    z = 1.2 * cues["x0"] - 0.8 * cues["x1"] + 0.5 * cues["x2"]
    table = pd.DataFrame({"id": [f"c{i}" for i in range(n)], **cues,
                          "verdict": np.where(rng.random(n) < 1 / (1 + np.exp(-z)), "yes", "no")})
    table.to_csv(tmp_path / "cases.csv", index=False)
    (tmp_path / "cases.yaml").write_text(
        "name: same\ndata: cases.csv\nid: id\nreference: verdict\n"
        "question: whether to say yes\nchoices: {positive: 'yes', negative: 'no'}\ncues:\n"
        + "".join(f"  - {{name: x{k}, kind: numeric}}\n" for k in range(4)))
    stats = {"bootstrap": 100, "permutations": 100, "seed": 5, "workers": 1}
    spec = JobSpec.model_validate({
        "name": "same", "dataset": {"cases": str(tmp_path / "cases.yaml")},
        "models": ["simulated:cos=0.6"], "conditions": ["baseline"], "statistics": stats,
        "output": {"run_dir": str(tmp_path / "run"),
                   "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}})
    job = run_job(spec, progress=False, log=lambda *_: None)
    cell = json.loads((tmp_path / "run" / "results.json").read_text())["cells"][0]["metrics"]

    d = DecisionStore(tmp_path / "run").load().set_index("case_id").loc[table["id"]]
    table.assign(org=(table["verdict"] == "yes").astype(int), llm=d["y"].to_numpy(),
                 llm_p=d["p_positive"].to_numpy()).to_csv(tmp_path / "table.csv", index=False)
    (fit,) = fit_table(tmp_path / "table.csv", [f"x{k}" for k in range(4)], "org", ["llm"],
                       probabilities=["llm_p"], bootstrap=100, permutations=100, seed=5)
    assert job.cells[0].soft is not None and len(cell) > 30
    missing = set(cell) - set(fit)
    assert not missing, missing
    for name, value in cell.items():
        if value is None or not np.isfinite(value):
            assert fit[name] is None, name
        else:
            assert fit[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
