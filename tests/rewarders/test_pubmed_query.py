"""PubMed term parser and tree pruning (pure Python: no JVM, no HTTP)."""

import pytest

from deepretrieval.rewarders.emulators.pubmed_query import EMPTY_TERM_ERROR, EmptyTermError, parse_term, render_translation
from deepretrieval.rewarders.emulators.query_ast import CONTENTS, TITLE, And, Not, Or, Term, TermStatus, prune


def t(text: str, **kw) -> Term:
    return Term(text=text, **kw)


def test_operators_are_processed_left_to_right():
    # PubMed: "a OR b AND c" is (a OR b) AND c, not a OR (b AND c) as in most languages.
    assert parse_term("a OR b AND c").tree == And((Or((t("a"), t("b"))), t("c")))
    assert render_translation(parse_term("a OR b AND c").tree) == '("a"[All Fields] OR "b"[All Fields]) AND "c"[All Fields]'
    assert parse_term("a AND b OR c").tree == Or((And((t("a"), t("b"))), t("c")))


def test_parentheses_nest():
    assert parse_term("a OR (b AND c)").tree == Or((t("a"), And((t("b"), t("c")))))
    assert parse_term("((a))").tree == t("a")


def test_adjacent_terms_are_anded():
    tree = parse_term("effect of statins on heart attack").tree
    assert tree == And(tuple(t(w) for w in ("effect", "of", "statins", "on", "heart", "attack")))


def test_not_excludes_its_right_operand():
    assert parse_term("aspirin NOT warfarin").tree == And((t("aspirin"), Not(t("warfarin"))))
    assert render_translation(parse_term("aspirin NOT warfarin").tree) == '"aspirin"[All Fields] NOT "warfarin"[All Fields]'
    # left to right: (a NOT b) OR c
    assert parse_term("a NOT b OR c").tree == Or((And((t("a"), Not(t("b")))), t("c")))
    assert parse_term("a AND NOT b").tree == parse_term("a NOT b").tree


def test_operators_are_upper_case_only():
    assert parse_term("cats and dogs").tree == And((t("cats"), t("and"), t("dogs")))


def test_phrases_tags_truncation_and_proximity():
    tree = parse_term('"stem cell"[tiab] AND tumour[ti] AND canc* AND "gene therapy"[tiab:~3] AND asthma[MeSH Terms]').tree
    assert tree == And((
        t("stem cell", quoted=True, label="Title/Abstract"),
        t("tumour", field=TITLE, label="Title"),
        t("canc", prefix=True),
        t("gene therapy", quoted=True, slop=3, label="Title/Abstract"),
        t("asthma", field=CONTENTS, label="MeSH Terms"),
    ))


def test_unknown_field_tag_drops_its_term_and_is_reported():
    parsed = parse_term("smith[au] AND asthma")
    assert parsed.tree == t("asthma")
    assert parsed.fields_not_found == ["au"]
    assert parse_term("asthma", field_tag="journal").fields_not_found == ["journal"]
    # the dropped term takes its operator with it: (a AND x) OR b -> a OR b
    dropped = parse_term("asthma AND smith[au] OR wheeze")
    assert dropped.tree == Or((t("asthma"), t("wheeze"))) and dropped.messages == []
    assert parse_term("smith[au] OR wheeze").tree == t("wheeze")


def test_field_parameter_applies_to_untagged_terms():
    assert parse_term("asthma OR wheeze[tiab]", field_tag="ti").tree == Or((t("asthma", field=TITLE, label="Title"), t("wheeze", label="Title/Abstract")))


@pytest.mark.parametrize("term, expected_tree, message_part", [
    ("(asthma OR wheeze", Or((t("asthma"), t("wheeze"))), "Unmatched '('"),
    ("asthma) AND wheeze", And((t("asthma"), t("wheeze"))), "Unmatched ')'"),
    ('"open phrase', t("open phrase", quoted=True), "quotation mark"),
    ("asthma AND", t("asthma"), "without a term after it"),
    ("OR asthma", t("asthma"), "without a term before it"),
    ("asthma AND OR wheeze", And((t("asthma"), t("wheeze"))), "without a term before it"),
    ("(asthma OR wheeze)[tiab]", Or((t("asthma"), t("wheeze"))), "after a parenthesised group"),
])
def test_broken_syntax_is_repaired_and_reported_not_refused(term, expected_tree, message_part):
    parsed = parse_term(term)
    assert parsed.tree == expected_tree
    assert any(message_part in m for m in parsed.messages), parsed.messages


@pytest.mark.parametrize("term", ["", "   ", "\n"])
def test_empty_term_is_the_one_hard_error(term):
    with pytest.raises(EmptyTermError, match=EMPTY_TERM_ERROR):
        parse_term(term)


def test_prune_drops_unfound_and_stopword_terms_but_keeps_unfound_phrases():
    tree = parse_term('zzzq AND the AND (asthma OR "no such phrase") AND NOT qqq').tree
    status = {"zzzq": TermStatus.NOT_FOUND, "the": TermStatus.IGNORED, "asthma": TermStatus.FOUND,
              "no such phrase": TermStatus.NOT_FOUND, "qqq": TermStatus.NOT_FOUND}
    pruned, report = prune(tree, lambda term: status[term.text], drop_not_found=True)
    assert pruned == Or((t("asthma"), t("no such phrase", quoted=True)))
    assert report.not_found == ["zzzq", "qqq"]
    assert report.ignored == ["the"]
    assert report.quoted_not_found == ['"no such phrase"']


def test_prune_keeps_unfound_terms_when_told_so_and_removes_empty_groups():
    tree = parse_term("a AND (b OR c)").tree
    kept, _ = prune(tree, lambda term: TermStatus.NOT_FOUND, drop_not_found=False)
    assert kept == tree
    gone, report = prune(tree, lambda term: TermStatus.NOT_FOUND, drop_not_found=True)
    assert gone is None and report.not_found == ["a", "b", "c"]
