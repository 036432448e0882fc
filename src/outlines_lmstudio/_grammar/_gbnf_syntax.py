"""Check a GBNF grammar's syntax as llama.cpp's parser reads it, before it is sent.

A grammar given as it is (``config={"structured": {"type": "gbnf", "gbnfGrammar": ...}}``)
reached LM Studio unchecked: a syntax error cost a model lookup or load and a request, and
then failed on the server (found by a probe). This follows llama.cpp's
``llama_grammar_parser`` (``src/llama-grammar.cpp``): the same lexical rules (names of
ASCII letters, digits and ``-``; ``#`` comments; a newline ends a rule outside
parentheses), the same escapes, tokens (``<[id]>``, ``<text>``, ``!`` before either),
repetitions (``* + ? {m} {m,} {m,n}``, ``m`` at most 2000), every referenced rule defined,
and a ``root`` rule. It refuses only what llama.cpp refuses; two of llama.cpp's checks are
left to the server: left recursion and its bound on rules a nested repetition expands to.

Hand-written: no Python library parses GBNF (llama-cpp-python, an optional dependency,
parses it only inside llama.cpp's sampler, which needs a model's vocabulary). The
emulator's reader (``outlines_lmstudio.testing._gbnf``) stays separate on purpose: it
stands in for the server.
"""

from __future__ import annotations

import re

__all__ = ["GbnfSyntaxError", "check_gbnf_syntax"]

_MAX_REPETITIONS = 2000  # llama.cpp's MAX_REPETITION_THRESHOLD
_ESCAPES = frozenset('trn\\"[]-')
_HEX_SIZES = {"x": 2, "u": 4, "U": 8}
_HEX = frozenset("0123456789abcdefABCDEF")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _is_word(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "-")


