"""The three process roles of a run as plain classes; the launcher wraps them in `ray.remote`.

Each worker builds its own resources from the run config inside its process (engines, JVM
searchers, models never cross a process boundary) and runs until `stop()` or its own limit.
Tests can run them in-process (RLlib's pattern: actors are plain classes).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from deepretrieval.common.config_pipeline import TransportConfig
from deepretrieval.common.coordination import Coordinator
from deepretrieval.common.model_fetch import resolve_model
from deepretrieval.common.streams import RedisStreamTransport, redis_client
from deepretrieval.common.telemetry import get_tracer, setup_tracing, shutdown_tracing
from deepretrieval.common.train_config import TrainConfig

log = logging.getLogger(__name__)

LEARNER_CLAIM_IDLE_MS = 24 * 3600 * 1000  # the learner holds entries pending until a checkpoint


def prompt_files(cfg: TrainConfig, split_of: str = "train_split") -> list[Path]:
    """The prepared prompt files of the run's tasks (written by the launcher)."""
    return [cfg.run_dir / "prompts" / t.task / f"{getattr(t, split_of)}.jsonl" for t in cfg.tasks]


def rewarder_service_config(cfg: TrainConfig, consumer: str, split_of: str = "train_split"):
    """The config of a rewarder process (or in-process rewarder) of this run, scoring prompts of `split_of`."""
    from deepretrieval.rewarders.service import RewarderServiceConfig

    tasks = [t.model_dump(include={"task", "overrides", "backend", "k"}) for t in cfg.tasks]
    return RewarderServiceConfig(run=cfg.run, prompt_files=prompt_files(cfg, split_of), tasks=tasks, transport=cfg.transport,
                                 cache=cfg.rewarders.cache, retry=cfg.rewarders.retry, rewarder=cfg.rewarders.rewarder,
                                 paths=cfg.paths, trace_file=cfg.trace_file, consumer=consumer)


class _Worker:
    def __init__(self, cfg_json: str, name: str):
        self.cfg = TrainConfig.model_validate_json(cfg_json)
        self.name = name
        self._stop = asyncio.Event()
        self._provider = None

    def _tracing(self, service: str) -> None:
        self._provider = setup_tracing(service, self.cfg.trace_file)

    def stop(self) -> None:
        """Ask the worker to finish its current unit of work and return from `run`."""
        self._stop.set()

    def pid(self) -> int:
        """The OS process id of this worker."""
        import os

        return os.getpid()

    def _close_tracing(self) -> None:
        shutdown_tracing(self._provider)


class ActorWorker(_Worker):
    """One actor process: an engine sampling groups of the run's prompts.

    Every published uid is appended to `runs/<run>/produced/actor-<i>.txt` (after the publish), so
    produced and trained uids can be compared (`bench chaos`).
    """

    def _log_produced(self, rollouts) -> None:
        path = self.cfg.run_dir / "produced" / f"actor-{self.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write("".join(r.uid + "\n" for r in rollouts))

    async def run(self, max_groups: int | None = None) -> dict:
        from transformers import AutoTokenizer

        from deepretrieval.actors.actor import Actor, ActorConfig
        from deepretrieval.actors.engines import make_engine
        from deepretrieval.common.chat import build_prompt_ids
        from deepretrieval.common.prompt_book import PromptBook

        cfg = self.cfg
        self._tracing(f"deepretrieval-actor-{self.name}")
        model_dir = Path(resolve_model(cfg.model.name_or_path, cfg.paths.models_dir))
        engine = make_engine(model_dir, cfg.actors.engine, cfg.model.dtype)
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        client = redis_client(cfg.transport.url)  # type: ignore[arg-type]
        try:
            book = PromptBook.from_files(prompt_files(cfg))
            constraint = None
            if cfg.actors.constrained:
                from deepretrieval.common.answer_grammar import answer_regex
                from deepretrieval.common.tasks import get_task

                limit = cfg.actors.max_reasoning_chars if cfg.actors.max_reasoning_chars is not None else cfg.sampling.max_new_tokens
                regexes = {t.task: answer_regex(get_task(t.task, t.overrides).answer, max_reasoning_chars=limit) for t in cfg.tasks}
                constraint = lambda p: regexes[p.task]  # noqa: E731
            actor = Actor(engine, RedisStreamTransport(client, cfg.transport), Coordinator(client, cfg.run), cfg.run,
                          book.epochs(cfg.seed * 1000 + int(self.name), cfg.prompt_weights), lambda p: build_prompt_ids(tok, p.messages, p.prefill),
                          cfg.sampling, ActorConfig(groups_per_batch=cfg.actors.groups_per_batch, max_in_flight_groups=cfg.max_in_flight_groups),
                          constraint=constraint, tracer=get_tracer(), on_published=self._log_produced,
                          owner=f"actor-{self.name}")
            stats = await actor.run(self._stop, max_groups)
            return {"samples": stats.samples, "groups": stats.groups, "generate_s": stats.generate_s, "tokens": stats.tokens,
                    "weight_loads": stats.weight_loads, "weight_load_s": stats.weight_load_s, "admission_wait_s": stats.admission_wait_s}
        finally:
            engine.close()
            await client.aclose()
            self._close_tracing()


