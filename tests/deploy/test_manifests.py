"""Every manifest in deploy/k8s/ passes the schema the API server would apply, and a typo fails it.

KubeRay kinds are checked against the operator's CRD schemas (shared/kuberay-crds/, closed against
unknown fields as the server's strict field validation does; tests/deploy/k8s_manifests.py says
why), core kinds against Kubernetes' own OpenAPI schemas through `kubernetes-validate`. The pod
templates inside the Ray objects are checked a second time as v1 Pods. A few KubeRay operator rules
that no schema states (ray-operator/controllers/ray/utils/validation.go) are checked by hand.
"""

from __future__ import annotations

import copy
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.k8s_manifests import (
    KUBERNETES_VERSION,
    MANIFEST_DIR,
    RAY_KINDS,
    all_documents,
    documents,
    find,
    manifest_files,
    pod_of,
    ray_cluster_spec,
    ray_groups,
    validate_core,
    validate_ray,
)

DOCS = all_documents()
RAY_DOCS = [(p, d) for p, d in DOCS if d["kind"] in RAY_KINDS]
CORE_DOCS = [(p, d) for p, d in DOCS if d["kind"] not in RAY_KINDS]
RAY_IDS = [f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in RAY_DOCS]
CORE_IDS = [f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in CORE_DOCS]
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_RAY_NAME = 47  # KubeRay: 53 ("-serve-svc" fits in 63) minus the 6 characters of the generated cluster suffix


def test_the_expected_objects_are_shipped():
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in DOCS}
    assert kinds >= {("RayJob", "pubmed-qwen3b"), ("RayService", "deepretrieval-rewrite"), ("Deployment", "redis"),
                     ("Service", "redis"), ("Deployment", "otel-collector"), ("Service", "otel-collector"),
                     ("ConfigMap", "otel-collector-config"), ("ConfigMap", "deepretrieval-train-config"),
                     ("PersistentVolumeClaim", "deepretrieval-home"), ("Namespace", "deepretrieval")}


@pytest.mark.parametrize(("path", "doc"), RAY_DOCS, ids=RAY_IDS)
def test_ray_manifest_matches_the_kuberay_crd(path, doc):
    validate_ray(doc)
    name = doc["metadata"]["name"]
    assert DNS_1035.match(name) and len(name) <= MAX_RAY_NAME, f"{name!r}: KubeRay wants a DNS-1035 label of at most {MAX_RAY_NAME} characters"


@pytest.mark.parametrize(("path", "doc"), RAY_DOCS, ids=RAY_IDS)
def test_ray_pod_templates_are_valid_pods(path, doc):
    for group_name, group in ray_groups(doc):
        validate_core(pod_of(group, f"{doc['metadata']['name']}-{group_name}"))


@pytest.mark.parametrize(("path", "doc"), RAY_DOCS, ids=RAY_IDS)
def test_ray_manifest_follows_the_operators_own_rules(path, doc):
    cluster = ray_cluster_spec(doc)
    autoscaling = cluster.get("enableInTreeAutoscaling", False)
    for group_name, group in ray_groups(doc):
        assert group["template"]["spec"]["containers"], f"{group_name}: a group needs its Ray container"
        params = group.get("rayStartParams", {})
        if group.get("resources"):
            assert not {"num-cpus", "num-gpus", "memory", "resources"} & params.keys(), \
                f"{group_name}: resources in both rayStartParams and the group's resources field"
        assert "labels" not in params, f"{group_name}: rayStartParams.labels is refused; use the group's labels"
        if group_name != "head":
            if not autoscaling:
                assert "minReplicas" in group and "maxReplicas" in group, f"{group_name}: min/maxReplicas required without autoscaling"
            assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], group_name
    assert cluster.get("rayVersion"), "rayVersion must be set (KubeRay fills defaults from it)"


@pytest.mark.parametrize(("path", "doc"), CORE_DOCS, ids=CORE_IDS)
def test_core_manifest_matches_the_kubernetes_schema(path, doc):
    assert validate_core(doc) == KUBERNETES_VERSION


def test_every_object_is_in_the_deepretrieval_namespace():
    for path, doc in DOCS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "deepretrieval", f"{path.name}: {doc['kind']}/{doc['metadata']['name']}"


def test_kustomization_lists_every_manifest_applied_with_the_job():
    kustomization = yaml.safe_load((MANIFEST_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in manifest_files()}
    assert listed <= on_disk, f"kustomization.yaml lists files that do not exist: {listed - on_disk}"
    # Applied on their own (docs/cluster.md): the endpoint once training has published its weights,
    # the volume shell while filling or reading the shared volume.
    assert on_disk - listed == {"rayservice-rewrite.yaml", "volume-shell.yaml"}
    assert kustomization["namespace"] == "deepretrieval"


# --- negative: the validators catch a mistyped field ---------------------------------------------

def test_a_mistyped_rayjob_field_is_rejected():
    job = find("RayJob")
    bad = copy.deepcopy(job)
    bad["spec"]["rayClusterSpc"] = bad["spec"].pop("rayClusterSpec")
    with pytest.raises(jsonschema.ValidationError, match="rayClusterSpc"):
        validate_ray(bad)
    # Why the schemas are closed: as published, the CRD schema lets the typo through.
    validate_ray(bad, strict=False)


def test_a_mistyped_field_deep_in_a_ray_pod_template_is_rejected():
    service = copy.deepcopy(find("RayService"))
    container = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["resorces"] = container.pop("resources")
    with pytest.raises(jsonschema.ValidationError, match="resorces"):
        validate_ray(service)


def test_a_mistyped_ray_metadata_field_is_rejected():
    job = copy.deepcopy(find("RayJob"))
    job["metadata"]["lables"] = job["metadata"].pop("labels")
    with pytest.raises(kubernetes_validate.ValidationError, match="lables"):
        validate_ray(job)


def test_a_wrongly_typed_ray_field_is_rejected():
    job = copy.deepcopy(find("RayJob"))
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        validate_ray(job)


def test_a_mistyped_deployment_field_is_rejected():
    bad = copy.deepcopy(find("Deployment", "redis"))
    bad["spec"]["replicass"] = bad["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="replicass"):
        validate_core(bad)


def test_a_mistyped_container_field_in_a_ray_pod_is_rejected_by_the_core_schema_too():
    job = copy.deepcopy(find("RayJob"))
    _, head = next(ray_groups(job))
    head["template"]["spec"]["containers"][0]["volumeMount"] = head["template"]["spec"]["containers"][0].pop("volumeMounts")
    with pytest.raises(kubernetes_validate.ValidationError, match="volumeMount"):
        validate_core(pod_of(head, "typo"))


def test_documents_skip_empty_yaml_blocks(tmp_path):
    f = tmp_path / "two.yaml"
    f.write_text("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n")
    assert [d["metadata"]["name"] for d in documents(f)] == ["a"]
