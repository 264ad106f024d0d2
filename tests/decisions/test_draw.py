"""Answers drawn from their choice probabilities with the case's own number (`_draw`)."""

import math

import numpy as np
import pytest
from scipy import stats

from engine.decisions.backends._draw import case_uniform, drawn_choice


def softmax(lp, temperature):
    z = np.exp((np.asarray(lp) - max(lp)) / temperature)
    return z / z.sum()


@pytest.mark.parametrize("choices,lp", [
    (("Good", "Bad"), [math.log(0.7), math.log(0.3)]),
    (("A", "B", "C"), [-0.2, -2.5, -1.1]),  # unnormalised, as a sampler's subset is
])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_the_share_of_uniforms_each_choice_takes_is_its_probability(choices, lp, temperature):
    grid = (np.arange(20_000) + 0.5) / 20_000  # [0, 1) evenly: shares are exact to 1/20,000
    picked = [drawn_choice(choices, dict(zip(choices, lp)), temperature, u) for u in grid]
    share = [picked.count(c) / len(grid) for c in choices]
    np.testing.assert_allclose(share, softmax(lp, temperature), atol=1e-4)


def test_greedy_takes_the_likeliest_and_a_missing_probability_draws_nothing():
    assert drawn_choice(("Good", "Bad"), {"Good": -2.0, "Bad": -0.1}, 0.0, 0.001) == "Bad"
    assert drawn_choice(("Good", "Bad"), {"Good": -0.5, "Bad": -0.5}, 0.0, 0.9) == "Good"
    assert drawn_choice(("Good", "Bad"), {"Good": -0.1}, 1.0, 0.5) is None
    # A choice of probability ~0 is never drawn, however close u comes to 1.
    assert drawn_choice(("Good", "Bad"), {"Good": 0.0, "Bad": -800.0}, 1.0, 1 - 1e-16) == "Good"


def test_a_case_keeps_its_number_and_a_twin_shares_it():
    u = case_uniform(0, "bundled:smollm2-135m", "baseline", "C0007", 0)
    assert u == case_uniform(0, "bundled:smollm2-135m", "baseline", "C0007", 0)
    assert u == case_uniform(0, "bundled:smollm2-135m", "baseline", "C0007~age=24", 0)
    others = [case_uniform(1, "bundled:smollm2-135m", "baseline", "C0007", 0),
              case_uniform(0, "vllm:/m", "baseline", "C0007", 0),
              case_uniform(0, "bundled:smollm2-135m", "introspective", "C0007", 0),
              case_uniform(0, "bundled:smollm2-135m", "baseline", "C0008", 0),
              case_uniform(0, "bundled:smollm2-135m", "baseline", "C0007", 1)]
    assert u not in others and len(set(others)) == len(others)


def test_the_numbers_of_many_cases_are_uniform():
    us = [case_uniform(0, "m", "baseline", f"C{i:05d}", 0) for i in range(4000)]
    assert stats.kstest(us, "uniform").pvalue > 1e-3


def test_a_choice_begun_by_several_tokens_weighs_them_all_at_the_temperature():
    # "Good" begun by two tokens (as "G" and "Good"), "Bad" by one: a sampler at
    # T draws a choice with the summed mass of its tokens' tempered probabilities.
    lp = {"Good": [math.log(0.5), math.log(0.1)], "Bad": [math.log(0.4)]}
    grid = (np.arange(20_000) + 0.5) / 20_000
    for temperature in (1.0, 0.5):
        w = {c: sum(np.exp(np.asarray(v) / temperature)) for c, v in lp.items()}
        share = np.mean([drawn_choice(("Good", "Bad"), lp, temperature, u) == "Good"
                         for u in grid])
        assert share == pytest.approx(w["Good"] / (w["Good"] + w["Bad"]), abs=1e-4)
    # Greedy decoding takes the likeliest token: "B..." at 0.45 beats "Good"'s 0.4
    # though Good's tokens sum to more.
    assert drawn_choice(("Good", "Bad"), {"Good": [math.log(0.4), math.log(0.15)],
                                          "Bad": [math.log(0.45)]}, 0.0, 0.5) == "Bad"


def test_the_tokens_that_begin_each_choice(bundled_model_path):
    from transformers import AutoTokenizer

    from engine.decisions.backends._vllm import prefix_tokens

    tok = AutoTokenizer.from_pretrained(bundled_model_path)
    texts = tok.batch_decode([[i] for i in range(len(tok))])
    ids = prefix_tokens(texts, ("Good", "Bad"))
    assert {c: sorted(texts[i] for i in v) for c, v in ids.items()} == {
        "Good": ["G", "Go", "Good"], "Bad": ["B", "Ba", "Bad"]}
    # A shared beginning counts for neither; a choice with no token of its own is refused.
    assert "Y" not in [texts[i] for v in prefix_tokens(texts, ("Yes", "Yellow")).values()
                       for i in v]
    with pytest.raises(ValueError, match="rename them"):
        prefix_tokens(["Go", "od"], ("Go", "Good"))


def test_the_vectorised_uniforms_are_numpys_bit_for_bit():
    """`first_uniforms` is SeedSequence and PCG64 on arrays: for every seed the
    number `np.random.default_rng(seed).random()` gives; `case_uniforms` is
    `case_uniform` of each case, twins with their case's."""
    from engine.decisions.backends._draw import case_uniforms, first_uniforms

    rng = np.random.default_rng(0)
    seeds = np.concatenate([np.array([0, 1, 2**32 - 1, 2**32, 2**48 - 1], np.uint64),
                            rng.integers(0, 2**48, 5000, dtype=np.uint64)])
    expected = np.array([np.random.default_rng(int(s)).random() for s in seeds])
    assert np.array_equal(first_uniforms(seeds), expected)
    ids = [f"C{i:05d}" for i in range(300)] + ["C00007~age=24", "caf\u00e9 \"7\""]
    samples = [i % 3 for i in range(len(ids))]
    got = case_uniforms(4, "simulated:cos=0.8", "baseline", ids, samples)
    assert got.tolist() == [case_uniform(4, "simulated:cos=0.8", "baseline", c, k)
                            for c, k in zip(ids, samples)]


def test_a_prompt_hash_is_that_of_its_messages_json():
    """The shared system message is hashed once (`PromptHasher`); the hash is
    the one decisions stored before were made with."""
    import hashlib
    import json

    from engine.records import PromptHasher, PromptRequest

    system = {"role": "system", "content": "Decide \u00e9 \"quoted\"\nnew line"}
    for messages in [(system, {"role": "user", "content": "x\u2192y"}),
                     ({"role": "user", "content": "alone"},), ()]:
        old = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
        assert PromptRequest("m", "c", "1", 0, messages, ("a", "b"), "a").prompt_hash() == old
        if len(messages) == 2:
            assert PromptHasher(messages[:1])(messages[1]) == old
