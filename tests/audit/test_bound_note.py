"""A defined alignment whose interval reaches +-1 says what it would read there."""

import numpy as np

import kernels
from engine.audit import CellResult, bound_note, estimate_note, wide_note
from engine.audit import summary_table


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


def test_a_cells_tags_carry_its_note_or_its_reason_never_both():
    noted = CellResult("m", "baseline", 600, _comparison(0.91, 0.55, 1.0, -0.066))
    assert noted.alignment_tags() == {"lensaudit.r_cos_cf_note": noted.alignment_note}
    refused = CellResult("m", "baseline", 600, _comparison(0.91, 0.55, 1.0, -0.066),
                         r_cos_reason="its policy is flat")
    assert refused.alignment_tags() == {"lensaudit.r_cos_undefined": "its policy is flat",
                                        "lensaudit.r_cos_cf_undefined": "its policy is flat"}


def test_the_align_lens_audit_carries_the_note_to_its_table_summary_and_tags():
    """ALIGN's lens table, console lines and MLflow tags say what the CALM
    summary says of a cell whose interval reaches +1; a note is not a reason."""
    import pandas as pd

    from engine.align.job import format_lens
    from engine.align.lens import lens_table, lens_tags
    from engine.audit import AuditResult, OrgPolicy

    cell = CellResult("m", "prompt_aligned:fairness=high", 600,
                      _comparison(0.91, 0.55, 1.0, -0.066))
    weights = pd.DataFrame({"column": ["fairness"], "beta_org": [1.0], "beta_org_low": [0.5],
                            "beta_org_high": [1.5], "beta_dm": [1.2], "beta_dm_low": [0.6],
                            "beta_dm_high": [1.8], "beta_diff": [0.2], "beta_diff_low": [-0.3],
                            "beta_diff_high": [0.7], "status": [""]})
    audit = AuditResult(OrgPolicy(0.0, np.ones(3), np.nan, np.nan), [cell],
                        {(cell.model, cell.condition): weights}, {}, [], summary_table([cell]))
    assert "0.066 short" in lens_table({"m": audit})["note"].iloc[0]
    lines = format_lens({"m": audit})
    assert lines[-1] == f"    alignment: {cell.alignment_note}"
    assert lens_tags({"m": audit}) == {(cell.model, cell.condition): cell.alignment_tags()}
    assert "lensaudit.r_cos_cf_undefined" not in cell.alignment_tags()


def test_an_interval_holding_both_minus_and_plus_half_says_the_estimate_means_little():
    """At few cases per column the estimate can read -1 (clipped) with an
    interval over nearly all of [-1, 1] (the bundled model's audit: -1.000
    [-1.000, +0.996]); that note replaces the bound's shortfall."""
    wide = _comparison(-1.0, -1.0, 0.996, 0.76)
    note = wide_note(wide)
    assert "-1.000 to +0.996" in note and "says little" in note
    assert estimate_note(wide) == note and bound_note(wide) != note
    cell = CellResult("m", "baseline", 140, wide)
    assert cell.alignment_note == note
    assert summary_table([cell]).iloc[0]["note"] == note
    # An interval that excludes either side is not noted as wide.
    assert wide_note(_comparison(0.2, -0.45, 0.9, 0.0)) is None
    assert wide_note(_comparison(0.2, -0.6, 0.45, 0.0)) is None
    assert wide_note(_comparison(0.2, np.nan, np.nan, 0.0)) is None
    # The bound's note still stands where the interval is narrower.
    assert estimate_note(_comparison(0.91, 0.55, 1.0, -0.066)) == bound_note(
        _comparison(0.91, 0.55, 1.0, -0.066))
