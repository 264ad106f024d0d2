"""Whole jobs on the `simulated` backend (no model, no Ray): the condition DAG,
resume, the report and the MLflow run tree, in seconds."""

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from engine.decisions import DecisionStore
from engine.job import format_summary, run_job
from engine.spec import load_job

ROOT = Path(__file__).resolve().parents[2]


def sim_job(tmp_path, *extra):
    return load_job("jobs/german_credit_demo.yaml", [
        # The third answers "Good" for every applicant (greedy, sure of it) while its
        # probabilities follow a policy of cosine 0.5: only the soft lens sees it.
        "models=[simulated:org,simulated:cos=0.0,simulated:cos=0.5:shift=8:greedy]",
        "dataset.subset.per_class=150",
        "conditions=[introspective,org_externalized]", "statistics.bootstrap=200",
        "statistics.permutations=200", f"output.run_dir={tmp_path / 'run'}",
        f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "output.experiment=sim",
        *extra])


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    spec = sim_job(tmp)
    logs = []
    res = run_job(spec, progress=False, log=logs.append)
    return spec, res, logs


def test_simulated_alignment_is_recovered(result):
    _, res, _ = result
    by = {(c.model, c.condition): c.comparison for c in res.cells if "greedy" not in c.model}
    assert len(by) == 6
    org, orth = by[("simulated:org", "baseline")], by[("simulated:cos=0.0", "baseline")]
    assert org.r_cos > 0.6 and org.p_perm < 0.01
    assert orth.r_cos_ci.low < 0 < orth.r_cos_ci.high  # population cosine 0 is covered
    assert org.r_cos_ci.high <= 1.0
    # The primary figure: the organisation's own (full-data) policy reads near 1,
    # above the attenuated plain r_cos; every interval holds its estimate.
    assert org.r_cos_cf > org.r_cos and org.r_cos_cf_ci.high > 0.9
    assert orth.r_cos_cf_ci.low < 0 < orth.r_cos_cf_ci.high
    for c in by.values():
        assert c.r_cos_cf_ci.low < c.r_cos_cf_ci.high
        assert c.r_cos_cf_ci.low <= c.r_cos_cf <= c.r_cos_cf_ci.high
        assert -1 <= c.r_cos_cf_ci.low and c.r_cos_cf_ci.high <= 1
        # The paper's plain cosine too (its basic interval had stepped past it).
        assert c.r_cos_ci.low <= c.r_cos <= c.r_cos_ci.high and c.r_cos_ci.low < c.r_cos_ci.high
    # Each non-baseline cell carries its paired change from the model's baseline.
    import pandas as pd

    summary = pd.read_csv(res.run_dir / "summary.csv")
    summary = summary[~summary["model"].str.contains("greedy")]
    base = summary["condition"] == "baseline"
    assert summary.loc[base, "alignment_change"].isna().all()
    other = summary[~base]
    assert len(other) == 4 and other["alignment_change"].notna().all()
    assert ((other["alignment_change_low"] <= other["alignment_change"])
            & (other["alignment_change"] <= other["alignment_change_high"])).all()
    for cell in res.cells:
        if cell.condition != "baseline" and "greedy" not in cell.model:
            b = by[(cell.model, "baseline")]
            assert cell.change[0] == pytest.approx(cell.comparison.r_cos_cf - b.r_cos_cf)
    # Issue 14's German Credit job, smaller: no interval in the summary excludes its
    # estimate or has no width, and no estimate leaves its bounds. (A `simulated`
    # model's probabilities are the same in every condition: its soft change is 0,
    # given without an interval, where it had printed [-2, -2].)
    every = pd.read_csv(res.run_dir / "summary.csv")
    for est, lo, hi, bound in (("r_cos_cf", "r_cos_cf_ci_low", "r_cos_cf_ci_high", 1),
                               ("r_cos_soft", "r_cos_soft_ci_low", "r_cos_soft_ci_high", 1),
                               ("r_cos", "r_cos_ci_low", "r_cos_ci_high", 1),
                               ("alignment_change", "alignment_change_low",
                                "alignment_change_high", 2),
                               ("alignment_change_soft", "alignment_change_soft_low",
                                "alignment_change_soft_high", 2)):
        d = every[every[lo].notna()]
        assert ((d[lo] <= d[est]) & (d[est] <= d[hi]) & (d[lo] < d[hi])).all(), est
        assert every[est].dropna().abs().le(bound).all(), est
    assert every["alignment_change_soft"].notna().sum() == 6
    # ... nor does any interval of a cell's protected shares or their change
    # (the bundled model's audit had printed a change of -0.113 [-0.103, +0.043]).
    cell_files = sorted(res.run_dir.glob("cells/*/protected_attributes.csv"))
    assert len(cell_files) == len(res.cells)
    for path in cell_files:
        shares = pd.read_csv(path)
        shares = shares[shares["column"] == "(all protected)"]
        for est in ("beta_org", "beta_dm", "beta_diff", "beta_soft"):
            d = shares[shares[f"{est}_low"].notna()]
            assert ((d[f"{est}_low"] <= d[est]) & (d[est] <= d[f"{est}_high"])).all(), (path, est)


