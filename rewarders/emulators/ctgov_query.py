"""ClinicalTrials.gov Essie expressions (the `query.*` parameters of API v2), parsed into a tree.

Supported, following the ClinicalTrials.gov search-operator documentation:

- `AND`, `OR`, unary `NOT` (upper case); precedence NOT > AND > OR; parentheses group.
- Adjacent terms are ANDed; a comma acts as AND (as the live service does).
- `"quoted phrases"`; `AREA[Name]expr` for BasicSearch / ConditionSearch / InterventionSearch /
  OutcomeSearch / BriefSummary / DetailedDescription / Keyword / Condition (all searched in
  title + text: the corpus has no such fields) and TitleSearch / BriefTitle / OfficialTitle /
  Acronym (the title field).
- Not supported here, answered with HTTP 400 like a parse error: the other Essie operators
  (SEARCH[...], EXPANSION[...], COVERAGE[...], RANGE[...], DISTANCE[...], MISSING).

Syntax errors raise `EssieSyntaxError` whose message starts like the service's own
("Error parsing query in Other terms: mismatched input ')' ..."); the server answers 400 with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deepretrieval.rewarders.emulators.query_ast import CONTENTS, TITLE, Node, Not, Term, make_and, make_or

_AREAS: dict[str, str] = {
    "basicsearch": CONTENTS, "conditionsearch": CONTENTS, "interventionsearch": CONTENTS,
    "outcomesearch": CONTENTS, "briefsummary": CONTENTS, "detaileddescription": CONTENTS,
    "keyword": CONTENTS, "condition": CONTENTS,
    "titlesearch": TITLE, "brieftitle": TITLE, "officialtitle": TITLE, "acronym": TITLE,
}
_UNSUPPORTED = ("SEARCH", "EXPANSION", "COVERAGE", "RANGE", "DISTANCE", "MISSING")
_OPERATORS = ("AND", "OR", "NOT")


class EssieSyntaxError(ValueError):
    """The expression does not parse; the message is the 400 body."""


@dataclass(frozen=True)
class _Tok:
    kind: Literal["word", "phrase", "lparen", "rparen", "comma", "op", "area", "eof"]
    text: str


def _tokenize(expr: str, where: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c in "(),":
            toks.append(_Tok({"(": "lparen", ")": "rparen", ",": "comma"}[c], c))
            i += 1
        elif c == '"':
            end = expr.find('"', i + 1)
            if end < 0:
                raise EssieSyntaxError(f"Error parsing query in {where}: token recognition error at: '{expr[i:]}'")
            toks.append(_Tok("phrase", expr[i + 1 : end].strip()))
            i = end + 1
        elif c in "[]":
            raise EssieSyntaxError(f"Error parsing query in {where}: mismatched input '{c}' at position {i}")
        else:
            j = i
            while j < n and not expr[j].isspace() and expr[j] not in '(),"[]':
                j += 1
            word = expr[i:j]
            if word == "AREA" and j < n and expr[j] == "[":
                end = expr.find("]", j)
                if end < 0:
                    raise EssieSyntaxError(f"Error parsing query in {where}: missing ']' at '<EOF>'")
                toks.append(_Tok("area", expr[j + 1 : end].strip()))
                i = end + 1
                continue
            if word in _UNSUPPORTED:
                raise EssieSyntaxError(f"Error parsing query in {where}: operator {word} is not supported by this emulator (supported: AND, OR, NOT, AREA[...], quotes, parentheses)")
            toks.append(_Tok("op" if word in _OPERATORS else "word", word))
            i = j
    toks.append(_Tok("eof", "<EOF>"))
    return toks


class _Parser:
    def __init__(self, toks: list[_Tok], field: str, where: str):
        self.toks = toks
        self.pos = 0
        self.field = field
        self.where = where

    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def fail(self, tok: _Tok) -> EssieSyntaxError:
        return EssieSyntaxError(f"Error parsing query in {self.where}: mismatched input '{tok.text}' expecting a search term, '(', 'NOT' or 'AREA'")

    def or_expr(self, field: str) -> Node:
        node = self.and_expr(field)
        while self.peek().kind == "op" and self.peek().text == "OR":
            self.pos += 1
            node = make_or(node, self.and_expr(field))
        return node

    def and_expr(self, field: str) -> Node:
        node = self.unary(field)
        while True:
            tok = self.peek()
            if tok.kind in ("comma",) or (tok.kind == "op" and tok.text == "AND"):
                self.pos += 1
            elif tok.kind in ("eof", "rparen") or (tok.kind == "op" and tok.text == "OR"):
                return node
            node = make_and(node, self.unary(field))

    def unary(self, field: str) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "NOT":
            self.pos += 1
            return Not(self.unary(field))
        return self.primary(field)

    def primary(self, field: str) -> Node:
        tok = self.peek()
        self.pos += 1
        if tok.kind in ("word", "phrase"):
            if not tok.text:
                raise self.fail(tok)
            return Term(text=tok.text, field=field, quoted=tok.kind == "phrase", label=self.where)
        if tok.kind == "lparen":
            node = self.or_expr(field)
            closing = self.peek()
            if closing.kind != "rparen":
                raise EssieSyntaxError(f"Error parsing query in {self.where}: missing ')' at '{closing.text}'")
            self.pos += 1
            return node
        if tok.kind == "area":
            area = _AREAS.get(tok.text.lower())
            if area is None:
                known = ", ".join(sorted({"BasicSearch", "ConditionSearch", "InterventionSearch", "OutcomeSearch", "BriefSummary", "DetailedDescription", "Keyword", "Condition", "TitleSearch", "BriefTitle", "OfficialTitle", "Acronym"}))
                raise EssieSyntaxError(f"Error parsing query in {self.where}: unknown search area or field '{tok.text}' (this emulator knows: {known})")
            return self.unary(area)
        raise self.fail(tok)


def parse_essie(expr: str, *, field: str = CONTENTS, where: str = "Other terms") -> Node | None:
    """Parse one `query.*` parameter.

    Args:
        expr: the Essie expression as sent.
        field: the Lucene field searched by terms outside AREA[...] (title for `query.titles`).
        where: the search area's display name, used in error messages like the service's.

    Returns:
        The query tree; None for a blank expression (no restriction).

    Raises:
        EssieSyntaxError: the expression does not parse.
    """
    if not expr or not expr.strip():
        return None
    parser = _Parser(_tokenize(expr, where), field, where)
    node = parser.or_expr(field)
    tail = parser.peek()
    if tail.kind != "eof":
        raise EssieSyntaxError(f"Error parsing query in {where}: extraneous input '{tail.text}' expecting <EOF>")
    return node
