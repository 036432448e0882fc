r"""GBNF (llama.cpp grammar) parsing and random sampling.

No Python library samples GBNF, so this is hand-written. It follows the syntax
of llama.cpp's ``grammar-parser``: rules ``name ::= ...``, alternatives ``|``,
sequences, string literals and character classes with the escapes ``\\xHH``,
``\\uHHHH``, ``\\UHHHHHHHH``, ``\\t``, ``\\r``, ``\\n``, ``\\\\``, ``\\"``, ``\\[``,
``\\]``, negated classes ``[^...]``, ranges, ``.``, groups and the
repetitions ``*``, ``+``, ``?``, ``{m}``, ``{m,}``, ``{m,n}``; ``#`` comments.
It is a little more lenient than llama.cpp about line breaks (a rule ends where
the next ``name ::=`` starts). The test suite checks that llama.cpp's own
grammar code accepts what it generates.

Sampling walks the grammar with a seeded RNG and a length bias: as the output
grows, it prefers the alternatives and repetition counts with the shortest
expansion, so every walk ends.

This node model is separate from ``outlines_lmstudio._grammar._gbnf`` on purpose.
That one is the *sending* side: it builds grammars and emits the conservative
dialect. This one is the *receiving* side, standing where llama.cpp stands: it
parses whatever text arrives, independently, so a grammar the library emits
wrongly fails here as it would in LM Studio instead of being read back by the
code that wrote it. Do not share the two models.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["Grammar", "GrammarError", "parse_gbnf", "sample_gbnf"]


SAMPLE_LIMIT = 100_000
"""The longest text a grammar's sample is built to (characters); see `Grammar.sample`."""


class _Full(Exception):
    """The sample reached its limit."""


class _Output(list[str]):
    """A sample's pieces and their total length, which stops the walk at ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.size = 0
        self.limit = limit

    def append(self, piece: str) -> None:
        super().append(piece)
        self.size += len(piece)
        if self.size >= self.limit:
            raise _Full


class GrammarError(ValueError):
    """The GBNF text cannot be parsed (or has no ``root`` rule)."""


@dataclass(frozen=True)
class Lit:
    """A literal string."""

    text: str


@dataclass(frozen=True)
class Chars:
    """A character class: inclusive ranges, maybe negated (``.`` is an empty negated class)."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool


@dataclass(frozen=True)
class Ref:
    """A reference to a rule."""

    name: str


@dataclass(frozen=True)
class Repeat:
    """An item repeated between ``low`` and ``high`` (None: unbounded) times."""

    item: Node
    low: int
    high: int | None


