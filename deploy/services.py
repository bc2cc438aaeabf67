"""The local services a run needs besides its workers: a private Redis and the API emulators.

`run_services(cfg)` starts what the config asks for and yields the config pointing at it: a
private `redis-server` when `transport.url` is None, and every task backend's managed `emulator`
(its client's base URL replaced by the emulator's). Everything started is stopped by pid on exit,
in reverse order. `train`, `warmup` and `eval` share it, so a config runs the same under each.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from deepretrieval.common.redis_server import RedisServer
from deepretrieval.common.train_config import TrainConfig

log = logging.getLogger(__name__)


def start_private_redis(cfg: TrainConfig) -> tuple[RedisServer, TrainConfig]:
    """A redis-server for a run without a Redis URL (in runs/<run>/redis), and the config pointing at it."""
    server = RedisServer(cfg.run_dir / "redis").start()
    return server, cfg.model_copy(update={"transport": cfg.transport.model_copy(update={"url": server.url})})


def start_emulators(cfg: TrainConfig, stack: ExitStack) -> TrainConfig:
    """Start each task backend's managed emulator (stopped when `stack` closes); the config with their URLs."""
    from deepretrieval.rewarders.emulators.process import EmulatorProcess

    tasks = []
    for t in cfg.tasks:
        spec = t.backend
        emulator = getattr(spec, "emulator", None)
        if emulator is not None:
            proc = EmulatorProcess(emulator, cfg.paths)
            url = proc.start()
            stack.callback(proc.stop)
            log.info("task %s: %s emulator over %s at %s", t.task, emulator.api, emulator.dataset, url)
            client = spec.client.model_copy(update={"base_url": url})
            t = t.model_copy(update={"backend": spec.model_copy(update={"client": client})})
        tasks.append(t)
    return cfg.model_copy(update={"tasks": tasks})


@contextmanager
def run_services(cfg: TrainConfig) -> Iterator[TrainConfig]:
    """Start the run's private Redis (when no URL is set) and managed emulators; yield the config using them."""
    with ExitStack() as stack:
        if cfg.transport.url is None:
            server, cfg = start_private_redis(cfg)
            stack.callback(server.stop)
        yield start_emulators(cfg, stack)
