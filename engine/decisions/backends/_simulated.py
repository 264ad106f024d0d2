"""The `simulated` backend: a logistic decision-maker with a known policy.

`simulated:org` decides by the organisation's own fitted policy;
`simulated:cos=0.8` by a policy of the same norm whose cosine with the
organisation's is exactly 0.8 (the rest of its direction drawn with the
job's seed). Decisions are Bernoulli draws from that policy's probability,
and `p_positive` is the probability itself. Options, each after a colon:
`shift=X` adds X to the log-odds (a decision-maker leaning to one answer),
`noise=S` adds a per-case normal term of sd S to them (what its cues do not
explain), `greedy` answers the likelier choice, as a model at temperature 0
does: `simulated:cos=0.8:shift=8:greedy` answers one way in every case while
its probabilities follow a policy of cosine 0.8 (without a reference, the
cosine is with a fixed random policy, `anchor_policy`); `ignore=<cue>` sets the
weights of a cue's columns to 0 (its counterfactual twins never flip). It
ignores the prompt, so every condition gives the same decisions (with their
own draws): it exists for instant demos and calibration checks, and its rows
carry backend "simulated" and a model name that starts with "simulated:".
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

import numpy as np

from engine.datasets import base_case_id
from engine.decisions.backends._draw import case_uniform, hashed_seed
from engine.errors import LensauditError

BACKEND = "simulated"


class Simulated(NamedTuple):
    """What a `simulated:` model name asks for."""

    cos: float
    shift: float = 0.0
    noise: float = 0.0
    greedy: bool = False
    ignore: tuple[str, ...] = ()  # cues whose weights are set to 0


_USAGE = ("use simulated:org or simulated:cos=<value in [-1, 1]>, optionally followed by "
          ":shift=<log-odds> :noise=<sd> :greedy :ignore=<cue>")


def parse_simulated(name: str) -> Simulated:
    """'org' -> cos 1.0; 'cos=0.8:shift=2:noise=0.5:greedy' -> each option."""
    head, *options = name.split(":")
    m = re.fullmatch(r"cos=(-?[0-9.]+)", head)
    if head == "org":
        cos = 1.0
    elif m and -1.0 <= float(m.group(1)) <= 1.0:
        cos = float(m.group(1))
    else:
        raise LensauditError(f"unknown model 'simulated:{name}' ({_USAGE})")
    spec = {"cos": cos}
    for opt in options:
        key, _, value = opt.strip().partition("=")
        try:
            if key == "greedy" and not value:
                spec["greedy"] = True
            elif key == "ignore" and value:
                spec["ignore"] = (*spec.get("ignore", ()), value)
            elif key in ("shift", "noise") and value:
                spec[key] = float(value)
                if not np.isfinite(spec[key]) or (key == "noise" and spec[key] < 0):
                    raise ValueError
            else:
                raise ValueError
        except ValueError:
            raise LensauditError(f"model 'simulated:{name}': bad option {opt!r} "
                                 f"({_USAGE})") from None
    return Simulated(**spec)


#: Norm of the policy simulated models draw around when a case set has no
#: reference: about the German Credit organisation's (|beta| ~ 1.3).
ANCHOR_NORM = 1.5


def anchor_policy(d: int, seed: int) -> np.ndarray:
    """A fixed `[d]` random policy of norm `ANCHOR_NORM`: what `simulated:cos=X`
    is a cosine with when there is no organisation's policy (two such models
    then have a cosine near X1 * X2)."""
    u = np.random.default_rng(hashed_seed(seed, "anchor")).standard_normal(d)
    return ANCHOR_NORM * u / np.linalg.norm(u)


def simulated_policy(org_beta: np.ndarray, cos: float, seed: int) -> np.ndarray:
    """A `[d]` policy with |beta| = |org_beta| and cos(beta, org_beta) = cos exactly."""
    norm = float(np.linalg.norm(org_beta))
    if norm == 0:
        return np.zeros_like(org_beta)
    a = org_beta / norm
    u = np.random.default_rng(seed).standard_normal(a.shape)
    u -= (u @ a) * a
    u /= np.linalg.norm(u)
    return norm * (cos * a + np.sqrt(max(0.0, 1 - cos**2)) * u)


def _ignored(beta: np.ndarray, columns: list[str], cues: tuple[str, ...], model: str):
    """`beta` with the weights of `cues`' columns ("cue" or "cue=level") set to 0."""
    out = beta.copy()
    for cue in cues:
        hit = [j for j, c in enumerate(columns) if c == cue or c.startswith(cue + "=")]
        if not hit:
            raise LensauditError(f"model '{model}': ignore={cue}: no such cue in the case set")
        out[hit] = 0.0
    return out


def _reasoning(contributions: np.ndarray, columns, choices, y: int, top: int = 2) -> str:
    """A simulated reasoning: the `top` encoded columns that pushed the decision
    furthest toward the answer given, named as the encoding names them."""
    toward = contributions if y else -contributions
    order = [j for j in np.argsort(-toward, kind="stable")[:top] if toward[j] > 0]
    named = ", ".join(columns[j] if len(columns) else f"column {j}" for j in order)
    return (f"(simulated) {choices[0] if y else choices[1]}: mostly because of "
            f"{named or 'no single factor'}.")


def simulated_rows(requests, X_by_case: dict[str, np.ndarray], intercept: float,
                   org_beta: np.ndarray, *, seed: int, columns: list[str] = ()) -> list[dict]:
    """Decision rows for `requests` (all of one simulated model).

    A counterfactual twin ("<case>~<cue>=<level>") is decided from its own cue
    values with its case's random numbers (the noise term and the draw), so
    that only the changed cue can make its decision differ.
    """
    rows = []
    for r in requests:
        sim = parse_simulated(r.model.partition(":")[2])
        beta = simulated_policy(org_beta, sim.cos, hashed_seed(seed, r.model))
        if sim.ignore:
            beta = _ignored(beta, list(columns), sim.ignore, r.model)
        case = base_case_id(r.case_id)
        z = intercept + sim.shift + X_by_case[r.case_id] @ beta
        if sim.noise:  # the case's own term: the same in every condition and sample
            z += sim.noise * np.random.default_rng(
                hashed_seed(seed, r.model, case)).standard_normal()
        p = float(1 / (1 + np.exp(-z)))
        u = case_uniform(seed, r.model, r.condition, r.case_id, r.sample)
        y = int(p > 0.5) if sim.greedy else int(u < p)
        rows.append({
            "model": r.model, "condition": r.condition, "case_id": r.case_id,
            "sample": r.sample, "choice": r.choices[0] if y else r.choices[1], "y": y,
            "p_positive": p, "choice_logprobs": json.dumps(
                # log-sigmoid, finite where p rounds to 0 or 1 (JSON has no -inf)
                {r.choices[0]: -float(np.logaddexp(0, -z)),
                 r.choices[1]: -float(np.logaddexp(0, z))}),
            "reasoning": (_reasoning(X_by_case[r.case_id] * beta, columns, r.choices, y)
                          if r.mode == "reasoning" else None),
            "prompt_hash": r.prompt_hash(), "prompt_tokens": 0,
            "completion_tokens": 0, "latency_s": 0.0, "backend": BACKEND, "seed": seed,
        })
    return rows
