"""Metrics and statistics against scipy / scikit-learn, and their definitions."""

import jax
import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import cohen_kappa_score, roc_auc_score

import kernels


def test_auc_with_ties_matches_sklearn(rng):
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 5, 300) / 4.0  # many ties
    assert float(kernels.roc_auc(y, s)) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_undefined_for_one_class():
    assert np.isnan(float(kernels.roc_auc(np.ones(5), np.arange(5.0))))


def test_kappa_accuracy_pearson_match_references(rng):
    a = rng.integers(0, 2, 200)
    b = np.where(rng.random(200) < 0.7, a, 1 - a)
    assert float(kernels.cohen_kappa(a, b)) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert float(kernels.accuracy(a, b)) == pytest.approx(np.mean(a == b))
    x, y = rng.standard_normal(50), rng.standard_normal(50)
    ref = scipy.stats.pearsonr(x, y)
    assert float(kernels.pearson_r(x, y)) == pytest.approx(ref.statistic, abs=1e-12)
    assert float(kernels.pearson_pvalue(ref.statistic, 50)) == pytest.approx(ref.pvalue, rel=1e-8)


def test_basic_and_percentile_intervals_follow_their_definitions(rng):
    reps = rng.normal(0.7, 0.05, 2000)
    obs = 0.8
    basic = kernels.bootstrap_interval(obs, reps, method="basic")
    pct = kernels.bootstrap_interval(obs, reps, method="percentile")
    q_lo, q_hi = np.quantile(reps, [0.025, 0.975])
    assert float(pct.low) == pytest.approx(q_lo) and float(pct.high) == pytest.approx(q_hi)
    assert float(basic.low) == pytest.approx(2 * obs - q_hi)
    assert float(basic.high) == pytest.approx(2 * obs - q_lo)


def test_bca_equals_percentile_without_bias_or_skew(rng):
    reps = rng.normal(0.0, 1.0, 4000)
    obs = float(np.median(reps))
    jack = rng.normal(0.0, 1.0, 200)
    jack = np.concatenate([jack, -jack])  # symmetric: acceleration 0
    bca = kernels.bootstrap_interval(obs, reps, method="bca", jackknife=jack)
    pct = kernels.bootstrap_interval(obs, reps, method="percentile")
    assert float(bca.low) == pytest.approx(float(pct.low), abs=0.02)
    assert float(bca.high) == pytest.approx(float(pct.high), abs=0.02)


def test_permutation_pvalue_definition():
    null = np.array([0.1, 0.5, 0.9, np.nan])
    # 0.9 and the undefined one count as >= 0.6: (1 + 2) / (4 + 1)
    assert float(kernels.permutation_pvalue(0.6, null)) == pytest.approx(3 / 5)
    assert np.isnan(float(kernels.permutation_pvalue(np.nan, null)))


def test_family_shares_sum_to_one():
    beta = np.array([1.0, -1.0, 2.0, 0.0])
    shares = np.asarray(kernels.family_shares(beta, np.array([0, 0, 1, 1]), 2))
    assert shares == pytest.approx([0.5, 0.5])


def test_stratified_folds_balance_classes():
    y = np.array([0] * 30 + [1] * 70)
    folds = np.asarray(kernels.stratified_folds(jax.random.PRNGKey(0), y, 10))
    for f in range(10):
        assert (y[folds == f] == 0).sum() == 3 and (y[folds == f] == 1).sum() == 7


def test_cross_validated_policy_matches_sklearn_loop(german, german_encoded):
    import warnings

    from sklearn.linear_model import LogisticRegression

    X = german_encoded.X
    y = german.table["decision"].to_numpy(float)
    key = jax.random.PRNGKey(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.ConstantCueWarning)
        cv = kernels.cross_validated_policy(X, y, key=key, k=10)
    folds = np.asarray(kernels.stratified_folds(key, y, 10))
    prob = np.empty(len(y))
    for f in range(10):
        m = LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-10).fit(X[folds != f], y[folds != f])
        prob[folds == f] = m.predict_proba(X[folds == f])[:, 1]
    assert cv.auc == pytest.approx(roc_auc_score(y, prob), abs=1e-6)
    assert 0.7 < cv.accuracy < 0.8  # the known ~75% ceiling of this data set


