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


@pytest.mark.parametrize("model,message", [
    ("{name: bundled:smollm2-135m, base_url: 'http://127.0.0.1:8000/v1'}",
     "models.0: base_url: a setting of openai: models, not of bundled: models"),
    ("{name: 'openai:m', base_url: 'http://127.0.0.1:8000/v1', replicas: 2}",
     "models.0: replicas: a setting of bundled: models, not of openai: models"),
    ("{name: 'simulated:org', max_model_len: 4096}",
     "models.0: max_model_len: a setting of bundled: models, not of simulated: models "
     "(those read: no settings)"),
])
def test_each_backend_reads_its_own_settings_only(model, message):
    with pytest.raises(LensauditError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_job(DEMO, [f"models=[{model}]"])


def test_a_model_is_stored_with_its_backends_settings_and_old_specs_still_load():
    from engine.spec import JobSpec

    spec = load_job(DEMO, ["models=[bundled:smollm2-135m, simulated:org, "
                           "{name: 'openai:m', base_url: 'http://127.0.0.1:8000/v1'}]"])
    vllm, sim, api = spec.model_dump()["models"]
    assert "base_url" not in vllm and "replicas" in vllm
    assert sim == {"name": "simulated:org"}
    assert "replicas" not in api and api["base_url"] == "http://127.0.0.1:8000/v1"
    # A spec stored before backends owned their settings (every field, defaults) loads.
    old = spec.model_dump()
    old["models"][0].update(base_url=None, max_concurrency=8, request_seed=False)
    assert JobSpec.model_validate(old) == spec
