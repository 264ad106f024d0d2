"""Counterfactual twins (issue 15, item 6): the twins, the paired effects kernel
against a plain NumPy reference and by simulation, and a job whose simulated
decision-makers put no weight, or a strong one, on a cue."""

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import kernels
from engine.prompts import twin_cases
from engine.datasets import load_case_file
from engine.errors import LensauditError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tenancy"


@pytest.fixture(scope="module")
def tenancy():
    return load_case_file(EXAMPLE / "tenancy.yaml")


def test_twins_change_one_cue_to_every_other_value(tenancy):
    twins = twin_cases(tenancy, ["nationality", "pets", "monthly_income"]).table
    t = tenancy.table.set_index("case_id")
    nat = twins[twins["cf_cue"] == "nationality"]
    assert len(nat) == 3 * len(tenancy)  # every other of four levels
    assert (nat["nationality"].to_numpy() != t.loc[nat["base_case_id"], "nationality"]).all()
    assert nat["case_id"].iloc[0] == f"{nat['base_case_id'].iloc[0]}~nationality={nat['cf_level'].iloc[0]}"
    pets = twins[twins["cf_cue"] == "pets"]
    assert len(pets) == len(tenancy)  # binary: the other value
    income = twins[twins["cf_cue"] == "monthly_income"]
    p10, p90 = np.quantile(t["monthly_income"], [0.1, 0.9], method="inverted_cdf")
    assert set(income["monthly_income"]) == {p10, p90}  # values that occur in the data
    # A case that already has the value gets no twin for it.
    assert len(income) == 2 * len(tenancy) - int(t["monthly_income"].isin([p10, p90]).sum())
    others = [c.name for c in tenancy.schema.cues if c.name != "nationality"]
    merged = nat.merge(tenancy.table, left_on="base_case_id", right_on="case_id")
    for c in others:  # nothing else changed
        assert (merged[f"{c}_x"].astype(str) == merged[f"{c}_y"].astype(str)).all()


def test_an_unknown_cue_is_named(tenancy):
    with pytest.raises(LensauditError, match="counterfactual.cues.1: no cue 'religion' in case "
                       "set 'tenancy'"):
        twin_cases(tenancy, ["age", "religion"])


def test_paired_mean_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    d = rng.normal(0.2, 1, (50, 3))
    d[rng.random((50, 3)) < 0.2] = np.nan  # cases without a twin for that effect
    key = jax.random.PRNGKey(3)
    got = kernels.paired_mean(d, key=key, n_bootstrap=400, level=0.9)
    np.testing.assert_allclose(got.mean, np.nanmean(d, axis=0), rtol=1e-12)
    w = np.asarray(kernels.BootstrapCounts(key, 50, 400))  # the same resamples
    present = np.isfinite(d)
    reps = (w @ np.where(present, d, 0)) / (w @ present)
    np.testing.assert_allclose(got.low, np.quantile(reps, 0.05, axis=0), rtol=1e-10)
    np.testing.assert_allclose(got.high, np.quantile(reps, 0.95, axis=0), rtol=1e-10)
    zero = kernels.paired_mean(np.zeros((20, 1)), key=key, n_bootstrap=100)
    assert float(zero.low[0]) == float(zero.high[0]) == 0.0


def test_paired_mean_covers_a_rare_flip_rate_at_the_studies_size():
    """Coverage by simulation: 360 cases, flips with probability 0.05."""
    keys = jax.random.split(jax.random.PRNGKey(0), 300)
    rng = np.random.default_rng(1)
    hits = 0
    for k in keys:
        flips = (rng.random((360, 1)) < 0.05).astype(float)
        r = kernels.paired_mean(flips, key=k, n_bootstrap=400)
        hits += float(r.low[0]) <= 0.05 <= float(r.high[0])
    assert 0.91 <= hits / len(keys) <= 0.98, hits / len(keys)


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(EXAMPLE, tmp_path / "tenancy", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "tenancy" / "job.yaml"


def _run(job, cues, log):
    from engine.job import run_job
    from engine.spec import load_job

    spec = load_job(job, ["models=[simulated:org, simulated:org:ignore=nationality]",
                          "conditions=[baseline]", "imports=[]",
                          f"counterfactual.cues={cues}", "statistics.bootstrap=50",
                          "statistics.permutations=50"])
    return run_job(spec, progress=False, log=log)


def test_flips_follow_the_weight_and_resume_covers_twins(study):
    lines = []
    first = _run(study, "[nationality]", lines.append)
    assert "decisions: 2880 computed now, 0 reused" in "\n".join(lines)  # 2 x (360 + 3 x 360)
    lines.clear()
    res = _run(study, "[nationality, monthly_income]", lines.append)
    n_income = int(twin_cases(load_case_file(EXAMPLE / "tenancy.yaml"),
                              ["monthly_income"]).table.shape[0])
    assert f"decisions: {2 * n_income} computed now, 2880 reused" in "\n".join(lines)
    effects = {c.model: c.twins.set_index(["cue", "level"]) for c in res.cells}
    ignoring = effects["simulated:org:ignore=nationality"].loc[("nationality", "")]
    assert ignoring.flip_low <= 0 <= ignoring.flip_high  # no weight: no flip
    assert ignoring.p_change_low <= 0 <= ignoring.p_change_high
    income = effects["simulated:org"].loc[("monthly_income", "")]
    assert income.flip_low > 0.05  # the agent's strongest cue: flips
    rich = effects["simulated:org"].loc[("monthly_income", "4240")]
    assert rich.p_change_low > 0  # more income, more offers
    first_nat = first.cells[0].twins.set_index(["cue", "level"]).loc[("nationality", "")]
    assert first_nat.flip == effects["simulated:org"].loc[("nationality", "")].flip  # reused