def test_compare_policies_recovers_a_shared_policy(rng):
    n, p = 600, 8
    X = rng.standard_normal((n, p))
    beta = rng.standard_normal(p)
    y_org = (rng.random(n) < 1 / (1 + np.exp(-X @ beta))).astype(float)
    y_dm = (rng.random(n) < 1 / (1 + np.exp(-X @ beta))).astype(float)
    c = kernels.compare_policies(X, y_org, y_dm, key=jax.random.PRNGKey(0),
                                 n_bootstrap=200, n_permutations=200)
    assert c.r_cos > 0.8 and c.r_cos_ci.low <= c.r_cos <= c.r_cos_ci.high
    # The same population policy: the cross-fitted cosine reads near 1 (the
    # plain one reads lower), and its interval reaches 1.
    assert c.r_cos_cf > c.r_cos and c.r_cos_cf_ci.low <= c.r_cos_cf <= c.r_cos_cf_ci.high
    assert c.r_cos_cf_ci.high >= 0.99 and c.r_cos_cf_reason is None
    assert c.p_perm == pytest.approx(1 / 201)
    assert c.n_unconverged == 0

    # The organisation's side made once and shared gives the same comparison;
    # one made with other settings is refused, not silently unpaired.
    key, kw = jax.random.PRNGKey(0), dict(n_bootstrap=200, n_permutations=200)
    ref = kernels.lens_reference(X, y_org, key=key, n_bootstrap=200)
    shared = kernels.compare_policies(X, y_org, y_dm, key=key, reference=ref, **kw)
    for field, value in c._asdict().items():
        np.testing.assert_array_equal(np.asarray(getattr(shared, field), dtype=object),
                                      np.asarray(value, dtype=object), err_msg=field)
    for other in (dict(key=jax.random.PRNGKey(5)), dict(key=key, n_bootstrap=201),
                  dict(key=key, C=2.0), dict(key=key, interval="bca")):
        with pytest.raises(ValueError, match="reference was made with other"):
            kernels.compare_policies(X, y_org, y_dm, reference=ref, **{**kw, **other})

    # Its two parts, fitted apart (two worker processes) and joined, are the whole.
    parts = {p: kernels.lens_reference(X, y_org, key=key, n_bootstrap=200, part=p)
             for p in kernels.REFERENCE_PARTS}
    assert parts["resamples"].crossfit is None and parts["crossfit"].boot is None
    joined = kernels.join_reference(parts["resamples"], parts["crossfit"])
    assert jax.tree.structure(joined) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(joined), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="needs the 'resamples' part"):
        kernels.join_reference(parts["crossfit"], parts["resamples"])
    # A stand-in for the cross-fitted part has the real one's shapes and splits
    # (a comparison with it compiles the same programs) and leaves every
    # figure that does not come from it as it was.
    stand_in = kernels.stand_in_reference(parts["resamples"])
    for a, b in zip(stand_in.crossfit, ref.crossfit):
        assert np.shape(a) == np.shape(b)
    np.testing.assert_array_equal(stand_in.crossfit.splits, ref.crossfit.splits)
    rehearsed = kernels.compare_policies(X, y_org, y_dm, key=key, reference=stand_in, **kw)
    for field in ("r_cos", "r_cos_ci", "p_perm", "boot_beta_dm", "null_r_cos", "accuracy"):
        np.testing.assert_array_equal(getattr(rehearsed, field), getattr(c, field), err_msg=field)
    # Without its cross-fitted side the stand-in leaves that figure out, with its
    # reason, and every other figure as it was.
    without = kernels.stand_in_reference(parts["resamples"], cross_fitted=False)
    partial = kernels.compare_policies(X, y_org, y_dm, key=key, reference=without, **kw)
    assert np.isnan(partial.r_cos_cf) and "stand-in" in partial.r_cos_cf_reason
    for field in ("r_cos", "r_cos_ci", "p_perm", "boot_beta_dm", "null_r_cos", "accuracy"):
        np.testing.assert_array_equal(getattr(partial, field), getattr(c, field), err_msg=field)
    with pytest.raises(ValueError, match="part must be one of"):
        kernels.lens_reference(X, y_org, key=key, part="boot")

    # The resampling refits stop at RESAMPLE_TOL, above the estimates' 1e-10
    # (benchmarks/README.md: the audit's statistics moved by at most 3e-8).
    assert ref.boot.converged.all() and ref.boot.max_abs_grad.max() <= kernels.RESAMPLE_TOL
    assert ref.boot.max_abs_grad.max() > 1e-10 >= float(ref.fit.max_abs_grad)

    # A second condition of the same decision-maker: its change from the first
    # has an interval that contains it.
    y_2 = (rng.random(n) < 1 / (1 + np.exp(-X @ beta))).astype(float)
    c2 = kernels.compare_policies(X, y_org, y_2, key=key, reference=ref, **kw)
    ch = kernels.alignment_change(c, c2)
    assert ch.delta == pytest.approx(c2.r_cos_cf - c.r_cos_cf) and ch.reason is None
    assert ch.interval.low <= ch.delta <= ch.interval.high and ch.interval.low < 0 < ch.interval.high


