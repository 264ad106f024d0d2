"""Bring your own study (issue 15): the tenancy example under examples/ run as a
user would (a case-set file, a custom condition, an imported panel), and every
mistake in it named in one line with exit code 2."""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tenancy"
SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"
FAST = ["--set", "statistics.bootstrap=50", "--set", "statistics.permutations=50"]


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A copy of the example in a fresh folder (its runs and MLflow store land there)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "tenancy"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_the_example_data_is_what_its_script_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_tenancy", EXAMPLE / "make_tenancy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for name in ("tenancy.csv", "panel.csv"):
        assert (tmp_path / name).read_text() == (EXAMPLE / name).read_text(), name


def test_the_example_runs_with_the_panel_as_a_cell(study, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out, err = run_cli(capsys, "run", study / "job.yaml", *FAST)
    assert code == 0, err
    # MLflow puts its store into the environment; a job leaves the process's as it was.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    lines = out.splitlines()
    cells = {(ln.split()[0], ln.split()[1]) for ln in lines if ln.startswith(("simulated:", "review"))}
    assert cells == {("simulated:cos=0.8", c) for c in ("baseline", "org_externalized",
                                                        "fair_housing")} | {("review_panel",
                                                                             "imported")}
    run_dir = Path("runs/tenancy")
    assert (run_dir / "report" / "report.html").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert ("review_panel", "imported") in {(c["model"], c["condition"]) for c in results["cells"]}
    panel = next(c for c in results["cells"] if c["model"] == "review_panel")
    assert panel["metrics"]["n_cases"] == 200  # the applications it reviewed
    # The Lens Model Equation of every cell, with intervals for G and R_s.
    summary = pd.read_csv(run_dir / "summary.csv")
    for r in summary.itertuples():
        assert r.lme_G_low <= r.lme_G <= r.lme_G_high and 0 < r.lme_R_s_cv <= 1
        rebuilt = (r.lme_G * r.lme_R_e * r.lme_R_s
                   + r.lme_C * ((1 - r.lme_R_e**2) * (1 - r.lme_R_s**2)) ** 0.5)
        assert abs(r.lme_r_a - rebuilt) < 1e-9
    # The store holds the models' decisions only; the panel's are in its cell.
    from engine.decisions import DecisionStore

    stored = DecisionStore(run_dir).load()
    assert set(stored["condition"]) == {"baseline", "org_externalized", "fair_housing"}
    assert "MLflow: parent run" in out
    code, table, err = run_cli(capsys, "compare", "--experiment", "tenancy")
    assert code == 0, err
    assert any(ln.split()[3:5] == ["review_panel", "imported"] for ln in table.splitlines()), table
    assert "warning: review_panel: 200 of the 360 cases judged" in out
    assert "counterfactual twins: share of decisions that flip" in out
    assert "simulated:cos=0.8 x fair_housing: nationality: flips" in out

    # An edited instruction: the stored decisions are reused, and the run says so.
    code, out, err = run_cli(capsys, "run", study / "job.yaml", *FAST, "--set",
                             "conditions.2.instruction=Decide {question} fairly.")
    assert code == 0, err
    assert "decisions: 0 computed now, 4320 reused" in out  # 3 conditions x (360 + 3 x 360)
    assert ("warning: stored decisions are reused that this job would make otherwise, made "
            "with a different prompt (") in out
    assert "changed since): 1440 in simulated:cos=0.8 x fair_housing; to decide" in out
    said = [line for line in out.splitlines() if "would make otherwise" in line]
    assert len(said) == 1 and " x baseline" not in said[0]  # only the edited condition's
    assert said[0].endswith("to decide them again, set decision.reuse=same")
    # decision.reuse=same decides again only those, and the new ones replace them.
    edited = ("--set", "conditions.2.instruction=Decide {question} fairly.")
    code, out, err = run_cli(capsys, "run", study / "job.yaml", *FAST, *edited,
                             "--set", "decision.reuse=same")
    assert code == 0, err
    assert ("deciding again the stored decisions this job would make otherwise, made with a "
            "different prompt (") in out and "1440 in simulated:cos=0.8 x fair_housing" in out
    assert "decisions: 1440 computed now, 2880 reused" in out
    code, out, err = run_cli(capsys, "run", study / "job.yaml", *FAST, *edited)
    assert code == 0, err
    assert "decisions: 0 computed now, 4320 reused" in out and "otherwise" not in out


def test_a_custom_conditions_instruction_reaches_the_prompt(study):
    """Snapshot of the custom condition's system message, built as a job builds it."""
    from engine.prompts import PromptContext, build_requests
    from engine.job import load_cases
    from engine.spec import load_job

    spec = load_job(study / "job.yaml")
    cases = load_cases(spec)
    context = PromptContext(custom=spec.custom_instructions())
    (request, *_) = build_requests(cases, "m", "fair_housing", context=context)
    system = request.messages[0]["content"]
    expected = (SNAPSHOTS / "fair_housing_tenancy.txt").read_text()
    assert system == expected, "the custom condition's prompt changed; review the snapshot"
    assert request.messages[1]["content"].startswith("Case profile:\n- net monthly income: ")


def _edit(path: Path, change):
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _no_reference(folder):
    _edit(folder / "tenancy.yaml", lambda raw: raw.pop("reference"))


def _cue_kind(raw):
    raw["cues"][3]["kind"] = "ordinal"


def _panel_unknown_case(folder):
    df = pd.read_csv(folder / "panel.csv", dtype=str)
    df.loc[4, "application"] = "T9999"
    df.to_csv(folder / "panel.csv", index=False)


def _panel_bad_word(folder):
    df = pd.read_csv(folder / "panel.csv", dtype=str)
    df.loc[4, "verdict"] = "Maybe"
    df.to_csv(folder / "panel.csv", index=False)


MISTAKES = {
    "case-set schema": (lambda f: _edit(f / "tenancy.yaml", _cue_kind), [],
                        "tenancy.yaml: cues.3.kind: Input should be"),
    "case-set data": (lambda f: (f / "tenancy.csv").write_text(
        (f / "tenancy.csv").read_text().replace("T0002,2830", "T0002,lots", 1)), [],
        "tenancy.yaml: case T0002: column 'monthly_income' is 'lots', not a number"),
    "case-set file missing": (None, ["--set", "dataset.cases=nowhere.yaml"],
                              "case-set file not found: "),
    "name and cases": (None, ["--set", "dataset.name=german_credit"],
                       "dataset: give either name (a shipped case set) or cases"),
    "import column": (None, ["--set", "imports.0.decision=ruling"],
                      "imports.0: panel.csv: no column 'ruling' (imports.0.decision)"),
    "import case": (_panel_unknown_case, [],
                    "imports.0: panel.csv: case T9999 (column 'application') is not in case set "
                    "'tenancy'"),
    "import decision": (_panel_bad_word, [],
                        "column 'verdict' (decision) is 'Maybe', not 0/1, true/false or "
                        "Offer/Decline"),
    "import file": (None, ["--set", "imports.0.path=nowhere.csv"],
                    "imports.0: table not found: "),
    "import named like a model": (None, ["--set", "models=[simulated:org]", "--set",
                                            "imports.0.name=simulated:org"],
                                  "imports.0.name: 'simulated:org' is already a "
                                  "decision-maker"),
    "placeholder": (None, ["--set", "conditions.2.instruction=Be {mood}."],
                    "conditions: 2.instruction: unknown placeholder {mood} (known: {question}, "
                    "{positive}, {negative})"),
    "built-in name": (None, ["--set", "conditions.2.name=baseline"],
                      "'baseline' is a built-in condition"),
    "unknown need": (None, ["--set", "conditions.2.needs=[calm]"],
                     "conditions: 2.needs: unknown condition 'calm'"),
    "twins of an unknown cue": (None, ["--set", "counterfactual.cues=[age, religion]"],
                                "counterfactual.cues.1: no cue 'religion' in case set 'tenancy'"),
    "simulated ignoring an unknown cue": (
        None, ["--set", "models=[simulated:org:ignore=religion]"],
        "models.0: 'simulated:org:ignore=religion': ignore=religion: no cue 'religion'"),
    "organisation's policy without a reference": (
        _no_reference, [], "conditions: 'org_externalized' states the organisation's policy, and "
        "case set 'tenancy' has no reference column"),
    "simulated:org without a reference": (
        _no_reference, ["--set", "conditions=[baseline]", "--set", "models=[simulated:org]"],
        "models.0: 'simulated:org' decides by the organisation's policy, and case set 'tenancy' "
        "has no reference column"),
    "per-class subset without a reference": (
        _no_reference, ["--set", "conditions=[baseline]", "--set", "dataset.subset.per_class=50"],
        "dataset.subset.per_class draws from each reference decision, and case set 'tenancy' "
        "has none; use dataset.subset.n"),
    "cycle": (None, ["--set", "conditions=[{name: a, instruction: x, needs: [b]}, "
                     "{name: b, instruction: y, needs: [a]}]"],
              "conditions: needs form a cycle: a -> b -> a"),
}


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_mistake_in_the_study_is_one_line_exit_2(study, capsys, name, dry_run):
    mutate, extra, expected = MISTAKES[name]
    if mutate is not None:
        mutate(study)
    code, _, err = run_cli(capsys, "run", study / "job.yaml", *extra,
                           *(["--dry-run"] if dry_run else []))
    assert_one_line_error(code, err, expected)
    assert not Path("runs").exists()  # nothing was computed or written


def test_without_a_reference_every_decision_maker_is_compared_with_every_other(study, capsys):
    _no_reference(study)
    code, out, err = run_cli(
        capsys, "run", study / "job.yaml", *FAST, "--set",
        "conditions=[baseline, {name: fair_housing, instruction: 'Decide {question} fairly.'}]",
        "--set", "counterfactual=null")
    assert code == 0, err
    assert "no reference: each decision-maker's policy, and every two compared" in out
    pairs = pd.read_csv("runs/tenancy/pairs.csv")
    assert len(pairs) == 3  # two cells of the model and the panel
    same = pairs[(pairs["a"] == "simulated:cos=0.8 x baseline")
                 & (pairs["b"] == "simulated:cos=0.8 x fair_housing")].iloc[0]
    assert same.r_cos_cf > 0.9  # one simulated policy under two conditions
    assert same.r_cos_cf_ci_low <= same.r_cos_cf <= same.r_cos_cf_ci_high
    # A pair is a cell's audit with one of them in the organisation's place:
    # the same figures under the same names as a job's cells.
    for name in ("r_cos", "p_perm", "accuracy", "kappa", "lme_G", "r_cos_soft"):
        assert name in pairs.columns, name
    summary = pd.read_csv("runs/tenancy/summary.csv")
    panel = summary[summary["model"] == "review_panel"].iloc[0]
    assert panel.n_cases == 200 and 0 < panel.protected_share_low < panel.protected_share_high
    policy = pd.read_csv(next(Path("runs/tenancy/cells").glob("review_panel*")) / "policies.csv")
    turkish = policy[policy["column"] == "nationality=TR"].iloc[0]
    assert turkish.beta_dm_high < 0  # the panel marks Turkish applicants down
    assert (Path("runs/tenancy/report") / "alignment_pairs.png").is_file()
    assert "MLflow: parent run" in out
