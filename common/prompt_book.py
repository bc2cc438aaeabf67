"""The prepared prompts of a run, by uid (written by `deepretrieval data prepare`)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
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

    def epochs(self, seed: int) -> Iterator[Prompt]:
        """Prompts forever, reshuffled each epoch (deterministic for a seed)."""
        rng = random.Random(seed)
        order = list(self._by_uid.values())
        while order:
            rng.shuffle(order)
            yield from order