@dataclass(frozen=True)
class Seq:
    """A sequence of items."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    """Alternatives."""

    options: tuple[Seq, ...]


Node: TypeAlias = "Lit | Chars | Ref | Repeat | Seq | Alt"

_NAME = re.compile(r"[a-zA-Z0-9-]+")
_RULE_START = re.compile(r"[a-zA-Z0-9-]+[ \t]*::=")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]"}
_HEX = {"x": 2, "u": 4, "U": 8}
_INF = float("inf")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> GrammarError:
        line = self.text.count("\n", 0, self.pos) + 1
        return GrammarError(f"{message} (line {line}, at {self.text[self.pos : self.pos + 20]!r})")

    def space(self) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "#":
                while self.pos < len(text) and text[self.pos] != "\n":
                    self.pos += 1
            elif char in " \t\r\n":
                self.pos += 1
            else:
                return

    def name(self) -> str:
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise self.error("expected a rule name")
        self.pos = match.end()
        return match.group()

    def rules(self) -> dict[str, Alt]:
        rules: dict[str, Alt] = {}
        self.space()
        while self.pos < len(self.text):
            name = self.name()
            self.space()
            if not self.text.startswith("::=", self.pos):
                raise self.error(f"expected '::=' after {name!r}")
            self.pos += 3
            rules[name] = self.alternatives(nested=False)
            self.space()
        return rules

    def alternatives(self, nested: bool) -> Alt:
        options = [self.sequence(nested)]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            options.append(self.sequence(nested))
        return Alt(tuple(options))

    def at_sequence_end(self, nested: bool) -> bool:
        self.space()
        if self.pos >= len(self.text):
            return True
        char = self.text[self.pos]
        if char == "|" or (nested and char == ")"):
            return True
        return not nested and _RULE_START.match(self.text, self.pos) is not None

    def sequence(self, nested: bool) -> Seq:
        items: list[Node] = []
        while not self.at_sequence_end(nested):
            items.append(self.postfix(self.atom()))
        return Seq(tuple(items))

    def atom(self) -> Node:
        text = self.text
        char = text[self.pos]
        if char == '"':
            self.pos += 1
            out = []
            while self.pos < len(text) and text[self.pos] != '"':
                out.append(self.char())
            if self.pos >= len(text):
                raise self.error("unterminated string literal")
            self.pos += 1
            return Lit("".join(out))
        if char == "[":
            self.pos += 1
            negated = text.startswith("^", self.pos)
            self.pos += negated
            ranges = []
            while self.pos < len(text) and text[self.pos] != "]":
                low = self.char()
                high = low
                if text.startswith("-", self.pos) and not text.startswith("-]", self.pos):
                    self.pos += 1
                    high = self.char()
                ranges.append((ord(low), ord(high)))
            if self.pos >= len(text):
                raise self.error("unterminated character class")
            if not ranges and not negated:
                raise self.error("empty character class")
            kept = [(low, high) for low, high in ranges if low <= high]  # z-a: no character
            if not kept and not negated:
                raise self.error("the character class matches no character")
            self.pos += 1
            return Chars(tuple(kept), negated)
        if char == ".":
            self.pos += 1
            return Chars((), True)
        if char == "(":
            self.pos += 1
            inner = self.alternatives(nested=True)
            self.space()
            if not text.startswith(")", self.pos):
                raise self.error("expected ')'")
            self.pos += 1
            return inner
        if _NAME.match(text, self.pos):
            return Ref(self.name())
        raise self.error("unexpected character")

    def char(self) -> str:
        text = self.text
        if self.pos >= len(text):
            raise self.error("unexpected end of grammar")
        char = text[self.pos]
        if char != "\\":
            self.pos += 1
            return char
        code = text[self.pos + 1 : self.pos + 2]
        if code in _HEX:
            digits = text[self.pos + 2 : self.pos + 2 + _HEX[code]]
            if len(digits) != _HEX[code] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.error("bad hex escape")
            self.pos += 2 + _HEX[code]
            return chr(int(digits, 16))
        if code in _ESCAPES:
            self.pos += 2
            return _ESCAPES[code]
        raise self.error(f"unknown escape '\\{code}'")

    def postfix(self, item: Node) -> Node:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in "*+?":
                self.pos += 1
                item = Repeat(item, 1 if char == "+" else 0, 1 if char == "?" else None)
            elif char == "{":
                match = re.compile(r"\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}").match(text, self.pos)
                if not match:
                    raise self.error("bad repetition")
                low = int(match.group(1))
                if match.group(2) is None:
                    high: int | None = low
                else:
                    high = int(match.group(3)) if match.group(3) else None
                if high is not None and high < low:
                    raise self.error("repetition maximum is below its minimum")
                self.pos = match.end()
                item = Repeat(item, low, high)
            else:
                return item
        return item


@dataclass
class Grammar:
    """A parsed GBNF grammar, with the shortest expansion length of each rule."""

    rules: dict[str, Alt]

    def __post_init__(self) -> None:
        if "root" not in self.rules:
            raise GrammarError("the grammar has no 'root' rule")
        for node in self.rules.values():
            self._check_refs(node)
        recursive = _left_recursive(self.rules)
        if recursive is not None:
            raise GrammarError(
                f"unsupported grammar, left recursion detected for rule {recursive!r} "
                "(llama.cpp refuses a rule that can reach itself before any character)"
            )
        self.cost: dict[str, float] = dict.fromkeys(self.rules, _INF)
        changed = True
        while changed:
            changed = False
            for name, node in self.rules.items():
                value = self.min_len(node)
                if value < self.cost[name]:
                    self.cost[name] = value
                    changed = True
        if self.cost["root"] == _INF:
            raise GrammarError("the 'root' rule never terminates")

    def _check_refs(self, node: Node) -> None:
        if isinstance(node, Ref) and node.name not in self.rules:
            raise GrammarError(f"undefined rule {node.name!r}")
        if isinstance(node, Repeat):
            self._check_refs(node.item)
        elif isinstance(node, Seq):
            for item in node.items:
                self._check_refs(item)
        elif isinstance(node, Alt):
            for option in node.options:
                self._check_refs(option)

    def min_len(self, node: Node) -> float:
        """Length of the shortest string ``node`` produces."""
        if isinstance(node, Lit):
            return len(node.text)
        if isinstance(node, Chars):
            return 1
        if isinstance(node, Ref):
            return self.cost[node.name]
        if isinstance(node, Repeat):
            return node.low * self.min_len(node.item) if node.low else 0
        if isinstance(node, Seq):
            return sum(self.min_len(item) for item in node.items)
        return min(self.min_len(option) for option in node.options)

    def sample(self, rng: random.Random, target: int = 40, limit: int = SAMPLE_LIMIT) -> str:
        """Generate one random string of the grammar's language.

        A grammar whose shortest sentence is longer than ``limit`` characters (``a{2000}``
        nested in ``{2000}``) gives its first ``limit`` characters, as an engine would go on
        until its token limit: the walk stops there instead of building the whole sentence.
        """
        out = _Output(limit)
        with contextlib.suppress(_Full):
            self._walk(self.rules["root"], rng, out, target, 0)
        return "".join(out)[:limit]

    def _pressure(self, out: _Output, target: int, depth: int) -> float:
        return min(1.0, (out.size / target) ** 2 + depth / 60)

    def _walk(self, node: Node, rng: random.Random, out: _Output, target: int, depth: int) -> None:
        if isinstance(node, Lit):
            out.append(node.text)
        elif isinstance(node, Chars):
            out.append(_pick_char(node, rng))
        elif isinstance(node, Ref):
            self._walk(self.rules[node.name], rng, out, target, depth + 1)
        elif isinstance(node, Seq):
            for item in node.items:
                self._walk(item, rng, out, target, depth)
        elif isinstance(node, Alt):
            options = [o for o in node.options if self.min_len(o) < _INF]
            if rng.random() < self._pressure(out, target, depth):
                best = min(self.min_len(o) for o in options)
                options = [o for o in options if self.min_len(o) == best]
            self._walk(rng.choice(options), rng, out, target, depth)
        else:
            count = node.low
            limit = node.high
            while limit is None or count < limit:
                if rng.random() < 0.35 + 0.65 * self._pressure(out, target, depth):
                    break
                count += 1
            for _ in range(count):
                self._walk(node.item, rng, out, target, depth + 1)


# llama.cpp's view of a grammar, for its left-recursion check: each rule is a list of
# alternatives, each a list of elements, None for a character and a rule key for a
# reference. Groups and repetitions become rules of their own, as llama.cpp rewrites them.
_Element: TypeAlias = "str | None"


def _lower(rules: dict[str, Alt]) -> dict[str, list[list[_Element]]]:
    """Rewrite the grammar into flat rules the way llama.cpp's parser does."""
    lowered: dict[str, list[list[_Element]]] = {}

    def new_rule(alternatives: list[list[_Element]]) -> str:
        key = f"\x00{len(lowered)}"  # no user rule name has a NUL
        lowered[key] = alternatives
        return key

    def elements(node: Node) -> list[_Element]:
        if isinstance(node, Lit):
            return [None] * min(len(node.text), 1)  # "" adds nothing
        if isinstance(node, Chars):
            return [None]
        if isinstance(node, Ref):
            return [node.name]
        if isinstance(node, Seq):
            return [e for item in node.items for e in elements(item)]
        if isinstance(node, Alt):  # a group
            return [new_rule([elements(option) for option in node.options])]
        item = elements(node.item)
        out = item * node.low
        if node.high is None:  # S' ::= S S' | (empty)
            key = new_rule([])
            lowered[key] += [[*item, key], []]
            out.append(key)
        elif node.high > node.low:  # a chain S'(k) ::= S S'(k-1) | ... S'(1) ::= S |
            last = new_rule([item, []])
            out.append(new_rule([[*item, last], []]) if node.high - node.low > 1 else last)
        return out

    for name, body in rules.items():
        lowered[name] = [elements(option) for option in body.options]
    return lowered


