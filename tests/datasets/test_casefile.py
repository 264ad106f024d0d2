"""Case sets from files (issue 15, item 1): a valid file loads into a CaseSet,
and each error is one line naming the file and the key path or the case and
column.
Through a job: tests/job/test_own_study.py."""

import numpy as np
import pandas as pd
import pytest
import yaml

from engine.datasets._casefile import load_case_file
from engine.errors import LensauditError

CASE_FILE = {
    "name": "tenancy", "data": "tenancy.csv", "id": "application",
    "reference": "agent", "question": "whether to offer the tenancy to this applicant",
    "choices": {"positive": "Offer", "negative": "Decline"}, "role": "You are a letting agent.",
    "cues": [
        {"name": "income", "kind": "numeric", "unit": "EUR a month"},
        {"name": "pets", "kind": "binary", "phrase": "has pets"},
        {"name": "nationality", "kind": "categorical", "protected": True,
         "levels": {"DE": "German", "FR": "French", "PL": "Polish"}},
    ],
}


def write(tmp_path, spec=None, data=None):
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({
        "application": [f"A{i:03d}" for i in range(n)],
        "income": rng.normal(2500, 600, n).round(),
        "pets": rng.choice(["yes", "no"], n),
        "nationality": rng.choice(["DE", "FR", "PL"], n),
        "agent": rng.choice(["Offer", "decline"], n),
    }) if data is None else data
    df.to_csv(tmp_path / "tenancy.csv", index=False)
    path = tmp_path / "tenancy.yaml"
    path.write_text(yaml.safe_dump(CASE_FILE if spec is None else spec))
    return path, df


def test_a_case_set_file_loads_and_encodes(tmp_path):
    path, df = write(tmp_path)
    cases = load_case_file(path)
    assert cases.name == "tenancy" and len(cases) == 60
    assert cases.table["case_id"].tolist() == df["application"].tolist()
    assert cases.table["decision"].tolist() == (df["agent"] == "Offer").astype(int).tolist()
    assert cases.schema.choices == ("Offer", "Decline")
    enc = cases.encode()
    assert enc.X.shape == (60, 5)  # income, pets, three nationalities
    assert [c.protected for c in cases.schema.column_cue()] == [False, False, True, True, True]
    profile = cases.profile(cases.table.iloc[0])
    assert "- has pets: " in profile and "EUR a month" in profile
    assert any(w in profile for w in ("German", "French", "Polish"))


def spec_with(**changes):
    spec = yaml.safe_load(yaml.safe_dump(CASE_FILE))
    for key, value in changes.items():
        target = spec
        *parents, last = key.split(".")
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return spec


@pytest.mark.parametrize("changes,message", [
    ({"cues.2.kind": "ordinal"}, "tenancy.yaml: cues.2.kind: Input should be"),
    ({"colour": "blue"}, "tenancy.yaml: colour: unknown key"),
    ({"question": None}, "tenancy.yaml: question: required key is missing"),
    ({"choices.negative": "offer"}, "tenancy.yaml: choices: positive and negative must differ"),
    ({"choices.negative": "Offer later"}, "tenancy.yaml: choices: 'Offer' begins 'Offer later'"),
    ({"cues.0.levels": {"a": "b"}}, "tenancy.yaml: cues.0: levels are for categorical cues"),
    ({"cues.1.name": "income"}, "tenancy.yaml: cues: cue 'income' is listed twice"),
    ({"cues.1.name": "salary"}, "tenancy.yaml: cues.1.name: no column 'salary' in tenancy.csv"),
    ({"data": "missing.csv"}, "tenancy.yaml: data: table not found"),
    ({"cues.2.levels": {"DE": "German", "FR": "French"}},
     "column 'nationality' has level 'PL', not listed"),
])
def test_schema_errors_name_the_file_and_the_key(tmp_path, changes, message):
    path, _ = write(tmp_path, spec_with(**changes))
    with pytest.raises(LensauditError) as err:
        load_case_file(path)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("column,value,message", [
    ("income", "lots", "case A003: column 'income' is 'lots', not a number"),
    ("income", None, "case A003: column 'income' is empty"),
    ("pets", "maybe", "case A003: column 'pets' (binary cue) is 'maybe'"),
    ("agent", "Perhaps", "case A003: column 'agent' (reference) is 'Perhaps', not 0/1, "
                         "true/false or Offer/Decline"),
    ("application", "A001", "id: case A001 appears twice"),
    ("application", "A~1", "id: case A~1: '~' marks counterfactual twins"),
])
def test_data_errors_name_the_case_and_the_column(tmp_path, column, value, message):
    _, df = write(tmp_path)
    df = df.astype({column: object})
    df.loc[3, column] = value
    path, _ = write(tmp_path, data=df)
    with pytest.raises(LensauditError) as err:
        load_case_file(path)
    assert message in str(err.value), str(err.value)


def test_not_yaml_and_not_a_mapping_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(LensauditError, match="bad.yaml: invalid YAML at line"):
        load_case_file(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(LensauditError, match="bad.yaml: a case-set file must be a YAML mapping"):
        load_case_file(path)


def test_a_case_set_without_a_reference_has_no_decisions(tmp_path):
    path, _ = write(tmp_path, spec_with(reference=None))
    cases = load_case_file(path)
    assert not cases.has_reference and "decision" not in cases.table
    assert cases.encode().X.shape == (60, 5)
    with pytest.raises(LensauditError, match="dataset.subset.per_class draws from each reference"):
        cases.subset(per_class=5)
    assert len(cases.subset(n=20)) == 20


def test_case_profiles_made_a_column_at_a_time_read_as_row_by_row():
    """`CaseSet.profiles` renders each distinct value once, a column at a time;
    each profile is `CaseSet.profile` of its row, on every shipped case set
    and on values of mixed types."""
    import pandas as pd

    from engine.datasets import DATASETS, CaseSet, Cue, CueSchema

    for name, load in DATASETS.items():
        cases = load(None)
        assert cases.profiles == [cases.profile(row) for _, row in cases.table.iterrows()], name
    schema = CueSchema((Cue("n", "numeric", "f", "a number", unit="EUR"),
                        Cue("b", "binary", "f", "a flag"),
                        Cue("k", "categorical", "f", "a kind", {"1": "one", "2": "two"})),
                       "yes", "no", "whether")
    table = pd.DataFrame({"case_id": [1, 2, 3, 4], "n": [1.0, 2.5, float("nan"), 1.0],
                          "b": [0, 1, 1, 0], "k": [1, 2, 3, 1]})
    cases = CaseSet("mixed", table, schema)
    assert cases.profiles == [cases.profile(row) for _, row in table.iterrows()]
