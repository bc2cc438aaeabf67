"""Builders shared by the pipeline tests: prepared prompts and their rollouts."""

from __future__ import annotations

import json
from pathlib import Path

from deepretrieval.common.prepare import prepare
from deepretrieval.common.prompt_book import prompt_from_record
from deepretrieval.common.synthetic import answer_completion as answer  # noqa: F401
from deepretrieval.common.synthetic import make_rollout as rollout  # noqa: F401
from deepretrieval.common.tasks import get_task
from deepretrieval.common.wire import Prompt


def prepared_prompts(task: str, dataset: str | Path, data_root: Path, out_dir: Path, split: str = "test") -> Path:
    """Prepare one split of a task and return the JSONL path."""
    return prepare(get_task(task), dataset, data_root, out_dir, [split])[0].path


def read_prompts(path: Path, limit: int) -> list[Prompt]:
    return [prompt_from_record(json.loads(line)) for line in path.read_text().splitlines()[:limit]]
