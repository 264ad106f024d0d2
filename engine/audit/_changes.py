"""Changes in alignment between a model's conditions: each condition's cell
against the same model's baseline, paired by simulation world (every cell of
a job shares the organisation's side, so its noise cancels, as in the study).
Computed in the audit stage, into the cells; the report and MLflow show them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import kernels


@dataclass
class ConditionChange:
    model: str
    condition: str
    delta: float  # alignment (cross-fitted) in the condition minus at baseline
    low: float
    high: float
    plain_delta: float  # the paper's plain r_cos change, beside it
    reason: str  # why delta or its interval is undefined ("" when defined)
    # The same change of the soft lens, where both cells have one: (delta, low, high).
    soft: tuple[float, float, float] | None = None
    soft_reason: str = ""  # why the soft change or its interval is undefined

    def row(self) -> dict:
        """The report's table row, the soft change in columns of its own."""
        soft = self.soft or (np.nan, np.nan, np.nan)
        return {"model": self.model, "condition": self.condition, "delta": self.delta,
                "low": self.low, "high": self.high, "plain_delta": self.plain_delta,
                "reason": self.reason, "soft_delta": soft[0], "soft_low": soft[1],
                "soft_high": soft[2], "soft_reason": self.soft_reason}


def condition_changes(cells, *, level: float = 0.95) -> list[ConditionChange]:
    """Change in alignment from each model's baseline, with an interval from
    the simulation worlds paired by draw (`kernels.alignment_change`; the cells
    share the organisation's side, so its noise cancels as in the study)."""
    base = {c.model: c for c in cells if c.condition == "baseline"}
    out = []
    for c in cells:
        b = base.get(c.model)
        if b is None or c is b or c.n_cases != b.n_cases \
                or c.comparison.r_cos_cf_world.shape != b.comparison.r_cos_cf_world.shape:
            continue
        ch = kernels.alignment_change(b.comparison, c.comparison, level=level)
        soft, soft_reason = None, ""
        if b.soft is not None and c.soft is not None:
            sc = kernels.alignment_change(b.soft, c.soft, level=level)
            soft = (sc.delta, float(sc.interval.low), float(sc.interval.high))
            soft_reason = sc.reason or ""
        out.append(ConditionChange(c.model, c.condition, ch.delta, float(ch.interval.low),
                                   float(ch.interval.high),
                                   float(c.comparison.r_cos - b.comparison.r_cos),
                                   ch.reason or "", soft, soft_reason))
    return out


def add_condition_changes(cells, *, level: float = 0.95) -> list[ConditionChange]:
    """`condition_changes`, each also set on its cell (`change`, `soft_change`)."""
    changes = condition_changes(cells, level=level)
    by_cell = {(c.model, c.condition): c for c in cells}
    for ch in changes:
        by_cell[(ch.model, ch.condition)].change = (ch.delta, ch.low, ch.high)
        by_cell[(ch.model, ch.condition)].soft_change = ch.soft
    return changes
