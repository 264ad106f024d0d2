"""ALIGN: probe loaders, aligned choices (ties, multi-attribute), few-shot hygiene, metric."""

import glob
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from engine.align.adm import (
    Target,
    aligned_choices,
    build_align_requests,
    few_shot_examples,
    presented_order,
    target,
)
from engine.align.data import Probe, load_align_system, load_mta
from engine.align.metric import alignment_row, alignment_table, position_bias
from engine.errors import LensauditError

SPLITS = "engine/data/mta_align/align-system_example_data/example_data/input_output_files/NAACL24_dataset_split/*.json"


@pytest.fixture(scope="module")
def mta():
    return load_mta()


def test_mta_counts(mta):
    assert len(mta) == 62
    assert len({p.scenario_id for p in mta}) == 20
    per_attr = Counter(a for p in mta for a in p.attributes)
    assert per_attr == {"utilitarianism": 21, "moral_deservingness": 12,
                        "continuation_of_care": 12, "risk_aversion": 8, "fairness": 6,
                        "protocol_focus": 3}
    assert Counter(len(p.choices) for p in mta) == {2: 50, 5: 9, 3: 2, 4: 1}
    assert len({p.item_id for p in mta}) == 62


def test_align_system_format_loads_the_same_probes(mta):
    from_splits = [p for f in sorted(glob.glob(SPLITS)) for p in load_align_system(f)]
    by_id = {p.item_id: p for p in mta}
    assert sorted(p.item_id for p in from_splits) == sorted(by_id)
    for p in from_splits:
        q = by_id[p.item_id]
        assert p.choices == q.choices and p.text == q.text and p.scenario_id == q.scenario_id
        (a,) = p.attributes
        assert p.score(a) == q.score(a)


def test_bad_probe_file_is_named(tmp_path):
    f = tmp_path / "probes.json"
    f.write_text(json.dumps([[{"scenario_id": "s", "probe_id": "p", "scenario": "x",
                               "state": "", "probe": "?", "choices": ["a", "b"]}, [{"k": 1}]]]))
    with pytest.raises(LensauditError, match="probes.json: probe p: 1 score sets for 2 choices"):
        load_mta(f)


def probe(pid, scores, scenario="s1", attr="fairness"):
    return Probe(scenario, pid, f"text {pid}", tuple(f"choice {i}" for i in range(len(scores))),
                 tuple({attr: float(s)} for s in scores), (attr,))


def test_aligned_choices_with_ties_and_levels():
    p = probe("p", [10, 10, 0, 5])
    assert aligned_choices(p, target("fairness", "high")) == {0, 1}  # a tie: both count
    assert aligned_choices(p, target("fairness", "low")) == {2}
    assert aligned_choices(p, target("fairness", 6.0)) == {3}
    with pytest.raises(LensauditError, match="measures none of"):
        aligned_choices(p, target("utilitarianism", "high"))


def test_multi_attribute_aligned_choice_by_weighted_distance():
    p = Probe("s", "m", "t", ("a", "b", "c"),
              ({"fairness": 10.0, "utilitarianism": 0.0},
               {"fairness": 0.0, "utilitarianism": 10.0},
               {"fairness": 6.0, "utilitarianism": 6.0}), ("fairness", "utilitarianism"))
    both_high = Target((("fairness", 10.0, 0.5), ("utilitarianism", 10.0, 0.5)))
    assert aligned_choices(p, both_high) == {2}  # 4+4 beats 0+10 and 10+0
    fair_heavy = Target((("fairness", 10.0, 0.9), ("utilitarianism", 10.0, 0.1)))
    assert aligned_choices(p, fair_heavy) == {0}  # 0.9*0+0.1*10 = 1 < 0.9*4+0.1*4 = 4


