"""Run the rewriting endpoint on a local Ray (what `deepretrieval serve`, `bench serve` and the tests use).

On a cluster, a RayService runs the same application from `deepretrieval.deploy.serve_app:build_app`
and Ray and Serve are already up; here `local_serve` starts both, and stops both on exit.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from deepretrieval.common.serve_config import ServeConfig

log = logging.getLogger(__name__)

APP_NAME = "deepretrieval-rewrite"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (Serve takes no port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def app_name(route_prefix: str) -> str:
    """The Serve application name of the app mounted at `route_prefix` ("/" -> deepretrieval-rewrite)."""
    return APP_NAME + route_prefix.rstrip("/").replace("/", "-")


@contextmanager
def local_serve(apps: Mapping[str, ServeConfig], *, host: str = "127.0.0.1", port: int = 8000,
                num_cpus: float | None = None) -> Iterator[str]:
    """Start Ray, Serve's HTTP proxy on host:port and the applications; shut them down on exit.

    The applications deploy together; this blocks until every replica has loaded its model.

    Args:
        apps: route prefix -> the config of the application mounted there; {"/": config} serves
            /v1/rewrite and /healthz. Paths in configs should be absolute: replicas are other processes.
        host: the address the proxy listens on.
        port: its port.
        num_cpus: CPUs Ray may hand out; None = this machine's count (at least what the replicas reserve).

    Yields:
        The base URL, e.g. http://127.0.0.1:8000.
    """
    # Keep a local cluster on loopback (STACK.md §6); models come from local folders.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Ray Serve marks its HTTP proxy unhealthy after 3 readiness checks of 5 s; on a small machine
    # busy with a model load (2 cores) the proxy can take longer to answer, and Serve then kills it
    # and the start fails. The local cluster inherits this environment, so its controller waits longer.
    for var in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S"):
        os.environ.setdefault(var, "30")
    import ray
    from ray import serve

    from deepretrieval.common.signals import keep_sigsegv_handler

    from deepretrieval.deploy.serve_app import build_app

    reserved = sum(c.replicas.num_cpus * (c.replicas.num_replicas or c.replicas.autoscaling.max_replicas)  # type: ignore[union-attr]
                   for c in apps.values())
    with keep_sigsegv_handler():  # Ray's failure handler would take a search JVM's SIGSEGVs (common/signals.py)
        ray.init(num_cpus=num_cpus if num_cpus is not None else max(float(os.cpu_count() or 1), reserved),
                 include_dashboard=False, log_to_driver=False)
    try:
        with keep_sigsegv_handler():
            serve.start(http_options={"host": host, "port": port})
        serve.run_many([serve.RunTarget(build_app(c.model_dump(mode="json")), name=app_name(prefix), route_prefix=prefix)
                        for prefix, c in apps.items()], wait_for_applications_running=True)
        url = f"http://{host}:{port}"
        log.info("serving at %s: %s", url, ", ".join(f"{prefix.rstrip('/')}/v1/rewrite" for prefix in apps))
        yield url
    finally:
        with keep_sigsegv_handler():  # ray.shutdown() resets SIGSEGV to the default action
            serve.shutdown()
            ray.shutdown()
