"""Prompt conditions: the dependency order and snapshots of the externalised prompts."""

from pathlib import Path

import numpy as np
import pytest

from engine.prompts import (Policy, PromptContext, build_requests, condition_waves,
                            system_message, weight_tiers)
from engine.errors import LensauditError

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"


@pytest.fixture(scope="module")
def cases(german):
    return german.subset(per_class=5, seed=0)


@pytest.fixture(scope="module")
def policies(cases):
    """A fixed organisation policy and a deviating 'own' policy (rounded: stable text)."""
    d = len(cases.schema.columns())
    rng = np.random.default_rng(0)
    org = Policy(np.round(rng.standard_normal(d) * 0.5, 3), 0.5)
    flip = np.where(rng.random(d) < 0.15, -1, 1)
    own = Policy(np.round(org.beta * rng.uniform(0, 2, d) * flip, 3), 0.93)
    return org, own


def check_snapshot(name: str, text: str):
    path = SNAPSHOTS / name
    assert path.is_file(), f"missing snapshot {path}"
    assert text == path.read_text(), f"{name} changed; review the prompt and update the snapshot"


def test_org_externalized_prompt_snapshot(cases, policies):
    org, _ = policies
    check_snapshot("org_externalized_german_credit.txt",
                   system_message(cases, "m", "org_externalized", PromptContext(org=org)))


def test_introspective_prompt_snapshot(cases, policies):
    org, own = policies
    check_snapshot("introspective_german_credit.txt",
                   system_message(cases, "m", "introspective", PromptContext(org=org, own={"m": own})))


def test_introspective_for_a_one_answer_model_says_so(cases, policies):
    org, _ = policies
    own = Policy(np.zeros_like(org.beta), 1.0)
    text = system_message(cases, "m", "introspective", PromptContext(org=org, own={"m": own}))
    assert "did not depend on the case details" in text and "Good in 100% of cases" in text


def test_introspective_from_a_soft_policy_says_where_it_was_read(cases, policies):
    org, own = policies
    soft = Policy(own.beta, 1.0, source="probabilities")
    text = system_message(cases, "m", "introspective", PromptContext(org=org, own={"m": soft}))
    assert "read from how likely you found each answer" in text
    assert "did not depend on the case details" not in text


def test_introspective_runs_after_baseline_of_the_same_model():
    assert condition_waves(["introspective"]) == [["baseline"], ["introspective"]]
    assert condition_waves(["introspective", "org_externalized", "baseline"]) == [
        ["baseline", "org_externalized"], ["introspective"]]
    assert condition_waves(["org_externalized"]) == [["org_externalized"]]
    with pytest.raises(LensauditError, match="unknown condition 'sarcastic'"):
        condition_waves(["sarcastic"])


def test_introspective_without_its_baseline_policy_is_refused(cases, policies):
    org, own = policies
    ctx = PromptContext(org=org, own={"other-model": own})
    with pytest.raises(LensauditError, match="needs its baseline policy"):
        build_requests(cases, "m", "introspective", context=ctx)


def test_requests_share_the_system_prefix_and_the_case_comes_after(cases, policies):
    org, _ = policies
    reqs = build_requests(cases, "m", "org_externalized", samples=2, context=PromptContext(org=org))
    assert len(reqs) == 2 * len(cases)
    assert len({r.messages[0]["content"] for r in reqs}) == 1
    assert "Case profile" in reqs[0].messages[1]["content"]


def test_weight_tiers_equal_width_and_quantile():
    beta = np.array([0.0, 0.1, -0.2, 0.3, 1.0, -0.9, 0.55])
    # equal width between 0.1 and 1.0: edges 0.4 and 0.7
    assert weight_tiers(beta).tolist() == [-1, 2, 2, 2, 0, 0, 1]
    q = weight_tiers(beta, "quantile")
    assert sorted(np.bincount(q[q >= 0]).tolist()) == [2, 2, 2]


@pytest.fixture(scope="module")
def calm_context():
    """The CALM-style context of jobs/german_credit_calm.yaml, as a run builds it."""
    from engine.job import load_cases, stated_policy
    from engine.spec import load_job

    spec = load_job(Path(__file__).resolve().parents[2] / "jobs" / "german_credit_calm.yaml")
    cases = load_cases(spec)
    y = cases.table["decision"].to_numpy(float)
    org = stated_policy(spec, None, y)
    return cases, PromptContext(org=org, prompts="calm", role=spec.decision.role)


def test_calm_org_externalized_prompt_snapshot(calm_context):
    """One importance line per attribute (20 for German Credit), from the policy
    fitted on all 1,000 applicants, with the population's 70% approval rate."""
    cases, context = calm_context
    text = system_message(cases, "m", "org_externalized", context)
    check_snapshot("org_externalized_german_credit_calm.txt", text)
    tiers = [line for line in text.splitlines() if line.endswith(" importance")]
    assert len(tiers) == 20 == len(cases.schema.cues)
    assert {line.rsplit(": ", 1)[1] for line in tiers} == {
        "high importance", "medium importance", "low importance"}
    assert text.startswith("You are an experienced credit officer at a bank.")
    assert "decided Good in 70% of cases" in text and len(cases) == 600


def test_calm_introspective_states_the_population_rate(calm_context, policies):
    cases, context = calm_context
    _, own = policies
    context = PromptContext(org=context.org, own={"m": own}, prompts="calm", role=context.role)
    text = system_message(cases, "m", "introspective", context)
    check_snapshot("introspective_german_credit_calm.txt", text)
    assert "you answered Good in 93% of cases; the organisation did in 70%." in text


def test_attribute_weight_is_the_largest_weight_of_its_columns(cases):
    from engine.prompts import attribute_weights

    beta = np.zeros(len(cases.schema.columns()))
    beta[1], beta[2] = -2.0, 1.0  # two levels of the first cue (checking account)
    w = attribute_weights(cases, beta)
    assert w.shape == (20,) and w[0] == 2.0 and (w[1:] == 0).all()