def _left_recursive(rules: dict[str, Alt]) -> str | None:
    """Return a rule llama.cpp finds left-recursive (``llama_grammar_detect_left_recursion``).

    A rule may be empty only when one of its alternatives is literally empty (as in
    llama.cpp, which does not look further), and a reference is followed into only while
    the rules before it in the alternative may be empty.
    """
    lowered = _lower(rules)
    visited: set[str] = set()
    in_progress: set[str] = set()
    may_be_empty: set[str] = set()

    def detect(rule: str) -> bool:
        if rule in in_progress:
            return True
        in_progress.add(rule)
        if any(not alternative for alternative in lowered[rule]):
            may_be_empty.add(rule)
        for alternative in lowered[rule]:
            for element in alternative:
                if element is None:
                    break
                if detect(element):
                    return True
                if element not in may_be_empty:
                    break
        in_progress.discard(rule)
        visited.add(rule)
        return False

    for name in rules:
        if name not in visited and detect(name):
            return name
    return None


_PRINTABLE = [chr(c) for c in range(0x20, 0x7F)]

_UNWRITABLE = ((0x00, 0x00), (0xD800, 0xDFFF))
"""Code points no reply holds: NUL (llama.cpp never allows it) and the lone surrogates."""


def _writable(ranges: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """Return ``ranges`` without `_UNWRITABLE`."""
    kept: list[tuple[int, int]] = []
    for low, high in ranges:
        for gap_low, gap_high in _UNWRITABLE:
            if low <= gap_high and high >= gap_low:
                if low < gap_low:
                    kept.append((low, gap_low - 1))
                low = max(low, gap_high + 1)
        if low <= high:
            kept.append((low, high))
    return kept


def _pick_char(node: Chars, rng: random.Random) -> str:
    if not node.negated:
        ranges = _writable(node.ranges)
        if not ranges:
            raise GrammarError("a character class holds only NUL or lone surrogates")
        low, high = rng.choice(ranges)
        return chr(rng.randint(low, high))
    allowed = [c for c in _PRINTABLE if not any(lo <= ord(c) <= hi for lo, hi in node.ranges)]
    if allowed:
        return rng.choice(allowed)
    for code in range(0xA1, 0x3000):  # everything printable is excluded: look further
        if not any(lo <= code <= hi for lo, hi in node.ranges):
            return chr(code)
    raise GrammarError("a negated character class excludes every character")


@functools.lru_cache(maxsize=128)
def parse_gbnf(text: str) -> Grammar:
    """Parse GBNF text.

    Raises
    ------
    GrammarError
        On a syntax error, an undefined rule, left recursion (which llama.cpp refuses),
        or a missing or endless ``root``.
    """
    return Grammar(_Parser(text).rules())


def sample_gbnf(text: str, rng: random.Random) -> str:
    """Parse ``text`` and return one random string of its language."""
    return parse_gbnf(text).sample(rng, rng.randint(20, 60))
