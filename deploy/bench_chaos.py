"""Benchmark: kill -9 random workers during a short run and check that no sample is lost or trained twice.

Each trial is one training run in which, at random moments, one randomly chosen process (an
actor, a rewarder or the learner) is killed with SIGKILL; the supervisor restarts it (the learner
resumes from its checkpoint and gets its uncommitted stream entries back). At the end:

- produced: every uid an actor published (logged after each atomic group publish);
- trained: the uids of the final checkpoint's lineage, in training order;
- in flight: uids still in the rollout or scored streams (generated but not yet trained when the
  run reached its last step).

`lost` = produced − trained − in flight; `duplicated` = uids trained more than once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from deepretrieval.common.config import PathsConfig
from deepretrieval.common.train_config import TrainConfig


VICTIMS = ("actor-0", "rewarder-0", "rewarder-1", "learner-0")
"""The workers of `chaos_config` a trial may kill (one actor, two rewarders, the learner)."""


def chaos_config(paths: PathsConfig, runs_dir: Path, trial: int, steps: int, engine: str) -> TrainConfig:
    return TrainConfig.model_validate({
        "run": f"chaos-{trial}", "max_steps": steps, "seed": trial,
        "paths": {**paths.model_dump(), "runs_dir": runs_dir},
        "tasks": [{"task": "sparse", "dataset": "scifact", "max_prompts": 64, "eval_split": None,
                   "backend": {"type": "bm25", "dataset": "scifact"}, "k": 50}],
        "sampling": {"n": 2, "temperature": 1.0, "max_new_tokens": 24},
        "actors": {"engine": {"type": engine}, "groups_per_batch": 2},
        "rewarders": {"processes": 2},
        "learner": {"groups_per_step": 2, "max_staleness": 2, "checkpoint_every": 2, "micro_batch_seqs": 4},
        # rewarders reclaim a dead peer's entries after 3 s
        "transport": {"backlog_bound": 4096, "claim_idle_ms": 3000},
    })


def _stream_uids(url: str, run: str) -> set[str]:
    import redis

    from deepretrieval.common.streams import PAYLOAD_FIELD, rollouts_stream, scored_stream
    from deepretrieval.common.wire import Rollout, decode

    client = redis.Redis.from_url(url)
    uids: set[str] = set()
    for stream in (rollouts_stream(run), scored_stream(run)):
        for _, fields in client.xrange(stream):
            msg = decode(fields[PAYLOAD_FIELD])
            uids.add(msg.uid if isinstance(msg, Rollout) else msg.rollout.uid)
    client.close()
    return uids


def _trial(paths: PathsConfig, runs_dir: Path, trial: int, steps: int, engine: str, kills: int, rng: random.Random,
           victims: tuple[str, ...]) -> dict[str, Any]:
    from deepretrieval.deploy.launcher import launch

    cfg = chaos_config(paths, runs_dir, trial, steps, engine)
    schedule = sorted(rng.uniform(0.15, 0.7) for _ in range(kills))  # fractions of the steps
    killed: list[str] = []
    in_flight: set[str] = set()

    def on_tick(sup) -> None:
        # At most one kill a tick, among the workers alive now: a second kill in the same tick
        # would find the first victim dead and not yet restarted.
        if not schedule or _steps_done(cfg) < schedule[0] * steps:
            return
        live = sup.pids()
        candidates = [v for v in victims if v in live]
        if not candidates:
            return
        schedule.pop(0)
        victim = rng.choice(candidates)
        os.kill(live[victim], signal.SIGKILL)
        killed.append(victim)

    def on_end(url: str) -> None:
        in_flight.update(_stream_uids(url, cfg.run))

    t0 = time.monotonic()
    result = launch(cfg, on_tick=on_tick, on_end=on_end)
    produced: set[str] = set()
    for f in (cfg.run_dir / "produced").glob("*.txt"):
        produced.update(line for line in f.read_text().splitlines() if line)
    ckpt = sorted((cfg.run_dir / "checkpoints").iterdir())[-1]
    trained = json.loads((ckpt / "trainer_state.json").read_text())["extra"]["trained"]
    lost = produced - set(trained) - in_flight
    return {"trial": trial, "killed": killed, "restarts": result.restarts, "seconds": time.monotonic() - t0,
            "produced": len(produced), "trained": len(trained), "in_flight_at_end": len(in_flight & produced),
            "lost": len(lost), "duplicated": len(trained) - len(set(trained)), "lost_examples": sorted(lost)[:5]}


def _steps_done(cfg: TrainConfig) -> int:
    f = cfg.run_dir / "metrics.jsonl"
    return sum(1 for _ in f.open()) if f.exists() else 0


def run(paths: PathsConfig, *, trials: int = 5, steps: int = 10, kills: int = 1, engine: str = "hf", seed: int = 0,
        victims: tuple[str, ...] = VICTIMS) -> dict[str, Any]:
    """Run `trials` chaos trials; returns per-trial results and the totals.

    Args:
        victims: the workers a kill chooses from (a subset of `VICTIMS`).

    Raises:
        ValueError: a victim is not a worker of the chaos run.
    """
    unknown = set(victims) - set(VICTIMS)
    if not victims or unknown:
        raise ValueError(f"victims must be a non-empty subset of {VICTIMS}, got {victims}")
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="dr-bench-chaos-") as tmp:
        results = [_trial(paths, Path(tmp), i, steps, engine, kills, rng, tuple(victims)) for i in range(trials)]
    return {"trials": trials, "lost": sum(r["lost"] for r in results), "duplicated": sum(r["duplicated"] for r in results),
            "kills": sum(len(r["killed"]) for r in results), "per_trial": results}