def test_protected_table_rows_intervals_and_share(rng):
    from engine.audit import CellResult, policy_table, protected_table

    n, d = 400, 4
    X = rng.standard_normal((n, d))
    y_org = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, 0.5, 0.0, 0.0])))).astype(float)
    y_dm = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.0, 0.5, 1.5, 0.0])))).astype(float)
    comp = kernels.compare_policies(X, y_org, y_dm, key=jax.random.PRNGKey(0),
                                    n_bootstrap=300, n_permutations=50)
    cell = CellResult("m", "baseline", n, comp)
    cols = ["a", "b", "sex", "age"]
    table = policy_table(cols, cols, cell, [False, False, True, True], ["x"] * 4)
    np.testing.assert_allclose(table["beta_diff"], comp.beta_dm - comp.beta_org)
    prot = protected_table(table, cell)
    assert list(prot["column"]) == ["sex", "age", "(all protected)"]
    sex = prot.iloc[0]
    # The decision-maker weighs 'sex' and the organisation does not: the paired
    # interval of the difference excludes 0.
    assert sex.beta_diff_low > 0.5 and sex.beta_org_low < 0 < sex.beta_org_high
    share = prot.iloc[2]
    expected = np.abs(comp.beta_dm[2:]).sum() / np.abs(comp.beta_dm).sum()
    assert share.beta_dm == pytest.approx(expected)
    assert share.beta_dm_low <= share.beta_dm <= share.beta_dm_high
    # The share's interval is the percentile one whatever the weights' method
    # (the calibration grid: the basic one covered 0.77-0.945 at n = 1,000).
    reps = np.abs(comp.boot_beta_dm[:, 2:]).sum(1) / np.abs(comp.boot_beta_dm).sum(1)
    low, high = np.quantile(reps, [0.025, 0.975])
    assert share.beta_dm_low == pytest.approx(min(low, share.beta_dm), abs=1e-6)
    assert share.beta_dm_high == pytest.approx(max(high, share.beta_dm), abs=1e-6)
    assert share.beta_diff_low > 0
    none = protected_table(table.assign(protected=False), cell)
    assert none.empty

    # Replicates whose protected weights are all inflated (as noise inflates
    # small weights): the percentile interval of the change in share lies
    # wholly above the change; the table's holds it.
    inflated = comp.boot_beta_dm.copy()
    inflated[:, 2:] *= 3.0
    skewed = CellResult("m", "baseline", n, comp._replace(boot_beta_dm=inflated))
    share = protected_table(policy_table(cols, cols, skewed, [False, False, True, True],
                                         ["x"] * 4), skewed).iloc[2]
    reps = np.abs(inflated[:, 2:]).sum(1) / np.abs(inflated).sum(1)
    org_reps = np.abs(comp.boot_beta_org[:, 2:]).sum(1) / np.abs(comp.boot_beta_org).sum(1)
    assert np.quantile(reps - org_reps, 0.025) > share.beta_diff  # the percentile one misses it
    assert share.beta_diff_low == pytest.approx(share.beta_diff)
    assert share.beta_diff <= share.beta_diff_high == pytest.approx(
        np.quantile(reps - org_reps, 0.975), abs=1e-6)
    assert share.beta_dm_low == pytest.approx(share.beta_dm)  # each side held as before


def test_an_interval_is_made_to_hold_its_estimate_inside_the_range():
    """`kernels.holding`: widened to its estimate, clipped to the statistic's
    range, and a missing interval stays missing (not the point [obs, obs])."""
    I = kernels.Interval
    assert kernels.holding(0.85, I(0.887, 1.04), -1.0, 1.0) == (0.85, 1.0)
    assert kernels.holding(0.2, I(-1.3, 0.1), -1.0, 1.0) == (-1.0, 0.2)
    assert kernels.holding(0.5, I(0.4, 0.6), 0.0, 1.0) == (0.4, 0.6)
    nan = float("nan")
    assert all(np.isnan(kernels.holding(0.5, I(nan, nan), -1.0, 1.0)))
