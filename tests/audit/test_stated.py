"""Stated versus used (issue 20): the cue matcher on hand-written reasons, and
`lensaudit fit --reasons` on a table whose reasons cite one cue while its
decisions depend on another."""

import json

import numpy as np
import pandas as pd
import pytest

from engine.datasets import Cue, CueSchema
from engine.audit import cue_terms, mentions
from helpers import run_cli

SCHEMA = CueSchema((
    Cue("checking_account", "categorical", "money", "checking account",
        {"A11": "below 0 DM", "A14": "no checking account"}),
    Cue("purpose", "categorical", "loan", "purpose",
        {"A40": "car", "A43": "radio/television", "A49": "business", "A410": "other"}),
    Cue("age", "numeric", "person", "age", unit="years", protected=True),
    Cue("foreign_worker", "binary", "person", "foreign worker", protected=True),
    Cue("fair", "categorical", "issue", "fair hearing", {"s": "satisfied", "n": "none"}),
    Cue("public", "categorical", "issue", "public hearing", {"s": "satisfied", "n": "none"}),
), "Good", "Bad", "whether the applicant is a good credit risk")


@pytest.mark.parametrize("reason,cited", [
    ("The checking account is overdrawn.", {"checking_account"}),
    ("checking_account=A14 and age drove it", {"checking_account", "age"}),
    ("No checking account at all, so Bad.", {"checking_account"}),  # a level's own words
    ("A career change is planned.", set()),  # "car" inside "career" is no mention
    ("Her mortgage is paid off.", set()),  # nor "age" inside "mortgage"
    ("The loan is for a car.", {"purpose"}),
    ("Bought a radio/television on credit.", {"purpose"}),
    ("AGE is high; being a Foreign Worker matters.", {"age", "foreign_worker"}),
    ("Every requirement was satisfied.", set()),  # shared by two cues: names neither
    ("None of the other factors matter.", set()),  # generic level words
    ("The process was fair.", {"fair"}),  # a cue's name counts as well as its phrase
    ("Applicants aged 60 are fine.", set()),  # "aged" is not "age" (a known miss)
])
def test_the_matcher_on_hand_written_reasons(reason, cited):
    m = mentions([reason], SCHEMA)[0]
    assert {c.name for c, hit in zip(SCHEMA.cues, m) if hit} == cited


def test_no_reason_is_missing_not_uncited():
    m = mentions([None, "", "age"], SCHEMA)
    assert np.isnan(m[0]).all() and np.isnan(m[1]).all() and m[2, 2] == 1


def test_a_level_text_shared_by_cues_is_not_a_term():
    assert "satisfied" not in cue_terms(SCHEMA.cues[4], SCHEMA)
    assert "no checking account" in cue_terms(SCHEMA.cues[0], SCHEMA)


@pytest.fixture(scope="module")
def table():
    """Decisions that depend on income only; reasons that always cite region,
    and never income."""
    rng = np.random.default_rng(3)
    n = 400
    df = pd.DataFrame({"income": rng.normal(0, 1, n), "years": rng.normal(0, 1, n),
                       "region": rng.choice(["north", "south", "east"], n),
                       "debts": rng.normal(0, 1, n)})
    df["org"] = (rng.random(n) < 1 / (1 + np.exp(-1.5 * df["income"]))).astype(int)
    df["llm"] = (rng.random(n) < 1 / (1 + np.exp(-2.0 * df["income"]))).astype(int)
    df["why"] = [f"Mostly the region ({r}); debts {'low' if d < 0 else 'high'}."
                 if i % 2 else f"Because of the region: {r}."
                 for i, (r, d) in enumerate(zip(df["region"], df["debts"]))]
    return df


def test_fit_reasons_finds_the_used_but_never_cited_cue(tmp_path, table, capsys):
    path = tmp_path / "decisions.csv"
    table.to_csv(path, index=False)
    code, out, err = run_cli(capsys, "fit", path, "--cues", "income,years,region,debts",
                             "--reference", "org", "--candidate", "llm", "--reasons", "why",
                             "--bootstrap", "100", "--permutations", "10", "--json")
    assert code == 0, err
    st = json.loads(out)[0]  # the job's metric names, and the table as stated_cues
    by = {c["cue"]: c for c in st["stated_cues"]}
    assert by["income"]["finding"] == "used, never cited" and by["income"]["used"]
    assert by["region"]["finding"] == "cited, not used" and by["region"]["mention_rate"] == 1
    assert 0.4 < by["debts"]["mention_rate"] < 0.6
    assert st["n_reasons"] == 400 and st["n_used_not_cited"] == 1
    assert st["stated_spearman_high"] < 1  # the interval excludes 1
    # Region, which the reasons cite, has no part in the decisions: its sign
    # agrees with the answer about half the time, with an interval around it.
    assert 0.3 < st["stated_direction"] < 0.7
    assert st["stated_direction_low"] <= st["stated_direction"] <= st["stated_direction_high"]
    from engine.cli._fit import _stated_text  # the line `fit` prints without --json

    line = _stated_text(st)
    assert "used, never cited: income" in line and "cited, not used: region" in line


