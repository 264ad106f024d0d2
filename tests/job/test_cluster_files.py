"""The cluster files a GPU team applies as they are (cluster/, Containerfile),
checked here since nobody with a cluster runs CI: Ray's own image of the
pinned Ray everywhere (no private image to build), the launcher YAML against
the cluster schema that ships with Ray, and every pod template of the KubeRay
manifests against the Kubernetes schemas (kubernetes-validate, strict: an
unknown field is an error), and each manifest whole against KubeRay's own CRD
(v1.7.0, vendored in tests/data/kuberay_crds/ with its licence and
provenance). Each check is shown to fail on a copy with one field broken.

Not checked: the CRDs' CEL rules (`x-kubernetes-validations`), which need the
API server's CEL engine."""

import copy
import functools
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERNETES = "1.33"


def ray_image() -> str:
    import ray

    return f"rayproject/ray:{ray.__version__}-py311-gpu"


def manifests() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in (CLUSTER / "rayjob.yaml",
                                                             CLUSTER / "raycluster.yaml")}


def pod_templates(doc: dict) -> list[dict]:
    """The pod templates of a RayJob or RayCluster: head and every worker group."""
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def as_pod(template: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template"},
            "spec": template["spec"]}


def validate_pod(template: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(as_pod(template), KUBERNETES, strict=True)


def validate_launcher(config: dict) -> None:
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)


CRDS = Path(__file__).resolve().parents[1] / "data" / "kuberay_crds"


@functools.cache
def crd_schema(kind: str) -> dict:
    """The v1 openAPIV3Schema of KubeRay's CRD for `kind`, as a strict JSON
    schema (`strict_schema`)."""
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return strict_schema(version["schema"]["openAPIV3Schema"])


def strict_schema(node):
    """An openAPIV3Schema as JSON Schema, checked as `kubectl apply
    --validate=strict` checks: an object with declared properties takes no
    other (Kubernetes would drop it silently, and the field would do nothing),
    unless it keeps unknown fields; `nullable` admits null."""
    if isinstance(node, list):
        return [strict_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items()}
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in node:
        out["type"] = [node["type"], "null"]
    return out


def validate_crd(doc: dict) -> None:
    import jsonschema

    jsonschema.Draft7Validator(crd_schema(doc["kind"])).validate(doc)


def test_every_image_is_rays_own_of_the_pinned_version():
    images = [c["image"] for doc in manifests().values() for t in pod_templates(doc)
              for c in t["spec"]["containers"]]
    launcher = yaml.safe_load((CLUSTER / "gpu_cluster.yaml").read_text())
    images.append(launcher["docker"]["image"])
    base = next(line.split()[1] for line in (ROOT / "Containerfile").read_text().splitlines()
                if line.startswith("FROM "))
    assert set(images) | {base} == {ray_image()}, images
    for doc in manifests().values():
        spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
        assert spec["rayVersion"] == ray_image().split(":")[1].split("-")[0]
    for path in [*CLUSTER.iterdir(), ROOT / "Containerfile"]:
        text = path.read_text()
        assert "your-org" not in text and "ghcr.io" not in text, path


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_pod_templates_are_valid_kubernetes_and_a_broken_field_is_caught(name):
    from kubernetes_validate import ValidationError

    doc = manifests()[name]
    templates = pod_templates(doc)
    assert len(templates) == 2
    for t in templates:
        validate_pod(t)
    broken = copy.deepcopy(templates[1])
    broken["spec"]["containers"][0]["imagePullPolicyy"] = "Always"  # misspelt
    with pytest.raises(ValidationError):
        validate_pod(broken)
    wrong_type = copy.deepcopy(templates[0])
    wrong_type["spec"]["containers"][0]["ports"][0]["containerPort"] = "gcs"
    with pytest.raises(ValidationError):
        validate_pod(wrong_type)


def test_secrets_are_referenced_by_name_never_written():
    for doc in manifests().values():
        for t in pod_templates(doc):
            for c in t["spec"]["containers"]:
                for e in c.get("env", []):
                    if e["name"] in ("RAY_AUTH_TOKEN", "OPENAI_API_KEY"):
                        assert "value" not in e and "secretKeyRef" in e["valueFrom"], e


