"""What flows between the stages: a prompt request, and the decision row a
backend makes of its answer (the decision store's schema).

Prompts are built by `engine.prompts`, decided by the backends and stored
by `engine.decisions`; all three speak these types.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa


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
    #: Multi-choice probes: the source index of each presented choice (choices
    #: are shown shuffled); the decision's y is then the chosen source index.
    choice_values: tuple[int, ...] | None = None
    #: "choice"; "reasoning" (JSON {reasoning, answer}; see `reasoning_schema`); or
    #: "rating" (JSON {reasoning, scores}: each choice rated 0-10; see `rating_schema`).
    mode: str = "choice"
    #: The JSON answer's two field names in reasoning and rating modes: ALIGN
    #: uses align-system's ("detailed_reasoning", "action_choice").
    fields: tuple[str, str] = ("reasoning", "answer")

    #: `prompt_hash()`, where whoever built the request computed it already
    #: (`PromptHasher`); otherwise computed on first use.
    digest: str = field(default="", compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.condition, self.case_id, self.sample)

    def prompt_hash(self) -> str:
        """The messages' hash: a stored decision made from other messages says so."""
        if not self.digest:
            digest = (PromptHasher(self.messages[:-1])(self.messages[-1]) if self.messages else
                      hashlib.sha256(b"[]").hexdigest()[:16])
            object.__setattr__(self, "digest", digest)
        return self.digest


class PromptHasher:
    """`PromptRequest.prompt_hash` of messages that share their first ones (a
    condition's system message): the shared part is hashed once. The hash is
    that of the messages' sorted-key JSON, as decisions stored before kept it."""

    def __init__(self, head: tuple[dict, ...]):
        text = "[" + "".join(json.dumps(m, sort_keys=True) + ", " for m in head)
        self._head = hashlib.sha256(text.encode())

    def __call__(self, last: dict) -> str:
        h = self._head.copy()
        h.update((json.dumps(last, sort_keys=True) + "]").encode())
        return h.hexdigest()[:16]


KEY = ["model", "condition", "case_id", "sample"]

