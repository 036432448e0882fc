r"""A string ``pattern`` as GBNF, as llama.cpp's C++ converter writes it.

LM Studio's llama.cpp engine converts a schema's ``pattern`` with ``_pattern_to_rule`` of
``common/json-schema-to-grammar.cpp``; this follows the one in llama-cpp-python 0.3.36's
sources branch for branch (its results checked against a build of it:
tests/unit/grammar/cpp). llama-cpp-python's Python port differs: it keeps the backslash of
``\.``, ``\$`` and ``\^`` (llama.cpp's grammar parser then fails on the unknown
escape), copies any escape into a GBNF literal or class (``\d``, ``[\.]``), asserts on
``(?:``, and writes ``^a|b$`` without parentheses, so the alternation took the quotes
apart.

The C++ converter gives up on a pattern in two ways. What it cannot translate (``\d``,
``\w``, ``\s``, an escape in a class other than GBNF's own, a lookaround, an anchor
inside) is `UnsupportedPatternError`: a warning, and the string is then any string. What
is not a regular expression (a trailing backslash, unbalanced parentheses, an unterminated
class, nothing to repeat) is `InvalidPatternError`: the conversion fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from outlines_lmstudio.testing._gbnf import GrammarError, parse_gbnf
from outlines_lmstudio.testing._llama import cpp_repetition

__all__ = ["InvalidPatternError", "UnsupportedPatternError", "cut_character", "pattern_rule"]

_NON_LITERAL = frozenset("|.()[]{}*+?^$")
# Escaped in a regular expression, the character itself in a GBNF literal.
_ESCAPED_IN_REGEXPS_BUT_NOT_IN_LITERALS = frozenset("^$.[]()|{}*+?")
# The escapes llama.cpp's grammar parser reads (its ``parse_char``), kept as they are.
_GBNF_ESCAPES = frozenset('trn\\"[]-')
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MAX_DEPTH = 100
_INT_MAX = 2**31 - 1  # the C++ code's "no maximum" (``std::numeric_limits<int>::max()``)
# std::stoi skips C's whitespace only, not Python's \s (U+00A0, U+001C...).
_STOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_QUANTIFIERS = frozenset("*+?{")
_DOT = "[^\\x0A\\x0D]"  # any character but a line break (the converter is not "dotall")


class UnsupportedPatternError(Exception):
    """A pattern the C++ converter cannot translate: it warns and accepts any string."""


class InvalidPatternError(ValueError):
    """A pattern that is not a regular expression: the C++ converter fails."""


def _escape_length(pattern: str, pos: int) -> int:
    """Return the length of the GBNF escape at ``pos`` (``gbnf_escape_length``), or 0."""
    if pos + 1 >= len(pattern) or pattern[pos] != "\\":
        return 0
    kind = pattern[pos + 1]
    if kind in _GBNF_ESCAPES:
        return 2
    digits = _HEX_ESCAPES.get(kind)
    if digits is None:
        return 0
    hexes = pattern[pos + 2 : pos + 2 + digits]
    if len(hexes) < digits or not set(hexes) <= _HEX_DIGITS:
        return 0
    return 2 + digits


def _count(text: str) -> int:
    """Read a count as ``std::stoi`` does (leading blanks, a sign, digits, then anything)."""
    match = _STOI.match(text)
    if match is None or not -(2**31) <= int(match.group(1)) <= _INT_MAX:
        raise UnsupportedPatternError("invalid number in curly brackets")
    return int(match.group(1))


def _to_rule(item: tuple[str, bool]) -> str:
    text, is_literal = item
    return f'"{text}"' if is_literal else text


class _Translation:
    """One run of ``_pattern_to_rule``: the position, the group depth, the repeated rules."""

    def __init__(self, pattern: str, name: str, add_rule: Callable[[str, str], str]) -> None:
        self.pattern = pattern
        self.name = name
        self.add_rule = add_rule
        self.i = 0
        self.depth = 0
        self.sub_rule_ids: dict[str, str] = {}
        self.cut = ""  # the last byte of a character `literal` cut in two (see there)

    def sequence(self) -> str:
        """Translate up to the end or the ``)`` closing the current group (``transform``)."""
        pattern, length = self.pattern, len(self.pattern)
        seq: list[tuple[str, bool]] = []
        while self.i < length:
            c = pattern[self.i]
            if c == ".":
                seq.append((self.add_rule("dot", _DOT), False))
                self.i += 1
            elif c == "(":
                self.i += 1
                if self.i < length and pattern[self.i] == "?":
                    if self.i + 1 < length and pattern[self.i + 1] == ":":
                        self.i += 2  # a non-capturing group is a group
                    else:
                        raise UnsupportedPatternError("unsupported group syntax")
                self.depth += 1
                if self.depth > _MAX_DEPTH:
                    raise UnsupportedPatternError("pattern nesting too deep")
                seq.append((f"({self.sequence()})", False))
            elif c == ")":
                self.i += 1
                if self.depth == 0:
                    raise InvalidPatternError("unbalanced parentheses")
                self.depth -= 1
                return _join(seq)
            elif c in "^$":
                raise UnsupportedPatternError("anchor inside the pattern")
            elif c == "[":
                seq.append((self.character_class(), False))
            elif c == "|":
                seq.append(("|", False))
                self.i += 1
            elif c in "*+?":
                if not seq:
                    raise InvalidPatternError("nothing to repeat")
                seq[-1] = (_to_rule(seq[-1]) + c, False)
                self.i += 1
            elif c == "{":
                self.repeat(seq)
            else:
                seq.append((self.literal(c), True))
                if self.cut:  # the last byte of a character: a literal of its own
                    seq.append((self.cut, True))
                    self.cut = ""
        return _join(seq)

    def character_class(self) -> str:
        pattern, length = self.pattern, len(self.pattern)
        text = "["
        self.i += 1
        while self.i < length and pattern[self.i] != "]":
            if pattern[self.i] == "\\":
                size = _escape_length(pattern, self.i)
                if size == 0:
                    escape = pattern[self.i : self.i + 2]
                    raise UnsupportedPatternError(
                        f"unsupported escape in character class: {escape}"
                    )
                text += pattern[self.i : self.i + size]
                self.i += size
            else:
                text += pattern[self.i]
                self.i += 1
        if self.i >= length:
            raise InvalidPatternError("unterminated character class")
        self.i += 1
        return text + "]"

    def repeat(self, seq: list[tuple[str, bool]]) -> None:
        """Apply a ``{m}``, ``{m,}`` or ``{m,n}`` to the last item of ``seq``."""
        end = self.pattern.find("}", self.i + 1)
        if end < 0:
            raise UnsupportedPatternError("unterminated curly brackets")
        counts = self.pattern[self.i + 1 : end].split(",")
        self.i = end + 1
        if len(counts) not in (1, 2):
            raise UnsupportedPatternError("wrong number of values in curly brackets")
        if len(counts) == 1:
            least = most = _count(counts[0])
        else:
            least = _count(counts[0]) if counts[0] else 0
            most = _count(counts[1]) if counts[1] else _INT_MAX
        if not seq:
            raise InvalidPatternError("nothing to repeat")
        sub, is_literal = seq[-1]
        if not is_literal:
            sub_id = self.sub_rule_ids.get(sub)
            if sub_id is None:
                sub_id = self.add_rule(f"{self.name}-{len(self.sub_rule_ids) + 1}", sub)
                self.sub_rule_ids[sub] = sub_id
            sub = sub_id
        item = f'"{sub}"' if is_literal else sub
        seq[-1] = (cpp_repetition(item, least, None if most == _INT_MAX else most), False)

    def literal(self, first: str) -> str:
        r"""Read characters and escapes up to the next operator, as one GBNF literal.

        The C++ converter reads the pattern byte by byte: before a quantifier, it ends the
        literal ahead of the last byte of a non-ASCII character (``Café?`` is ``"Caf\xc3"
        "\xa9"?``), a grammar llama.cpp's parser refuses. So does this: the other bytes
        end the literal, the last one is left in `cut` for a literal of its own, and
        bytes are written as Python's ``surrogateescape`` reads them (``"\udcc3"``).
        """
        pattern, length = self.pattern, len(self.pattern)
        text = ""
        while self.i < length:
            c = pattern[self.i]
            if not c.isascii() and pattern[self.i + 1 : self.i + 2] in _QUANTIFIERS:
                data = c.encode("utf-8", "surrogatepass")
                text += data[:-1].decode("utf-8", "surrogateescape")
                self.cut = data[-1:].decode("utf-8", "surrogateescape")
                self.i += 1
                break
            if c == "\\":
                if self.i == length - 1:
                    raise InvalidPatternError("trailing backslash")
                following = pattern[self.i + 1]
                if following in _ESCAPED_IN_REGEXPS_BUT_NOT_IN_LITERALS:
                    text += following
                    self.i += 2
                else:
                    size = _escape_length(pattern, self.i)
                    if size == 0:
                        escape = pattern[self.i : self.i + 2]
                        raise UnsupportedPatternError(f"unsupported escape: {escape}")
                    text += pattern[self.i : self.i + size]
                    self.i += size
            elif c == '"':
                text += '\\"'
                self.i += 1
            elif c not in _NON_LITERAL and (
                self.i == length - 1
                or not text
                or pattern[self.i + 1] == "."
                or pattern[self.i + 1] not in _NON_LITERAL
            ):
                text += c
                self.i += 1
            else:
                break
        if not text:  # nothing was read, as a stray "]" or "}"
            raise UnsupportedPatternError(f"unsupported character: {first}")
        return text


def _join(seq: list[tuple[str, bool]]) -> str:
    """Join a sequence's items, consecutive literals as one (``join_seq``)."""
    parts: list[str] = []
    literal = ""
    for text, is_literal in seq:
        if is_literal:
            literal += text
            continue
        if literal:
            parts.append(f'"{literal}"')
            literal = ""
        parts.append(text)
    if literal:
        parts.append(f'"{literal}"')
    return " ".join(parts)


