"""Query composition: the search query a task builds from the request and the policy's query."""

import pytest

from deepretrieval.common.errors import ConfigError
from deepretrieval.common.query_composition import QueryComposition, new_terms, term_key
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


def test_new_terms_only_appends_just_the_words_the_request_lacks():
    expand = QueryComposition(mode="expand", original_repeats=2, new_terms_only=True)
    # a copied word (any case, plural folded) adds nothing; a new word is added once, in order
    assert expand.compose("Vitamin D deficiency", "vitamin d deficiencies rickets Rickets bone") == (
        "Vitamin D deficiency Vitamin D deficiency rickets bone")
    # a verbatim or partial copy of the request searches exactly the request
    assert expand.compose("statins lower LDL", "statins lower") == "statins lower LDL statins lower LDL"
    assert expand.compose("stress", "stress\u00a0(Cells)") == "stress stress Cells"


def test_new_terms_only_keeps_words_that_only_look_plural():
    assert new_terms("cell stress", "cells stresses glass gla gas") == ["glass", "gla", "gas"]
    assert term_key("deficiencies") == term_key("deficiency") and term_key("gas") == "gas"


def test_new_terms_only_needs_expand():
    with pytest.raises(ConfigError, match="new_terms_only"):
        get_task("sparse", {"query": {"new_terms_only": True}})


def test_adds_nothing_is_searching_the_request_itself():
    assert QueryComposition().adds_nothing("statins lower LDL", "statins lower LDL")
    assert not QueryComposition().adds_nothing("statins lower LDL", "statins LDL")  # a rewrite searches something else
    new_only = QueryComposition(mode="expand", new_terms_only=True)
    assert new_only.adds_nothing("statins lower LDL", "Statin LDL") and new_only.adds_nothing("statins lower LDL", "...")
    assert not new_only.adds_nothing("statins lower LDL", "LDL myopathy")
    assert not QueryComposition(mode="expand").adds_nothing("statins lower LDL", "statins LDL")  # re-weights the request
