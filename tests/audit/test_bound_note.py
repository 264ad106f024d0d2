"""A defined alignment whose interval reaches +-1 says what it would read there."""

import numpy as np

import kernels
from engine.audit import CellResult, bound_note
from engine.outputs._tracking import summary_table


def _comparison(estimate, low, high, bound_bias):
    fields = {f: np.nan for f in kernels.LensComparison._fields}
    fields.update(r_cos_cf=estimate, r_cos_cf_ci=kernels.Interval(low, high),
                  r_cos_cf_bound_bias=bound_bias, r_cos_cf_reason=None, beta_org=np.ones(3),
                  beta_dm=np.ones(3), r_cos_cf_raw=estimate,
                  r_cos_ci=kernels.Interval(np.nan, np.nan))
    return kernels.LensComparison(**fields)


def test_an_interval_reaching_1_at_weak_signal_notes_the_shortfall_there():
    note = bound_note(_comparison(0.91, 0.55, 1.0, -0.066))
    assert "reaches +1" in note and "the same" in note and "0.066 short" in note
    # ... and at -1 on the other side.
    assert "reaches -1" in bound_note(_comparison(-0.9, -1.0, -0.6, 0.05))


def test_no_note_where_the_interval_stops_short_of_1_or_the_shortfall_is_small():
    assert bound_note(_comparison(0.91, 0.55, 0.999, -0.066)) is None
    assert bound_note(_comparison(0.91, 0.55, 1.0, -0.02)) is None
    assert bound_note(_comparison(0.91, np.nan, np.nan, np.nan)) is None


def test_the_note_reaches_the_summary_line_and_a_missing_figures_reason_comes_first():
    cell = CellResult("m", "baseline", 600, _comparison(0.91, 0.55, 1.0, -0.066))
    row = summary_table([cell]).iloc[0]
    assert "0.066 short" in row["note"] and row["r_cos_cf_bound_bias"] == -0.066
    refused = CellResult("m", "baseline", 600, _comparison(0.91, 0.55, 1.0, -0.066),
                         r_cos_reason="its policy is flat")
    assert summary_table([refused]).iloc[0]["note"] == "its policy is flat"
