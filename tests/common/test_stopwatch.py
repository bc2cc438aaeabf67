"""`Stopwatch`: a stage timed twice adds up, and its time counts when its body raises."""

from __future__ import annotations

import time

import pytest

from deepretrieval.common.stopwatch import Stopwatch


def test_a_stage_timed_twice_adds_up_and_counts_when_its_body_raises():
    clock = Stopwatch()
    with clock.stage("sample_s"):
        time.sleep(0.02)
    with pytest.raises(RuntimeError), clock.stage("sample_s"):
        time.sleep(0.02)
        raise RuntimeError("search API down")
    assert 0.04 <= clock.seconds["sample_s"] < 1.0


def test_time_measured_elsewhere_adds_to_its_stage():
    clock = Stopwatch()
    clock.add("warmup_s", 10.0)
    clock.add("rl_s", 5.0)
    clock.add("rl_s", 2.5)
    assert clock.seconds == {"warmup_s": 10.0, "rl_s": 7.5}


def test_negative_seconds_are_refused_with_the_stage_named():
    with pytest.raises(ValueError, match="'sft_s'"):
        Stopwatch().add("sft_s", -1.0)
