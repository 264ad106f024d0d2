"""ALIGN's ADMs as align-system builds them: opposite-target voting, in-context
example selection, comparative regression, the random floor, pole prompts and
reasoning mode, each on hand-built probes with known answers."""

import json

import numpy as np
import pandas as pd
import pytest

from engine.align.adm import (
    RANDOM,
    REASONING_FIELDS,
    build_align_requests,
    few_shot_examples,
    pole_prompts,
    random_rows,
    system_message,
    target,
)
from engine.align.data import Probe
from engine.align.regression import nearest_choice, regression_decisions
from engine.align.adm import opposite
from engine.align.vote import vote_shares, voted_choice, voted_decisions
from engine.records import DECISION_SCHEMA, PromptRequest, answer_schema, rating_row

COLUMNS = DECISION_SCHEMA.names


def probe(pid, scores, scenario="s1", attr="fairness", text=None):
    return Probe(scenario, pid, text or f"text {pid}",
                 tuple(f"choice {i}" for i in range(len(scores))),
                 tuple({attr: float(s)} for s in scores), (attr,))


def row(model, condition, case_id, sample, y, **kw):
    base = dict.fromkeys(COLUMNS)
    base.update(model=model, condition=condition, case_id=case_id, sample=sample, y=y,
                choice=str(y), seed=0, backend="vllm",
                choice_logprobs=json.dumps({"unavailable": "reasoning mode"}))
    base.update(kw)
    return base


# ------------------------------------------------------------ voting


def test_vote_shares_follow_align_systems_rule():
    """3 choices; with the target: 0, 0, 1; with the opposite: 0, 2.
    Votes: +2 on 0, +1 on 1; each opposite answer -1/3 on its choice, +1/3 on
    the others: 0 -> 2 - 1/3 + 1/3 = 2, 1 -> 1 + 2/3 = 5/3, 2 -> 0 + 1/3 - 1/3 = 0;
    shifted by (min + 1e-6) and normalised."""
    s = vote_shares(3, [0, 0, 1], [0, 2])
    raw = np.array([2.0, 5 / 3, 0.0]) - (0.0 + 1e-6)
    np.testing.assert_allclose(s, raw / raw.sum(), rtol=1e-12)
    assert voted_choice(s, [0, 0, 1]) == 0


def test_opposite_answers_can_overturn_the_majority():
    """The target alone picks 0 twice and 1 once; the opposite target picks 0
    three times: 0 falls to 2 - 3/2 + ... below 1, which wins."""
    s = vote_shares(2, [0, 0, 1], [0, 0, 0])
    # 0: 2 - 3*(1/2) = 0.5; 1: 1 + 3*(1/2) = 2.5
    assert voted_choice(s, [0, 0, 1]) == 1 and s[1] > s[0]


def test_votes_are_limited_to_choices_picked_with_the_target_and_ties_go_first():
    # choice 2 gains most from the opposite answers but no target answer picked it
    s = vote_shares(3, [0, 1], [0, 1, 0, 1])
    assert s[2] == s.max() and voted_choice(s, [0, 1]) in (0, 1)
    assert voted_choice(np.array([0.5, 0.5]), [1, 0]) == 0  # a tie: the first source choice
    assert voted_choice(np.array([0.2, 0.8]), []) == 1  # no positive answer: all eligible


def test_opposite_targets():
    assert opposite(target("fairness", "high")) == target("fairness", "low")
    assert opposite(target("fairness", 6.0)) is None


def test_voted_decisions_keep_the_shares_as_the_choice_probability():
    from engine.align.metric import alignment_row

    p = probe("p1", [10, 0])  # fairness high -> choice 0
    by_id = {p.item_id: p}
    d = pd.DataFrame([row("m", "prompt_aligned:fairness=high", p.item_id, s, y)
                      for s, y in enumerate([0, 1, 0])]
                     + [row("m", "prompt_aligned:fairness=low", p.item_id, s, y)
                        for s, y in enumerate([1, 1, 1])])
    v = voted_decisions(d, by_id, "prompt_aligned", target("fairness", "high"))
    assert list(v["condition"]) == ["prompt_aligned+vote:fairness=high"] and v["y"].item() == 0
    shares = vote_shares(2, [0, 1, 0], [1, 1, 1])
    assert v["p_positive"].item() == pytest.approx(shares[0])
    r = alignment_row(v, by_id, target("fairness", "high"), n_bootstrap=20)
    assert r["accuracy"] == 1.0 and r["p_aligned"] == pytest.approx(shares[0], rel=1e-6)


