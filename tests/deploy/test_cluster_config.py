"""The cluster's run config and the manifests around it agree with each other and with the project.

The training ConfigMap is loaded with the CLI's own loader; then every name the config and the
manifests share is followed to the other side: Redis URL -> Service, API-key file -> Secret mount,
paths -> shared volume, ray.placement -> worker groups that can hold every process, OTLP endpoint
-> collector Service and receiver, serveConfigV2 -> Ray Serve's schema and the published weights.
"""

from __future__ import annotations

import importlib
import math
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest
import yaml

from deepretrieval.common.config import load_config
from deepretrieval.common.tasks import task_names
from deepretrieval.common.train_config import TrainConfig
from deepretrieval.learner.weight_sync import version_dir_name
from tests.deploy.k8s_manifests import (
    MANIFEST_DIR,
    REPO_ROOT,
    container_env,
    documents,
    find,
    mounts,
    ray_custom_resources,
    ray_groups,
    validate_core,
    validate_ray,
)

JOB = find("RayJob")
SERVICE = find("RayService")
CONFIG_MAP = find("ConfigMap", "deepretrieval-train-config")
(CONFIG_KEY, CONFIG_TEXT), = CONFIG_MAP["data"].items()
SERVE_IMPORT_PATH = "deepretrieval.deploy.serve_app:build_app"
# Fields the cluster variant changes on purpose (train-config.yaml says why); everything else must
# equal configs/pubmed-qwen3b-gpu.yaml.
CLUSTER_ONLY = {"run", "paths", "model", "transport", "ray", "trace_file"}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> TrainConfig:
    path = tmp_path_factory.mktemp("cfg") / CONFIG_KEY
    path.write_text(CONFIG_TEXT)
    return load_config(TrainConfig, path)


def _as_dict(cfg: TrainConfig) -> dict:
    return cfg.model_dump(mode="json")