def test_few_shot_examples_never_come_from_the_probes_own_scenario(mta):
    tgt = target("utilitarianism", "high")
    for p in mta:
        for ex in few_shot_examples(mta, p, tgt, 3):
            assert ex.scenario_id != p.scenario_id
            assert "utilitarianism" in ex.attributes
    reqs = build_align_requests(mta, "m", "few_shot", tgt, k=3)
    first = reqs[0]
    assert sum(m["role"] == "assistant" for m in first.messages) == 3
    assert first.messages[-1]["role"] == "user"
    # each example answers with the aligned letter first, then a reasoning naming the attribute
    answer = first.messages[2]["content"]
    assert answer[0] in "ABCDE" and "Per the principle of high utilitarianism" in answer


def test_choice_order_is_shuffled_reproducibly_and_mapped_back(mta):
    p = next(x for x in mta if len(x.choices) == 5)
    orders = {tuple(presented_order(p, 0, s)) for s in range(20)}
    assert len(orders) > 1 and all(sorted(o) == list(range(5)) for o in orders)
    assert presented_order(p, 0, 3) == presented_order(p, 0, 3)
    (req,) = build_align_requests([p], "m", "baseline", None)
    assert req.choices == ("A", "B", "C", "D", "E")
    shown = req.messages[-1]["content"]
    for letter, src in zip(req.choices, req.choice_values):
        assert f"{letter}. {p.choices[src]}" in shown


def decisions_for(probes, chosen, condition="prompt_aligned:fairness=high", model="m"):
    rows = []
    for p, c in zip(probes, chosen):
        lp = {str(i): (0.0 if i == c else -5.0) for i in range(len(p.choices))}
        rows.append({"model": model, "condition": condition, "case_id": p.item_id, "sample": 0,
                     "y": c, "choice": "A", "choice_logprobs": json.dumps(lp)})
    return pd.DataFrame(rows)


def test_alignment_accuracy_on_hand_made_probes_with_ties():
    probes = [probe("p1", [10, 0]), probe("p2", [0, 10]), probe("p3", [10, 10, 0]),
              probe("p4", [0, 10])]
    by_id = {p.item_id: p for p in probes}
    d = decisions_for(probes, [0, 0, 1, 1])  # right, wrong, right (tie), right
    row = alignment_row(d, by_id, target("fairness", "high"), n_bootstrap=200)
    assert row["accuracy"] == pytest.approx(0.75)
    assert row["n_ties"] == 1 and row["n_probes"] == 4
    assert row["ci_low"] <= 0.75 <= row["ci_high"]
    # probability mass on the aligned choices: e^0/(e^0+e^-5) per right answer
    e = np.exp(-5)
    expected = (1 / (1 + e) + e / (1 + e) + (1 + e) / (1 + 2 * e) + 1 / (1 + e)) / 4
    assert row["p_aligned"] == pytest.approx(expected, rel=1e-9)
    low = alignment_row(d, by_id, target("fairness", "low"), n_bootstrap=200)
    assert low["accuracy"] == pytest.approx(0.25)


def test_alignment_table_scores_baseline_against_both_levels():
    probes = [probe("p1", [10, 0]), probe("p2", [0, 10])]
    d = pd.concat([decisions_for(probes, [0, 1], "baseline"),
                   decisions_for(probes, [0, 0], "prompt_aligned:fairness=low")])
    t = alignment_table(d, probes, ["fairness"], n_bootstrap=100)
    base = t[t["condition"] == "baseline"].set_index("target")["accuracy"]
    assert base["fairness=high"] == 1.0 and base["fairness=low"] == 0.0
    low = t[t["condition"] == "prompt_aligned:fairness=low"]
    assert list(low["target"]) == ["fairness=low"] and low["accuracy"].item() == 0.5


def test_position_bias_counts_first_letters_of_valid_answers():
    """Chance comes from each probe's number of choices (a reasoning-mode row
    has no log-probabilities to count them by); invalid answers are left out."""
    probes = {i: Probe("s", i, "t", ("x",) * k, ({"fairness": 0},) * k, ("fairness",))
              for i, k in (("a", 2), ("b", 2), ("c", 4), ("d", 4), ("e", 2))}
    d = pd.DataFrame({"case_id": ["a", "b", "c", "d", "e"], "choice": ["A", "A", "B", "A", ""],
                      "y": [0, 1, 1, 0, -1], "backend": "vllm",
                      "choice_logprobs": [json.dumps({"unavailable": "reasoning mode"})] * 5})
    pb = position_bias(d, probes)
    assert pb["first_position_rate"] == 0.75 and pb["first_position_chance"] == 0.375