def test_vote_requests_include_the_opposite_targets_answers():
    ps = [probe("p1", [10, 0]), probe("p2", [0, 10], attr="utilitarianism")]
    reqs = build_align_requests(ps, "m", "prompt_aligned", target("fairness", "high"),
                                samples=3, vote=True)
    conds = sorted({r.condition for r in reqs})
    assert conds == ["prompt_aligned:fairness=high", "prompt_aligned:fairness=low"]
    assert len(reqs) == 6  # 3 samples x 2 targets, on the one probe measuring fairness


# ------------------------------------------------------------ in-context examples


def test_examples_come_from_other_scenarios_the_most_similar_first():
    me = probe("q", [10, 0], "s1", text="bleeding soldier tourniquet convoy ambush")
    same = probe("same", [10, 0], "s1", text="bleeding soldier tourniquet convoy ambush")
    near = probe("near", [0, 10], "s2", text="bleeding soldier tourniquet in a convoy")
    mid = probe("mid", [10, 0], "s3", text="a soldier in the desert")
    far = probe("far", [10, 0], "s4", text="hospital paperwork and budgets")
    tie = probe("tie", [10, 10], "s5", text="bleeding soldier tourniquet convoy ambush")
    other = probe("oth", [10, 0], "s6", attr="utilitarianism",
                  text="bleeding soldier tourniquet convoy ambush")
    pool = [far, mid, same, near, tie, other, me]
    got = few_shot_examples(pool, me, target("fairness", "high"), 3)
    # never its own scenario; never a probe with tied answers or another attribute
    assert [p.probe_id for p in got] == ["near", "mid", "far"]
    assert [p.probe_id for p in few_shot_examples(pool, me, target("fairness", "high"), 1)] \
        == ["near"]


def test_tfidf_matches_scikit_learn():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from engine.align.examples import tfidf

    texts = ["the soldier is bleeding", "the medic treats the soldier", "a civilian waits"]
    ours = tfidf(texts)
    ref = TfidfVectorizer(token_pattern=r"[a-z0-9]+").fit_transform(texts).toarray()
    np.testing.assert_allclose(ours @ ours.T, ref @ ref.T, atol=1e-12)


# ------------------------------------------------------------ comparative regression


def test_rating_rows_and_the_nearest_choice():
    req = PromptRequest("m", "comparative_regression.ratings:fairness", "p", 0, (),
                        ("A", "B", "C"), "A", (2, 0, 1), mode="rating",
                        fields=("detailed_reasoning", "scores"))
    schema = answer_schema(req)
    assert schema["properties"]["scores"]["required"] == ["A", "B", "C"]
    r = rating_row(req, json.dumps({"detailed_reasoning": "x", "scores": {"A": 2, "B": 9, "C": 5}}),
                   prompt_tokens=1, completion_tokens=1, latency=0.0, backend="vllm", seed=0)
    assert r["y"] == 0 and r["reasoning"] == "x"  # B, shown second, is source choice 0
    assert json.loads(r["choice_logprobs"]) == {"rated": {"2": 2.0, "0": 9.0, "1": 5.0}}
    cut = rating_row(req, '{"detailed_reasoning": "x", "sco', prompt_tokens=1,
                     completion_tokens=1, latency=0.0, backend="vllm", seed=0)
    assert cut["y"] == -1
    assert nearest_choice({0: 9.0, 1: 5.0, 2: 2.0}, target("fairness", "high")) == 0
    assert nearest_choice({0: 9.0, 1: 5.0, 2: 2.0}, target("fairness", "low")) == 2
    assert nearest_choice({0: 4.0, 1: 6.0}, target("fairness", 5.0)) == 0  # a tie: the first


def test_regression_decisions_average_the_samples_ratings():
    p = probe("p1", [10, 0, 5])
    rated = [{"0": 8, "1": 1, "2": 6}, {"0": 4, "1": 3, "2": 6}]  # means 6, 2, 6
    d = pd.DataFrame([row("m", "comparative_regression.ratings:fairness", p.item_id, s, 0,
                          choice_logprobs=json.dumps({"rated": r}))
                      for s, r in enumerate(rated)])
    hi = regression_decisions(d, {p.item_id: p}, target("fairness", "high"))
    lo = regression_decisions(d, {p.item_id: p}, target("fairness", "low"))
    assert hi["y"].item() == 0 and lo["y"].item() == 1  # 6 vs 6: the first; 2 nearest 0
    assert hi["condition"].item() == "comparative_regression:fairness=high"


def test_regression_requests_are_shared_by_both_poles():
    ps = [probe("p1", [10, 0])]
    hi = build_align_requests(ps, "m", "comparative_regression", target("fairness", "high"))
    lo = build_align_requests(ps, "m", "comparative_regression", target("fairness", "low"))
    assert [r.key for r in hi] == [r.key for r in lo]
    assert hi[0].mode == "rating" and "fairness" in hi[0].messages[0]["content"]


