"""Which train prompts the format warm-up samples, round by round.

One round (the default): the first `budget` prompts of the shuffled train pool, whatever their task.
That gives every task a share of the prompts, not of the kept completions: a task whose requests
already work (NFCorpus titles, kept as ties) keeps nearly every prompt, one whose requests rarely
work (PubMed-style claims) about one in five, so the SFT set repeats a handful of that task's
completions and the model memorises them (docs/design-notes.md, "Warm-up task balance").

With `min_kept_per_task`, the draw goes on in rounds until every task has that many kept
completions or the budget is spent. Each round a task short of its target draws fresh prompts
from its own part of the pool, as many as its keep rate so far says it needs (a full batch before
it has one), the neediest task first when the budget runs short.

A round may be drawn before the one before it is recorded (the warm-up scores a round while the
next one samples, `warmup.overlap_scoring`). A task's prompts still waiting for their scores count
toward its target at its keep rate so far; a task with no scored prompt yet draws a full batch, as
it would after a round that kept nothing.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from deepretrieval.common.wire import Prompt

_Pending = TypeVar("_Pending")


class PromptDraw:
    """The warm-up's prompt draw: `next_round()` gives a round's prompts, `record()` what they kept.

    Args:
        pool: the shuffled train prompts (held-out ones already removed), in draw order.
        budget: most prompts drawn in all.
        min_kept_per_task: kept completions each task should reach; None = one round of `budget`.
        batch: most prompts a task draws in one round.
    """

    def __init__(self, pool: Sequence[Prompt], *, budget: int, min_kept_per_task: int | None, batch: int):
        self._pool = list(pool)
        self._budget = budget
        self._min_kept = min_kept_per_task
        self._batch = batch
        self._left: dict[str, list[Prompt]] = {}
        for p in self._pool:
            self._left.setdefault(p.task, []).append(p)
        self._kept: dict[str, int] = {t: 0 for t in self._left}
        self._scored: Counter[str] = Counter()  # prompts per task whose round is recorded
        self._unrecorded: deque[Counter[str]] = deque()  # prompts per task of each round drawn and not yet recorded, oldest first
        self.drawn: list[Prompt] = []
        self.rounds = 0

    @property
    def unrecorded_rounds(self) -> int:
        """Rounds drawn whose kept completions are not recorded yet."""
        return len(self._unrecorded)

    def record(self, kept_by_task: Mapping[str, int]) -> None:
        """Kept completions per task so far (over every recorded round), once the oldest unrecorded round is scored."""
        if not self._unrecorded:
            raise RuntimeError("record() without a round drawn and not yet recorded")
        self._scored.update(self._unrecorded.popleft())
        for task in self._kept:
            self._kept[task] = kept_by_task.get(task, 0)

    def _want(self, task: str) -> int:
        """Fresh prompts `task` asks for this round (0: at its target, expected to reach it from its unscored prompts, or none left)."""
        short = self._min_kept - self._kept[task]
        if short <= 0 or not self._left[task]:
            return 0
        scored = self._scored[task]
        rate = self._kept[task] / scored if scored else 0.0
        if rate == 0:
            return min(self._batch, len(self._left[task]))
        waiting = sum(r[task] for r in self._unrecorded)
        short -= rate * waiting
        want = math.ceil(short / rate - 1e-9) if short > 0 else 0
        return min(want, self._batch, len(self._left[task]))

    def next_round(self) -> list[Prompt]:
        """The next round's prompts; [] when the draw is over."""
        budget_left = self._budget - len(self.drawn)
        if budget_left <= 0:
            return []
        if self._min_kept is None:
            picked = self._pool[:budget_left] if self.rounds == 0 else []
        else:
            picked = []
            # The neediest first: the smallest share of its target kept.
            for task in sorted(self._left, key=lambda t: (self._kept[t] / self._min_kept, t)):
                n = min(self._want(task), budget_left - len(picked))
                picked.extend(self._left[task][:n])
        taken = {p.uid for p in picked}
        for task, left in self._left.items():
            self._left[task] = [p for p in left if p.uid not in taken]
        self.drawn.extend(picked)
        if picked:
            self.rounds += 1
            self._unrecorded.append(Counter(p.task for p in picked))
        return picked


def run_rounds(draw: PromptDraw, submit: Callable[[list[Prompt]], _Pending], settle: Callable[[_Pending], None], *,
               overlap: bool) -> None:
    """Drive `draw` to its end: each round's prompts go to `submit` (sample them, start their scoring),
    and what it returns to `settle` (wait for the scores, `draw.record()` what was kept), in draw order.

    With `overlap`, round r is settled only after round r+1 has been drawn and submitted, so its
    scoring runs while the next round samples; without, each round is settled before the next is drawn.
    """
    waiting: list[_Pending] = []
    while True:
        batch = draw.next_round()
        if not batch and not waiting:
            return
        if batch:
            waiting.append(submit(batch))
        while waiting and (not overlap or len(waiting) > 1 or not batch):
            settle(waiting.pop(0))