def test_the_launcher_config_fits_rays_schema_and_a_misspelt_key_is_caught():
    import jsonschema

    config = yaml.safe_load((CLUSTER / "gpu_cluster.yaml").read_text())
    validate_launcher(config)
    broken = copy.deepcopy(config)
    broken["max_worker"] = broken.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_launcher(broken)
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["min_workers"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_launcher(broken)


def readme_cluster_commands() -> list[str]:
    """The shell commands of the README's "Run on a GPU cluster" block, with
    continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Run on a GPU cluster"):]
    block = section[section.index("```bash") + 7:]
    block = block[:block.index("```")]
    commands, current = [], ""
    for line in block.splitlines():
        line = line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        continued = line.endswith("\\")
        current += (line[:-1].rstrip() + " ") if continued else line
        if not continued:
            commands.append(current.strip().rstrip("&").strip())
            current = ""
    return commands


def test_the_readmes_cluster_commands_name_checked_files_and_parse():
    """Each `kubectl apply` and `ray up` of the README section names a file the
    checks above cover; each `lensaudit submit` parses with the CLI's own parser
    and builds a submission Ray's runtime-environment validation accepts."""
    import shlex

    from ray.runtime_env import RuntimeEnv

    from engine.cli import build_parser
    from engine.job import build_submission

    commands = readme_cluster_commands()
    applied = [c.split()[-1] for c in commands if c.startswith(("kubectl apply", "ray up"))]
    assert sorted(applied) == ["cluster/gpu_cluster.yaml", "cluster/raycluster.yaml",
                               "cluster/rayjob.yaml"]
    submits = [c for c in commands if "lensaudit submit" in c]
    assert len(submits) == 3
    parser = build_parser()
    for c in submits:
        argv = shlex.split(c[c.index("lensaudit submit"):])[1:]
        args = parser.parse_args(argv)
        assert args.install == "gpu" and args.address == "http://127.0.0.1:8265"
        sub = build_submission(args.job, args.set or [], [], ROOT, install=args.install,
                               submission_id=args.submission_id)
        RuntimeEnv(**sub["runtime_env"])
    patch = next(c for c in commands if c.startswith("kubectl patch rayjob"))
    job_id = json.loads(shlex.split(patch)[-1])["spec"]["jobId"]
    assert job_id == manifests()["rayjob.yaml"]["metadata"]["name"]
    assert any(f"--submission-id {job_id}" in c for c in submits)


def broken_twins(name: str, doc: dict) -> dict[str, dict]:
    """Copies of a manifest with one field broken each, as people break them."""
    cluster = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]

    def twin(change):
        out = copy.deepcopy(doc)
        change(out["spec"]["rayClusterSpec"] if out["kind"] == "RayJob" else out["spec"], out)
        return out

    twins = {
        "a misspelt field": twin(lambda c, d: c.__setitem__("enableInTreeAutoscale", True)),
        "replicas as text": twin(lambda c, d: c["workerGroupSpecs"][0].__setitem__(
            "replicas", "two")),
        "no head group": twin(lambda c, d: c.pop("headGroupSpec")),
        "a misspelt container field": twin(lambda c, d: c["headGroupSpec"]["template"]["spec"][
            "containers"][0].__setitem__("imagePullPolicyy", "Always")),
        "a start parameter that is no text": twin(lambda c, d: c["headGroupSpec"][
            "rayStartParams"].__setitem__("num-gpus", 0)),
    }
    assert cluster["workerGroupSpecs"] and "headGroupSpec" in cluster
    if doc["kind"] == "RayJob":
        twins["a time to live as a duration"] = twin(  # the CRD wants seconds
            lambda c, d: d["spec"].__setitem__("ttlSecondsAfterFinished", "10m"))
        twins["shutdown as text"] = twin(
            lambda c, d: d["spec"].__setitem__("shutdownAfterJobFinishes", "yes"))
    return twins


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_manifests_fit_kuberays_own_crd_and_broken_twins_do_not(name):
    import jsonschema

    doc = manifests()[name]
    assert doc["apiVersion"] == "ray.io/v1"
    validate_crd(doc)
    for what, twin in broken_twins(name, doc).items():
        with pytest.raises(jsonschema.ValidationError):
            validate_crd(twin)
            pytest.fail(f"{name} with {what} passed KubeRay's schema")


def test_the_vendored_crds_keep_their_licence_and_provenance():
    provenance = (CRDS / "PROVENANCE.txt").read_text()
    assert "v1.7.0" in provenance and "ray-project/kuberay" in provenance
    assert "Apache License" in (CRDS / "LICENSE").read_text()
    for kind in ("RayCluster", "RayJob"):
        assert crd_schema(kind)["properties"]["spec"]["additionalProperties"] is False
