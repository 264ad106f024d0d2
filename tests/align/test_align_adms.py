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
    opposite,
    pole_prompts,
    random_rows,
    system_message,
    target,
)
from engine.align.data import Probe
from engine.align.regression import nearest_choice, regression_decisions
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


def lens_decisions(ids, X, attrs, first, rng):
    """A backbone's baseline (driven by the first attribute), one ADM steered to
    the second attribute, one answering at random; three samples a probe."""
    drive = {"baseline": X[:, 0], "prompt_aligned:fairness=high": X[:, 1],
             "prompt_aligned:fairness=low": np.zeros(len(ids))}
    return pd.DataFrame([
        row("m", cond, first[i], s, int(rng.random() < 1 / (1 + np.exp(-3 * z[k]))))
        for cond, z in drive.items() for k, i in enumerate(ids) for s in range(3)])


def test_the_lens_audit_of_adms_runs_the_audit_stage_with_the_statistics_settings(monkeypatch,
                                                                                  tmp_path):
    """The ALIGN lens audit is the audit stage's: each backbone's baseline is the
    reference, fitted once and shared by its ADMs; statistics.bootstrap,
    permutations, C, level and interval reach every refit (no cap, no fixed
    count); an attribute no probe tells apart is reported as not measured; the
    console, and each ADM's MLflow run, get its alignment with the baseline."""
    from sklearn.linear_model import LogisticRegression

    import engine.align.lens as lens_mod
    from engine.align.data import load_mta
    from engine.align.lens import lens_audit, lens_design, lens_table, lens_tags
    from engine.audit import StatisticsSpec

    probes = [p for p in load_mta() if len(p.choices) == 2]
    attrs = ["utilitarianism", "fairness", "maximization"]  # no two-choice probe varies the last
    ids, X = lens_design(probes, attrs)
    assert X[:, 2].std() == 0 and X[:, :2].std(0).min() > 0
    first = {}
    for p in probes:
        first.setdefault(p.probe_id, p.item_id)  # one decision row per merged probe
    d = lens_decisions(ids, X, attrs, first, np.random.default_rng(0))
    references = []
    real_reference = lens_mod.org_reference

    def counted(*a, **k):
        references.append(a)
        return real_reference(*a, **k)

    monkeypatch.setattr(lens_mod, "org_reference", counted)
    stats = StatisticsSpec(bootstrap=40, permutations=30, C=0.5, level=0.9,
                           interval="percentile", seed=3)
    audits = lens_audit(d, probes, attrs, stats=stats)
    assert list(audits) == ["m"] and len(references) == 1  # the baseline's side, once
    audit = audits["m"]
    assert [c.condition for c in audit.cells] == ["prompt_aligned:fairness=high",
                                                  "prompt_aligned:fairness=low"]
    y_base = (d[d["condition"] == "baseline"].groupby("case_id")["y"].mean()
              .reindex([first[i] for i in ids]).to_numpy() > 0.5).astype(float)
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(X[:, :2], y_base)
    np.testing.assert_allclose(audit.org.beta[:2], ref.coef_[0], atol=1e-5)  # C reached it
    for cell in audit.cells:
        c = cell.comparison
        assert c.boot_beta_org.shape == (40, 3) and c.null_r_cos.shape == (30,)
        assert audit.level == 0.9
    table = lens_table(audits)
    assert len(table) == 2 * len(attrs)
    steered = table[table["condition"] == "prompt_aligned:fairness=high"].set_index("attribute")
    np.testing.assert_allclose(steered["change"].iloc[:2], steered["beta_condition"].iloc[:2]
                               - steered["beta_baseline"].iloc[:2])
    # level 0.9, percentile: the change's interval is the 5th and 95th percentiles
    # of its paired bootstrap replicates
    c = audit.cells[0].comparison
    diff = c.boot_beta_dm[:, 1] - c.boot_beta_org[:, 1]
    assert np.quantile(diff, 0.04) <= steered.loc["fairness", "change_low"] <= np.quantile(diff, 0.06)
    assert np.quantile(diff, 0.94) <= steered.loc["fairness", "change_high"] <= np.quantile(diff, 0.96)
    assert steered.loc["fairness", "beta_condition"] > steered.loc["utilitarianism", "beta_condition"]
    assert np.isnan(steered.loc["maximization", "beta_condition"])
    assert steered.loc["maximization", "status"].startswith("constant")
    for r in table.drop_duplicates(["model", "condition"]).itertuples():
        if np.isfinite(r.r_cos_cf_low):
            assert r.r_cos_cf_low <= r.r_cos_cf_vs_baseline <= r.r_cos_cf_high
        else:
            assert r.note  # a missing figure says why
    from engine.align.job import format_lens

    lines = format_lens(audits)
    assert lines[0].startswith("lens audit") and "90% interval" in lines[0]
    for cell in audit.cells:  # each ADM on a line, with its reason under it if it has one
        at = next(k for k, line in enumerate(lines) if cell.condition in line)
        assert f"{cell.comparison.r_cos_cf:+.3f}" in lines[at]
        assert (cell.alignment_reason or "") in (lines[at + 1] if cell.alignment_reason else "")
    assert format_lens({}) == []

    from engine.align.job import LENS_METRICS, save_align_results
    from engine.spec import load_job

    spec = load_job("jobs/mta_align.yaml", [f"output.run_dir={tmp_path}"])
    accuracy = pd.DataFrame([{"model": "m", "condition": c.condition, "target": "fairness=high",
                              "accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                              "accuracy_valid": 0.5, "accuracy_by_scenario": 0.5,
                              "first_position_rate": 0.5} for c in audit.cells])
    save_align_results(spec, tmp_path, accuracy, d, probes, lens=table,
                       lens_tags=lens_tags(audits))
    results = json.loads((tmp_path / "results.json").read_text())  # what MLflow gets
    logged = {c["condition"]: c["metrics"] for c in results["cells"]}
    for cell in audit.cells:
        metrics, c = logged[cell.condition], cell.comparison
        assert metrics["alignment_accuracy.fairness_high"] == 0.5
        assert metrics["r_cos_cf"] == pytest.approx(c.r_cos_cf)  # the job's cells' names
        assert metrics["r_cos"] == pytest.approx(c.r_cos)
        assert ("r_cos_cf_ci_low" in metrics) == bool(np.isfinite(c.r_cos_cf_ci.low))
        tags = next(x["tags"] for x in results["cells"] if x["condition"] == cell.condition)
        assert tags.get("lensaudit.r_cos_cf_undefined", "") == (cell.alignment_reason or "")
        assert tags.get("lensaudit.r_cos_cf_note", "") == (cell.alignment_note or "")
        assert set(metrics) <= {*LENS_METRICS, "first_position_rate",
                                *(f"alignment_{k}.fairness_high" for k in (
                                    "accuracy", "ci_low", "ci_high", "accuracy_valid",
                                    "accuracy_by_scenario"))}


