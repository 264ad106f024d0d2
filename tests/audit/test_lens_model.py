"""Brunswik's Lens Model Equation (issue 17, item 1): the identity in sample,
each term against scikit-learn's least squares, resamples against replicated
rows, and the out-of-fold consistency against cross_val_predict."""

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import PredefinedSplit, cross_val_predict

import kernels


@pytest.fixture(scope="module")
def lens(german_encoded, german):
    """German Credit's cues (63 one-hot and numeric columns, collinear with the
    intercept), its decisions as the criterion, a noisy judge as the judgment."""
    X = german_encoded.X
    y_e = german.table["decision"].to_numpy(float)
    rng = np.random.default_rng(4)
    z = X @ rng.standard_normal(X.shape[1]) * 0.4 + 1.5 * (y_e - 0.5)
    y_s = (z + rng.logistic(size=len(z)) > 0).astype(float)
    return X, y_e, y_s


def test_the_equation_holds_exactly_in_sample(lens):
    L = kernels.lens_model_equation(*lens)
    rebuilt = L.G * L.R_e * L.R_s + L.C * np.sqrt(1 - L.R_e**2) * np.sqrt(1 - L.R_s**2)
    assert abs(float(L.r_a) - float(rebuilt)) < 1e-9
    assert 0 < L.R_e < 1 and 0 < L.R_s < 1 and -1 < L.G < 1


def test_each_term_matches_scikit_learn_least_squares(lens):
    X, y_e, y_s = lens
    fe = LinearRegression().fit(X, y_e).predict(X)
    fs = LinearRegression().fit(X, y_s).predict(X)
    r = lambda a, b: np.corrcoef(a, b)[0, 1]  # noqa: E731
    L = kernels.lens_model_equation(X, y_e, y_s)
    np.testing.assert_allclose(
        [L.r_a, L.R_e, L.R_s, L.G, L.C],
        [r(y_e, y_s), r(y_e, fe), r(y_s, fs), r(fe, fs), r(y_e - fe, y_s - fs)], atol=1e-9)


def test_a_weighted_resample_equals_its_replicated_rows(lens):
    X, y_e, y_s = lens
    W = np.asarray(kernels.bootstrap_weights(__import__("jax").random.PRNGKey(0), len(y_e), 3))
    ref = kernels.lens_model_reference(X, y_e, W)
    batch = kernels.lens_model_equation(X, y_e, y_s, reference=ref)
    for b in range(3):
        rows = np.repeat(np.arange(len(y_e)), W[b].astype(int))
        one = kernels.lens_model_equation(X[rows], y_e[rows], y_s[rows])
        np.testing.assert_allclose([t[b] for t in batch], list(one), atol=1e-9)


def test_out_of_fold_consistency_matches_cross_val_predict(lens):
    X, _, y_s = lens
    folds = np.arange(len(y_s)) % 10
    pred = cross_val_predict(LinearRegression(), X, y_s, cv=PredefinedSplit(folds))
    expected = np.corrcoef(y_s, pred)[0, 1]
    assert abs(kernels.cross_validated_consistency(X, y_s, folds) - expected) < 1e-9


def test_a_constant_judge_has_undefined_consistency_and_matching(lens):
    X, y_e, _ = lens
    L = kernels.lens_model_equation(X, y_e, np.ones_like(y_e))
    assert np.isnan(L.R_s) and np.isnan(L.G) and np.isnan(L.r_a)
    assert 0 < L.R_e < 1


def test_coefficient_agreement_matches_scipy():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(2)
    a = rng.standard_normal(30)
    b = 0.6 * a + rng.standard_normal(30)
    b[:4] = a[:4] = 0.5  # ties, as one-hot weights of equal size give
    mask = np.ones(30, bool)
    mask[-3:] = False  # left out: a level no case has
    got = kernels.coefficient_agreement(a, b, mask=mask)
    assert abs(got.pearson - pearsonr(a[mask], b[mask])[0]) < 1e-12
    assert abs(got.spearman - spearmanr(a[mask], b[mask])[0]) < 1e-12
    assert got.sign_agreement == np.mean(np.sign(a[mask]) == np.sign(b[mask]))
    top5 = lambda v: set(np.argsort(-np.abs(v[mask]), kind="stable")[:5])  # noqa: E731
    assert got.top_overlap[5] == len(top5(a) & top5(b)) / 5
    same = kernels.coefficient_agreement(a, 2 * a)
    assert same.spearman == 1 and same.sign_agreement == 1 and same.top_overlap[10] == 1


def test_calm_consistency_auc_and_propensity_match_cross_val_predict(lens, german_encoded):
    """CALM's "AUC" (out-of-fold AUC of the cue model of the decision-maker's
    own answers) and its propensity correlation (of the two cue models'
    out-of-fold probabilities), against scikit-learn on the same folds."""
    from scipy.stats import pearsonr
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    import jax

    from engine.audit import CellDecisions, audit_cell
    from engine.audit import StatisticsSpec

    X, y_e, y_s = lens
    st = StatisticsSpec(bootstrap=10, permutations=10)
    got = audit_cell(german_encoded, y_e, CellDecisions(y_s, y_s, np.ones_like(y_s)),
                     model="m", condition="baseline", stats=st).lme

    def oof(y):
        folds = np.asarray(kernels.stratified_folds(jax.random.PRNGKey(st.seed), y, k=10))
        model = LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-10, max_iter=1000)
        return cross_val_predict(model, X, y, cv=PredefinedSplit(folds),
                                 method="predict_proba")[:, 1]

    p_s, p_e = oof(y_s), oof(y_e)
    assert got["consistency_auc"] == pytest.approx(roc_auc_score(y_s, p_s), abs=1e-6)
    assert got["propensity_r_oof"] == pytest.approx(pearsonr(p_s, p_e)[0], abs=1e-6)
