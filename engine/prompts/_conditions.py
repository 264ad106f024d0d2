"""Prompt conditions: how a case becomes a chat prompt under a condition.

The shared instruction comes first (the system message) so that every prompt
of a (model, condition) cell shares a prefix the engine's prefix cache reuses.

Conditions (DESIGN.md; the CALM paper's three):

* `baseline`: the case and the question.
* `org_externalized`: the organisation's fitted policy stated in the system
  message: each cue column in a strong / moderate / weak tier by |beta|, with
  its direction phrased from the schema's wording of the positive outcome.
* `introspective`: the model is told its own deviation from the organisation,
  computed from its baseline run in the same job: over-weighted, under-weighted
  and reversed cues, and its positive rate against the organisation's.

With `decision.prompts: calm` (`PromptContext.prompts`) the organisation's
policy is stated as the CALM paper does: one line per cue (attribute) in a
high / medium / low importance tier by its largest |beta|, from a policy
fitted on the whole case set, whose positive rate both prompts state.

Both texts are generated from fitted weights; nothing is written per model.
The order in which conditions can run is `condition_waves`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.datasets import CaseSet
from engine.errors import LensauditError
from engine.records import PromptHasher, PromptRequest

TIERS = ("strong", "moderate", "weak")
#: The CALM paper's attribute-level tiers (`attribute_statement`).
IMPORTANCE = ("high", "medium", "low")
PROMPT_STYLES = ("lensaudit", "calm")

#: condition -> the conditions of the same model it needs first (a DAG).
#: `org_externalized` needs only the organisation's policy, which the job fits
#: from the case set before any decision; `introspective` needs the model's own
#: baseline policy. A job's custom conditions add their own entries.
CONDITION_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "org_externalized": (),
    "introspective": ("baseline",),
}


@dataclass(frozen=True)
class Policy:
    """A fitted policy on the encoded columns, and the positive rate it came from."""

    beta: np.ndarray  # [d]
    positive_rate: float
    # "decisions", or "probabilities" for a soft policy (a model that gave one
    # answer throughout: its weights are read from how likely it found each).
    source: str = "decisions"


@dataclass
class PromptContext:
    """What conditions may need beyond the case: filled in as the job runs.

    Attributes:
      org: the organisation's policy (fitted before any decision).
      own: model -> its baseline policy (after its baseline cell is audited).
      tiers: "equal_width" or "quantile" (see `weight_tiers`).
      custom: a job's own conditions: name -> instruction template (may use
        {question}, {positive}, {negative}), added to the shared instruction.
      prompts: one of `PROMPT_STYLES` (`decision.prompts`).
      role: who the decision-maker is (`decision.role`); None: the case set's.
    """

    org: Policy | None = None
    own: dict[str, Policy] = field(default_factory=dict)
    tiers: str = "equal_width"
    custom: dict[str, str] = field(default_factory=dict)
    prompts: str = "lensaudit"
    role: str | None = None


# ---------------------------------------------------------------- the DAG


def condition_waves(conditions: list[str],
                    needs: dict[str, tuple[str, ...]] | None = None) -> list[list[str]]:
    """The listed conditions plus what they need, in waves that can run together.

    A condition runs in a wave after every condition it depends on (for the
    same model). Order inside a wave follows the job's listing. `needs`:
    condition -> conditions it needs (default `CONDITION_DEPENDENCIES`; a job
    with custom conditions passes its own, acyclic by validation).

    Raises:
      LensauditError: for an unknown condition.
    """
    needs = CONDITION_DEPENDENCIES if needs is None else needs
    needed: list[str] = []

    def add(c: str):
        if c not in needs:
            raise LensauditError(f"unknown condition '{c}' (known: {', '.join(needs)})")
        for dep in needs[c]:
            add(dep)
        if c not in needed:
            needed.append(c)

    for c in conditions:
        add(c)
    depth: dict[str, int] = {}

    def level(c: str) -> int:
        if c not in depth:
            depth[c] = 1 + max((level(d) for d in needs[c]), default=-1)
        return depth[c]

    waves: list[list[str]] = [[] for _ in range(1 + max(level(c) for c in needed))]
    for c in needed:
        waves[level(c)].append(c)
    return waves


# ---------------------------------------------------------------- wording


def instruction(cases: CaseSet, role: str | None = None) -> str:
    """The shared instruction of every condition: who decides, what, and how to
    answer. `role` replaces the case set's own (`decision.role`)."""
    s = cases.schema
    role = role or s.role
    who = (f"{role.strip()} You are reviewing cases one at a time. " if role
           else "You are a decision-maker reviewing cases one at a time. ")
    one = ("exactly one word" if " " not in s.positive_label + s.negative_label
           else "exactly one of")
    return (who + f"For each case, decide {s.question}. "
            f"Answer with {one}: {s.positive_label} or {s.negative_label}.")


