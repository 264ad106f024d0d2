"""Loaders: German Credit protocol subset, ECHR Article 6, the human verdict study."""

import numpy as np
import pandas as pd
import pytest

from engine.datasets import load_echr_article6
from engine.datasets._echr_human import final_verdicts, final_verdicts_path, load_human_verdicts
from engine.errors import LensauditError


def test_german_credit_protocol_subset_is_all_bad_plus_300_good(german):
    t = german.table
    assert len(t) == 1000 and int(t["decision"].sum()) == 700
    sub = german.subset(per_class=300, seed=0)
    assert len(sub) == 600 and int(sub.table["decision"].sum()) == 300
    bad = set(t.loc[t["decision"] == 0, "case_id"])
    assert bad <= set(sub.table["case_id"])  # every Bad applicant is in


@pytest.fixture(scope="module")
def echr():
    return load_echr_article6()


def test_echr_counts_and_exclusions(echr):
    t = echr.table
    excluded = t.attrs["excluded"]
    # 735 cases in the files: 530 violation, 205 no violation, before exclusions.
    assert len(t) + sum(excluded.values()) == 735
    assert int(t["decision"].sum()) + excluded["violation"] == 530
    assert int((t["decision"] == 0).sum()) + excluded["no violation"] == 205
    assert excluded == {"violation": 39, "no violation": 1}


def test_echr_encoding_majority_rule(echr):
    t = echr.table.set_index("case_id")
    # 001-177388 (first line): FAIR [0, 27, 0] -> not satisfied; Access to Court [0, 1, 26]
    # -> not at issue (1 of 27 is no majority); a factor with [0, 0, 27] -> not at issue.
    row = t.loc["001-177388"]
    assert row["fair"] == "not_satisfied"
    assert row["access_to_court"] == "not_at_issue"
    assert row["public_hearing"] == "not_at_issue"
    assert row["limb"] == "civil"
    assert row["decision"] == 1
    enc = echr.encode()
    assert enc.X.shape == (695, 3 * 23 + 3)
    assert np.allclose(enc.X.mean(0), 0, atol=1e-12)
    assert "Case profile" not in echr.profile(echr.table.iloc[0])
    assert "fair (overall issue): requirement not satisfied" in echr.profile(echr.table.iloc[0])


def test_echr_bad_file_is_named(tmp_path):
    for name in ("Overall_vio_stats.json", "Overall_non_stats.json"):
        (tmp_path / name).write_text('{"001-1": {"FAIR": [1, 0, 0]}}\nnot json\n')
    import shutil

    from engine.datasets._echr import echr_dir
    shutil.copy(echr_dir() / "art6_angelic_design.csv", tmp_path)
    with pytest.raises(LensauditError, match="Overall_vio_stats.json: line 2 is not one JSON"):
        load_echr_article6(tmp_path)
    (tmp_path / "Overall_vio_stats.json").write_text('{"001-1": {"FAIR": [1, 0, 0]}}\n')
    with pytest.raises(LensauditError, match="Overall_vio_stats.json: case 001-1: factor"):
        load_echr_article6(tmp_path)


@pytest.fixture(scope="module")
def verdicts():
    return load_human_verdicts()


def test_human_study_cases_and_groups(verdicts, echr):
    assert len(verdicts.attrs["study_cases"]) == 169
    # All are annotated cases; two of them no annotator read (excluded from the lens).
    assert len(set(verdicts.attrs["study_cases"]) - set(echr.table["case_id"])) == 2
    groups = verdicts.groupby("group")["participant"].nunique().to_dict()
    assert groups == {
        "weak-knowledge_without-adm": 4, "weak-knowledge_with-adm": 7,
        "moderate-knowledge_without-adm": 11, "moderate-knowledge_with-adm": 9,
        "strong-knowledge_without-adm": 4, "strong-knowledge_with-adm": 6}
    assert set(verdicts["stage"]) == {"first", "final"}
    # The study's own truth agrees with the court's outcome in the annotation set.
    truth = echr.table.set_index("case_id")["decision"]
    judged = verdicts[verdicts["case_id"].isin(truth.index)]
    assert (truth.loc[judged["case_id"]].to_numpy() == judged["true_verdict"].to_numpy()).all()


def test_the_shipped_final_verdicts_are_the_workbooks_final_predictions(verdicts):
    """final_verdicts.csv, which a job's human_study imports, is what the
    preparation writes from the study's workbooks today."""
    shipped = pd.read_csv(final_verdicts_path(), dtype=str)
    fresh = final_verdicts(verdicts)
    assert len(shipped) == int((verdicts["stage"] == "final").sum())
    pd.testing.assert_frame_equal(shipped, fresh.astype(str))


def test_echr_issue_findings_define_the_outcome_and_are_left_out_by_default(echr):
    """The domain model's Issue-level findings are the court's outcome per issue:
    at least one Issue "not satisfied" in 466 of 491 violation cases and in none
    of 204 no-violation cases. The case set marks them; jobs leave them out."""
    from engine.audit import determined_reason, fit_org
    from engine.datasets import load_shipped
    from engine.audit import StatisticsSpec

    issues = echr.outcome_cues
    assert issues == ["fair", "public_hearing", "reasonable_time", "presumption_of_innocence",
                      "had_the_minimum_rights"]
    t = echr.table
    any_failed = (t[issues] == "not_satisfied").any(axis=1)
    assert int(any_failed[t["decision"] == 1].sum()) == 466 and (t["decision"] == 1).sum() == 491
    assert int(any_failed[t["decision"] == 0].sum()) == 0 and (t["decision"] == 0).sum() == 204
    shipped = load_shipped("echr_article6")
    assert shipped.outcome_cues == issues  # the case-set file carries the mark
    lean = shipped.without_outcome_cues()
    assert len(lean.schema.cues) == 19 and lean.encode().X.shape == (695, 3 * 19)
    y = t["decision"].to_numpy(float)
    st = StatisticsSpec()
    full, free = fit_org(shipped.encode(), y, st), fit_org(lean.encode(), y, st)
    assert "nearly determine the reference" in determined_reason(full.cv_accuracy, full.cv_auc)
    assert determined_reason(free.cv_accuracy, free.cv_auc) is None


def test_echr_dry_run_shows_the_leak_free_cue_count(capsys):
    from pathlib import Path

    from helpers import run_cli

    job = Path(__file__).resolve().parents[2] / "jobs" / "echr_article6.yaml"
    code, out, _ = run_cli(capsys, "run", job, "--dry-run")
    assert code == 0
    assert "cues: 19 (57 encoded columns, onehot_standardised); left out, as they define the " \
           "reference decision: 5 (fair, " in out
    code, out, _ = run_cli(capsys, "run", job, "--dry-run", "--set", "dataset.outcome_cues=include")
    assert code == 0 and "cues: 24 (72 encoded columns" in out and "left out" not in out
