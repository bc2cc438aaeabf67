"""Query composition: the search query a task builds from the request and the policy's query."""

import pytest

from deepretrieval.common.errors import ConfigError
from deepretrieval.common.query_composition import QueryComposition
from deepretrieval.common.tasks import get_task


def test_rewrite_sends_the_policy_query_alone():
    assert QueryComposition().compose("vitamin D deficiency", "cholecalciferol") == "cholecalciferol"


def test_expand_repeats_the_request_before_the_added_terms():
    expand = QueryComposition(mode="expand", original_repeats=2)
    assert expand.compose(" vitamin D ", " bone density ") == "vitamin D vitamin D bone density"
    assert QueryComposition(mode="expand", original_repeats=1).compose("a b", "c") == "a b c"


@pytest.mark.parametrize("task", ["sparse", "dense", "qa"])
def test_expand_is_accepted_on_bag_of_words_backends(task):
    assert get_task(task, {"query": {"mode": "expand", "original_repeats": 3}}).query.original_repeats == 3


@pytest.mark.parametrize("task", ["pubmed", "ctgov", "sql"])
def test_expand_is_refused_where_the_request_would_become_query_syntax(task):
    with pytest.raises(ConfigError, match="bag-of-words backend"):
        get_task(task, {"query": {"mode": "expand"}})


@pytest.mark.parametrize("bad", [{"mode": "append"}, {"original_repeats": 0}, {"repeats": 2}])
def test_malformed_composition_names_the_field(bad):
    with pytest.raises(ConfigError, match="query"):
        get_task("sparse", {"query": bad})
