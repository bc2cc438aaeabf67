"""The run's time budget: RL gets what the stages before it and the final evaluation leave."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deepretrieval.common.train_config import TimeBudgetConfig
from deepretrieval.deploy.run_budget import RLDeadline, budgeted_seconds

BEFORE_RL = {"setup_s": 60.0, "eval_before_s": 170.0, "warmup_s": 800.0, "eval_warmup_s": 100.0}


def test_the_budget_counts_setup_warmup_rl_and_final_eval_but_not_the_showcase_evaluations():
    assert budgeted_seconds({**BEFORE_RL, "rl_s": 500.0, "eval_after_s": 90.0}) == 60.0 + 800.0 + 500.0 + 90.0


def test_rl_gets_what_is_left_after_the_stages_before_it_the_final_eval_and_the_margin():
    deadline = RLDeadline.plan(TimeBudgetConfig(minutes=30, margin_s=40), BEFORE_RL, final_eval=True)
    # 1800 s - (60 + 800) spent - 100 (the warmed-up policy's evaluation stands in for the final one) - 40
    assert deadline.rl_s == 800.0 and deadline.reserved_s == 140.0
    assert not deadline.spent(799.9) and deadline.spent(800.0)


def test_the_untrained_policys_evaluation_stands_in_when_the_warmup_was_not_evaluated():
    stages = {k: v for k, v in BEFORE_RL.items() if k != "eval_warmup_s"}
    assert RLDeadline.plan(TimeBudgetConfig(minutes=30, margin_s=0), stages, final_eval=True).reserved_s == 170.0


def test_a_configured_final_eval_time_replaces_the_measured_one_and_no_final_eval_reserves_only_the_margin():
    assert RLDeadline.plan(TimeBudgetConfig(minutes=30, margin_s=10, final_eval_s=300), BEFORE_RL, final_eval=True).reserved_s == 310.0
    assert RLDeadline.plan(TimeBudgetConfig(minutes=30, margin_s=10, final_eval_s=300), BEFORE_RL, final_eval=False).reserved_s == 10.0


def test_a_budget_spent_before_rl_stops_rl_at_once(caplog):
    deadline = RLDeadline.plan(TimeBudgetConfig(minutes=10), BEFORE_RL, final_eval=True)
    assert deadline.rl_s == 0.0 and deadline.spent(0.0)
    assert "RL stops at once" in caplog.text


@pytest.mark.parametrize("bad", [{"minutes": 0}, {"minutes": 30, "margin_s": -1}, {"minutes": 30, "final_eval_s": 0}, {}])
def test_a_malformed_budget_is_refused(bad):
    with pytest.raises(ValidationError):
        TimeBudgetConfig(**bad)