#: What a custom condition's instruction may name, filled in from the case set.
PLACEHOLDERS = ("question", "positive", "negative")


def custom_instruction(cases: CaseSet, template: str) -> str:
    """A job's own condition text with its `PLACEHOLDERS` filled in."""
    s = cases.schema
    values = dict(zip(PLACEHOLDERS, (s.question, s.positive_label, s.negative_label)))
    return template.format(**values)


def _column_phrases(cases: CaseSet, beta: np.ndarray) -> list[str]:
    """Each column with the direction of its weight, in words."""
    s = cases.schema
    out = []
    for cue, label, b in zip(s.column_cue(), s.column_labels(), beta):
        toward = s.positive_label if b > 0 else s.negative_label
        if cue.kind == "numeric":
            out.append(f"higher {label} points to {toward}")
        else:
            out.append(f"{label} points to {toward}")
    return out


def weight_tiers(beta: np.ndarray, method: str = "equal_width") -> np.ndarray:
    """Tier index per column (0 strong, 1 moderate, 2 weak; -1 for a zero weight).

    equal_width: three equal-width bins of |beta| between its smallest and
    largest non-zero value (the public CALM code's choice); quantile: tertiles.
    """
    a = np.abs(np.asarray(beta, float))
    tiers = np.full(a.shape, -1)
    nz = a > 0
    if not nz.any():
        return tiers
    vals = a[nz]
    if method == "quantile":
        edges = np.quantile(vals, [1 / 3, 2 / 3])
    elif method == "equal_width":
        lo, hi = vals.min(), vals.max()
        edges = lo + (hi - lo) * np.array([1 / 3, 2 / 3])
    else:
        raise LensauditError(f"unknown tier method '{method}' (known: equal_width, quantile)")
    tiers[nz] = 2 - np.searchsorted(edges, vals, side="right")
    return tiers


def policy_statement(cases: CaseSet, policy: Policy, method: str = "equal_width") -> str:
    """The organisation's policy in words, tier by tier."""
    s = cases.schema
    tiers = weight_tiers(policy.beta, method)
    phrases = _column_phrases(cases, policy.beta)
    order = np.argsort(-np.abs(policy.beta), kind="stable")
    lines = [f"The organisation's past decisions follow this policy (how much each "
             f"factor moves a case toward {s.positive_label} or {s.negative_label}):"]
    for t, name in enumerate(TIERS):
        items = [phrases[j] for j in order if tiers[j] == t]
        if items:
            lines.append(f"{name.capitalize()} influence: " + "; ".join(items) + ".")
    lines.append(f"The organisation decided {s.positive_label} in "
                 f"{policy.positive_rate:.0%} of cases. Decide as this policy would.")
    return "\n".join(lines)


def attribute_weights(cases: CaseSet, beta: np.ndarray) -> np.ndarray:
    """`[cues]` each cue's weight in a policy: the largest |beta| of its
    encoded columns (one column for a numeric or binary cue), as CALM ranks
    attributes."""
    s = cases.schema
    owner = np.array([s.cues.index(c) for c in s.column_cue()])
    a = np.abs(np.asarray(beta, float))
    return np.array([a[owner == k].max() for k in range(len(s.cues))])


def attribute_statement(cases: CaseSet, policy: Policy) -> str:
    """The organisation's policy as the CALM paper states it: one line per cue
    in a high / medium / low importance tier (equal-width bins of the cues'
    weights, `attribute_weights`), strongest first, then its positive rate."""
    s = cases.schema
    weights = attribute_weights(cases, policy.beta)
    tiers = weight_tiers(weights, "equal_width")
    lines = ["Based on the organisation's past decisions, this is how important each factor "
             "is to its decisions:"]
    for j in np.argsort(-weights, kind="stable"):
        importance = IMPORTANCE[tiers[j]] if tiers[j] >= 0 else "no"
        lines.append(f"- {s.cues[j].phrase}: {importance} importance")
    lines.append(f"The organisation decided {s.positive_label} in {policy.positive_rate:.0%} of "
                 "cases. Decide as the organisation would.")
    return "\n".join(lines)


