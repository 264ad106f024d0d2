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
import sys
from typing import NamedTuple

import numpy as np

from engine.datasets import base_case_id
from engine.decisions.backends._draw import case_uniforms, hashed_seed
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
                   org_beta: np.ndarray, *, seed: int, columns: list[str] = ()) -> dict:
    """Decision rows for `requests` (simulated models), as columns in the
    requests' order (`DecisionStore.write` takes them): a model and condition
    at a time, as arrays (a request at a time made 5,000 rows a second).

    A counterfactual twin ("<case>~<cue>=<level>") is decided from its own cue
    values with its case's random numbers (the noise term and the draw), so
    that only the changed cue can make its decision differ.
    """
    n = len(requests)
    z, p = np.empty(n), np.empty(n)
    y = np.empty(n, np.int64)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault((r.model, r.condition), []).append(i)
    policies: dict[str, tuple[Simulated, np.ndarray]] = {}
    for (model, condition), rows in groups.items():
        if model not in policies:
            sim = parse_simulated(model.partition(":")[2])
            beta = simulated_policy(org_beta, sim.cos, hashed_seed(seed, model))
            policies[model] = (sim, _ignored(beta, list(columns), sim.ignore, model)
                               if sim.ignore else beta)
        sim, beta = policies[model]
        reqs = [requests[i] for i in rows]
        X = np.stack([X_by_case[r.case_id] for r in reqs])
        zg = intercept + sim.shift + X @ beta
        if sim.noise:  # the case's own term: the same in every condition and sample
            zg += sim.noise * _case_normals(seed, model, [base_case_id(r.case_id) for r in reqs])
        pg = 1 / (1 + np.exp(-zg))
        if sim.greedy:
            yg = (pg > 0.5).astype(np.int64)
        else:
            u = case_uniforms(seed, model, condition, [r.case_id for r in reqs],
                              [r.sample for r in reqs])
            yg = (u < pg).astype(np.int64)
        z[rows], p[rows], y[rows] = zg, pg, yg
    # log-sigmoid, finite where p rounds to 0 or 1 (JSON has no -inf)
    lp_pos, lp_neg = -np.logaddexp(0, -z), -np.logaddexp(0, z)
    keys = {}
    logprobs = []
    for r, a, b in zip(requests, lp_pos.tolist(), lp_neg.tolist()):
        k = keys.get(r.choices)
        if k is None:
            k = keys[r.choices] = (json.dumps(r.choices[0]), json.dumps(r.choices[1]))
        logprobs.append(f"{{{k[0]}: {a!r}, {k[1]}: {b!r}}}")
    reasoning = [None] * n
    for i, r in enumerate(requests):
        if r.mode == "reasoning":
            beta = policies[r.model][1]
            reasoning[i] = _reasoning(X_by_case[r.case_id] * beta, columns, r.choices, int(y[i]))
    return {
        "model": [r.model for r in requests], "condition": [r.condition for r in requests],
        "case_id": [r.case_id for r in requests], "sample": [r.sample for r in requests],
        "choice": [r.choices[0] if yi else r.choices[1] for r, yi in zip(requests, y.tolist())],
        "y": y, "p_positive": p, "choice_logprobs": logprobs, "reasoning": reasoning,
        "prompt_hash": [r.prompt_hash() for r in requests], "prompt_tokens": np.zeros(n, np.int64),
        "completion_tokens": np.zeros(n, np.int64), "latency_s": np.zeros(n),
        "backend": [BACKEND] * n, "seed": np.full(n, seed, np.int64),
    }


def _case_normals(seed: int, model: str, cases: list[str]) -> np.ndarray:
    """Each case's own standard normal term (one generator per distinct case)."""
    drawn: dict[str, float] = {}
    for c in cases:
        if c not in drawn:
            drawn[c] = np.random.default_rng(hashed_seed(seed, model, c)).standard_normal()
    return np.array([drawn[c] for c in cases])


#: Decisions per shard of a simulated model: a killed run keeps the shards
#: written, and a million decisions show their progress.
SHARD_ROWS = 50_000


def run_simulated(requests, store, X_by_case: dict[str, np.ndarray], intercept: float,
                  org_beta: np.ndarray, *, seed: int, columns: list[str] = (),
                  progress: bool = True) -> int:
    """Decide `requests` of simulated models, `SHARD_ROWS` to a shard of `store`;
    returns how many."""
    from tqdm import tqdm

    if not requests:
        return 0
    with tqdm(total=len(requests), desc="simulated", unit="dec", disable=not progress,
              dynamic_ncols=True, file=sys.stderr) as bar:
        for start in range(0, len(requests), SHARD_ROWS):
            chunk = requests[start:start + SHARD_ROWS]
            store.write(simulated_rows(chunk, X_by_case, intercept, org_beta, seed=seed,
                                       columns=columns))
            bar.update(len(chunk))
    return len(requests)
