"""The report's table of changes between conditions: every figure a column."""

import math

from engine.audit import ConditionChange


def test_the_soft_change_is_three_columns_and_missing_where_a_cell_has_no_soft_lens():
    soft = ConditionChange("m", "org_externalized", 0.1, -0.05, 0.2, 0.08, "",
                           (0.0, math.nan, math.nan), "the decisions are the same").row()
    assert (soft["soft_delta"], soft["soft_reason"]) == (0.0, "the decisions are the same")
    assert math.isnan(soft["soft_low"]) and math.isnan(soft["soft_high"])
    assert not any(isinstance(v, tuple) for v in soft.values())
    hard_only = ConditionChange("m", "introspective", 0.1, -0.05, 0.2, 0.08, "").row()
    assert math.isnan(hard_only["soft_delta"]) and list(hard_only) == list(soft)