# ------------------------------------------------------------ random, prompts, reasoning


def test_random_adm_is_uniform_seeded_and_needs_no_backbone():
    ps = [probe(f"p{i}", [10, 0, 5, 1]) for i in range(400)]
    reqs = build_align_requests(ps, "m", "random", None)
    assert {r.model for r in reqs} == {RANDOM} and all(r.messages == () for r in reqs)
    ys = [r["y"] for r in random_rows(reqs, seed=3)]
    assert ys == [r["y"] for r in random_rows(reqs, seed=3)]
    assert ys != [r["y"] for r in random_rows(reqs, seed=4)]
    assert random_rows(reqs, 3)[0]["p_positive"] == pytest.approx(0.25)
    counts = np.bincount(ys, minlength=4)
    assert counts.min() > 70  # 100 expected each; P(any < 70) is about 1e-3


def test_each_attribute_has_its_own_high_and_low_prompt():
    from engine.align.adm import DEFINITIONS

    prompts = pole_prompts()
    assert set(prompts) == set(DEFINITIONS)
    for attr, poles in prompts.items():
        assert set(poles) == {"high", "low"} and poles["high"] != poles["low"]
        assert poles["high"] in system_message("prompt_aligned", target(attr, "high"))
        assert poles["low"] in system_message("prompt_aligned", target(attr, "low"))


def test_reasoning_mode_asks_align_systems_json():
    (req,) = build_align_requests([probe("p", [10, 0])], "m", "prompt_aligned",
                                  target("fairness", "high"), mode="reasoning")
    assert req.mode == "reasoning" and req.fields == REASONING_FIELDS
    assert '"detailed_reasoning"' in req.messages[-1]["content"]
    schema = answer_schema(req)
    assert schema["required"] == ["detailed_reasoning", "action_choice"]
    assert schema["properties"]["action_choice"]["enum"] == ["A", "B"]


def test_adm_decisions_score_derived_adms_and_drop_the_ratings(tmp_path):
    from engine.align.design import adm_decisions
    from engine.spec import load_job

    spec = load_job("jobs/mta_align.yaml", [
        "alignment.methods=[prompt_aligned,comparative_regression,random]",
        "alignment.attributes=[fairness]", "alignment.vote=opposite",
        f"output.run_dir={tmp_path}"])
    p = probe("p1", [10, 0])
    d = pd.DataFrame([row("m", "prompt_aligned:fairness=high", p.item_id, 0, 0),
                      row("m", "prompt_aligned:fairness=low", p.item_id, 0, 1),
                      row("m", "comparative_regression.ratings:fairness", p.item_id, 0, 0,
                          choice_logprobs=json.dumps({"rated": {"0": 7, "1": 2}})),
                      row(RANDOM, RANDOM, p.item_id, 0, 1, backend=RANDOM)])
    got = adm_decisions(spec, d, [p])
    assert sorted(got["condition"]) == sorted([
        "prompt_aligned:fairness=high", "prompt_aligned:fairness=low", RANDOM,
        "prompt_aligned+vote:fairness=high", "prompt_aligned+vote:fairness=low",
        "comparative_regression:fairness=high", "comparative_regression:fairness=low"])
    y = got.set_index("condition")["y"]
    assert y["comparative_regression:fairness=high"] == 0
    assert y["comparative_regression:fairness=low"] == 1


# ------------------------------------------------------------ reasons on versus off


def test_mode_changes_pair_each_adm_with_its_twin_in_the_other_mode():
    from engine.align.adm import with_mode
    from engine.align.metric import mode_changes

    assert with_mode("prompt_aligned:fairness=high", "choice") == "prompt_aligned@choice:fairness=high"
    assert with_mode("few_shot+vote:fairness=low", "choice") == "few_shot@choice+vote:fairness=low"
    assert with_mode("baseline", "reasoning") == "baseline@reasoning"
    ps = [probe(f"p{i}", [10, 0]) for i in range(4)]
    d = pd.DataFrame(
        [row("m", "prompt_aligned:fairness=high", p.item_id, 0, y) for p, y in zip(ps, [0, 0, 1, 1])]
        + [row("m", "prompt_aligned@choice:fairness=high", p.item_id, 0, 0) for p in ps[:3]]
        + [row("m", "baseline", p.item_id, 0, 1) for p in ps])  # no twin: not compared
    ch = mode_changes(d, ps, ["fairness"], "choice", n_bootstrap=200)
    (r,) = ch.itertuples()
    assert r.other == "prompt_aligned@choice:fairness=high" and r.n_probes == 3  # paired probes
    assert r.accuracy == pytest.approx(2 / 3) and r.accuracy_other == 1.0
    assert r.change == pytest.approx(1 / 3) and r.change_low <= r.change <= r.change_high


