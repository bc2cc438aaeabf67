"""Benchmark: the same number of learner steps through `--mode sync` and `--mode async`.

Both runs train the pubmed task against a local PubMed emulator that adds `reward_latency_ms` to
every API call, with the same actors, rewarders and learner; only the admission bound differs
(sync: one step in flight, i.e. lockstep generate → reward → train → broadcast). Start-up is not
timed: a mode's time is from the end of its first step to the end of its last (steady state).

`ideal_speedup` comes from the sync run's measured stage times per step, generation `g`, reward
`r` and train+publish `t`: a perfect pipeline needs `max(g, r, t)` per step instead of `g + r + t`.
`learner_idle_frac` is the async learner's share of time spent waiting for a batch. With `pin`, both
modes bind the engine to core 0 and the learner to core 1, as a deployment gives each role its own
devices; unpinned, generation and training compete for the same cores.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from statistics import fmean
from typing import Any

from deepretrieval.common.backend_config import PubMedBackendSpec
from deepretrieval.common.config import ApiClientConfig, EmulatorConfig, EmulatorFaults, PathsConfig
from deepretrieval.common.config_pipeline import RateLimitConfig
from deepretrieval.common.train_config import TrainConfig
from deepretrieval.rewarders.emulators.process import EmulatorProcess


def bench_config(mode: str, base_url: str, paths: PathsConfig, steps: int, runs_dir: Path, engine: str, pin: bool = False) -> TrainConfig:
    backend = PubMedBackendSpec(client=ApiClientConfig(base_url=base_url, timeout_s=30),
                                rate_limit=RateLimitConfig(limit_per_s=1000, headroom=1.0))
    return TrainConfig.model_validate({
        "run": f"bench-async-{mode}", "mode": mode, "max_steps": steps,
        "paths": {**paths.model_dump(), "runs_dir": runs_dir},
        "tasks": [{"task": "pubmed", "dataset": "scifact", "backend": backend.model_dump(), "k": 100, "eval_split": None}],
        "sampling": {"n": 4, "temperature": 1.0, "max_new_tokens": 128},
        # Constrained rollouts keep every answer well-formed, so every sample calls the API.
        "actors": {"engine": {"type": engine, **({"cpu_threads_bind": "0"} if pin and engine == "vllm" else {})},
                   "groups_per_batch": 2, "constrained": engine == "vllm", "max_reasoning_chars": 80},
        "rewarders": {"cache": {"enabled": False}},
        "learner": {"groups_per_step": 2, "max_staleness": 1, "checkpoint_every": 0, "dynamic_sampling": False,
                    **({"cpu_cores": [1]} if pin else {}),
                    "loss": {"constrained_policy": "importance"}},
        "transport": {"backlog_bound": 4096},
    })


def _steps(run_dir: Path) -> list[dict[str, float]]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _steady_seconds(steps: list[dict[str, float]]) -> float:
    return steps[-1]["time"] - steps[0]["time"]


def run(paths: PathsConfig, *, reward_latency_ms: float = 200.0, steps: int = 8, engine: str = "vllm", pin: bool = False) -> dict[str, Any]:
    """Run sync then async training and compare (see module docstring)."""
    from deepretrieval.deploy.launcher import launch

    emu = EmulatorProcess(EmulatorConfig(api="pubmed", dataset="scifact", port=0, rate_limit=False,
                                         faults=EmulatorFaults(latency_ms=reward_latency_ms)), paths)
    base_url = emu.start()
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="dr-bench-async-") as tmp:
            for mode in ("sync", "async"):
                cfg = bench_config(mode, base_url, paths, steps, Path(tmp), engine, pin)
                res = launch(cfg)
                results[mode] = {"steps": _steps(cfg.run_dir), "actors": res.actors, "learner": res.learner}
    finally:
        emu.stop()
    sync, asyn = results["sync"], results["async"]
    s_steps, a_steps = sync["steps"], asyn["steps"]
    sync_s, async_s = _steady_seconds(s_steps), _steady_seconds(a_steps)
    actor = sync["actors"][0]
    gen = actor["generate_s"] / max(1, actor["groups"] / 2)  # seconds per generate call of one step's groups
    train = fmean(s["train_s"] for s in s_steps[1:])
    wait = fmean(s["wait_s"] for s in s_steps[1:])
    reward = max(0.0, wait - gen)
    ideal = (gen + reward + train) / max(gen, reward, train)
    a_wait = sum(s["wait_s"] for s in a_steps[1:])
    a_busy = sum(s["train_s"] for s in a_steps[1:])
    return {"reward_latency_ms": reward_latency_ms, "steps": steps, "engine": engine, "pinned": pin,
            "samples_per_step": 2 * 4, "sync_s": sync_s, "async_s": async_s, "speedup": sync_s / async_s,
            "ideal_speedup": ideal, "speedup_over_ideal": (sync_s / async_s) / ideal,
            "learner_idle_frac": a_wait / max(1e-9, a_wait + a_busy),
            "stage_s_per_step_sync": {"generate": gen, "reward": reward, "train_publish": train}}