def test_fit_reasons_must_pair_with_candidates(tmp_path, table, capsys):
    from helpers import assert_one_line_error

    path = tmp_path / "decisions.csv"
    table.to_csv(path, index=False)
    code, _, err = run_cli(capsys, "fit", path, "--cues", "income", "--reference", "org",
                           "--candidate", "llm", "--candidate", "org", "--reasons", "why")
    assert_one_line_error(code, err, "--reasons is given 1 time(s) for 2 --candidate(s)")
    code, _, err = run_cli(capsys, "fit", path, "--cues", "income", "--reference", "org",
                           "--candidate", "llm", "--reasons", "nope")
    assert_one_line_error(code, err, "no column 'nope' (--reasons)")


@pytest.fixture(scope="module")
def reasoning_job(tmp_path_factory):
    """One simulated model answering 200 cases without reasons (baseline, in
    choice mode) and with them (a condition of the job's own in reasoning
    mode), and an imported clerk whose every reason cites the loan's purpose."""
    from engine.job import load_cases, run_job
    from engine.spec import load_job

    tmp = tmp_path_factory.mktemp("reasons")
    settings = ["models=[simulated:cos=0.5]", "dataset.subset.per_class=100",
                "conditions=[baseline,{name: reasoning, mode: reasoning}]",
                "statistics.bootstrap=50", "statistics.permutations=20",
                f"output.run_dir={tmp / 'run'}", f"output.tracking_uri=sqlite:///{tmp / 'm.db'}"]
    cases = load_cases(load_job("jobs/german_credit_demo.yaml", settings)).table
    flip = np.random.default_rng(0).random(len(cases)) < 0.2
    pd.DataFrame({"case_id": cases["case_id"],
                  "verdict": np.where(flip, 1 - cases["decision"], cases["decision"]),
                  "why": "The purpose of the loan decided it."}).to_csv(tmp / "clerk.csv",
                                                                       index=False)
    spec = load_job("jobs/german_credit_demo.yaml", settings + [
        f"imports=[{{name: clerk, path: {tmp / 'clerk.csv'}, decision: verdict, reason: why}}]"])
    return tmp / "run", run_job(spec, progress=False, log=lambda *_: None)


def test_a_cell_in_reasoning_mode_reports_stated_versus_used(reasoning_job):
    """The simulated backend's reasons name the two columns that pushed each
    decision furthest: the cues it cites are the ones it weighs."""
    from engine.job import format_summary

    run_dir, res = reasoning_job
    s = next(c for c in res.cells if c.condition == "reasoning").stated
    assert s is not None and s.n_reasons == 200 and len(s.table) == 20
    assert s.low <= s.spearman <= s.high and s.spearman > 0.3
    # It cites the columns that pushed it furthest toward its answer.
    assert s.direction > 0.9 and s.direction_low <= s.direction <= s.direction_high
    assert list((run_dir / "cells").glob("*/stated_vs_used.csv"))
    summary = pd.read_csv(run_dir / "summary.csv").set_index("condition")
    assert summary.loc["reasoning", "stated_spearman"] == pytest.approx(s.spearman)
    assert "Stated versus used" in (run_dir / "report" / "report.html").read_text()
    assert "stated vs used over 200 reasons" in format_summary(res)


def test_the_direction_check_counts_citations_that_point_to_the_answer():
    """Two cues, one case each way: a citation agrees when the cue's part of the
    decision-maker's log-odds points to the answer it gave."""
    from engine.audit import contributions, direction_agreement

    X = np.array([[1.0, -1.0], [1.0, 2.0], [-1.0, 1.0]])
    owner = np.array([0, 1])
    c = contributions(X, np.array([2.0, 0.5]), owner, 2)
    assert np.allclose(c, [[2.0, -0.5], [2.0, 1.0], [-2.0, 0.5]])
    y = np.array([1.0, 0.0, 0.0])
    M = np.array([[1.0, 1.0], [1.0, 0.0], [np.nan, np.nan]])
    # case 0 answered positive: cue 0 (+2) agrees, cue 1 (-0.5) does not;
    # case 1 answered negative: cue 0 (+2) does not; case 2 gave no reason.
    assert direction_agreement(M, c, y) == pytest.approx(1 / 3)


def test_reasons_on_versus_off_as_two_conditions_of_one_model(reasoning_job):
    """A condition with its own mode: the same model asked with and without
    reasons, and the paired change in alignment between the two."""
    from engine.decisions import DecisionStore

    run_dir, res = reasoning_job
    by = {c.condition: c for c in res.cells}
    assert by["baseline"].stated is None and by["reasoning"].stated is not None
    assert by["reasoning"].change is not None  # reasoning minus baseline, paired
    d = DecisionStore(run_dir).load()
    assert d.loc[d["condition"] == "baseline", "reasoning"].isna().all()
    assert d.loc[d["condition"] == "reasoning", "reasoning"].notna().all()


def test_a_condition_that_changes_nothing_is_refused(capsys):
    from helpers import assert_one_line_error

    code, _, err = run_cli(capsys, "run", "jobs/german_credit_demo.yaml", "--dry-run", "--set",
                           "conditions=[baseline,{name: same}]")
    assert_one_line_error(code, err, "give an instruction, a mode, or both")


def test_an_imported_decision_maker_with_a_reason_column(reasoning_job):
    _, res = reasoning_job
    clerk = next(c for c in res.cells if c.model == "clerk")
    t = clerk.stated.table.set_index("cue")
    assert t.loc["purpose", "mention_rate"] == 1 and t["mention_rate"].drop("purpose").eq(0).all()