class GbnfSyntaxError(ValueError):
    """A grammar llama.cpp's parser refuses: what, and where (1-based line and column)."""

    def __init__(self, what: str, text: str, pos: int) -> None:
        self.what = what
        breaks = list(_LINE_BREAK.finditer(text, 0, pos))  # "\r" ends a rule too
        self.line = len(breaks) + 1
        self.column = pos - (breaks[-1].end() if breaks else 0) + 1
        near = _LINE_BREAK.split(text[pos : pos + 30], 1)[0]
        super().__init__(
            f"{what} at line {self.line}, column {self.column}"
            + (f" (at {near!r})" if near else " (at the end)")
        )


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.end = len(text)
        # Each rule's references in its last definition (llama.cpp keeps the last one), with
        # where each is: the rule being read adds to `refs`.
        self.rules: dict[str, list[tuple[str, int]]] = {}
        self.refs: list[tuple[str, int]] = []

    def fail(self, what: str, pos: int) -> GbnfSyntaxError:
        return GbnfSyntaxError(what, self.text, pos)

    def space(self, pos: int, newline_ok: bool) -> int:
        text, end = self.text, self.end
        while pos < end:
            char = text[pos]
            if char == "#":
                while pos < end and text[pos] not in "\r\n":
                    pos += 1
            elif char in " \t" or (newline_ok and char in "\r\n"):
                pos += 1
            else:
                break
        return pos

    def name(self, pos: int) -> int:
        end = pos
        while end < self.end and _is_word(self.text[end]):
            end += 1
        if end == pos:
            raise self.fail("expecting a rule name (ASCII letters, digits and '-')", pos)
        return end

    def integer(self, pos: int) -> int:
        end = pos
        while end < self.end and self.text[end] in "0123456789":
            end += 1
        if end == pos:
            raise self.fail("expecting an integer", pos)
        return end

    def char(self, pos: int, closing: str) -> int:
        text = self.text
        if pos >= self.end:
            raise self.fail(f"unexpected end of input (no closing {closing})", pos)
        if text[pos] != "\\":
            return pos + 1
        kind = text[pos + 1 : pos + 2]
        size = _HEX_SIZES.get(kind)
        if size is not None:
            digits = text[pos + 2 : pos + 2 + size]
            if len(digits) != size or not set(digits) <= _HEX:
                raise self.fail(f"expecting {size} hex digits after \\{kind}", pos)
            return pos + 2 + size
        if kind and kind in _ESCAPES:
            return pos + 2
        known = '\\x \\u \\U \\t \\r \\n \\\\ \\" \\[ \\] \\-'
        raise self.fail(f"unknown escape (llama.cpp knows {known})", pos)

    def token(self, pos: int) -> int:
        """``<[id]>`` or ``<text>`` (a token of the model's vocabulary), at ``<``."""
        text = self.text
        if text[pos : pos + 1] != "<":
            raise self.fail("expecting '<' (a token) after '!'", pos)
        pos += 1
        if text[pos : pos + 1] == "[":
            end = self.integer(pos + 1)
            if int(text[pos + 1 : end]) >= 2**32:
                raise self.fail("a token id beyond 32 bits", pos + 1)
            if text[end : end + 2] != "]>":
                raise self.fail("expecting ']>' after a token id", end)
            return end + 2
        close = text.find(">", pos)
        if close < 0:
            raise self.fail("expecting '>' to close a token", pos)
        if close == pos:
            raise self.fail("an empty token '<>'", pos - 1)
        return close + 1

    def alternates(self, pos: int, nested: bool) -> int:
        pos = self.sequence(pos, nested)
        while pos < self.end and self.text[pos] == "|":
            pos = self.sequence(self.space(pos + 1, True), nested)
        return pos

    def sequence(self, pos: int, nested: bool) -> int:
        text = self.text
        item = False  # a preceding item a repetition applies to (llama.cpp: elements added)
        item_refs = 0  # where the item's references begin in `refs`
        while pos < self.end:
            char = text[pos]
            if char not in "*+?{":
                item_refs = len(self.refs)
            if char == '"':
                pos += 1
                item = text[pos : pos + 1] != '"'  # "" adds nothing to repeat
                while pos >= self.end or text[pos] != '"':
                    pos = self.char(pos, "'\"'")
                pos = self.space(pos + 1, nested)
            elif char == "[":
                pos += 1
                if text[pos : pos + 1] == "^":
                    pos += 1
                item = text[pos : pos + 1] != "]"  # [] and [^] add nothing to repeat
                while pos >= self.end or text[pos] != "]":
                    pos = self.char(pos, "']'")
                    if text[pos : pos + 1] == "-" and text[pos + 1 : pos + 2] != "]":
                        pos = self.char(pos + 1, "']'")
                pos = self.space(pos + 1, nested)
            elif char in "<!":
                pos = self.space(self.token(pos + (char == "!")), nested)
                item = True
            elif _is_word(char):
                end = self.name(pos)
                self.refs.append((text[pos:end], pos))
                pos = self.space(end, nested)
                item = True
            elif char == "(":
                pos = self.alternates(self.space(pos + 1, True), True)
                if text[pos : pos + 1] != ")":
                    raise self.fail("expecting ')'", pos)
                pos = self.space(pos + 1, nested)
                item = True
            elif char == ".":
                pos = self.space(pos + 1, nested)
                item = True
            elif char in "*+?{":
                if not item:
                    raise self.fail(f"{char!r} with no item before it to repeat", pos)
                if char == "{":
                    pos, item = self.counts(pos, nested)
                    if not item:  # {0}: llama.cpp drops the item, and its references
                        del self.refs[item_refs:]
                else:
                    pos = self.space(pos + 1, nested)
            else:
                break
        return pos

    def counts(self, pos: int, nested: bool) -> tuple[int, bool]:
        """Read ``{m}``, ``{m,}`` or ``{m,n}``; whether an item is left to repeat again."""
        text = self.text
        start = pos
        pos = self.space(pos + 1, nested)
        end = self.integer(pos)
        low = high = int(text[pos:end])
        pos = self.space(end, nested)
        if text[pos : pos + 1] == ",":
            pos = self.space(pos + 1, nested)
            high = -1  # no maximum
            if text[pos : pos + 1].isdigit():
                end = self.integer(pos)
                high = int(text[pos:end])
                pos = self.space(end, nested)
        if text[pos : pos + 1] != "}":
            raise self.fail("expecting '}' or ',' in a repetition", pos)
        if max(low, high) >= 2**64:  # llama.cpp's std::stoull throws out_of_range
            raise self.fail("a repetition count beyond 64 bits", start)
        if 0 <= high < low:  # llama.cpp would count its optional copies from -1 as unsigned
            raise self.fail(
                f"a repetition {{{low},{high}}} whose maximum is below its minimum", start
            )
        if low > _MAX_REPETITIONS:
            raise self.fail(
                f"a repetition of at least {low} (llama.cpp takes at most {_MAX_REPETITIONS})",
                start,
            )
        # {0} and {0,0} leave nothing behind: llama.cpp refuses a repetition after them.
        return self.space(pos + 1, nested), high != 0

    def rule(self, pos: int) -> int:
        end = self.name(pos)
        name = self.text[pos:end]
        pos = self.space(end, False)
        if self.text[pos : pos + 3] != "::=":
            raise self.fail(f"expecting '::=' after the rule name {name!r}", pos)
        self.refs = []
        pos = self.alternates(self.space(pos + 3, True), False)
        self.rules[name] = self.refs
        if pos < self.end:
            if self.text[pos] not in "\r\n":
                raise self.fail("expecting the end of the rule (a newline)", pos)
            pos += 2 if self.text[pos : pos + 2] == "\r\n" else 1
        return self.space(pos, True)


def check_gbnf_syntax(text: str) -> None:
    """Raise `GbnfSyntaxError` if llama.cpp's parser would refuse ``text``.

    Raises
    ------
    GbnfSyntaxError
        For a syntax error, an undefined rule, a repetition llama.cpp refuses, a NUL
        character (llama.cpp reads the grammar as a C string: it would end there), or no
        ``root`` rule.
    """
    nul = text.find("\x00")
    if nul >= 0:
        raise GbnfSyntaxError("a NUL character (llama.cpp would stop reading there)", text, nul)
    parser = _Parser(text)
    pos = parser.space(0, True)
    while pos < parser.end:
        pos = parser.rule(pos)
    undefined = [(at, name) for refs in parser.rules.values() for name, at in refs]
    undefined = sorted((at, name) for at, name in undefined if name not in parser.rules)
    if undefined:
        at, name = undefined[0]
        raise GbnfSyntaxError(f"the rule {name!r} is used but never defined", text, at)
    if "root" not in parser.rules:
        raise GbnfSyntaxError("no 'root' rule (llama.cpp starts there)", text, len(text))
