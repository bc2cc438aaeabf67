"""Builders shared by the pipeline tests: prepared prompts and rollouts with given completions."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np

from deepretrieval.common.prepare import prepare
from deepretrieval.common.tasks import get_task
from deepretrieval.common.wire import Prompt, Rollout, SamplingParams


def prepared_prompts(task: str, dataset: str | Path, data_root: Path, out_dir: Path, split: str = "test") -> Path:
    """Prepare one split of a task and return the JSONL path."""
    files = prepare(get_task(task), dataset, data_root, out_dir, [split])
    return files[0].path


def read_prompts(path: Path, limit: int) -> list[Prompt]:
    from deepretrieval.common.prompt_book import prompt_from_record

    lines = path.read_text().splitlines()[:limit]
    return [prompt_from_record(json.loads(line)) for line in lines]


def answer(query: str, reasoning: str = "the request names the key terms") -> str:
    """A format-valid completion (after the prefilled <think>) carrying `query`."""
    return f"{reasoning}</think>\n<answer>{json.dumps({'query': query})}</answer>"


def rollout(prompt: Prompt, completion: str, *, group_id: str | None = None, index: int = 0, version: int = 0,
            finish_reason: str = "stop") -> Rollout:
    """A Rollout of `prompt` whose response is `completion` (token ids are stand-ins: one per char)."""
    gid = group_id or uuid.uuid4().hex
    n = max(1, len(completion) // 4)
    return Rollout(uid=f"{gid}-{index}", group_id=gid, prompt_uid=prompt.uid, policy_version=version,
                   prompt_token_ids=np.arange(8, dtype=np.int32), response_token_ids=np.arange(n, dtype=np.int32),
                   logprobs=np.full(n, -0.5, dtype=np.float32), sampling=SamplingParams(1.0, 1.0, 512, False),
                   finish_reason=finish_reason, completion=completion, engine="test", created_at=time.time())
