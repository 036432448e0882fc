"""Python regex -> grammar IR, from the standard library's own regex parser.

Translating from ``re._parser`` (what ``re.compile`` itself uses) rather than from the
pattern text means every construct is seen as Python sees it: lookarounds,
backreferences, conditionals, atomic groups and anchors arrive as distinct nodes and can
be refused by name instead of being mistranslated.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from ..errors import UnsupportedGrammarError, UnsupportedOutputTypeError
from ._charset import Ranges, complement, matched_by, normalize, union, writable
from ._gbnf import (
    MAX_REPEAT,
    Node,
    Rep,
    chars,
    factored_literals,
    rep,
    seq,
    uncollapsed_count,
)

__all__ = ["nested_too_deeply", "regex_to_node", "shown"]

# typeshed has no stubs for these private modules; importlib gives them as `Any`.
_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

_BEGIN = {_c.AT_BEGINNING, _c.AT_BEGINNING_STRING}
_END = {_c.AT_END, _c.AT_END_STRING}
_CATEGORY_TEXT = {
    _c.CATEGORY_DIGIT: r"\d",
    _c.CATEGORY_NOT_DIGIT: r"\D",
    _c.CATEGORY_SPACE: r"\s",
    _c.CATEGORY_NOT_SPACE: r"\S",
    _c.CATEGORY_WORD: r"\w",
    _c.CATEGORY_NOT_WORD: r"\W",
}
# Flags that change which characters a one-character node matches.
_CHAR_FLAGS = re.IGNORECASE | re.DOTALL | re.ASCII | re.UNICODE
_SUPPORTED_FLAGS = _CHAR_FLAGS | re.MULTILINE | re.VERBOSE | re.DEBUG


def _cp(code: int) -> str:
    return f"\\U{code:08X}"


def _node_text(op: Any, av: Any) -> str:
    """Rebuild the regex text of a one-character node (for asking ``re`` what it matches)."""
    if op is _c.LITERAL:
        return _cp(av)
    if op is _c.NOT_LITERAL:
        return f"[^{_cp(av)}]"
    if op is _c.ANY:
        return "."
    items = []
    for item_op, item_av in av:
        if item_op is _c.NEGATE:
            items.append("^")
        elif item_op is _c.LITERAL:
            items.append(_cp(item_av))
        elif item_op is _c.RANGE:
            items.append(f"{_cp(item_av[0])}-{_cp(item_av[1])}")
        else:
            items.append(_CATEGORY_TEXT[item_av])
    return "[" + "".join(items) + "]"


def _charset(op: Any, av: Any, flags: int) -> Ranges:
    """Return the code points a one-character node matches, exactly as ``re`` decides."""
    char_flags = flags & _CHAR_FLAGS
    if char_flags & re.IGNORECASE:
        return matched_by(_node_text(op, av), char_flags)
    if op is _c.LITERAL:
        return ((av, av),)
    if op is _c.NOT_LITERAL:
        return complement(((av, av),))
    if op is _c.ANY:
        return complement(()) if char_flags & re.DOTALL else complement(((10, 10),))
    negate = False
    parts: list[Ranges] = []
    for item_op, item_av in av:
        if item_op is _c.NEGATE:
            negate = True
        elif item_op is _c.LITERAL:
            parts.append(((item_av, item_av),))
        elif item_op is _c.RANGE:
            parts.append((tuple(item_av),))
        else:
            parts.append(matched_by(_CATEGORY_TEXT[item_av], char_flags & re.ASCII))
    ranges = union(*parts)
    return complement(ranges) if negate else normalize(ranges)


def shown(pattern: str) -> str:
    """Quote a pattern for an error message, clipped to its first 200 characters."""
    text = repr(pattern)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(pattern)} characters)"


class _Translator:
    def __init__(self, pattern: str, where: str, whole: bool) -> None:
        self.pattern = pattern
        self.where = where
        self.whole = whole

    def refuse(self, construct: str, advice: str) -> UnsupportedGrammarError:
        return UnsupportedGrammarError(
            f"{construct} in {self.where} {shown(self.pattern)} is not supported in grammar "
            f"mode: {advice}"
        )

    def sequence(self, items: list[Any], flags: int, at_start: bool, at_end: bool) -> Node:
        nodes: list[Node] = []
        for i, (op, av) in enumerate(items):
            if op is _c.AT and not self.whole:
                raise self.refuse(
                    "an anchor or word boundary (^, $, \\A, \\Z, \\b, \\B)",
                    "Lark matches a terminal's regex against the whole input, so there ^ and $ "
                    "test the start and end of the input, not of the token, and GBNF cannot "
                    "test positions. Remove the anchor from the terminal (a terminal always "
                    "matches a whole token), or spell out a boundary with explicit characters.",
                )
            if op is _c.AT:
                before = all(o is _c.AT for o, _ in items[:i])
                after = all(o is _c.AT for o, _ in items[i + 1 :])
                if (av in _BEGIN and at_start and before) or (av in _END and at_end and after):
                    continue  # GBNF matches the whole string: anchors at the ends are implied
                raise self.refuse(
                    "an anchor or word boundary (^, $, \\A, \\Z, \\b, \\B) away from the ends",
                    "GBNF always matches the whole output; keep ^/$ only at the very start/end "
                    "and spell out boundaries with explicit characters.",
                )
            first = at_start and all(o is _c.AT for o, _ in items[:i])
            last = at_end and all(o is _c.AT for o, _ in items[i + 1 :])
            nodes.append(self.item(op, av, flags, first, last))
        return seq(*nodes)

    def item(self, op: Any, av: Any, flags: int, at_start: bool, at_end: bool) -> Node:
        if op in (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN):
            # Only what a reply can hold: `[^a]` leaves out the lone surrogates and NUL,
            # and a pattern that needs one matches nothing (refused before it is sent).
            return chars(writable(_charset(op, av, flags)))
        if op is _c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            self.check_flags(add_flags)
            if add_flags & (re.ASCII | re.UNICODE):
                flags &= ~(re.ASCII | re.UNICODE)
            return self.sequence(sub.data, (flags | add_flags) & ~del_flags, at_start, at_end)
        if op is _c.BRANCH:
            return factored_literals(
                [self.sequence(b.data, flags, at_start, at_end) for b in av[1]]
            )
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):  # lazy repeats match the same strings
            low, high, sub = av
            high = None if high == _c.MAXREPEAT else high
            if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
                raise self.refuse(
                    f"the repeat count {{{low},{'' if high is None else high}}}",
                    f"llama.cpp allows at most {MAX_REPEAT} repetitions; use a smaller bound "
                    "or * / +.",
                )
            node = rep(self.sequence(sub.data, flags, False, False), low, high)
            count = uncollapsed_count(node) if isinstance(node, Rep) else None
            if count is not None:
                raise self.refuse(
                    f"nested counted repeats that repeat their innermost part up to {count} "
                    "times in all",
                    f"llama.cpp allows at most {MAX_REPEAT} repetitions, and left nested, "
                    "repeats whose count varies make llama.cpp's grammar check slow down "
                    "sharply with the reply's length. Use smaller bounds, or an unbounded "
                    "repeat (* or +) for the outer one.",
                )
            return node
        if op is _c.POSSESSIVE_REPEAT or op is _c.ATOMIC_GROUP:
            raise self.refuse(
                "a possessive repeat or atomic group",
                "it can reject strings a plain repeat accepts; use a greedy repeat or (?:...).",
            )
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            kind = "lookahead" if av[0] == 1 else "lookbehind"
            raise self.refuse(
                f"a {kind} assertion",
                "GBNF has no lookaround; rewrite the pattern to match the allowed text directly.",
            )
        if op is _c.GROUPREF:
            raise self.refuse(
                "a backreference",
                "GBNF cannot repeat previously matched text; list the allowed values instead.",
            )
        if op is _c.GROUPREF_EXISTS:
            raise self.refuse(
                "a conditional group (?(id)yes|no)",
                "write the alternatives out with | instead.",
            )
        raise self.refuse(f"the regex construct {op}", "rewrite the pattern without it.")

    def check_flags(self, flags: int) -> None:
        if flags & ~_SUPPORTED_FLAGS:
            raise self.refuse(
                f"the flag(s) {re.RegexFlag(flags & ~_SUPPORTED_FLAGS)!r}",
                "supported flags are IGNORECASE, DOTALL, MULTILINE, VERBOSE, ASCII, UNICODE.",
            )


def regex_to_node(
    pattern: str, *, where: str = "regex", flags: int = 0, whole: bool = True
) -> Node:
    """Translate a Python regex (full-match semantics) into grammar IR.

    Parameters
    ----------
    pattern
        The regex, as ``re.fullmatch`` would take it.
    where
        Names the pattern's origin in error messages (e.g. ``"Lark terminal NUMBER"``).
    flags
        ``re`` flags applied to the whole pattern.
    whole
        Whether the pattern matches the whole output, so that anchors at its very ends
        are implied and dropped. ``False`` for a Lark terminal, one token among others:
        every anchor is refused.

    Returns
    -------
    Node
        The grammar IR of the same language.

    Raises
    ------
    UnsupportedGrammarError
        If the pattern is invalid, or uses a construct GBNF cannot express.
    UnsupportedOutputTypeError
        If the pattern is not a ``str`` (a ``bytes`` pattern).
    """
    if not isinstance(pattern, str):
        raise UnsupportedOutputTypeError(
            f"expected the regex as str, got {type(pattern).__name__}: grammar mode "
            "translates str patterns (decode a bytes pattern first)."
        )
    try:
        parsed = _parser.parse(pattern, flags)
    # OverflowError: a{99999999999999999999}; ValueError: (?u)(?a)x (incompatible flags)
    except (re.error, OverflowError, ValueError) as exc:
        raise UnsupportedGrammarError(
            f"{where} {shown(pattern)} is not a valid Python regex: {exc}"
        ) from exc
    except RecursionError as exc:
        raise nested_too_deeply(f"{where} {shown(pattern)}") from exc
    translator = _Translator(pattern, where, whole)
    translator.check_flags(parsed.state.flags)
    try:
        return translator.sequence(list(parsed.data), parsed.state.flags, whole, whole)
    except RecursionError as exc:
        raise nested_too_deeply(f"{where} {shown(pattern)}") from exc


def nested_too_deeply(what: str) -> UnsupportedGrammarError:
    """Return the error for a regex or grammar nested deeper than Python's recursion limit."""
    return UnsupportedGrammarError(
        f"{what} is nested too deeply to be translated to GBNF (Python's recursion "
        "limit); flatten its groups, or split it into rules of a Lark grammar."
    )