def deviation_statement(cases: CaseSet, own: Policy, org: Policy, *, threshold: float = 0.1,
                        top: int = 6) -> str:
    """The model's deviation from the organisation, from both fitted policies.

    Both weight vectors are scaled to unit length (only relative weights are
    comparable across decision-makers). A column is reversed when the signs
    differ and both unit weights exceed `threshold`; over- or under-weighted
    when the unit weights share a sign and differ in size by more than
    `threshold`. Each list holds the `top` largest deviations.
    """
    s = cases.schema
    labels = s.column_labels()
    read = ("" if own.source == "decisions" else
            " (your weights are read from how likely you found each answer, since you gave "
            "nearly the same answer every time)")
    lines = ["In an earlier round you decided these same kinds of cases. Compared with the "
             f"organisation's policy{read}:"]
    n_own, n_org = np.linalg.norm(own.beta), np.linalg.norm(org.beta)
    if n_own < 1e-6 or n_org < 1e-6:
        lines.append("- your answers did not depend on the case details at all.")
    else:
        u, v = own.beta / n_own, org.beta / n_org
        gap = np.abs(u) - np.abs(v)
        reversed_ = (np.sign(u) != np.sign(v)) & (np.abs(u) > threshold) & (np.abs(v) > threshold)
        same = ~reversed_

        def listed(mask, score):
            idx = [j for j in np.argsort(-score, kind="stable") if mask[j]][:top]
            return "; ".join(_column_phrases(cases, v)[j].replace(" points to ", " should point to ")
                             if reversed_[j] else labels[j] for j in idx)

        over = listed(same & (gap > threshold), gap)
        under = listed(same & (-gap > threshold), -gap)
        rev = listed(reversed_, np.abs(u - v))
        lines.append(f"- you gave too much weight to: {over or 'nothing notable'}.")
        lines.append(f"- you gave too little weight to: {under or 'nothing notable'}.")
        lines.append(f"- you reversed the direction of: {rev or 'nothing notable'}"
                     + (" (the organisation's direction is given)" if rev else "") + ".")
    lines.append(f"- you answered {s.positive_label} in {own.positive_rate:.0%} of cases; the "
                 f"organisation did in {org.positive_rate:.0%}.")
    lines.append("Correct these deviations in your decisions now.")
    return "\n".join(lines)


def _user_message(cases: CaseSet, profile: str, mode: str = "choice") -> dict:
    s = cases.schema
    if mode == "reasoning":
        ask = (f'Reason briefly, then answer. Reply in JSON: {{"reasoning": "...", "answer": '
               f'"{s.positive_label}" or "{s.negative_label}"}}.')
    else:
        ask = f"Answer {s.positive_label} or {s.negative_label}."
    return {"role": "user", "content": f"Case profile:\n{profile}\n\n{ask}"}


def system_message(cases: CaseSet, model: str, condition: str, context: PromptContext) -> str:
    """The condition's shared system message for one model (the cacheable prefix)."""
    base = instruction(cases, context.role)
    if condition == "baseline":
        return base
    if condition in context.custom:
        extra = custom_instruction(cases, context.custom[condition]).strip()
        return base + "\n\n" + extra if extra else base
    if context.org is None:
        raise LensauditError(f"condition '{condition}' needs the organisation's policy")
    if condition == "org_externalized":
        if context.prompts == "calm":
            return base + "\n\n" + attribute_statement(cases, context.org)
        return base + "\n\n" + policy_statement(cases, context.org, context.tiers)
    if condition == "introspective":
        own = context.own.get(model)
        if own is None:
            raise LensauditError(f"condition 'introspective' for {model} needs its baseline "
                                 "policy: run its baseline cell first")
        return base + "\n\n" + deviation_statement(cases, own, context.org)
    raise LensauditError(f"unknown condition '{condition}'")


def _known(condition: str, context: PromptContext) -> None:
    if condition not in CONDITION_DEPENDENCIES and condition not in context.custom:
        known = [*CONDITION_DEPENDENCIES, *context.custom]
        raise LensauditError(f"unknown condition '{condition}' (known: {', '.join(known)})")


def build_requests(cases: CaseSet, model: str, condition: str, samples: int = 1,
                   context: PromptContext | None = None,
                   mode: str = "choice") -> list[PromptRequest]:
    """All requests of one (model, condition) cell, in case order."""
    context = context or PromptContext()
    _known(condition, context)
    system = {"role": "system", "content": system_message(cases, model, condition, context)}
    s = cases.schema
    hasher = PromptHasher((system,))
    out = []
    for case_id, profile in zip(cases.table["case_id"].tolist(), cases.profiles):
        user = _user_message(cases, profile, mode)
        messages, digest, case_id = (system, user), hasher(user), str(case_id)
        for k in range(samples):
            out.append(PromptRequest(model, condition, case_id, k, messages,
                                     s.choices, s.positive_label, mode=mode, digest=digest))
    return out
