"""The `simulated` backend: a logistic decision-maker with a known policy.

`simulated:org` decides by the organisation's own fitted policy;
`simulated:cos=0.8` by a policy of the same norm whose cosine with the
organisation's is exactly 0.8 (the rest of its direction drawn with the
job's seed). Decisions are Bernoulli draws from that policy's probability,
and `p_positive` is the probability itself. It ignores the prompt, so every
condition gives the same decisions (with their own draws): it exists for
instant demos and calibration checks, and its rows carry backend
"simulated" and a model name that starts with "simulated:".
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from engine.errors import LensauditError

BACKEND = "simulated"


def parse_simulated(name: str) -> float:
    """'org' -> 1.0; 'cos=0.8' -> 0.8."""
    if name == "org":
        return 1.0
    m = re.fullmatch(r"cos=(-?[0-9.]+)", name)
    if not m or not -1.0 <= float(m.group(1)) <= 1.0:
        raise LensauditError(f"unknown model 'simulated:{name}' (use simulated:org or "
                             "simulated:cos=<value in [-1, 1]>)")
    return float(m.group(1))


def _seed(*parts) -> int:
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12], 16)


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


def simulated_rows(requests, X_by_case: dict[str, np.ndarray], intercept: float,
                   org_beta: np.ndarray, *, seed: int) -> list[dict]:
    """Decision rows for `requests` (all of one simulated model)."""
    rows = []
    for r in requests:
        cos = parse_simulated(r.model.partition(":")[2])
        beta = simulated_policy(org_beta, cos, _seed(seed, r.model))
        p = float(1 / (1 + np.exp(-(intercept + X_by_case[r.case_id] @ beta))))
        u = np.random.default_rng(_seed(seed, *r.key)).random()
        y = int(u < p)
        rows.append({
            "model": r.model, "condition": r.condition, "case_id": r.case_id,
            "sample": r.sample, "choice": r.choices[0] if y else r.choices[1], "y": y,
            "p_positive": p, "choice_logprobs": json.dumps(
                {r.choices[0]: float(np.log(p)), r.choices[1]: float(np.log1p(-p))}),
            "reasoning": None, "prompt_hash": r.prompt_hash(), "prompt_tokens": 0,
            "completion_tokens": 0, "latency_s": 0.0, "backend": BACKEND, "seed": seed,
        })
    return rows