class RewarderWorker(_Worker):
    """One rewarder process."""

    def service_config(self):
        return rewarder_service_config(self.cfg, f"rewarder-{self.name}")

    async def run(self) -> dict:
        from deepretrieval.rewarders.service import RewarderService

        self._tracing(f"deepretrieval-rewarder-{self.name}")
        service = RewarderService(self.service_config(), get_tracer())
        try:
            self.rewarder = await service.rewarder()
            stats = await self.rewarder.run(self._stop)
            return {"scored": stats.scored, "by_status": stats.by_status, "api_calls": stats.api_calls, "cache_hits": stats.cache_hits}
        finally:
            await service.close()
            self._close_tracing()

    def stats(self) -> dict:
        r = getattr(self, "rewarder", None)
        if r is None:
            return {"scored": 0, "api_calls": 0, "cache_hits": 0}
        return {"scored": r.stats.scored, "api_calls": r.stats.api_calls, "cache_hits": r.stats.cache_hits, "by_status": dict(r.stats.by_status)}


class LearnerWorker(_Worker):
    """The learner process (one rank; FSDP across ranks runs under torchrun on a cluster)."""

    async def run(self) -> dict:
        from deepretrieval.learner.loop import Learner
        from deepretrieval.learner.trainer import Trainer
        from deepretrieval.learner.weight_sync import FilesystemWeightSync

        cfg = self.cfg
        self._tracing("deepretrieval-learner")
        if cfg.learner.cpu_cores:
            import os

            import torch

            os.sched_setaffinity(0, set(cfg.learner.cpu_cores))
            torch.set_num_threads(len(cfg.learner.cpu_cores))
        model_dir = Path(resolve_model(cfg.model.name_or_path, cfg.paths.models_dir))
        loop = asyncio.get_running_loop()
        trainer = await loop.run_in_executor(None, lambda: Trainer.from_pretrained(model_dir, cfg.learner))
        client = redis_client(cfg.transport.url)  # type: ignore[arg-type]
        learner_transport = TransportConfig(**{**cfg.transport.model_dump(), "claim_idle_ms": LEARNER_CLAIM_IDLE_MS})
        coord = Coordinator(client, cfg.run)
        sync = FilesystemWeightSync(cfg.run_dir / "weights", coord)

        async def publish(version: int) -> float:
            pub = await sync.publish(version, trainer)
            return pub.total_s

        learner = Learner(trainer, cfg.learner, RedisStreamTransport(client, learner_transport), coord, cfg.run,
                          publish=publish, group_size=cfg.sampling.n, checkpoint_root=cfg.run_dir / "checkpoints",
                          metrics_file=cfg.run_dir / "metrics.jsonl", tracer=get_tracer())
        try:
            learner.resume()
            latest = await coord.latest()
            learner.continue_numbering(None if latest is None else latest.version)
            if trainer.policy_version > 0:
                await publish(trainer.policy_version)  # actors started from the base model or a lost lineage
            await learner.run(self._stop, cfg.max_steps)
            return {"steps": learner.steps, "policy_version": trainer.policy_version, "idle_s": learner.idle_s, "busy_s": learner.busy_s,
                    "batcher": {k: v for k, v in vars(learner.batcher.stats).items() if k != "staleness"}}
        finally:
            await client.aclose()
            self._close_tracing()
