"""The query-rewriting endpoint on Ray Serve: `POST /v1/rewrite`, `GET /healthz`.

`build_app(args)` is the application builder: the import path
`deepretrieval.deploy.serve_app:build_app` in a RayService `serveConfigV2` (its `args` are
`ServeConfig` fields, plus an optional `config_file` they override), or `deepretrieval serve`.

Each replica holds one generation engine. Requests are validated first (deploy/serve_api.py), so
bad input never reaches it; valid ones are gathered by `@serve.batch` into one engine call
(actors/rewrite.py, run in a worker thread so the replica keeps answering), and the completion is
parsed with the task's answer parser. A completion that breaks the format falls back to the
original query, and the answer says so. Each `POST /v1/rewrite` is one `serve.rewrite` span.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import JSONResponse

from deepretrieval.actors.rewrite import Rewrite, RewriteJob, first_valid, rewrite_jobs, serving_constraint
from deepretrieval.common import trace_names as names
from deepretrieval.common.config import load_yaml, validate_config
from deepretrieval.common.errors import BackendUnavailable, ConfigError, EngineError, QuerySyntaxError
from deepretrieval.common.serve_config import ServeConfig
from deepretrieval.deploy.serve_api import HEALTH_PATH, ApiError, RewriteRequest, check_route, max_body_bytes, parse_rewrite_request, rewrite_answer

log = logging.getLogger(__name__)

SPAN_NAME = names.SERVE_REWRITE
DEPLOYMENT_NAME = "RewriteService"


def published_version(model_dir: Path) -> int | None:
    """The policy version of a folder the learner published (runs/<run>/weights/v000020 -> 20); None otherwise."""
    from deepretrieval.learner.weight_sync import published_versions, version_dir_name

    return next((v for v in published_versions(model_dir.parent) if version_dir_name(v) == model_dir.name), None)


class RewriteService:
    """One replica: the policy's engine and tokenizer, the optional search backend, the HTTP routes.

    A plain class; `build_app` wraps it in `serve.deployment`.

    Args:
        config_json: the `ServeConfig`, as JSON (what Ray ships to each replica).
    """

    async def __init__(self, config_json: str):
        from transformers import AutoTokenizer

        from deepretrieval.actors.engines import make_engine
        from deepretrieval.common.model_fetch import resolve_model
        from deepretrieval.common.tasks import get_task
        from deepretrieval.common.telemetry import get_tracer, setup_tracing

        self.config = cfg = ServeConfig.model_validate_json(config_json)
        self._provider = setup_tracing("deepretrieval-serve", cfg.trace_file)
        self._tracer = get_tracer(self._provider)
        model_dir = Path(resolve_model(cfg.model, cfg.paths.models_dir))
        version = published_version(model_dir)
        self.policy_version = cfg.policy_version if cfg.policy_version is not None else (version or 0)
        self.model_name = cfg.model_name or (f"{model_dir.parent.parent.name}/{model_dir.name}" if version is not None else model_dir.name)
        self._tasks = {name: get_task(name, cfg.task_overrides.get(name)) for name in cfg.tasks}
        # One engine thread: engines are not thread-safe, and @serve.batch runs one batch at a time.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="engine")
        loop = asyncio.get_running_loop()
        self._engine = await loop.run_in_executor(self._executor, make_engine, model_dir, cfg.engine, cfg.dtype)
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self._constraints = await loop.run_in_executor(self._executor, self._pick_constraints)
        self._search = None
        self._search_resources: list[Any] = []
        if cfg.backend is not None:
            self._search = await self._open_search()
        self._feedback = await loop.run_in_executor(None, self._open_feedback) if any(t.feedback for t in self._tasks.values()) else {}
        self._generate.set_max_batch_size(cfg.max_batch_size)
        self._generate.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.stats = {"requests": 0, "batches": 0, "generated": 0}
        log.info("serving %s (policy v%d) with the %s engine; constrained=%s, tasks %s, search %s", self.model_name, self.policy_version,
                 cfg.engine.type, self.constrained, cfg.tasks, cfg.backend.type if cfg.backend else None)

    @property
    def constrained(self) -> bool:
        return any(c is not None for c in self._constraints.values())

    def _pick_constraints(self) -> dict[str, str | None]:
        """Task -> answer-format regex when constrained decoding is on and the engine does it, else None.

        One 1-token constrained generation probes the engine (and compiles the grammar once).

        Raises:
            ConfigError: `constrained: true` and the engine has no constrained decoding.
        """
        from deepretrieval.actors.base import GenerationRequest
        from deepretrieval.common.chat import build_prompt_ids
        from deepretrieval.common.sampling import SamplingConfig
        from deepretrieval.common.tasks import build_messages

        cfg = self.config
        off = {name: None for name in self._tasks}
        if cfg.constrained is False:
            return off
        regexes = {name: serving_constraint(t, max_reasoning_chars=cfg.max_reasoning_chars, max_new_tokens=cfg.max_new_tokens,
                                         max_rewrite_chars=cfg.max_rewrite_chars)
                   for name, t in self._tasks.items()}
        task = self._tasks[cfg.task]
        messages = build_messages(task, "probe", results=() if task.feedback else None)
        probe = GenerationRequest(build_prompt_ids(self._tokenizer, messages, task.answer.prefill), regexes[cfg.task])
        try:
            self._engine.generate([probe], SamplingConfig(n=1, temperature=0.0, max_new_tokens=1, stop=[]))
        except NotImplementedError as e:
            if cfg.constrained:
                raise ConfigError(f"constrained: true, but the {cfg.engine.type} engine has no constrained decoding ({e}); "
                                  f"set constrained: false or use another engine") from e
            log.warning("the %s engine has no constrained decoding (%s); answers are decoded unconstrained", cfg.engine.type, e)
            return off
        return regexes

    async def _open_search(self):
        """The configured backend behind the shared retries and rate limit (rewarders/resilient_search.py)."""
        from deepretrieval.rewarders.backend_factory import API_BACKENDS, open_backend
        from deepretrieval.rewarders.resilient_search import ResilientSearch

        cfg = self.config
        assert cfg.backend is not None
        redis = session = None
        if cfg.backend.type in API_BACKENDS:
            import aiohttp

            from deepretrieval.common.streams import redis_client

            redis, session = redis_client(cfg.redis_url), aiohttp.ClientSession()  # type: ignore[arg-type]
            self._search_resources += [session, redis]
        backend, limiter, key = await open_backend(cfg.backend, cfg.paths, redis=redis, session=session)
        return ResilientSearch(backend, cfg.retry, limiter=limiter, limiter_key=key, tracer=self._tracer)

    def _open_feedback(self) -> dict[str, Any]:
        """Task -> the results source of each served task with `feedback`: the search backend (ServeConfig
        checks it is bm25 or dense) with the titles of its collection."""
        from deepretrieval.common.datasets import BeirDataset
        from deepretrieval.rewarders.result_feedback import ResultFeedbackSource

        cfg = self.config
        assert cfg.backend is not None and self._search is not None
        ds = BeirDataset.open(cfg.backend.dataset, cfg.paths.data_root)  # type: ignore[union-attr]
        return {name: ResultFeedbackSource(self._search, ds, t.feedback) for name, t in self._tasks.items() if t.feedback}

    async def __call__(self, request: Request) -> JSONResponse:
        """Route one HTTP request; every refusal is a JSON error with its status."""
        root = request.scope.get("root_path", "")
        path = request.scope["path"]
        path = path[len(root):] if root and path.startswith(root) else path
        try:
            check_route(request.method, path)
            if path.rstrip("/") == HEALTH_PATH:
                return JSONResponse(self.health())
            return await self._rewrite_route(request)
        except ApiError as e:
            return JSONResponse(e.body(), status_code=e.status, headers=e.headers)
        except Exception:  # noqa: BLE001 - the HTTP boundary: a bug answers a JSON 500, the replica keeps serving
            log.exception("%s %s failed", request.method, path)
            return JSONResponse({"error": {"code": "internal_error", "message": "the server failed on this request; see the replica log"}}, status_code=500)

    async def _rewrite_route(self, request: Request) -> JSONResponse:
        from deepretrieval.common.telemetry import extract_context

        self.stats["requests"] += 1
        parent = extract_context(request.headers.get("traceparent"), request.headers.get("tracestate"))
        with self._tracer.start_as_current_span(SPAN_NAME, context=parent, record_exception=False, set_status_on_exception=False) as span:
            span.set_attributes({names.SERVE_MODEL: self.model_name, names.POLICY_VERSION: self.policy_version})
            try:
                body = await _read_body(request, max_body_bytes(self.config))
                req = parse_rewrite_request(body, self.config)
                span.set_attributes({names.SERVE_TASK: req.task, names.SERVE_N: req.n, names.SERVE_SEARCH: req.search,
                                     names.SERVE_QUERY_CHARS: len(req.query)})
                answer = await self.rewrite(req, span)
            except ApiError as e:
                span.set_attributes({names.HTTP_STATUS: e.status, names.SERVE_ERROR: e.code})
                raise
            except EngineError as e:
                log.exception("generation failed")
                span.set_status(Status(StatusCode.ERROR, str(e)))
                raise ApiError(500, "engine_error", f"the generation engine failed: {e}") from e
            span.set_attribute(names.HTTP_STATUS, 200)
            return JSONResponse(answer)

    async def rewrite(self, req: RewriteRequest, span: Span) -> dict[str, Any]:
        """Rewrite one validated request (batched with others), then search the result when asked.

        Raises:
            ApiError: 503 when the search backend is unavailable after retries.
        """
        task = self._tasks[req.task]
        results = None
        if task.feedback is not None:
            try:
                results = tuple(await self._feedback[req.task].for_request(req.query))
            except BackendUnavailable as e:
                raise ApiError(503, "backend_unavailable", f"the {self._search.name} backend did not answer the request's own search "
                                                           f"(its results are part of the prompt): {e}", {"Retry-After": "1"}) from e
            span.set_attribute(names.SERVE_RESULTS, len(results))
        rewrites = await self._generate(RewriteJob(req.query, task, req.n, self._constraints[req.task], results))
        chosen = first_valid(rewrites)
        answer = rewrite_answer(req, chosen, model=self.model_name, policy_version=self.policy_version, composition=task.query)
        span.set_attributes({names.SERVE_FALLBACK: answer["fallback"], names.SERVE_VALID: sum(rw.query is not None for rw in rewrites)})
        if answer["fallback"]:
            span.set_attribute(names.SERVE_FORMAT_ERROR, str(chosen.error))
        if req.search:
            assert self._search is not None  # parse_rewrite_request refuses search without a backend
            k = self.config.search_k or task.k_eval or 10
            try:
                result = await self._search.search(answer["query"], k)
            except QuerySyntaxError as e:
                answer.update(ids=[], search_error=str(e))
            except BackendUnavailable as e:
                raise ApiError(503, "backend_unavailable", f"the {self._search.name} backend did not answer: {e}", {"Retry-After": "1"}) from e
            else:
                answer["ids"] = result.ids
            span.set_attribute(names.SERVE_IDS, len(answer["ids"]))
        return answer

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _generate(self, jobs: list[RewriteJob]) -> list[list[Rewrite]]:
        """One engine call for the requests gathered (sizes set from the config in __init__)."""
        self.stats["batches"] += 1
        self.stats["generated"] += len(jobs)
        call = functools.partial(rewrite_jobs, self._engine, self._tokenizer, jobs, temperature=self.config.temperature,
                                 max_new_tokens=self.config.max_new_tokens)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def health(self) -> dict[str, Any]:
        """What `GET /healthz` answers: the served policy and this replica's counters."""
        import torch

        cfg = self.config
        return {"status": "ok", "model": self.model_name, "policy_version": self.policy_version, "engine": cfg.engine.type,
                "tasks": cfg.tasks, "default_task": cfg.task, "constrained": self.constrained,
                "search": cfg.backend.type if cfg.backend else None, "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                **self.stats}

    def check_health(self) -> None:
        """Ray Serve's replica health check: the engine must still be there."""
        if self._engine is None:
            raise RuntimeError("the generation engine is closed")

    async def __del__(self) -> None:
        """Release the engine, the search backend and the span exporters (Serve calls this on shutdown)."""
        from deepretrieval.common.telemetry import shutdown_tracing

        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            engine.close()
        search, self._search = getattr(self, "_search", None), None
        if search is not None:
            await search.close()
        for resource in getattr(self, "_search_resources", []):
            await (resource.aclose() if hasattr(resource, "aclose") else resource.close())
        shutdown_tracing(getattr(self, "_provider", None))


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"the body is {declared} bytes; at most {limit} are read")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body passed {limit} bytes; at most {limit} are read")
        chunks.append(chunk)
    return b"".join(chunks)


def serve_config_from_args(args: dict[str, Any]) -> ServeConfig:
    """The ServeConfig of an application's `args`: `config_file` (YAML), then the other keys over it.

    Raises:
        ConfigError: every invalid field, named.
    """
    args = dict(args)
    config_file = args.pop("config_file", None)
    data = load_yaml(Path(config_file)) if config_file else {}
    data.update(args)
    return validate_config(ServeConfig, data, source=f"serve app args{f' over {config_file}' if config_file else ''}")


def deployment_options(config: ServeConfig) -> dict[str, Any]:
    """Ray Serve deployment options from the config's replicas section."""
    r = config.replicas
    options: dict[str, Any] = {"max_ongoing_requests": r.max_ongoing_requests, "ray_actor_options": {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus}}
    if r.autoscaling is not None:
        options["autoscaling_config"] = r.autoscaling.model_dump()
    else:
        options["num_replicas"] = r.num_replicas
    return options


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application: one `RewriteService` deployment configured by `args` (see `serve_config_from_args`)."""
    config = serve_config_from_args(args)
    deployment = serve.deployment(RewriteService, name=DEPLOYMENT_NAME, **deployment_options(config))
    return deployment.bind(config.model_dump_json())