def test_one_answer_model_is_audited_by_the_soft_lens(result):
    """Acceptance of the soft lens on a whole job: greedy answers, all "Good"."""
    import pandas as pd

    _, res, logs = result
    cells = {c.condition: c for c in res.cells if "greedy" in c.model}
    assert set(cells) == {"baseline", "org_externalized", "introspective"}
    for cell in cells.values():
        c, s = cell.comparison, cell.soft
        assert c.positive_rate_dm == 1.0 and np.isnan(c.r_cos_cf) and cell.alignment_reason
        lo, hi = s.r_cos_cf_ci
        assert lo <= 0.5 <= hi and hi - lo < 0.8 and cell.soft_alignment_reason is None
    # Every cell of the other models has it too, beside the hard lens.
    assert all(c.soft is not None and np.isfinite(c.soft.r_cos_cf) for c in res.cells)
    text = format_summary(res)
    assert "soft [95%]" in text and "the soft lens is defined:" in text
    summary = pd.read_csv(res.run_dir / "summary.csv")
    greedy = summary[summary["model"].str.contains("greedy")]
    assert greedy["r_cos_cf"].isna().all() and greedy["r_cos_soft_ci_low"].notna().all()
    assert greedy["alignment_change"].isna().all()
    assert greedy.loc[greedy["condition"] != "baseline", "alignment_change_soft"].notna().all()
    # Weights and the protected share: the hard ones undefined, the soft ones measured.
    cell_dir = res.run_dir / "cells" / "simulated_cos_0.5_shift_8_greedy--baseline"
    table = pd.read_csv(cell_dir / "protected_attributes.csv", keep_default_na=False,
                        na_values=[""])
    share = table.iloc[-1]
    assert share["status"].startswith("undefined: the decision-maker policy vector is ~0")
    assert np.isnan(share["beta_dm"]) and 0 < share["beta_soft"] < 1
    # The introspective prompt was built from the soft policy, and says so.
    d = DecisionStore(res.run_dir).load()
    intro = d[(d["model"] == "simulated:cos=0.5:shift=8:greedy")
              & (d["condition"] == "introspective")]
    assert len(intro) == 300
    from engine.job import own_policy

    own, why = own_policy(cells["baseline"])
    assert own.source == "probabilities" and why is None
    client = MlflowClient(tracking_uri=res.tracking_uri)
    child = next(r for r in client.search_runs(
        [client.get_experiment_by_name("sim").experiment_id],
        f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
        if r.data.tags["lensaudit.model"].endswith("greedy")
        and r.data.tags["lensaudit.condition"] == "baseline")
    assert "r_cos_soft" in child.data.metrics and "r_cos_cf" not in child.data.metrics
    assert "lensaudit.r_cos_cf_undefined" in child.data.tags


def test_introspection_without_a_baseline_policy_is_refused_before_any_decision():
    from engine.audit import CellResult
    from engine.job import own_policy

    flat = kernels_comparison_of_norm_zero()
    cell = CellResult("m", "baseline", 10, flat, soft_reason="its backend gave no probability "
                      "of the answer")
    own, why = own_policy(cell)
    assert own is None
    assert "its baseline policy is undefined" in why and "no probability" in why


def kernels_comparison_of_norm_zero():
    import kernels

    fields = {f: np.nan for f in kernels.LensComparison._fields}
    fields.update(beta_dm=np.zeros(3), beta_org=np.ones(3), positive_rate_dm=1.0)
    return kernels.LensComparison(**fields)


def test_dag_order_and_labels_in_the_store(result):
    spec, res, logs = result
    assert any("order: [baseline, org_externalized] -> [introspective]" in line for line in logs)
    d = DecisionStore(res.run_dir).load()
    assert len(d) == 3 * 3 * 300 and set(d["backend"]) == {"simulated"}
    assert d["model"].str.startswith("simulated:").all()


def test_report_and_mlflow_tree(result):
    spec, res, _ = result
    files = {p.name for p in (res.run_dir / "report").iterdir()}
    assert {"report.html", "alignment_vs_accuracy.png", "alignment_by_condition.png",
            "weights-simulated_org-introspective.png"} <= files
    html = (res.run_dir / "report" / "report.html").read_text()
    assert "Protected attributes" in html and "foreign worker" in html
    client = MlflowClient(tracking_uri=res.tracking_uri)
    children = client.search_runs(
        [client.get_experiment_by_name("sim").experiment_id],
        f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert len(children) == 9
    assert {a.path for a in client.list_artifacts(res.parent_run_id, "report")} >= {
        "report/report.html", "report/alignment_by_condition.png"}
    assert "share of |beta| on protected" in format_summary(res)


def test_rerun_reuses_every_decision(result, tmp_path):
    spec, res, _ = result
    logs = []
    again = run_job(spec, progress=False, log=logs.append)
    assert any("0 computed now, 2700 reused" in line for line in logs)
    for column in ("r_cos", "r_cos_cf_ci_low", "r_cos_soft_ci_low"):
        assert again.summary[column].equals(res.summary[column]), column  # NaN == NaN here


def test_one_answer_decision_maker_is_warned_in_the_report(german, tmp_path):
    import numpy as np

    from engine.audit import (AuditResult, CellDecisions, audit_cell, fit_org, policy_table,
                              protected_table)
    from engine.outputs import write_report
    from engine.audit import StatisticsSpec
    from engine.audit import summary_table

    cases = german.subset(per_class=50, seed=1)
    enc = cases.encode()
    y_org = cases.table["decision"].to_numpy(float)
    st = StatisticsSpec(bootstrap=50, permutations=50)
    org = fit_org(enc, y_org, st)
    y = np.ones_like(y_org)
    y[:3] = 0  # 97% one way
    cell = audit_cell(enc, y_org, CellDecisions(y, y, np.ones_like(y)), model="m",
                      condition="baseline", stats=st)
    assert any("answered one way in 97%" in w for w in cell.warnings)
    cols = cases.schema.column_cue()
    table = policy_table(enc.columns, cases.schema.column_labels(), cell,
                         [c.protected for c in cols], [c.family for c in cols])
    write_report(tmp_path, job_name="j", audit=AuditResult(
        org, [cell], {("m", "baseline"): table}, {("m", "baseline"): protected_table(table, cell)},
        [], summary_table([cell])))
    assert "answered one way in 97%" in (tmp_path / "report.html").read_text()

    # One answer for every case: its policy is ~0, so its weights and its
    # protected share are undefined, with the reason, not numbers.
    from engine.audit import format_protected

    one = np.ones_like(y_org)
    flat = audit_cell(enc, y_org, CellDecisions(one, one, one), model="m", condition="flat",
                      stats=st)
    t = policy_table(enc.columns, cases.schema.column_labels(), flat,
                     [c.protected for c in cols], [c.family for c in cols])
    assert t["beta_dm"].isna().all() and t["beta_diff_low"].isna().all()
    assert t.loc[t["status"] == "", "beta_org"].notna().all()
    share = protected_table(t, flat).iloc[-1]
    assert np.isnan(share.beta_dm) and np.isnan(share.beta_diff)
    assert share.status.startswith("undefined: the decision-maker policy vector is ~0")
    text = format_protected("m", "flat", protected_table(t, flat))
    assert "dm undefined" in text and "nan" not in text


def test_echr_job_audits_the_human_groups_on_the_cases_they_judged(tmp_path):
    spec = load_job("jobs/echr_article6.yaml", [
        "models=[simulated:org]", "conditions=[baseline]", "statistics.bootstrap=50",
        "statistics.permutations=50", f"output.run_dir={tmp_path / 'run'}",
        f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    res = run_job(spec, progress=False, log=lambda *_: None)
    humans = {c.model: c for c in res.cells if c.condition == "imported"}
    assert len(humans) == 6
    assert humans["human:moderate-knowledge_with-adm"].n_cases == 94
    assert humans["human:strong-knowledge_without-adm"].n_cases == 48
    for c in humans.values():
        assert any("cases judged" in w for w in c.warnings)
        lo, hi = c.comparison.r_cos_ci
        assert np.isnan(lo) or hi - lo > 0.1  # small n: wide intervals (or undefined)
    llm = next(c for c in res.cells if c.model == "simulated:org")
    assert llm.n_cases == 695


def test_levels_no_case_has_are_marked_absent_not_measured(result):
    import pandas as pd

    from engine.audit import format_protected

    _, res, _ = result
    t = pd.read_csv(res.run_dir / "cells" / "simulated_org--baseline" / "protected_attributes.csv",
                    keep_default_na=False, na_values=[""])
    absent = t[t["label"] == "personal status and sex: female, single"].iloc[0]
    assert absent["status"] == "absent: no case has this level"
    assert np.isnan(absent[["beta_org", "beta_org_low", "beta_dm", "beta_diff_high"]]
                    .astype(float)).all()
    measured = t[(t["status"].isna()) & (t["column"] != "(all protected)")]
    assert len(measured) >= 5 and np.isfinite(measured["beta_dm"]).all()
    text = format_protected("simulated:org", "baseline",
                            res.protected[("simulated:org", "baseline")])
    line = next(ln for ln in text.splitlines() if "female, single" in ln)
    assert "absent: no case has this level" in line and "+0.000" not in line
    html = (res.run_dir / "report" / "report.html").read_text()
    assert "absent: no case has this level" in html


def test_the_console_shows_only_lensaudit_and_verbose_shows_the_libraries(tmp_path, capsys,
                                                                          monkeypatch):
    from helpers import run_cli

    monkeypatch.chdir(tmp_path)
    base = ["run", str(ROOT / "jobs" / "german_credit_demo.yaml"), "--no-progress", "--set",
            "models=[simulated:org]", "--set", "statistics.bootstrap=50",
            "--set", "statistics.permutations=50"]
    code, out, err = run_cli(capsys, *base, "--set", "output.tracking_uri=sqlite:///quiet.db")
    assert code == 0 and "MLflow: parent run" in out and "view.html (lensaudit view" in out
    assert err == ""  # MLflow's database set-up went to the run's log file
    assert "Creating initial MLflow database tables" in \
        (tmp_path / "runs" / "german_credit_demo" / "lensaudit.log").read_text()
    code, _, err = run_cli(capsys, *base, "--set", "output.tracking_uri=sqlite:///loud.db",
                           "--verbose")
    assert code == 0 and "Creating initial MLflow database tables" in err


def test_label_encoding_fits_one_column_per_cue(tmp_path):
    """statistics.encoding=label: every fit has one column per cue (20 for German
    Credit), and the weights table names the cues."""
    import pandas as pd

    spec = load_job("jobs/german_credit_demo.yaml", [
        "models=[simulated:org]", "dataset.subset.per_class=30", "conditions=[org_externalized]",
        "statistics.bootstrap=10", "statistics.permutations=10", "statistics.encoding=label",
        f"output.run_dir={tmp_path / 'run'}", f"output.tracking_uri=sqlite:///{tmp_path / 'm.db'}"])
    res = run_job(spec, progress=False, log=lambda *_: None)
    assert res.cells[0].comparison.beta_org.shape == (20,)
    weights = pd.read_csv(next((tmp_path / "run").rglob("policies.csv")))
    assert len(weights) == 20 and "checking_account" in set(weights["column"])
    assert len(DecisionStore(tmp_path / "run").load()) == 60  # org_externalized, 60 cases
