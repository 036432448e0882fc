"""The public translators: regex, Lark grammar and Outlines term -> GBNF text."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from outlines.types import dsl

from ..errors import UnsupportedGrammarError, UnsupportedOutputTypeError
from ._gbnf import GbnfBuilder, Node, alt, productive, rep, rules_where, seq
from ._lark import add_lark_grammar, refuse_left_recursion
from ._regex import nested_too_deeply, regex_to_node, shown

__all__ = [
    "has_cfg",
    "lark_to_gbnf",
    "regex_to_gbnf",
    "sendable_gbnf",
    "term_regex",
    "term_to_gbnf",
]


def regex_to_gbnf(pattern: str) -> str:
    """Translate a Python regex into a GBNF grammar matching the same strings.

    Parameters
    ----------
    pattern
        A Python ``re`` pattern, with full-match semantics (like ``re.fullmatch``).

    Returns
    -------
    str
        GBNF text with a ``root`` rule, in the dialect every llama.cpp build accepts.

    Raises
    ------
    UnsupportedGrammarError
        If the pattern is invalid or uses lookaround, backreferences, conditionals,
        atomic groups, possessive repeats, inner anchors or repeat counts over 2000.
    """
    builder = GbnfBuilder()
    builder.define("root", regex_to_node(pattern))
    return _render(builder, f"regex {pattern!r}")


def lark_to_gbnf(grammar: str) -> str:
    """Translate a Lark grammar into GBNF.

    Parameters
    ----------
    grammar
        Lark grammar text with a ``start`` rule (as ``lark.Lark(grammar, start="start")``
        loads it); ``%import common.X`` resolves to Outlines' ``common.lark``.

    Returns
    -------
    str
        GBNF text whose ``root`` matches a sentence of the grammar, with ``%ignore``
        terminals allowed before every token and at the end.

    Raises
    ------
    UnsupportedGrammarError
        If the grammar does not load, is indirectly left-recursive, or has a terminal
        regex `regex_to_gbnf` refuses.
    """
    builder = GbnfBuilder()
    try:
        builder.define("root", add_lark_grammar(builder, grammar))
    except RecursionError as exc:
        raise nested_too_deeply("the Lark grammar") from exc
    return _render(builder, "the Lark grammar")


def term_to_gbnf(term: object) -> str:
    """Translate an Outlines output type into GBNF.

    Parameters
    ----------
    term
        An Outlines DSL term (``Regex``, ``CFG``, ``String``, ``either(...)``,
        ``at_least(...)``...) or anything ``python_types_to_terms`` accepts (``int``,
        ``Literal[...]``, ``list[int]``, an ``Enum``...).

    Returns
    -------
    str
        GBNF text with a ``root`` rule. Terms without a ``CFG`` inside go through
        Outlines' own ``to_regex``; ``CFG`` parts are translated as Lark grammars.

    Raises
    ------
    UnsupportedOutputTypeError
        If Outlines cannot turn ``term`` into a DSL term.
    UnsupportedGrammarError
        If the regex or grammar it becomes uses something GBNF cannot express.
    """
    return _term_gbnf(term, sendable=False)


def sendable_gbnf(term: object) -> str:
    """Translate an Outlines output type into GBNF for a request (`term_to_gbnf`'s checks).

    Parameters
    ----------
    term
        What `term_to_gbnf` takes.

    Returns
    -------
    str
        The same text as `term_to_gbnf`.

    Raises
    ------
    UnsupportedGrammarError
        As `term_to_gbnf`, and if the grammar matches no text at all (the model could
        write nothing, and llama.cpp would be left with no token it may sample).
    UnsupportedOutputTypeError
        As `term_to_gbnf`.
    """
    return _term_gbnf(term, sendable=True)


def _term_gbnf(term: object, *, sendable: bool) -> str:
    builder = GbnfBuilder()
    what = f"the Outlines {type(term).__name__}"
    try:
        builder.define("root", _term_node(builder, _as_term(term), {}))
        try:  # each Lark grammar was checked alone: a CFG that matches "" inside a repeat
            refuse_left_recursion(builder.bodies(), {})
        except UnsupportedGrammarError as exc:  # said of the term, not of a rule "root"
            raise UnsupportedGrammarError(
                f"the Outlines term {term!r:.200} repeats a CFG that can match the empty string "
                "(zero_or_more, one_or_more, at_least or between over it); llama.cpp treats "
                "that as left recursion. Make the CFG's start rule match at least one "
                "character, or repeat a term that cannot be empty."
            ) from exc
        if sendable and not rules_where(builder.bodies(), productive).get("root"):
            if isinstance(term, dsl.CFG):
                what_text = "the Lark grammar of the Outlines CFG"
            elif isinstance(term, dsl.Regex):
                what_text = f"the regex {shown(term.pattern)}"
            else:
                what_text = f"{what} {term!r:.200}"
            raise UnsupportedGrammarError(
                f"{what_text} matches no text at all (an empty character class such as "
                "[^\\s\\S], a character no reply can hold: NUL or a lone surrogate, or a "
                "grammar rule that never ends), so the model could write nothing. Fix the "
                "pattern or grammar so that some text matches it."
            )
    except RecursionError as exc:
        raise nested_too_deeply(what) from exc
    return _render(builder, what)


def _render(builder: GbnfBuilder, what: str) -> str:
    try:
        return builder.render()
    except RecursionError as exc:
        raise nested_too_deeply(what) from exc


def _as_term(value: object) -> dsl.Term:
    try:
        return dsl.python_types_to_terms(value)
    except RecursionError as exc:
        raise UnsupportedOutputTypeError(
            f"{value!r} cannot be used in grammar mode: {exc}"
        ) from exc
    except TypeError as exc:
        # Outlines' message sends the user to its issue tracker ("Type None is currently
        # not supported. Please open an issue: ..."): the way out is ours to say (a probe).
        why = str(exc).split("Please open an issue", 1)[0].strip().rstrip(".")
        raise UnsupportedOutputTypeError(
            f"{value!r} cannot be used in grammar mode: {why}. Grammar mode writes the "
            "regular expression Outlines builds for the type, and Outlines builds none for "
            "this: without grammar=True it is asked for as a JSON schema, where one can hold "
            "it; or write the text you want as a Regex."
        ) from exc


def has_cfg(term: Any) -> bool:
    """Tell whether an Outlines term holds a ``CFG`` (itself, or inside)."""
    if isinstance(term, dsl.CFG):
        return True
    if isinstance(term, dsl.Sequence | dsl.Alternatives):
        return any(has_cfg(t) for t in term.terms)
    if isinstance(term, dsl.Choice):
        return any(has_cfg(_as_term(item)) for item in term.items)
    inner = getattr(term, "term", None)
    return inner is not None and has_cfg(inner)


_GLOBAL_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")


def _scoped_flags(pattern: str) -> str:
    """Write a pattern's leading global flags as a scoped group: ``(?i)ab`` as ``(?i:ab)``.

    Python refuses global flags anywhere but at the start, and Outlines' ``to_regex`` puts
    each ``Regex`` of a larger term in a group: ``Regex("(?i)ab") + "c"`` becomes
    ``((?i)ab)c``, which Outlines' own regex engine reads with the flag applying to the end
    of its group. The scoped group says the same in Python. A verbose pattern's closing
    parenthesis goes on a line of its own, out of reach of a trailing ``# comment``.
    """
    flags, rest = "", pattern
    while match := _GLOBAL_FLAGS.match(rest):
        flags, rest = flags + match.group(1), rest[match.end() :]
    if not flags:
        return pattern
    return f"(?{flags}:{rest}{chr(10) if 'x' in flags else ''})"


def _scope_regex_flags(term: Any) -> Any:
    """Return ``term`` with `_scoped_flags` applied to every ``Regex`` in it."""
    if isinstance(term, dsl.Regex):
        return dsl.Regex(_scoped_flags(term.pattern))
    if isinstance(term, dsl.Sequence | dsl.Alternatives):
        return type(term)([_scope_regex_flags(t) for t in term.terms])
    if type(term) in _COUNTS:  # the repeats and Optional: one inner term
        return dataclasses.replace(term, term=_scope_regex_flags(term.term))
    return term


def term_regex(term: Any) -> Any:
    """Return the Python regex of a DSL term without a ``CFG`` inside.

    A bare ``Regex`` as written (``to_regex`` wraps it in a group, which would also make a
    backreference to group 1 read as invalid), whatever its type: a pattern that is not a
    ``str`` (bytes) is refused by the regex reader, naming its type; any other term
    through Outlines' own ``to_regex``, its regexes' leading inline flags scoped
    (`_scoped_flags`).
    """
    if isinstance(term, dsl.Regex):
        return term.pattern
    try:
        return dsl.to_regex(_scope_regex_flags(term))
    except TypeError as exc:  # a part with no regex: a Pydantic model, a dict (Outlines')
        raise UnsupportedOutputTypeError(
            f"{term!r:.200} cannot be used in grammar mode: {str(exc).rstrip('.')}. The parts "
            "of a term in grammar mode must be Regex, CFG, strings or Outlines' own types "
            "(outlines.types.integer, number, boolean...); a Python type (int, float, bool, "
            "Literal) is one only as the whole output type, so inside a term write "
            "outlines.types.integer for int, or either('a', 'b') for Literal['a', 'b']. A "
            "Pydantic model, dataclass or dict has a JSON schema, not a regex: ask for it as the "
            "whole output type instead (grammar=False), or write its JSON form as a Regex."
        ) from exc


_COUNTS: dict[type, tuple[str | None, str | None]] = {
    dsl.KleeneStar: (None, None),
    dsl.KleenePlus: (None, None),
    dsl.Optional: (None, None),
    dsl.QuantifyExact: ("count", "count"),
    dsl.QuantifyMinimum: ("min_count", None),
    dsl.QuantifyMaximum: (None, "max_count"),
    dsl.QuantifyBetween: ("min_count", "max_count"),
}


def _term_node(builder: GbnfBuilder, term: Any, grammars: dict[str, Node]) -> Node:
    """Translate a term; only the parts that contain a CFG are walked here.

    ``grammars`` maps each Lark grammar already added to ``builder`` to its entry node,
    so a grammar used twice (``list[dict]``) is emitted once.
    """
    if not has_cfg(term):
        where = f"the regex of the Outlines {type(term).__name__}"
        return regex_to_node(term_regex(term), where=where)
    if isinstance(term, dsl.CFG):
        if term.definition not in grammars:
            grammars[term.definition] = add_lark_grammar(builder, term.definition)
        return grammars[term.definition]
    if isinstance(term, dsl.Sequence):
        return seq(*(_term_node(builder, t, grammars) for t in term.terms))
    if isinstance(term, dsl.Alternatives):
        return alt(*(_term_node(builder, t, grammars) for t in term.terms))
    if isinstance(term, dsl.Choice):
        return alt(*(_term_node(builder, _as_term(item), grammars) for item in term.items))
    inner = _term_node(builder, term.term, grammars)
    if isinstance(term, dsl.KleeneStar):
        return rep(inner, 0, None)
    if isinstance(term, dsl.KleenePlus):
        return rep(inner, 1, None)
    if isinstance(term, dsl.Optional):
        return rep(inner, 0, 1)
    low_attr, high_attr = _COUNTS[type(term)]
    low = getattr(term, low_attr) if low_attr else 0
    high = getattr(term, high_attr) if high_attr else None
    return rep(inner, low, high)