def _quantity(value: str | int) -> float:
    """A Kubernetes CPU/GPU quantity as a number ('500m' -> 0.5)."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _offers(group: dict) -> dict[str, float]:
    """What one pod of a group offers Ray: CPU, GPU (KubeRay reads the container limits) and custom resources."""
    params = group.get("rayStartParams", {})
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    return {"CPU": float(params["num-cpus"]) if "num-cpus" in params else math.ceil(_quantity(limits.get("cpu", 0))),
            "GPU": float(params["num-gpus"]) if "num-gpus" in params else _quantity(limits.get("nvidia.com/gpu", 0)),
            **ray_custom_resources(group)}


def _needs(placement) -> dict[str, float]:
    return {k: v for k, v in {"CPU": placement.num_cpus, "GPU": placement.num_gpus, **placement.resources}.items() if v > 0}


def _per_pod(offers: dict[str, float], needs: dict[str, float]) -> int:
    return min(int(offers.get(k, 0) // v) for k, v in needs.items())


def test_train_configmap_loads_with_the_project_loader(cfg):
    assert cfg.run == PurePosixPath(CONFIG_KEY).stem
    assert cfg.ray.address == "auto"
    assert cfg.tasks[0].backend.client.api_key is None and cfg.tasks[0].backend.client.api_key_env is None, \
        "the cluster reads the NCBI key from the mounted Secret only"


def test_training_settings_equal_the_shipped_gpu_config(cfg):
    shipped = _as_dict(load_config(TrainConfig, REPO_ROOT / "configs" / "pubmed-qwen3b-gpu.yaml"))
    cluster = _as_dict(cfg)
    for key in shipped.keys() - CLUSTER_ONLY - {"tasks", "actors"}:
        assert cluster[key] == shipped[key], f"{key} drifted from configs/pubmed-qwen3b-gpu.yaml"
    assert cluster["transport"]["backlog_bound"] == shipped["transport"]["backlog_bound"]
    assert cluster["model"]["name_or_path"].endswith("/" + shipped["model"]["name_or_path"].split("/")[-1])
    for mine, theirs in zip(cluster["tasks"], shipped["tasks"], strict=True):
        for side in (mine, theirs):
            side["backend"]["client"].update(api_key=None, api_key_env=None, api_key_file=None)
        assert mine == theirs
    # The actor has a GPU of its own on the cluster, so only vLLM's share of it differs.
    for side in (cluster["actors"], shipped["actors"]):
        side["engine"].pop("gpu_memory_utilization")
    assert cluster["actors"] == shipped["actors"]


def test_redis_url_names_the_redis_service(cfg):
    url = urlparse(cfg.transport.url)
    service = find("Service", url.hostname)
    assert url.scheme == "redis" and url.port in [p["port"] for p in service["spec"]["ports"]]
    assert service["metadata"]["namespace"] == JOB["metadata"]["namespace"], "a short host name resolves in the same namespace only"
    selected = find("Deployment", url.hostname)
    assert service["spec"]["selector"].items() <= selected["spec"]["template"]["metadata"]["labels"].items()


def test_every_ray_pod_mounts_the_shared_volume_at_the_configured_paths(cfg):
    claim = find("PersistentVolumeClaim")["metadata"]["name"]
    roots = {cfg.paths.data_root, cfg.paths.models_dir, cfg.paths.runs_dir, cfg.paths.index_dir, Path(cfg.model.name_or_path)}
    for doc in (JOB, SERVICE):
        for group_name, group in ray_groups(doc):
            shared = {path: vol for path, (_, vol) in mounts(group["template"]["spec"]).items()
                      if vol.get("persistentVolumeClaim", {}).get("claimName") == claim}
            assert len(shared) == 1, f"{doc['kind']} {group_name}: mount the claim {claim} once"
            (mount_path,) = shared
            if doc is JOB:
                assert all(Path(mount_path) in [r, *r.parents] for r in roots), f"{group_name}: {roots} not under {mount_path}"


def test_rewarder_pods_mount_the_api_key_where_the_config_reads_it(cfg):
    key_file = PurePosixPath(cfg.tasks[0].backend.client.api_key_file)
    generator = yaml.safe_load((MANIFEST_DIR / "kustomization.yaml").read_text())["secretGenerator"]
    (secret,) = [g for g in generator if g["name"] == "deepretrieval-api-keys"]
    assert secret["options"]["disableNameSuffixHash"], "the RayJob names the Secret literally"
    secret_keys = {entry.split("=", 1)[0] for entry in secret["files"]}
    rewarder_groups = [g for name, g in ray_groups(JOB) if "rewarder" in ray_custom_resources(g)]
    assert rewarder_groups
    for group in rewarder_groups:
        mount, volume = mounts(group["template"]["spec"])[str(key_file.parent)]
        assert volume["secret"]["secretName"] == secret["name"] and mount["readOnly"]
        items = {i["path"]: i["key"] for i in volume["secret"]["items"]}
        assert items[key_file.name] in secret_keys


def test_worker_groups_hold_every_process_of_each_role(cfg):
    place = cfg.ray.placement
    roles = {"actor": (place.actor, cfg.actors.processes), "rewarder": (place.rewarder, cfg.rewarders.processes),
             "learner": (place.learner, 1)}
    groups = dict(ray_groups(JOB))
    assert _offers(groups.pop("head"))["CPU"] == 0, "the head must not host workers (num-cpus 0)"
    for role, (placement, processes) in roles.items():
        needs = _needs(placement)
        assert set(needs) - {"CPU", "GPU"}, f"{role}: a custom resource pins the role to its group"
        hosts = {name: _per_pod(_offers(g), needs) * g["replicas"] for name, g in groups.items() if _per_pod(_offers(g), needs)}
        assert sum(hosts.values()) >= processes, f"{role}: {processes} processes need {needs} each; the groups hold {hosts}"
    for name, group in groups.items():
        hosted = [r for r, (p, _) in roles.items() if _per_pod(_offers(group), _needs(p))]
        assert len(hosted) == 1, f"group {name} can host {hosted}: the custom resources must separate roles"


def test_ray_pods_export_traces_to_the_collector():
    service = find("Service", "otel-collector")
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "otlp-grpc")
    collector = yaml.safe_load(find("ConfigMap", "otel-collector-config")["data"]["config.yaml"])
    container = find("Deployment", "otel-collector")["spec"]["template"]["spec"]["containers"][0]
    receiver = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    target = next(p["containerPort"] for p in container["ports"] if p["name"] == grpc["targetPort"])
    assert receiver == f"0.0.0.0:{target}", "the receiver must listen on the port the Service targets, on every interface"
    for doc in (JOB, SERVICE):
        for group_name, group in ray_groups(doc):
            env = container_env(group["template"]["spec"]["containers"][0])
            assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{service['metadata']['name']}:{grpc['port']}", group_name
            assert env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc"
            assert "OTEL_SERVICE_NAME" not in env, f"{group_name}: it would overwrite every role's own service name"


def test_collector_pipeline_uses_only_defined_components():
    collector = yaml.safe_load(find("ConfigMap", "otel-collector-config")["data"]["config.yaml"])
    service = collector["service"]
    assert set(service.get("extensions", [])) <= collector.get("extensions", {}).keys()
    assert "traces" in service["pipelines"]
    for name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= collector.get(kind, {}).keys(), f"pipeline {name}: undefined {kind}"


def test_rayjob_entrypoint_runs_train_on_the_mounted_config():
    argv = shlex.split(JOB["spec"]["entrypoint"])
    assert argv[:2] == ["deepretrieval", "train"]
    config_path = PurePosixPath(argv[argv.index("--config") + 1])
    _, head = next(ray_groups(JOB))
    _, volume = mounts(head["template"]["spec"])[str(config_path.parent)]
    assert volume["configMap"]["name"] == CONFIG_MAP["metadata"]["name"] and config_path.name == CONFIG_KEY


def test_ray_version_and_image_match_the_package():
    pins = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_version = next(d.split("==")[1] for d in pins if d.startswith("ray["))
    for doc in (JOB, SERVICE):
        cluster = doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]
        assert cluster["rayVersion"] == ray_version, "the image's Ray (pyproject pin) and rayVersion must agree"
        images = {g["template"]["spec"]["containers"][0]["image"] for _, g in ray_groups(doc)}
        assert images == {"deepretrieval:0.1.0-cuda"}, "docs/cluster.md builds this tag from deploy/docker/Dockerfile.cuda"


def test_serve_config_names_the_app_and_the_trained_weights(cfg):
    from ray.serve.schema import ServeDeploySchema

    serve = ServeDeploySchema.model_validate(yaml.safe_load(SERVICE["spec"]["serveConfigV2"]))
    (app,) = serve.applications
    assert app.import_path == SERVE_IMPORT_PATH
    assert app.args["task"] == cfg.tasks[0].task and app.args["task"] in task_names()
    final = cfg.paths.runs_dir / cfg.run / "weights" / version_dir_name(cfg.max_steps)
    assert Path(app.args["model"]) == final, "serve the weights the RayJob publishes last"


def test_serve_replicas_fit_the_rayservice_workers():
    replicas = yaml.safe_load(SERVICE["spec"]["serveConfigV2"])["applications"][0]["args"]["replicas"]
    needs = {k: v for k, v in {"CPU": replicas["num_cpus"], "GPU": replicas["num_gpus"]}.items() if v > 0}
    groups = dict(ray_groups(SERVICE))
    assert _offers(groups.pop("head"))["CPU"] == 0, "replicas belong on the GPU workers, not the head"
    slots = sum(_per_pod(_offers(g), needs) * g["replicas"] for g in groups.values())
    assert slots >= replicas["num_replicas"], f"{replicas['num_replicas']} replicas need {needs} each; the workers hold {slots}"


def test_serve_app_builder_accepts_the_args_when_it_exists():
    """The args go through the endpoint's own builder (it validates them; no replica starts)."""
    module_name, attr = SERVE_IMPORT_PATH.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        pytest.skip(f"{module_name} is not in this checkout (deepretrieval serve)")
    from ray.serve import Application

    args = yaml.safe_load(SERVICE["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert isinstance(getattr(module, attr)(args), Application)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kustomize_renders_valid_objects_and_needs_the_key_file(tmp_path):
    work = tmp_path / "k8s"
    shutil.copytree(MANIFEST_DIR, work, ignore=shutil.ignore_patterns("secrets"))
    missing = subprocess.run(["kubectl", "kustomize", str(work)], capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "ncbi-api-key" in missing.stderr, "without the key file kustomize must stop"
    (work / "secrets").mkdir()
    (work / "secrets" / "ncbi-api-key").write_text("0123456789abcdef")
    # docs/cluster.md points the images at a registry this way; it must reach the containers inside the RayJob.
    with (work / "kustomization.yaml").open("a") as f:
        f.write("images:\n  - name: deepretrieval\n    newName: registry.test/team/deepretrieval\n")
    rendered = subprocess.run(["kubectl", "kustomize", str(work)], capture_output=True, text=True, timeout=120, check=True)
    out = tmp_path / "rendered.yaml"
    out.write_text(rendered.stdout)
    objects = documents(out)
    secret = next(d for d in objects if d["kind"] == "Secret")
    assert secret["metadata"] == {"name": "deepretrieval-api-keys", "namespace": "deepretrieval"} and "ncbi-api-key" in secret["data"]
    job = next(d for d in objects if d["kind"] == "RayJob")
    assert {g["template"]["spec"]["containers"][0]["image"] for _, g in ray_groups(job)} == {"registry.test/team/deepretrieval:0.1.0-cuda"}
    for doc in objects:
        if doc["apiVersion"] == "ray.io/v1":
            validate_ray(doc)
        else:
            validate_core(doc)
