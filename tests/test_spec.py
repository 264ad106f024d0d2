import pytest

from engine.errors import LensauditError
from engine.spec import load_job

DEMO = "jobs/german_credit_demo.yaml"


def test_demo_job_is_valid():
    spec = load_job(DEMO)
    assert spec.models[0].name == "bundled:smollm2-135m"
    assert spec.statistics.bootstrap == 1000 and spec.statistics.permutations == 1000
    assert spec.conditions == ["baseline"]


def test_overrides_parse_values_and_reach_nested_keys():
    spec = load_job(DEMO, ["statistics.bootstrap=50", "models.0.replicas=2",
                           "dataset.subset.per_class=3"])
    assert spec.statistics.bootstrap == 50
    assert spec.models[0].replicas == 2
    assert spec.dataset.subset.per_class == 3


def test_spec_hash_ignores_output_settings():
    a = load_job(DEMO)
    b = load_job(DEMO, ["output.run_dir=elsewhere"])
    c = load_job(DEMO, ["statistics.C=0.5"])
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()


def test_error_names_the_key_path():
    with pytest.raises(LensauditError, match=r"models\.0\.replicas"):
        load_job(DEMO, ["models.0.replicas=0"])
