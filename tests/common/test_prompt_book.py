"""The RL prompt stream: shuffled epochs, or tasks drawn by weight."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from deepretrieval.common.config import validate_config
from deepretrieval.common.errors import ConfigError, DatasetError
from deepretrieval.common.prompt_book import PromptBook
from deepretrieval.common.train_config import TrainConfig
from deepretrieval.common.wire import Prompt


def _book(counts: dict[str, int]) -> PromptBook:
    return PromptBook([Prompt(uid=f"{t}{i}", task=t, dataset="d", request=f"{t} {i}", messages=[], prefill="", target={}, split="train")
                       for t, n in counts.items() for i in range(n)])


def test_unweighted_epochs_are_reshuffles_of_every_prompt():
    book = _book({"pubmed": 7, "sparse": 5})
    stream = list(itertools.islice(book.epochs(seed=3), 36))
    epochs = [stream[i:i + 12] for i in range(0, 36, 12)]
    assert all(sorted(p.uid for p in e) == sorted(p.uid for p in book) for e in epochs)
    assert [p.uid for p in epochs[0]] != [p.uid for p in epochs[1]]
    assert [p.uid for p in itertools.islice(book.epochs(seed=3), 36)] == [p.uid for p in stream]


def test_weights_set_each_tasks_share_of_the_stream_not_its_prompt_count():
    # sparse has 10x fewer prompts but twice the weight: it gets 2/3 of the stream, its prompts recycled.
    book = _book({"pubmed": 300, "sparse": 30})
    stream = list(itertools.islice(book.epochs(seed=0, weights={"pubmed": 1, "sparse": 2}), 3000))
    share = Counter(p.task for p in stream)["sparse"] / len(stream)
    assert 0.63 < share < 0.70  # 2/3, binomial sd 0.009
    sparse = [p.uid for p in stream if p.task == "sparse"]
    # each task walks its own prompts: every pass holds each of them once
    assert all(len(set(sparse[i:i + 30])) == 30 for i in range(0, len(sparse) - 30, 30))
    pubmed = [p.uid for p in stream if p.task == "pubmed"]
    assert len(set(pubmed[:300])) == min(300, len(pubmed))


def test_weighted_stream_is_deterministic_for_a_seed():
    book = _book({"pubmed": 20, "sparse": 20})
    draw = lambda seed: [p.uid for p in itertools.islice(book.epochs(seed, {"pubmed": 1, "sparse": 3}), 200)]  # noqa: E731
    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


@pytest.mark.parametrize("weights, match", [
    ({"pubmed": 1}, r"name tasks \['pubmed'\], the prompts are of tasks \['pubmed', 'sparse'\]"),
    ({"pubmed": 1, "sparse": 1, "sql": 1}, "the prompts are of tasks"),
    ({"pubmed": 1, "sparse": 0}, "must be positive"),
])
def test_weights_that_do_not_fit_the_book_fail_when_the_stream_is_made(weights, match):
    with pytest.raises(DatasetError, match=match):
        _book({"pubmed": 3, "sparse": 3}).epochs(seed=0, weights=weights)


def _cfg(weights: list[float | None]) -> dict:
    names = ["pubmed", "sparse"]
    return {"tasks": [{"task": n, "dataset": "scifact", "backend": {"type": "bm25", "dataset": "scifact"}, **({"weight": w} if w is not None else {})}
                      for n, w in zip(names, weights)]}


def test_config_weights_are_on_every_task_or_none():
    # (a config of tasks alone is valid: the default backlog bound holds the default learner's pending samples)
    assert validate_config(TrainConfig, _cfg([None, None])).prompt_weights is None
    assert validate_config(TrainConfig, _cfg([1, 2.5])).prompt_weights == {"pubmed": 1.0, "sparse": 2.5}
    with pytest.raises(ConfigError, match=r"weight is set on \['sparse'\] but not on \['pubmed'\]"):
        validate_config(TrainConfig, _cfg([None, 2]))
    with pytest.raises(ConfigError, match="weight"):
        validate_config(TrainConfig, _cfg([1, 0]))