def test_the_page_gets_none_not_nan_for_a_probe_without_reasoning():
    """A cell where some probes came with reasons and some without (an invalid
    answer, a choice-mode twin): the page's JSON has null, never NaN."""
    from engine.align._view import first_reasoning

    rows = pd.DataFrame({"case_id": ["a", "a", "b", "c"],
                         "reasoning": [None, "because", None, float("nan")]})
    assert first_reasoning(rows) == {"a": "because", "b": None, "c": None}


def test_an_align_rerun_says_which_stored_decisions_it_would_make_otherwise(monkeypatch,
                                                                           tmp_path):
    """A re-run of an alignment job reuses its stored decisions and says, per
    ADM, which this job would make otherwise (here the random ADM's, drawn
    with another seed); the engines are not needed to get there."""
    import engine.align.job as job
    from engine.spec import load_job

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(job, "start_engines", lambda spec: ({}, {}))
    monkeypatch.setattr(job, "decide", stop)  # after the random ADM's rows are stored
    lines = []
    for seed, reuse in ((0, "any"), (0, "any"), (1, "any"), (1, "same"), (1, "any")):
        spec = load_job("jobs/mta_align.yaml", [
            f"output.run_dir={tmp_path}", "alignment.probes=5", f"decision.seed={seed}",
            f"decision.reuse={reuse}"])
        lines.append("run")
        with pytest.raises(Stop):
            job.run_align_job(spec, progress=False, log=lines.append)
    runs = "\n".join(lines).split("run\n")[1:]
    assert "otherwise" not in runs[0] + runs[1]  # stored as this job makes them
    said = [ln for ln in runs[2].splitlines() if "otherwise" in ln]
    assert len(said) == 1, runs[2]  # one reason, one line, however many ADMs
    assert (said[0].startswith("warning: ") and " in random x " in said[0]
            and "would make otherwise, made with seed 0 (this job's is 1): " in said[0]), said[0]
    # reuse=same draws the random ADM's decisions again with the job's seed.
    assert "deciding again the stored decisions this job would make otherwise, made with " \
        "seed 0" in runs[3]
    assert "otherwise" not in runs[4]
    from engine.decisions import DecisionStore

    stored = DecisionStore(tmp_path).load()
    assert set(stored.loc[stored["model"] == "random", "seed"]) == {1}
