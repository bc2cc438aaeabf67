"""The warm-up's prompt draw (deploy/warmup_draw.py): one round, or rounds until every task keeps enough."""

from __future__ import annotations

from collections import Counter

import pytest

from deepretrieval.common.wire import Prompt
from deepretrieval.deploy.warmup_draw import PromptDraw, run_rounds


def pool(**counts: int) -> list[Prompt]:
    """Interleaved prompts of each task: a0 b0 a1 b1 ..."""
    out = []
    for i in range(max(counts.values())):
        out += [Prompt(uid=f"{t}{i}", task=t, dataset="d", request=f"{t} {i}", messages=[], prefill="", target={}, split="train")
                for t, n in counts.items() if i < n]
    return out


def test_without_a_target_one_round_takes_the_first_budget_prompts_whatever_their_task():
    draw = PromptDraw(pool(a=10, b=10), budget=5, min_kept_per_task=None, batch=2)
    assert [p.uid for p in draw.next_round()] == ["a0", "b0", "a1", "b1", "a2"]
    draw.record({"a": 0, "b": 0})
    assert draw.next_round() == [] and draw.rounds == 1 and len(draw.drawn) == 5


def test_rounds_go_on_until_every_task_keeps_its_target_and_size_each_task_by_its_keep_rate():
    draw = PromptDraw(pool(a=40, b=40), budget=100, min_kept_per_task=6, batch=8)
    first = draw.next_round()  # no keep rate yet: a full batch each, in pool order
    assert [p.uid for p in first if p.task == "a"] == [f"a{i}" for i in range(8)]
    assert [p.uid for p in first if p.task == "b"] == [f"b{i}" for i in range(8)]
    draw.record({"a": 6, "b": 2})  # a is done; b kept 2 of 8: 4 short / (1/4) = 16, capped at a batch
    second = draw.next_round()
    assert [p.uid for p in second] == [f"b{i}" for i in range(8, 16)]
    draw.record({"a": 6, "b": 5})  # 5 of 16: 1 short / (5/16) -> 4 prompts
    assert [p.uid for p in draw.next_round()] == [f"b{i}" for i in range(16, 20)]
    draw.record({"a": 6, "b": 6})
    assert draw.next_round() == []
    assert draw.rounds == 3 and len(draw.drawn) == 28 and len({p.uid for p in draw.drawn}) == 28


def test_the_budget_caps_the_draw_and_goes_to_the_neediest_task_first():
    draw = PromptDraw(pool(a=40, b=40), budget=20, min_kept_per_task=10, batch=8)
    draw.next_round()
    draw.record({"a": 8, "b": 1})  # b has the smaller share of its target: it draws first
    second = draw.next_round()
    assert [p.task for p in second] == ["b"] * 4  # 20 - 16 left, all to b
    draw.record({"a": 8, "b": 3})
    assert draw.next_round() == [] and len(draw.drawn) == 20


def test_a_task_that_runs_out_of_prompts_stops_drawing_and_the_others_go_on():
    draw = PromptDraw(pool(a=3, b=40), budget=100, min_kept_per_task=5, batch=4)
    assert sorted(p.uid for p in draw.next_round()) == ["a0", "a1", "a2", "b0", "b1", "b2", "b3"]
    draw.record({"a": 1, "b": 1})
    assert {p.task for p in draw.next_round()} == {"b"}


def test_a_round_drawn_before_the_last_is_recorded_counts_its_waiting_prompts_at_the_keep_rate_so_far():
    """The warm-up scores a round while the next samples (`warmup.overlap_scoring`): draws run one round ahead of the scores."""
    draw = PromptDraw(pool(a=60, b=60), budget=200, min_kept_per_task=6, batch=8)
    draw.next_round()
    second = draw.next_round()  # nothing scored yet: a full batch each again, as after a round that kept nothing
    assert len(second) == 16 and draw.unrecorded_rounds == 2
    draw.record({"a": 4, "b": 1})  # round 1: a kept 4 of 8, b 1 of 8
    # a: 2 short, and its 8 waiting prompts should keep 4: nothing. b: 5 short, 8 waiting should keep 1: 4 / (1/8), capped at 8
    third = draw.next_round()
    assert [p.uid for p in third] == [f"b{i}" for i in range(16, 24)]
    draw.record({"a": 5, "b": 2})  # round 2 kept less than expected for a: 1 short at 5 of 16 -> 4 prompts; b first (2 of 6)
    assert [p.uid for p in draw.next_round()] == [f"b{i}" for i in range(24, 32)] + [f"a{i}" for i in range(16, 20)]
    draw.record({"a": 5, "b": 4})
    draw.record({"a": 6, "b": 6})
    assert draw.next_round() == [] and draw.unrecorded_rounds == 0 and draw.rounds == 4
    with pytest.raises(RuntimeError, match="without a round drawn"):
        draw.record({"a": 6, "b": 6})


@pytest.mark.parametrize("overlap", [True, False])
def test_run_rounds_settles_every_round_once_in_draw_order_before_or_after_the_next_is_drawn(overlap):
    """`run_rounds` with and without `warmup.overlap_scoring`: a round is settled after the next one is
    submitted, or before it is drawn. Each prompt whose number is a multiple of 3 keeps its completion."""
    draw = PromptDraw(pool(a=60, b=60), budget=200, min_kept_per_task=6, batch=8)
    events: list[tuple[str, int]] = []
    kept: Counter = Counter()
    ahead: list[int] = []  # rounds drawn and not yet recorded, at each submit

    def submit(batch):
        events.append(("submit", draw.rounds))
        ahead.append(draw.unrecorded_rounds)
        return draw.rounds, batch

    def settle(pending):
        round_no, batch = pending
        events.append(("settle", round_no))
        kept.update(p.task for p in batch if int(p.uid[1:]) % 3 == 0)
        draw.record(kept)

    run_rounds(draw, submit, settle, overlap=overlap)
    submitted = [r for e, r in events if e == "submit"]
    assert [r for e, r in events if e == "settle"] == submitted == list(range(1, draw.rounds + 1))
    assert draw.unrecorded_rounds == 0 and min(kept.values()) >= 6
    assert ahead[0] == 1 and set(ahead) == ({1, 2} if overlap else {1})
    if overlap:  # round r is settled after r+1 is submitted: one round drawn ahead of its scores
        assert all(events.index(("settle", r)) > events.index(("submit", r + 1)) for r in submitted[:-1])
        assert events[-2:] == [("settle", submitted[-2]), ("settle", submitted[-1])]
    else:  # each round settled before the next is drawn, so every draw knows every score
        assert events == [(e, r) for r in submitted for e in ("submit", "settle")]


def test_split_sets_held_out_and_selection_prompts_apart_and_leaves_the_plain_split_unchanged():
    from deepretrieval.deploy.warmup import split_prompts

    prompts = pool(a=20, b=20)
    plain_pool, plain_held, none = split_prompts(prompts, 6, seed=3)
    assert none == [] and len(plain_held) == 6 and len(plain_pool) == 34
    train, held, select = split_prompts(prompts, 6, seed=3, n_select=4)
    assert held == plain_held and select == plain_pool[-4:] and train == plain_pool[:-4]
    uids = [p.uid for p in train + held + select]
    assert sorted(uids) == sorted(p.uid for p in prompts)
