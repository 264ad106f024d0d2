import numpy as np
import pytest

from engine.datasets import GERMAN_CREDIT_SCHEMA, load_german_credit
from engine.errors import LensauditError


def test_counts_and_labels(german):
    assert len(german) == 1000
    assert (german.table["decision"] == 1).sum() == 700  # Good
    assert (german.table["decision"] == 0).sum() == 300  # Bad
    assert german.table["case_id"].is_unique


def test_schema_names_protected_attributes():
    protected = {c.name for c in GERMAN_CREDIT_SCHEMA.cues if c.protected}
    assert protected == {"age", "personal_status_sex", "foreign_worker"}
    assert len(GERMAN_CREDIT_SCHEMA.cues) == 20


def test_encoding_one_hot_every_level_then_standardised(german, german_encoded):
    enc = german_encoded
    n_levels = sum(len(c.levels) for c in GERMAN_CREDIT_SCHEMA.cues if c.kind == "categorical")
    n_numeric = sum(c.kind != "categorical" for c in GERMAN_CREDIT_SCHEMA.cues)
    assert enc.X.shape == (1000, n_levels + n_numeric)
    live = [j for j, c in enumerate(enc.columns) if c not in enc.constant]
    assert np.allclose(enc.X[:, live].mean(0), 0, atol=1e-12)
    assert np.allclose(enc.X[:, live].std(0), 1, atol=1e-12)
    # Two documented levels never occur: vacation, and single women.
    assert enc.constant == ["purpose=A47", "personal_status_sex=A95"]


def test_profile_is_plain_language(german):
    text = german.profile(german.table.iloc[0])
    assert "- checking account: below 0 DM" in text
    assert "- loan duration: 6 months" in text
    assert "A11" not in text


def test_balanced_subset_is_seeded(german):
    a = german.subset(per_class=30, seed=1)
    b = german.subset(per_class=30, seed=1)
    assert list(a.table["case_id"]) == list(b.table["case_id"])
    assert (a.table["decision"] == 0).sum() == 30 and len(a) == 60


def test_bad_data_file_names_the_line(tmp_path):
    bad = tmp_path / "german.data"
    bad.write_text("A11 6 A34 A43 1169 A65 A75 4 A93 A101 4 A121 67 A143 A152 2 A173 1 A192 A201 3\n")
    with pytest.raises(LensauditError, match="line 1: class must be"):
        load_german_credit(bad)
