"""The prepared prompts of a run, by uid (written by `deepretrieval data prepare`)."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from deepretrieval.common.errors import DatasetError
from deepretrieval.common.targets import Target
from deepretrieval.common.wire import Prompt

_TARGET = TypeAdapter(Target)


def prompt_from_record(record: dict, where: str = "record") -> Prompt:
    """A wire Prompt from one prepared JSONL record; a bad record is a DatasetError naming it."""
    try:
        return Prompt(uid=record["uid"], task=record["task"], dataset=record["dataset"], request=record["request"],
                      messages=record["messages"], prefill=record.get("prefill", ""), target=record["target"],
                      split=record["split"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{where}: not a prepared prompt record ({e})") from e


class PromptBook:
    """Prompts by uid, with their parsed targets.

    Args:
        prompts: the prompts (uids must be unique).
    """

    def __init__(self, prompts: Sequence[Prompt]):
        self._by_uid: dict[str, Prompt] = {}
        for p in prompts:
            if p.uid in self._by_uid:
                raise DatasetError(f"duplicate prompt uid {p.uid!r}")
            self._by_uid[p.uid] = p
        self._targets: dict[str, Target] = {}

    @classmethod
    def from_files(cls, paths: Sequence[Path], limit: int | None = None) -> "PromptBook":
        """Read prepared JSONL files (at most `limit` prompts per file)."""
        prompts: list[Prompt] = []
        for path in paths:
            n = 0
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise DatasetError(f"prompt file {path} cannot be read: {e}; run `deepretrieval data prepare`") from e
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                if limit is not None and n >= limit:
                    break
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{path}:{lineno}: not JSON ({e})") from e
                prompts.append(prompt_from_record(record, f"{path}:{lineno}"))
                n += 1
        return cls(prompts)

    def __len__(self) -> int:
        return len(self._by_uid)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self._by_uid.values())

    def get(self, uid: str) -> Prompt | None:
        return self._by_uid.get(uid)

    def target(self, prompt: Prompt) -> Target:
        """The prompt's target as a typed model (parsed once, then cached)."""
        t = self._targets.get(prompt.uid)
        if t is None:
            try:
                t = _TARGET.validate_python(prompt.target)
            except ValidationError as e:
                raise DatasetError(f"prompt {prompt.uid}: bad target: {e.errors()[0]['msg']}") from e
            self._targets[prompt.uid] = t
        return t

    def epochs(self, seed: int, weights: Mapping[str, float] | None = None) -> Iterator[Prompt]:
        """Prompts forever, deterministic for a seed.

        Without `weights`, all prompts reshuffled together each epoch: each task gets its share
        of the prompt count. With `weights` (task -> positive weight, one per task in the book),
        each prompt is of a task drawn with probability weight / total, and each task walks its
        own prompts, reshuffled whenever they run out: a task can then get more of the stream
        than of the pool (NFCorpus, whose groups tie more often than PubMed's, configs/default-cpu.yaml).

        Raises:
            DatasetError: the weights do not name exactly the book's tasks, or one is not positive
                (checked here, not at the first draw).
        """
        rng = random.Random(seed)
        if weights is None:
            return _reshuffled(list(self._by_uid.values()), rng)
        by_task: dict[str, list[Prompt]] = {}
        for p in self._by_uid.values():
            by_task.setdefault(p.task, []).append(p)
        if set(weights) != set(by_task):
            raise DatasetError(f"prompt weights name tasks {sorted(weights)}, the prompts are of tasks {sorted(by_task)}")
        if any(not w > 0 for w in weights.values()):
            raise DatasetError(f"prompt weights must be positive, got {dict(weights)}")
        tasks = sorted(by_task)
        walks = {t: _reshuffled(by_task[t], rng) for t in tasks}
        return _weighted(walks, list(itertools.accumulate(weights[t] for t in tasks)), rng)


def _reshuffled(prompts: Sequence[Prompt], rng: random.Random) -> Iterator[Prompt]:
    """`prompts` forever, reshuffled by `rng` before each pass (nothing when there are none)."""
    order = list(prompts)
    while order:
        rng.shuffle(order)
        yield from order


def _weighted(walks: Mapping[str, Iterator[Prompt]], cum_weights: Sequence[float], rng: random.Random) -> Iterator[Prompt]:
    """Each prompt from the walk of a task drawn by `cum_weights` (in `walks`' key order)."""
    tasks = list(walks)
    while True:
        yield next(walks[rng.choices(tasks, cum_weights=cum_weights)[0]])