def test_scores_per_scenario_valid_only_and_the_mean_over_targets():
    """The seed's and align-system's figures on hand-built probes: a probe whose
    choices all score the same on the attribute (every choice aligned) counts
    in the pooled accuracy but not in valid_only; scenarios are averaged as
    units; the mean over attribute x level averages the targets."""
    from engine.align.metric import scenario_table, target_means

    probes = [probe("a1", [10, 0], "A"), probe("a2", [10, 0], "A"), probe("a3", [5, 5], "A"),
              probe("b1", [0, 10], "B")]
    by_id = {p.item_id: p for p in probes}
    d = decisions_for(probes, [0, 1, 0, 0])  # right, wrong, (all aligned), wrong
    row = alignment_row(d, by_id, target("fairness", "high"), n_bootstrap=200)
    assert row["accuracy"] == pytest.approx(2 / 4)
    assert row["n_valid"] == 3 and row["accuracy_valid"] == pytest.approx(1 / 3)
    # scenario A: 2 of 3 aligned; scenario B: 0 of 1; their mean
    assert row["n_scenarios"] == 2 and row["accuracy_by_scenario"] == pytest.approx((2 / 3) / 2)
    assert row["valid_ci_low"] <= row["accuracy_valid"] <= row["valid_ci_high"]

    table = alignment_table(d, probes, ["fairness"], n_bootstrap=100)
    per = scenario_table(d, probes, table).set_index("scenario_id")
    assert per.loc["A", "accuracy"] == pytest.approx(2 / 3) and per.loc["B", "accuracy"] == 0
    assert per.loc["A", "accuracy_valid"] == pytest.approx(1 / 2)

    base = decisions_for(probes, [0, 1, 0, 0], "baseline")  # scored at both levels
    means = target_means(base, probes, ["fairness"], n_bootstrap=200).iloc[0]
    high = alignment_row(base, by_id, target("fairness", "high"), n_bootstrap=10)["accuracy"]
    low = alignment_row(base, by_id, target("fairness", "low"), n_bootstrap=10)["accuracy"]
    assert means["n_targets"] == 2 and means["mean_accuracy"] == pytest.approx((high + low) / 2)
    assert means["ci_low"] <= means["mean_accuracy"] <= means["ci_high"]


def test_align_report_is_written_through_the_shared_page(tmp_path):
    """ALIGN's report uses the audit report's page and tables (engine.outputs)."""
    from engine.align.job import write_align_report

    table = pd.DataFrame({"model": ["m"], "condition": ["c"], "method": ["persona"],
                          "target": ["fairness=high"], "accuracy": [0.75], "ci_low": [0.5],
                          "ci_high": [0.9], "chance": [0.5]})
    from engine.align.lens import LENS_COLUMNS

    lens = pd.DataFrame([dict.fromkeys(LENS_COLUMNS, 0.5) | {
        "model": "m", "condition": "c", "attribute": "fairness", "change": 0.25, "status": "",
        "note": ""}])
    changes = pd.DataFrame({"model": ["m"], "target": ["fairness=high"], "change": [-0.125]})
    files = write_align_report(tmp_path, "mta <demo>", table, table, lens, changes=changes)
    page = (tmp_path / "report.html").read_text()
    assert {f.name for f in files} == {"alignment_accuracy.png", "lens_alignment.png",
                                       "report.html"}
    assert "<h1>lensaudit alignment: mta &lt;demo&gt;</h1>" in page and "table.t" in page
    # wide, all targets, changes; the lens audit's ADMs and their attributes
    assert page.count('class="dataframe t"') == 5
    assert "0.750" in page and "+0.250" in page and "-0.125" in page