def pattern_rule(pattern: str, name: str, add_rule: Callable[[str, str], str]) -> str:
    """Return the GBNF of what ``pattern`` matches, without the quotes of the string.

    Parameters
    ----------
    pattern
        A ``pattern`` anchored at both ends (``^...$``).
    name
        The string's rule name: a repeated group becomes the rule ``name-1``, ``name-2``...
    add_rule
        The converter's ``_add_rule``, for those rules and ``dot``.

    Returns
    -------
    str
        The GBNF, to be written between the string's quotes.

    Raises
    ------
    UnsupportedPatternError
        Where the C++ converter warns and accepts any string.
    InvalidPatternError
        Where the C++ converter fails (a ``ValueError``).
    """
    if len(pattern) < 2 or pattern[0] != "^" or pattern[-1] != "$":
        raise UnsupportedPatternError("not anchored with '^' and '$'")
    translation = _Translation(pattern[1:-1], name, add_rule)
    rule = translation.sequence()
    if translation.depth != 0:
        raise InvalidPatternError("unbalanced parentheses")
    return rule


def cut_character(pattern: str) -> str | None:
    """Return llama.cpp's parse error for a pattern's grammar with a character cut in two.

    The C++ converter reads a pattern byte by byte: a non-ASCII character followed by a
    quantifier (``^Café?$``) has only its last byte repeated, and llama.cpp's grammar
    parser then refuses the grammar (`_Translation.literal`). For the synthetic engine,
    which writes no grammar.

    Parameters
    ----------
    pattern
        A ``pattern`` the converter reads.

    Returns
    -------
    str | None
        ``failed to parse grammar: ...`` with the place (as the llama.cpp engine reports
        it), or None where the converter writes a grammar llama.cpp parses, or no grammar
        for the pattern (an unsupported pattern is any string; an invalid one fails the
        conversion instead).
    """
    if pattern.isascii():  # only a character of several bytes can be cut
        return None
    rules: dict[str, str] = {}

    def add_rule(name: str, rule: str) -> str:
        rules[name] = rule
        return name

    try:
        rule = pattern_rule(pattern, "root", add_rule)
    except (UnsupportedPatternError, InvalidPatternError):
        return None
    # as the engine writes a string's rule (a place named in the error reads the same)
    lines = [f'root ::= "\\"" ({rule}) "\\"" space', 'space ::= " "?']
    lines += [f"{k} ::= {v}" for k, v in rules.items()]
    text = "\n".join(lines)
    if not any(0xDC80 <= ord(char) <= 0xDCFF for char in text):
        return None
    try:
        parse_gbnf(text)
    except GrammarError as exc:
        return f"failed to parse grammar: {exc}"
    return None
