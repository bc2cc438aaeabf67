"""A run's wall-time budget: which stages count, and when RL must stop for the rest to fit.

The budget covers what a run needs to produce a trained, evaluated policy: setup, the warm-up, RL
and the final held-out evaluation. The evaluations of the untrained and the warmed-up policy
(`eval_before_after`) only show where learning started, so they are left out; one of them stands
in for the final evaluation's duration, which is not known until it ran.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from deepretrieval.common.train_config import TimeBudgetConfig

log = logging.getLogger(__name__)

#: Stages the budget leaves out: the held-out evaluations of the untrained and the warmed-up policy.
SHOWCASE_STAGES = frozenset({"eval_before_s", "eval_warmup_s"})

#: The measured evaluations that stand in for the final one, the closest first: the warmed-up policy
#: writes answers as the trained one does; the untrained one runs every answer to the token limit.
FINAL_EVAL_PROXIES = ("eval_warmup_s", "eval_before_s")


def budgeted_seconds(stages_s: Mapping[str, float]) -> float:
    """Seconds of the stages the budget counts: all but `SHOWCASE_STAGES`."""
    return sum(v for k, v in stages_s.items() if k not in SHOWCASE_STAGES)


@dataclass(frozen=True)
class RLDeadline:
    """How many seconds of RL fit in the budget (`rl_s`), fixed when RL starts, and how many are
    kept for what follows it (`reserved_s`: the final evaluation and the margin)."""

    rl_s: float
    reserved_s: float

    @classmethod
    def plan(cls, budget: TimeBudgetConfig, stages_s: Mapping[str, float], *, final_eval: bool) -> RLDeadline:
        """Args:
            budget: the config's time budget.
            stages_s: the stages timed before RL (setup, evaluations, warm-up).
            final_eval: whether a final held-out evaluation follows RL (`eval_before_after`).
        """
        reserve = 0.0
        if final_eval:
            if budget.final_eval_s is not None:
                reserve = budget.final_eval_s
            else:
                measured = [stages_s[k] for k in FINAL_EVAL_PROXIES if k in stages_s]
                if not measured:
                    log.warning("time budget: no held-out evaluation was timed in this run (a resumed run?); "
                                "nothing is reserved for the final one beyond time_budget.margin_s")
                reserve = measured[0] if measured else 0.0
        reserved = reserve + budget.margin_s
        spent = budgeted_seconds(stages_s)
        rl_s = budget.minutes * 60.0 - spent - reserved
        if rl_s <= 0:
            log.warning("time budget: %.0f s of %.0f s spent before RL (%.0f s reserved for the final evaluation and the margin); "
                        "RL stops at once", spent, budget.minutes * 60.0, reserved)
        return cls(rl_s=max(0.0, rl_s), reserved_s=reserved)

    def spent(self, rl_elapsed_s: float) -> bool:
        """Whether RL, running for `rl_elapsed_s`, has used its share."""
        return rl_elapsed_s >= self.rl_s