def test_compare_modes_asks_every_backbone_adm_in_both_modes_once(tmp_path):
    from engine.align.job import all_align_requests
    from engine.spec import load_job

    spec = load_job("jobs/mta_align.yaml", [
        "alignment.probes=4", "alignment.attributes=[fairness]", "alignment.levels=[high]",
        "alignment.methods=[baseline,prompt_aligned,comparative_regression,random]",
        "alignment.vote=none", "alignment.compare_modes=true", "decision.samples=1",
        f"output.run_dir={tmp_path}"])
    reqs = all_align_requests(spec, [probe(f"p{i}", [10, 0], f"s{i}") for i in range(4)])
    by = {}
    for r in reqs:
        by.setdefault(r.condition, []).append(r.mode)
    assert by["prompt_aligned:fairness=high"] == ["reasoning"] * 4
    assert by["prompt_aligned@choice:fairness=high"] == ["choice"] * 4
    assert by["baseline@choice"] == ["choice"] * 4
    # ratings and random draws do not depend on the mode: asked once
    assert not any("@" in c for c in by if c.startswith(("comparative", "random")))
    from engine.align.job import count_adms

    assert count_adms(spec) == "6 ADM(s)"  # baseline, prompt_aligned x 2 modes; ratings, random
    assert count_adms(load_job("jobs/mta_align.yaml")) == "64 ADM(s) (24 voted)"


# ------------------------------------------------------------ the lens audit of steered ADMs


def test_the_lens_audit_of_adms_honours_the_statistics_settings(monkeypatch):
    """statistics.bootstrap, permutations, C, level, interval and seed reach the
    ALIGN lens audit (no cap, no fixed count), and each backbone's baseline side
    is fitted once and shared by its conditions. The kernels are spied on (their
    numbers are tested in tests/test_kernels_*)."""
    from types import SimpleNamespace

    import kernels
    from engine.align.data import load_mta
    from engine.align.job import lens_audit, lens_design
    from engine.audit import StatisticsSpec

    probes = [p for p in load_mta() if len(p.choices) == 2]
    attrs = ["utilitarianism", "moral_deservingness"]
    ids, X = lens_design(probes, attrs)
    first = {}
    for p in probes:
        first.setdefault(p.probe_id, p.item_id)  # one decision row per merged probe
    rng = np.random.default_rng(0)
    d = pd.DataFrame([row("m", cond, first[i], 0, int(rng.random() < 0.5))
                      for cond in ("baseline", "prompt_aligned:fairness=high",
                                   "prompt_aligned:fairness=low") for i in ids])
    seen = {"reference": [], "compare": []}

    def reference(X_, y, **kw):
        seen["reference"].append(kw)
        return "the baseline's side"

    def compare(X_, y_org, y_dm, **kw):
        seen["compare"].append(kw)
        k = X_.shape[1]
        return SimpleNamespace(beta_org=np.zeros(k), beta_dm=np.ones(k), r_cos=0.5,
                               r_cos_cf=0.4, p_perm=0.01, boot_beta_org=np.zeros((8, k)),
                               boot_beta_dm=np.ones((8, k)))

    monkeypatch.setattr(kernels, "lens_reference", reference)
    monkeypatch.setattr(kernels, "compare_policies", compare)
    stats = StatisticsSpec(bootstrap=4000, permutations=3000, C=0.5, level=0.9,
                           interval="percentile", seed=3)
    lens = lens_audit(d, probes, attrs, stats=stats)
    assert len(seen["reference"]) == 1 and len(seen["compare"]) == 2  # shared baseline
    assert seen["reference"][0] == {"key": seen["reference"][0]["key"], "n_bootstrap": 4000,
                                    "C": 0.5, "interval": "percentile"}
    for kw in seen["compare"]:
        assert kw["n_bootstrap"] == 4000 and kw["n_permutations"] == 3000 and kw["C"] == 0.5
        assert kw["level"] == 0.9 and kw["interval"] == "percentile"
        assert kw["reference"] == "the baseline's side"
    import jax

    assert np.array_equal(seen["compare"][0]["key"], jax.random.PRNGKey(3))
    assert set(lens["r_cos_cf_vs_baseline"]) == {0.4} and set(lens["p_perm"]) == {0.01}
    assert len(lens) == 2 * len(attrs)


def test_the_page_gets_none_not_nan_for_a_probe_without_reasoning():
    """A cell where some probes came with reasons and some without (an invalid
    answer, a choice-mode twin): the page's JSON has null, never NaN."""
    from engine.align._view import first_reasoning

    rows = pd.DataFrame({"case_id": ["a", "a", "b", "c"],
                         "reasoning": [None, "because", None, float("nan")]})
    assert first_reasoning(rows) == {"a": "because", "b": None, "c": None}
