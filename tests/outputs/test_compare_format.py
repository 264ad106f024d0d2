"""`lensaudit compare`'s table and page from a frame of cells (no server)."""

import math

import pandas as pd

from engine.outputs._compare import METRICS, comparison_html, format_comparison

NAN = math.nan


def _cells(**rows) -> pd.DataFrame:
    base = {m: NAN for m in METRICS}
    base.update(run_id="abc", run_name="job", job="j", model="m", started=pd.Timestamp(0),
                note="")
    return pd.DataFrame([{**base, "condition": c, **v} for c, v in rows.items()],
                        columns=["run_id", "run_name", "job", "model", "condition", "started",
                                 *METRICS, "note"])  # as compare_runs orders them


def test_each_estimate_prints_with_its_interval_and_alone_where_it_has_none():
    df = _cells(
        baseline=dict(r_cos_cf=0.812, r_cos_cf_ci_low=0.7, r_cos_cf_ci_high=0.9, r_cos=0.5,
                      r_cos_soft=0.6, r_cos_soft_ci_low=0.4, r_cos_soft_ci_high=0.75),
        # a condition that moves no decision: the change is 0 without an interval
        introspective=dict(r_cos_cf=0.812, r_cos_cf_ci_low=0.7, r_cos_cf_ci_high=0.9,
                           alignment_change=0.0, r_cos=0.5),
        org_externalized=dict(r_cos_cf=0.9, alignment_change=0.088, alignment_change_low=-0.01,
                              alignment_change_high=0.2, r_cos=0.6))
    lines = format_comparison(df).splitlines()
    base, intro, org = (next(x for x in lines[1:] if c in x)
                        for c in ("baseline", "introspective", "org_externalized"))
    assert "0.812 [+0.700, +0.900]" in base and "+0.600 [+0.400, +0.750]" in base
    assert "+0.000" in intro and intro.count("[") == 1  # the alignment's interval only
    assert "+0.088 [-0.010, +0.200]" in org and org.count("[") == 1  # no alignment interval
    page = comparison_html(df)
    assert "+0.812 [+0.700, +0.900]" in page and "+0.900<br>" in page
    # two cells without the soft lens; no cell has accuracy, AUC, kappa or G
    assert page.count("undefined") == 2 + 3 * 4
