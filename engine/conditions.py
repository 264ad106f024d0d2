"""Prompt conditions: how a case becomes a chat prompt under a condition.

The shared instruction comes first (the system message) so that every prompt
of a (model, condition) cell shares a prefix the engine's prefix cache reuses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pandas as pd

from engine.datasets import CaseSet
from engine.errors import LensauditError


@dataclass(frozen=True)
class PromptRequest:
    """One decision to compute: the key and the chat messages."""

    model: str
    condition: str
    case_id: str
    sample: int
    messages: tuple[dict, ...]
    choices: tuple[str, ...]
    positive: str

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.condition, self.case_id, self.sample)

    def prompt_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.messages, sort_keys=True).encode()).hexdigest()[:16]


def instruction(cases: CaseSet) -> str:
    """The shared instruction of the baseline condition."""
    s = cases.schema
    return (
        "You are a decision-maker reviewing cases one at a time. "
        f"For each case, decide whether {s.positive_meaning}. "
        f"Answer with exactly one word: {s.positive_label} or {s.negative_label}."
    )


def baseline_messages(cases: CaseSet, row: pd.Series) -> tuple[dict, ...]:
    s = cases.schema
    return (
        {"role": "system", "content": instruction(cases)},
        {"role": "user", "content": f"Case profile:\n{cases.profile(row)}\n\n"
                                    f"Answer {s.positive_label} or {s.negative_label}."},
    )


CONDITIONS = {"baseline": baseline_messages}


def build_requests(cases: CaseSet, model: str, condition: str, samples: int = 1) -> list[PromptRequest]:
    """All requests of one (model, condition) cell, in case order."""
    if condition not in CONDITIONS:
        raise LensauditError(f"unknown condition '{condition}' (known: {', '.join(CONDITIONS)})")
    render = CONDITIONS[condition]
    s = cases.schema
    out = []
    for _, row in cases.table.iterrows():
        messages = render(cases, row)
        for k in range(samples):
            out.append(PromptRequest(model, condition, str(row["case_id"]), k, messages,
                                     s.choices, s.positive_label))
    return out
