"""Read the manifests in deploy/k8s/ and validate them the way the API server would.

Two validators:
- core kinds (Deployment, Service, ConfigMap, PersistentVolumeClaim, Namespace, ...) against the
  Kubernetes OpenAPI schemas shipped in `kubernetes-validate`, strict (unknown fields rejected);
- KubeRay kinds (RayJob, RayService, RayCluster) against the `openAPIV3Schema` of the operator's
  CRDs in shared/kuberay-crds/ with `jsonschema`.

The CRD schemas, as controller-gen writes them, never set `additionalProperties: false`: a
structural schema lets the API server *prune* unknown fields, and `kubectl apply` (client >= 1.27,
`--validate=strict` by default) asks the server to reject them instead. Plain JSON-schema
validation would accept a typo like `spec.rayClusterSpc` silently, so `strict_schema` closes every
object schema that lists `properties` and does not carry `x-kubernetes-preserve-unknown-fields`,
which is the server's strict field validation.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_DIR = REPO_ROOT / "deploy" / "k8s"
CRD_DIR = REPO_ROOT.parent / "shared" / "kuberay-crds"
KUBERNETES_VERSION = "1.32"  # the oldest release KubeRay's current operator supports well; schemas are strict
RAY_KINDS = {"RayJob": "rayjobs", "RayService": "rayservices", "RayCluster": "rayclusters"}
NOT_RESOURCES = {"kustomization.yaml"}  # kustomize's own file, not sent to the API server

_SCHEMA_MAPS = ("properties", "patternProperties")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE = ("items", "additionalProperties", "not")


def manifest_files() -> list[Path]:
    """Every YAML file of deploy/k8s that holds API objects."""
    return sorted(p for p in MANIFEST_DIR.glob("*.yaml") if p.name not in NOT_RESOURCES)


def documents(path: Path) -> list[dict]:
    """The non-empty YAML documents of one file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_documents() -> list[tuple[Path, dict]]:
    """(file, object) for every API object in deploy/k8s."""
    return [(p, d) for p in manifest_files() for d in documents(p)]


def find(kind: str, name: str | None = None) -> dict:
    """The one object of `kind` (and `name`, when given) in deploy/k8s."""
    hits = [d for _, d in all_documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(hits) != 1:
        raise LookupError(f"expected one {kind} {name or ''} in {MANIFEST_DIR}, found {len(hits)}")
    return hits[0]


def strict_schema(schema: dict) -> dict:
    """A copy of an OpenAPI v3 schema in which every object listing `properties` rejects other keys.

    Objects marked `x-kubernetes-preserve-unknown-fields` and maps (`additionalProperties` given)
    stay open, as the API server keeps them.
    """
    out = dict(schema)
    for key in _SCHEMA_MAPS:
        if key in out:
            out[key] = {name: strict_schema(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_LISTS:
        if key in out:
            out[key] = [strict_schema(sub) for sub in out[key]]
    for key in _SCHEMA_ONE:
        if isinstance(out.get(key), dict):
            out[key] = strict_schema(out[key])
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schema(kind: str, strict: bool = True) -> dict:
    """The `ray.io/v1` openAPIV3Schema of a KubeRay kind, closed by `strict_schema` unless strict=False."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-1.4 MB of YAML: libyaml is 10x faster
    crd = yaml.load((CRD_DIR / f"ray.io_{RAY_KINDS[kind]}.yaml").read_text(), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = version["schema"]["openAPIV3Schema"]
    return strict_schema(schema) if strict else schema


def validate_ray(doc: dict, strict: bool = True) -> None:
    """Validate a KubeRay object against its CRD schema; raises jsonschema.ValidationError.

    The CRD leaves the top-level `metadata` to the server's ObjectMeta (`type: object` only), so
    with strict=True it is checked as the metadata of a ConfigMap, whose schema is ObjectMeta.
    """
    if doc.get("apiVersion") != "ray.io/v1":
        raise jsonschema.ValidationError(f"apiVersion must be ray.io/v1, got {doc.get('apiVersion')!r}")
    jsonschema.Draft202012Validator(crd_schema(doc["kind"], strict)).validate(doc)
    if strict:
        validate_core({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]})


def validate_core(doc: dict) -> str:
    """Validate a core Kubernetes object, strictly; returns the schema version used.

    Raises:
        kubernetes_validate.ValidationError: a field is unknown, mistyped or missing.
    """
    return kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def ray_groups(doc: dict) -> Iterator[tuple[str, dict]]:
    """(group name, group spec) of the head and every worker group of a RayJob/RayService/RayCluster."""
    spec = doc["spec"]
    cluster = {"RayJob": lambda: spec["rayClusterSpec"], "RayService": lambda: spec["rayClusterConfig"],
               "RayCluster": lambda: spec}[doc["kind"]]()
    yield "head", cluster["headGroupSpec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["groupName"], group


def ray_cluster_spec(doc: dict) -> dict:
    """The RayCluster spec inside a RayJob or RayService."""
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]["rayClusterConfig"]


def pod_of(group: dict, name: str) -> dict:
    """A group's pod template as a stand-alone v1 Pod (for the core schema)."""
    template = group["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **template.get("metadata", {})}, "spec": template["spec"]}


def ray_custom_resources(group: dict) -> dict[str, float]:
    """Custom Ray resources a group's pods offer, from rayStartParams.resources.

    Read as the operator reads it (getResourcesMap in ray-operator/controllers/ray/common/pod.go):
    surrounding quotes and spaces trimmed, the rest parsed as JSON. KubeRay puts the value into the
    `ray start` shell command as it is, so the single quotes keep the JSON whole there:
    `'{"actor": 1}'`. A value the operator cannot parse also stops it from adding num-gpus.
    """
    raw = group.get("rayStartParams", {}).get("resources")
    if raw is None:
        return {}
    if not (raw.startswith("'") and raw.endswith("'")):
        raise ValueError(f"rayStartParams.resources must be single-quoted JSON for the shell, got {raw!r}")
    return json.loads(raw.strip("'\"` "))


def container_env(container: dict) -> dict[str, str]:
    """name -> literal value of a container's env (valueFrom entries map to None)."""
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def mounts(pod_spec: dict) -> dict[str, tuple[dict, dict]]:
    """mountPath -> (volumeMount, volume) for the first container of a pod spec."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in pod_spec["containers"][0].get("volumeMounts", [])}
