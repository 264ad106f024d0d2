"""Opposite-target voting, as align-system's aligned ADM decides.

An aligned ADM with `vote: opposite` answers each probe N times with its
target and N times with the opposite target (high <-> low), the choices
shuffled in every sample. Each answer with the target gives its choice one
vote; each answer with the opposite target takes 1/k from its choice and
gives 1/k to each of the k - 1 others. The votes are shifted so the lowest
is (just below) zero and normalised to shares; only choices some answer with
the target picked stay eligible, and the largest share wins, ties going to
the first choice in the source's order. The shares are the choice's
probability.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from engine.align.adm import Target, condition_name, opposite
from engine.align.data import Probe

#: The method suffix of a voted ADM's condition ("prompt_aligned+vote:fairness=high").
VOTED = "+vote"


def vote_shares(n_choices: int, positive: list[int], negative: list[int]) -> np.ndarray:
    """`[n_choices]` normalised votes from the choices (source indices) picked
    with the target (`positive`) and with the opposite target (`negative`)."""
    votes = np.zeros(n_choices)
    for c in positive:
        votes[c] += 1.0
    for c in negative:  # an opposite answer counts against its choice, for the others
        votes += 1.0 / n_choices
        votes[c] -= 2.0 / n_choices
    shifted = votes - (votes.min() + 1e-6)
    return shifted / shifted.sum()


def voted_choice(shares: np.ndarray, positive: list[int]) -> int:
    """The winning choice: the largest share among the choices some answer with
    the target picked (all choices when none did); ties to the lowest index."""
    eligible = sorted(set(positive)) or list(range(len(shares)))
    return max(eligible, key=lambda c: (shares[c], -c))


def voted_decisions(decisions: pd.DataFrame, probes: dict[str, Probe], method: str,
                    tgt: Target) -> pd.DataFrame:
    """One decision row per (model, probe) of the voted ADM `method` x `tgt`,
    from the stored answers of `method:tgt` and `method:opposite(tgt)`.

    `choice_logprobs` holds the log of the vote shares (keyed by source index),
    so the scores read them as the choice probabilities."""
    anti = opposite(tgt)
    mine, theirs = condition_name(method, tgt), condition_name(method, anti)
    valid = decisions[decisions["y"] >= 0]
    rows = []
    for (model, case_id), d in valid.groupby(["model", "case_id"]):
        pos = d.loc[d["condition"] == mine, "y"].astype(int).tolist()
        if not pos or case_id not in probes:
            continue
        neg = d.loc[d["condition"] == theirs, "y"].astype(int).tolist()
        k = len(probes[case_id].choices)
        shares = vote_shares(k, pos, neg)
        y = voted_choice(shares, pos)
        first = d[(d["condition"] == mine) & (d["y"] == y)]
        rows.append({
            "model": model, "condition": condition_name(method + VOTED, tgt), "case_id": case_id,
            "sample": 0, "choice": str(y), "y": y, "p_positive": float(shares[y]),
            "choice_logprobs": json.dumps({str(i): float(np.log(max(s, 1e-12)))
                                           for i, s in enumerate(shares)}),
            "reasoning": first["reasoning"].iloc[0] if len(first) else None,
            "prompt_hash": "", "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0,
            "backend": "vote", "seed": int(d["seed"].iloc[0])})
    return pd.DataFrame(rows, columns=decisions.columns)
