"""PubMed search-term syntax: tokenise, parse left to right, render the query translation.

What the emulator accepts, following the PubMed help and the E-utilities answers it mimics:

- Boolean operators `AND`, `OR`, `NOT` (upper case only; lower-case words are search terms);
  `AND NOT` reads as `NOT`.
  PubMed processes them left to right: `a OR b AND c` is `(a OR b) AND c`. Parentheses nest.
- Adjacent terms without an operator are ANDed, so a long natural-language request requires
  every one of its words (which is why raw requests are poor PubMed queries).
- `"quoted phrases"`, trailing `*` truncation, field tags right after a term: `[tiab]`,
  `[Title/Abstract]`, `[ti]`/`[Title]` (the title field), `[ab]`, `[tw]`, `[all]`/`[All Fields]`,
  `[mh]`/`[MeSH Terms]`/`[majr]` (the corpus has no MeSH indexing: searched in title + abstract),
  and proximity `"a b"[tiab:~N]`.
- Not errors, as in PubMed: an unknown tag drops its term and is listed in `fieldsnotfound`;
  unbalanced parentheses or quotes are closed (or ignored) and reported in `outputmessages`;
  a dangling operator or a tag with no term before it is ignored and reported likewise.
- The one hard error is an empty term: "Empty term and query_key - nothing todo".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from deepretrieval.rewarders.emulators.query_ast import CONTENTS, TITLE, And, Node, Not, Or, Term, make_and, make_or

EMPTY_TERM_ERROR = "Empty term and query_key - nothing todo"

# tag as written (lower case) -> (Lucene field, name in the query translation)
_TAGS: dict[str, tuple[str, str]] = {
    "tiab": (CONTENTS, "Title/Abstract"),
    "title/abstract": (CONTENTS, "Title/Abstract"),
    "ti": (TITLE, "Title"),
    "title": (TITLE, "Title"),
    "ab": (CONTENTS, "Abstract"),
    "abstract": (CONTENTS, "Abstract"),
    "tw": (CONTENTS, "Text Word"),
    "text word": (CONTENTS, "Text Word"),
    "all": (CONTENTS, "All Fields"),
    "all fields": (CONTENTS, "All Fields"),
    "mh": (CONTENTS, "MeSH Terms"),
    "mesh": (CONTENTS, "MeSH Terms"),
    "mesh terms": (CONTENTS, "MeSH Terms"),
    "mh:noexp": (CONTENTS, "MeSH Terms:noexp"),
    "majr": (CONTENTS, "MeSH Major Topic"),
    "mesh major topic": (CONTENTS, "MeSH Major Topic"),
}
_OPERATORS = ("AND", "OR", "NOT")


@dataclass(frozen=True)
class _Tok:
    kind: Literal["word", "phrase", "tag", "lparen", "rparen", "op"]
    text: str


@dataclass
class ParsedTerm:
    """The result of parsing one `term` parameter.

    Args:
        tree: the query, None when nothing searchable is left.
        fields_not_found: unknown field tags, as written (their terms were dropped).
        messages: syntax repairs, for the answer's `warninglist.outputmessages`.
    """

    tree: Node | None
    fields_not_found: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


class EmptyTermError(ValueError):
    """The term is empty: PubMed answers with an ERROR instead of results."""


def _tokenize(term: str, messages: list[str]) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(term)
    while i < n:
        c = term[i]
        if c.isspace():
            i += 1
        elif c == "(":
            toks.append(_Tok("lparen", c))
            i += 1
        elif c == ")":
            toks.append(_Tok("rparen", c))
            i += 1
        elif c == '"':
            end = term.find('"', i + 1)
            if end < 0:
                messages.append("Unmatched quotation mark: phrase closed at the end of the query")
                end = n
            toks.append(_Tok("phrase", term[i + 1 : end].strip()))
            i = end + 1
        elif c == "[":
            end = term.find("]", i + 1)
            if end < 0:
                messages.append("Unmatched '[': field tag closed at the end of the query")
                end = n
            toks.append(_Tok("tag", term[i + 1 : end].strip()))
            i = end + 1
        else:
            j = i
            while j < n and not term[j].isspace() and term[j] not in '()"[':
                j += 1
            word = term[i:j]
            toks.append(_Tok("op" if word in _OPERATORS else "word", word))
            i = j
    return toks


def _make_term(text: str, quoted: bool, tag: str | None, default: tuple[str, str], fields_not_found: list[str]) -> Term | None:
    field_name, label = default
    slop = 0
    if tag is not None:
        key = tag.strip().lower()
        if ":~" in key:
            key, _, prox = key.partition(":~")
            slop = int(prox) if prox.isdigit() and quoted else 0
        if key not in _TAGS:
            fields_not_found.append(tag)
            return None
        field_name, label = _TAGS[key]
    prefix = not quoted and text.endswith("*")
    text = text.rstrip("*") if prefix else text
    if not text.strip("*"):
        return None
    return Term(text=text, field=field_name, quoted=quoted, prefix=prefix, slop=slop, label=label)


class _Parser:
    """Left-to-right PubMed parser over a token list."""

    def __init__(self, toks: list[_Tok], default: tuple[str, str], out: ParsedTerm):
        self.toks = toks
        self.pos = 0
        self.default = default
        self.out = out

    def peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def expr(self, depth: int) -> Node | None:
        result: Node | None = None
        pending_op: str | None = None
        dropped = False  # the last operand was dropped (unknown tag, empty group): its operator goes too
        while (tok := self.peek()) is not None:
            if tok.kind == "rparen":
                if depth > 0:
                    break
                self.out.messages.append("Unmatched ')' ignored")
                self.pos += 1
                continue
            if tok.kind == "op":
                self.pos += 1
                if pending_op == "AND" and tok.text == "NOT":
                    pending_op = "NOT"  # "a AND NOT b" reads as "a NOT b"
                    continue
                if result is None or pending_op is not None:
                    if not dropped:
                        self.out.messages.append(f"Operator {tok.text} without a term before it ignored")
                    continue
                pending_op = tok.text
                continue
            operand = self.operand(depth)
            dropped = operand is None
            if operand is None:
                pending_op = None
                continue
            if result is None:
                result = operand
            else:
                op = pending_op or "AND"
                if op == "AND":
                    result = make_and(result, operand)
                elif op == "OR":
                    result = make_or(result, operand)
                else:
                    result = make_and(result, Not(operand))
            pending_op = None
        if pending_op is not None:
            self.out.messages.append(f"Operator {pending_op} without a term after it ignored")
        return result

    def operand(self, depth: int) -> Node | None:
        tok = self.toks[self.pos]
        self.pos += 1
        if tok.kind == "lparen":
            inner = self.expr(depth + 1)
            closing = self.peek()
            if closing is not None and closing.kind == "rparen":
                self.pos += 1
            else:
                self.out.messages.append("Unmatched '(': group closed at the end of the query")
            nxt = self.peek()
            if nxt is not None and nxt.kind == "tag":
                self.pos += 1
                self.out.messages.append(f"Field tag [{nxt.text}] after a parenthesised group ignored")
            return inner
        if tok.kind == "tag":
            self.out.messages.append(f"Field tag [{tok.text}] without a term before it ignored")
            return None
        tag = None
        nxt = self.peek()
        if nxt is not None and nxt.kind == "tag":
            tag = nxt.text
            self.pos += 1
        return _make_term(tok.text, tok.kind == "phrase", tag, self.default, self.out.fields_not_found)


def parse_term(term: str, *, field_tag: str | None = None) -> ParsedTerm:
    """Parse PubMed's `term` parameter.

    Args:
        term: the search term as sent.
        field_tag: esearch's `field` parameter: the tag applied to untagged terms.

    Returns:
        The query tree with the lists PubMed reports beside its results.

    Raises:
        EmptyTermError: the term is empty or blank.
    """
    if not term or not term.strip():
        raise EmptyTermError(EMPTY_TERM_ERROR)
    out = ParsedTerm(tree=None)
    default = (CONTENTS, "All Fields")
    if field_tag:
        key = field_tag.strip().lower()
        if key in _TAGS:
            default = _TAGS[key]
        else:
            out.fields_not_found.append(field_tag)
    toks = _tokenize(term, out.messages)
    out.tree = _Parser(toks, default, out).expr(0)
    return out


def render_translation(node: Node | None) -> str:
    """The `querytranslation` PubMed reports: every term with its field, groups in parentheses.

    Args:
        node: the (pruned) query tree.

    Returns:
        e.g. `("heart"[All Fields] OR "cardiac"[All Fields]) AND "attack"[Title]`.
    """
    if node is None:
        return ""

    def r(n: Node, nested: bool) -> str:
        if isinstance(n, Term):
            if n.prefix:
                return f"{n.text}*[{n.label}]"
            suffix = f":~{n.slop}" if n.slop else ""
            return f'"{n.text.lower()}"[{n.label}{suffix}]'
        if isinstance(n, Not):
            return "NOT " + r(n.child, True)
        if isinstance(n, And):
            parts = []
            for i, c in enumerate(n.children):
                joiner = "" if i == 0 or isinstance(c, Not) else "AND "
                parts.append(joiner + r(c, True))
            s = " ".join(parts)
        elif isinstance(n, Or):
            s = " OR ".join(r(c, True) for c in n.children)
        else:
            return "all[sb]"
        return f"({s})" if nested else s

    return r(node, False)