DECISION_SCHEMA = pa.schema([
    ("model", pa.string()), ("condition", pa.string()), ("case_id", pa.string()),
    ("sample", pa.int64()), ("choice", pa.string()), ("y", pa.int64()),
    ("p_positive", pa.float64()), ("choice_logprobs", pa.string()), ("reasoning", pa.string()),
    ("prompt_hash", pa.string()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("latency_s", pa.float64()), ("backend", pa.string()),
    ("seed", pa.int64()),
    # How the row was made (`DecisionStore.write` stamps both): the sampling
    # temperature where a backend sampled (null: simulated rows, which do not),
    # and the `DECISION_METHOD` of the lensaudit that wrote it (null: before
    # 2026-12-05). Shards written before either existed read them as null.
    ("temperature", pa.float64()), ("method", pa.int64()),
])

#: How this lensaudit turns a backend's answer into a decision row; a row made
#: by an earlier method says so when a re-run reuses it (`engine.decisions.reused`).
DECISION_METHOD = 2
#: What each method changed, and for which backends' choice answers: a reused
#: row made before it no longer says what a fresh one would.
METHOD_CHANGES = {
    2: (("vllm", "openai"),
        "made by lensaudit before 2026-12-05, whose vLLM p_positive read each choice's whole-word "
        "token alone and whose sampled answers did not repeat run to run"),
}


#: The scale a rating-mode answer scores each choice on (the MTA set's 0-10).
RATING_SCALE = tuple(range(11))


def _text(max_chars: int | None) -> dict:
    return {"type": "string"} if max_chars is None else {"type": "string", "maxLength": max_chars}


def reasoning_schema(choices: tuple[str, ...], fields: tuple[str, str] = ("reasoning", "answer"),
                     max_chars: int | None = None) -> dict:
    """JSON schema of a reasoning-mode answer: free reasoning (at most
    `max_chars` characters), then a constrained answer."""
    why, answer = fields
    return {"type": "object",
            "properties": {why: _text(max_chars),
                           answer: {"type": "string", "enum": list(choices)}},
            "required": [why, answer], "additionalProperties": False}


def rating_schema(choices: tuple[str, ...], fields: tuple[str, str] = ("reasoning", "scores"),
                  max_chars: int | None = None) -> dict:
    """JSON schema of a rating-mode answer: free reasoning (at most `max_chars`
    characters), then a score on `RATING_SCALE` for every choice."""
    why, scores = fields
    score = {"type": "integer", "enum": list(RATING_SCALE)}
    return {"type": "object",
            "properties": {why: _text(max_chars),
                           scores: {"type": "object", "properties": {c: score for c in choices},
                                    "required": list(choices), "additionalProperties": False}},
            "required": [why, scores], "additionalProperties": False}


def answer_schema(req: PromptRequest, max_tokens: int | None = None) -> dict:
    """The JSON schema a reasoning- or rating-mode request constrains its answer
    to. With a token budget the reasoning is capped at 2 characters a token
    of what the JSON around it leaves (about 12 tokens, and 7 a choice for
    the ratings), so the answer after it fits: a small model would otherwise
    reason until the budget cuts the JSON, leaving no answer. (A budget too
    small for the JSON alone still cuts it: the answer is then missing.)"""
    reserve = 12 + (7 * len(req.choices) if req.mode == "rating" else 2)
    cap = None if max_tokens is None else max(8, 2 * (max_tokens - reserve))
    if req.mode == "rating":
        return rating_schema(req.choices, req.fields, cap)
    return reasoning_schema(req.choices, req.fields, cap)


def structured_row(req: PromptRequest, text: str, **kw) -> dict:
    """The decision row of a reasoning- or rating-mode answer."""
    return (rating_row if req.mode == "rating" else reasoning_row)(req, text, **kw)


def _normalised(logprobs: dict[str, float]) -> dict[str, float]:
    """Softmax over the choice set of per-choice log-probabilities."""
    m = max(logprobs.values())
    z = sum(math.exp(v - m) for v in logprobs.values())
    return {k: math.exp(v - m) / z for k, v in logprobs.items()}


def reasoning_row(req: PromptRequest, text: str, **kw) -> dict:
    """A reasoning-mode row: the JSON's answer and reasoning. The answer comes
    after free text, so no choice probability is read: p_positive is NaN and
    choice_logprobs says so (the audit then uses the answers themselves)."""
    why, field = req.fields
    try:
        obj = json.loads(text)
        answer, reasoning = str(obj[field]), str(obj[why])
    except (ValueError, KeyError, TypeError):  # cut by the token budget: no answer
        answer, reasoning = "", text
    row = decision_row(req, answer, {}, reasoning=reasoning, **kw)
    if answer not in req.choices:
        row["y"] = -1  # no valid answer: left out of the audit, counted there
    row["choice_logprobs"] = json.dumps({"unavailable": "reasoning mode"})
    return row


def rating_row(req: PromptRequest, text: str, **kw) -> dict:
    """A rating-mode row: the answer is the highest-rated choice (ties to the
    first shown); the scores, keyed by source index like log-probabilities,
    are kept in `choice_logprobs` as {"rated": {index: score}}, for the ADM
    that chooses by them (ALIGN's comparative regression)."""
    why, field = req.fields
    try:
        obj = json.loads(text)
        scores = {c: float(obj[field][c]) for c in req.choices}
        reasoning = str(obj[why])
    except (ValueError, KeyError, TypeError):  # cut by the token budget: no answer
        scores, reasoning = {}, text
    best = max(req.choices, key=lambda c: (scores[c], -req.choices.index(c))) if scores else ""
    row = decision_row(req, best, {}, reasoning=reasoning, **kw)
    if not scores:
        row["y"] = -1
        row["choice_logprobs"] = json.dumps({"unavailable": "rating mode, no scores"})
        return row
    index = (lambda c: str(req.choice_values[req.choices.index(c)])) \
        if req.choice_values is not None else (lambda c: c)
    row["choice_logprobs"] = json.dumps({"rated": {index(c): v for c, v in scores.items()}})
    return row


def decision_row(req: PromptRequest, choice: str, logprobs: dict[str, float], *,
                 prompt_tokens: int, completion_tokens: int, latency: float, backend: str,
                 seed: int, reasoning: str | None = None) -> dict:
    """One row of the decisions table from a backend's raw answer.

    Binary cases: y = 1 for the positive choice, p_positive from the choice
    log-probabilities normalised over the choice set. Multi-choice probes
    (`choice_values`): y = the chosen choice's source index, p_positive = the
    probability of the chosen choice, and the log-probabilities are keyed by
    source index.
    """
    probs = _normalised(logprobs) if len(logprobs) == len(req.choices) else {}
    if req.choice_values is None:
        y = int(choice == req.positive)
        p = probs.get(req.positive, float("nan"))
        lp = logprobs
    else:
        pos = req.choices.index(choice) if choice in req.choices else -1
        y = req.choice_values[pos] if pos >= 0 else -1
        p = probs.get(choice, float("nan"))
        lp = {str(req.choice_values[req.choices.index(c)]): v for c, v in logprobs.items()}
    return {
        "model": req.model, "condition": req.condition, "case_id": req.case_id,
        "sample": req.sample, "choice": choice, "y": y, "p_positive": p,
        "choice_logprobs": json.dumps(lp), "reasoning": reasoning,
        "prompt_hash": req.prompt_hash(), "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens, "latency_s": latency, "backend": backend,
        "seed": seed,
    }


def cell_rows(decisions: pd.DataFrame, model: str, condition: str) -> pd.DataFrame:
    """The decision rows of one (model, condition) cell."""
    return decisions[(decisions["model"] == model) & (decisions["condition"] == condition)]


def per_case(rows: pd.DataFrame, ids) -> tuple[pd.DataFrame, list]:
    """Per case id of `ids`, in order: the mean answer `y`, the mean `p` of the
    positive answer (NaN where the backend gave none) and `trials`, over the
    rows with a valid answer (reasoning mode without one is missing, not
    "negative"). Returns that frame and the ids with no valid decision (the
    frame then holds only the others)."""
    valid = rows[rows["y"] >= 0]
    g = valid.groupby("case_id").agg(y=("y", "mean"), p=("p_positive", "mean"),
                                     trials=("y", "size"))
    ids = list(ids)
    missing = [i for i in ids if i not in g.index]
    return g.loc[[i for i in ids if i in g.index]], missing
