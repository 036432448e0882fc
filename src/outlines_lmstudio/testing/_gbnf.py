r"""GBNF (llama.cpp grammar) parsing and random sampling.

No Python library samples GBNF, so this is hand-written. Its parser follows
llama.cpp's ``llama_grammar_parser`` (``llama-grammar.cpp``) step for step and takes
exactly the grammars it takes: rules ``name ::= ...``, alternatives ``|``, sequences,
string literals and character classes with the escapes ``\\xHH``, ``\\uHHHH``,
``\\UHHHHHHHH``, ``\\t``, ``\\r``, ``\\n``, ``\\\\``, ``\\"``, ``\\[``, ``\\]``, ``\\-``,
negated classes ``[^...]``, ranges, ``.``, groups, token references ``<[id]>``,
``<name>`` and ``!<...>``, and the repetitions ``*``, ``+``, ``?``, ``{m}``, ``{m,}``,
``{m,n}``; ``#`` comments. A line break ends a rule, except inside parentheses and
right after ``::=`` or ``|``, as in llama.cpp. The test suite checks that llama.cpp's
parser takes and refuses the same grammars, and that its matcher accepts every sample.
Two corners differ (found by a review; hand-written GBNF only): a rule named only under a
``{0}`` repetition, which llama.cpp drops and may then not look up (refused here), and a
rule defined twice, whose first body llama.cpp still checks (only the last is, here).
A byte that is no character, as ``surrogateescape`` writes it (the C++ JSON-schema converter
cuts a character before a quantifier: `_llama_pattern`), is read as llama.cpp reads bytes.
Token references name a model's vocabulary, which the synthetic engine has none of:
they parse, but `Grammar.sample` refuses them.

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

import collections
import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["SAMPLE_LIMIT", "Grammar", "GrammarError", "draw_gbnf", "parse_gbnf", "sample_gbnf"]


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


@dataclass(frozen=True)
class Token:
    """A token reference, ``<[id]>`` or ``<name>`` (``!`` before it: any other token)."""

    text: str
    negated: bool


Node: TypeAlias = "Lit | Chars | Ref | Token | Repeat | Seq | Alt"

_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_DIGITS = frozenset("0123456789")
_ESCAPES = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "\\": "\\",
    '"': '"',
    "[": "[",
    "]": "]",
    "-": "-",
}
_HEX = {"x": 2, "u": 4, "U": 8}
_INF = float("inf")

MAX_REPETITIONS = 2000
"""llama.cpp's ``MAX_REPETITION_THRESHOLD``: the most a repetition may count, or multiply rules."""

_NOTHING = Chars((), negated=False)
"""An element no character matches (``[z-a]``; a literal holding NUL, as llama.cpp reads it)."""


class _Parser:
    """llama.cpp's ``llama_grammar_parser``, step for step, building `Node` trees.

    Line breaks follow llama.cpp's ``parse_space``: a rule ends at the line break that
    follows it, except inside parentheses and right after ``::=`` or ``|``; a ``#``
    comment runs to the end of its line. ``[]`` and ``[^]`` match the empty string (they
    add no element), a reversed range ``[z-a]`` matches no character, and the text ends at
    its first NUL, as llama.cpp reads a C string.
    """

    def __init__(self, text: str) -> None:
        self.text = text.partition("\x00")[0]
        self.pos = 0
        self.symbols: set[str] = set()
        self.generated = 0  # the rules llama.cpp makes for groups and repetitions

    def error(self, message: str) -> GrammarError:
        line = self.text.count("\n", 0, self.pos) + 1
        return GrammarError(f"{message} (line {line}, at {self.text[self.pos : self.pos + 20]!r})")

    def peek(self, offset: int = 0) -> str:
        """Return the character ``offset`` after the position ("" past the end)."""
        return self.text[self.pos + offset : self.pos + offset + 1]

    def space(self, newline_ok: bool) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "#":
                while self.pos < len(text) and text[self.pos] not in "\r\n":
                    self.pos += 1
            elif char in " \t" or (newline_ok and char in "\r\n"):
                self.pos += 1
            else:
                return

    def name(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _WORD:
            self.pos += 1
        if self.pos == start:
            raise self.error("expected a rule name")
        name = self.text[start : self.pos]
        self.symbols.add(name)
        return name

    def integer(self) -> int:
        start = self.pos
        while self.peek() and self.peek() in _DIGITS:
            self.pos += 1
        if self.pos == start:
            raise self.error("expected a number")
        value = int(self.text[start : self.pos])
        if value >= 2**64:  # std::stoull throws
            raise self.error("the number is too big")
        return value

    def rules(self) -> dict[str, Alt]:
        rules: dict[str, Alt] = {}
        self.space(newline_ok=True)
        while self.pos < len(self.text):
            name = self.name()
            self.space(newline_ok=False)
            if not self.text.startswith("::=", self.pos):
                raise self.error(f"expected '::=' after {name!r}")
            self.pos += 3
            self.space(newline_ok=True)
            rules[name] = self.alternatives(nested=False)
            char = self.peek()
            if char == "\r":
                self.pos += 2 if self.peek(1) == "\n" else 1
            elif char == "\n":
                self.pos += 1
            elif char:
                raise self.error(
                    "expected a line break or the end of the grammar after a rule (a rule "
                    "goes on to the next line only inside parentheses or after '|')"
                )
            self.space(newline_ok=True)
        return rules

    def alternatives(self, nested: bool) -> Alt:
        options = [self.sequence(nested)]
        while self.peek() == "|":
            self.pos += 1
            self.space(newline_ok=True)
            options.append(self.sequence(nested))
        return Alt(tuple(options))

    def sequence(self, nested: bool) -> Seq:
        items: list[Node] = []
        weight = 1  # llama.cpp's n_prev_rules: the rules a repetition of the last item copies
        while True:
            if self.peek() in ("*", "+", "?", "{"):
                if not items or not _adds_elements(items[-1]):
                    raise self.error("expected an item before the repetition")
                start = self.pos
                low, high = self.repetition(nested)
                total = high if high else low if low else 1
                if weight * total > MAX_REPETITIONS:
                    self.pos = start
                    raise self.error(
                        f"the repetitions nest to more than {MAX_REPETITIONS} copies, "
                        "more than llama.cpp takes"
                    )
                items[-1] = Repeat(items[-1], low, high)
                weight *= total
                self.generated += 1 if high is None else high - low
                continue
            before = len(self.symbols) + self.generated
            item = self.atom()
            if item is None:
                return Seq(tuple(items))
            weight = 1
            if isinstance(item, Alt):  # the rules the group made, itself included
                weight = max(1, len(self.symbols) + self.generated - before)
            items.append(item)
            self.space(nested)

    def repetition(self, nested: bool) -> tuple[int, int | None]:
        """Read ``*``, ``+``, ``?`` or a ``{...}`` count, as llama.cpp's limits change it."""
        char = self.peek()
        start = self.pos
        self.pos += 1
        self.space(nested)
        if char != "{":
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
        low = self.integer()
        self.space(nested)
        high: int | None = low
        if self.peek() == ",":
            self.pos += 1
            self.space(nested)
            high = self.integer() if self.peek() and self.peek() in _DIGITS else None
            self.space(nested)
        if self.peek() != "}":
            raise self.error("expected '}' to end the repetition")
        end = self.pos + 1
        self.pos = start
        if low > MAX_REPETITIONS:
            raise self.error(
                f"a repetition counts to more than {MAX_REPETITIONS} (llama.cpp's limit)"
            )
        if high is not None and high > MAX_REPETITIONS:
            high = None  # llama.cpp: no maximum
        if high is not None and high < low:  # llama.cpp would build rules until memory ran out
            raise self.error("repetition maximum is below its minimum")
        self.pos = end
        self.space(nested)
        return low, high

    def atom(self) -> Node | None:
        """Read one item, or return None where the sequence ends."""
        char = self.peek()
        if char == '"':
            self.pos += 1
            codes = []
            while self.peek() != '"':
                if not self.peek():
                    raise self.error("unterminated string literal")
                codes.append(self.char())
            self.pos += 1
            if any(_unwritable(code) for code in codes):
                return _NOTHING
            return Lit("".join(map(chr, codes)))
        if char == "[":
            return self.char_class()
        if char in ("<", "!"):
            return self.token()
        if char and char in _WORD:
            return Ref(self.name())
        if char == "(":
            self.pos += 1
            self.space(newline_ok=True)
            self.generated += 1
            inner = self.alternatives(nested=True)
            if self.peek() != ")":
                raise self.error("expected ')'")
            self.pos += 1
            return inner
        if char == ".":
            self.pos += 1
            return Chars((), negated=True)
        return None

    def char_class(self) -> Node:
        self.pos += 1
        negated = self.peek() == "^"
        self.pos += negated
        ranges = []
        while self.peek() != "]":
            if not self.peek():
                raise self.error("unterminated character class")
            low = high = self.char()
            if self.peek() == "-" and self.peek(1) != "]":
                if not self.peek(1):
                    raise self.error("unterminated character class")
                self.pos += 1
                high = self.char()
            ranges.append((low, high))
        self.pos += 1
        if not ranges:  # llama.cpp adds no element: [] and [^] match the empty string
            return Lit("")
        kept = tuple((low, high) for low, high in ranges if low <= high)  # z-a: no character
        return Chars(kept, negated)

    def token(self) -> Token:
        negated = self.peek() == "!"
        self.pos += negated
        if self.peek() != "<":
            raise self.error("expected '<' to start a token reference")
        start = self.pos
        if self.peek(1) == "[":
            self.pos += 2
            if self.integer() >= 2**32:
                raise self.error("the token id is too big")
            if self.peek() != "]" or self.peek(1) != ">":
                raise self.error("expected ']>' to end the token id")
            self.pos += 2
        else:
            end = self.text.find(">", self.pos)
            if end < 0:
                raise self.error("expected '>' to end the token reference")
            self.pos = end + 1
        return Token(self.text[start : self.pos], negated)

    def char(self) -> int:
        text = self.text
        if self.pos >= len(text):
            raise self.error("unexpected end of grammar")
        char = text[self.pos]
        if 0xDC80 <= ord(char) <= 0xDCFF:
            return self.byte_sequence()
        if char != "\\":
            self.pos += 1
            return ord(char)
        code = text[self.pos + 1 : self.pos + 2]
        if code in _HEX:
            digits = text[self.pos + 2 : self.pos + 2 + _HEX[code]]
            if len(digits) != _HEX[code] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.error("bad hex escape")
            self.pos += 2 + _HEX[code]
            return int(digits, 16)
        if code in _ESCAPES:
            self.pos += 2
            return ord(_ESCAPES[code])
        raise self.error(f"unknown escape '\\{code}'")

    def byte_sequence(self) -> int:
        r"""Read a byte that is no character, as llama.cpp's ``decode_utf8`` reads it.

        Such a byte comes as Python's ``surrogateescape`` writes it (``"\udcc3"``): a
        grammar in which llama.cpp's C++ JSON-schema converter cut a character in two
        (`_llama_pattern`). A leading byte takes as many more characters as it announces,
        whatever they are (exact for the ASCII and cut bytes that come after it there): a
        quote among them does not end the string literal.
        """
        byte = ord(self.text[self.pos]) - 0xDC00
        size = _UTF8_LENGTH[byte >> 4]
        value = byte & ((1 << (8 - size)) - 1)
        end = min(self.pos + size, len(self.text))
        for char in self.text[self.pos + 1 : end]:
            value = (value << 6) + (_byte(char) & 0x3F)
        self.pos = end
        return value


_UTF8_LENGTH = (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4)
"""The length llama.cpp's grammar parser reads in a byte's high four bits (``decode_utf8``)."""


def _byte(char: str) -> int:
    """Return the byte ``char`` stands for after a cut character (its first, of several)."""
    code = ord(char)
    return code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else char.encode("utf-8", "replace")[0]


def _adds_elements(node: Node) -> bool:
    """Whether llama.cpp's rule gets an element for ``node`` (a repetition needs one)."""
    if isinstance(node, Lit):
        return bool(node.text)
    if isinstance(node, Repeat):
        return node.high != 0
    return True


@dataclass
class Grammar:
    """A parsed GBNF grammar.

    ``cost`` holds the shortest expansion length of each rule, ``tokens`` the token
    references in order (``!`` before a negated one).
    """

    rules: dict[str, Alt]

    def __post_init__(self) -> None:
        self.tokens: tuple[str, ...] = ()
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
        # A work list: a rule is computed again only when a rule it names got shorter. (Pass
        # after pass over every rule took one pass per link of a chain of rules: 16 s for
        # 1,500, found by a review.) Costs only fall, by whole characters, so it ends.
        users: dict[str, set[str]] = {name: set() for name in self.rules}
        for name, node in self.rules.items():
            for used in _referenced(node):
                users[used].add(name)
        pending = collections.deque(self.rules)
        queued = set(self.rules)
        while pending:
            name = pending.popleft()
            queued.discard(name)
            value = self.min_len(self.rules[name])
            if value < self.cost[name]:
                self.cost[name] = value
                fresh = users[name] - queued
                pending.extend(fresh)
                queued |= fresh

    def _check_refs(self, node: Node) -> None:
        if isinstance(node, Ref) and node.name not in self.rules:
            raise GrammarError(f"undefined rule {node.name!r}")
        if isinstance(node, Token):
            self.tokens += ("!" * node.negated + node.text,)
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
            return 1 if node.ranges or node.negated else _INF
        if isinstance(node, Ref):
            return self.cost[node.name]
        if isinstance(node, Token):
            return 1
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

        Raises
        ------
        GrammarError
            If the grammar has a token reference (no vocabulary here to sample it from) or
            no sentence at all (llama.cpp builds such a grammar, then allows no token).
        """
        return self.draw(rng, target, limit)[0]

    def draw(
        self, rng: random.Random, target: int = 40, limit: int = SAMPLE_LIMIT
    ) -> tuple[str, bool]:
        """As `sample`, and whether the text is a whole sentence (not cut at ``limit``).

        Raises
        ------
        GrammarError
            As `sample`.
        """
        if self.tokens:
            raise GrammarError(
                f"the grammar refers to the token {self.tokens[0]}, and the emulator's "
                "synthetic engine does not emulate token references (it has no model "
                "vocabulary): write the text as a string literal, or serve a GGUF model "
                "(gguf=...) so that llama.cpp itself runs the grammar"
            )
        if self.cost["root"] == _INF:
            raise GrammarError(
                "no text matches the grammar: the 'root' rule never ends, or needs a "
                "character no class or literal matches ([z-a], a literal NUL)"
            )
        out = _Output(limit)
        try:
            self._walk(self.rules["root"], rng, out, target, 0)
        except _Full:
            return "".join(out)[:limit], False
        except RecursionError:  # found by a review: a chain of 3,000 rules
            raise GrammarError(_TOO_DEEP) from None
        return "".join(out), True

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
        elif isinstance(node, Token):  # `sample` refuses grammars with tokens
            raise GrammarError(f"cannot sample the token reference {node.text}")
        else:
            count = node.low
            limit = node.high if self.min_len(node.item) < _INF else node.low
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
    owner = ""

    def new_rule(alternatives: list[list[_Element]]) -> str:
        key = f"{owner}\x00{len(lowered)}"  # no user rule name has a NUL
        lowered[key] = alternatives
        return key

    def elements(node: Node) -> list[_Element]:
        if isinstance(node, Lit):
            return [None] * min(len(node.text), 1)  # "" adds nothing
        if isinstance(node, Chars | Token):
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

    for owner, body in rules.items():  # new_rule names its rules after owner
        lowered[owner] = [elements(option) for option in body.options]
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

    for name in lowered:  # as llama.cpp, every rule: "b" "c"** has one ("c"* repeated)
        if name not in visited and detect(name):
            return name.partition("\x00")[0]  # a group's or repetition's: its rule
    return None


_PRINTABLE = [chr(c) for c in range(0x20, 0x7F)]

_UNWRITABLE = ((0x00, 0x00), (0xD800, 0xDFFF), (0x110000, 0xFFFFFFFF))
"""Code points no reply holds: NUL (llama.cpp never allows it), the lone surrogates and
the values above Unicode's last code point (``\\UFFFFFFFF`` parses)."""


def _unwritable(code: int) -> bool:
    return any(low <= code <= high for low, high in _UNWRITABLE)


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


def _referenced(node: Node) -> Iterator[str]:
    """Yield the names of the rules ``node`` refers to (a name may come more than once)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Ref):
            yield item.name
        elif isinstance(item, Repeat):
            stack.append(item.item)
        elif isinstance(item, Seq):
            stack.extend(item.items)
        elif isinstance(item, Alt):
            stack.extend(item.options)


_TOO_DEEP = (
    "the grammar nests rules or groups more deeply than the emulator can follow (Python's "
    "recursion limit); LM Studio's llama.cpp may take it"
)


@functools.lru_cache(maxsize=128)
def parse_gbnf(text: str) -> Grammar:
    """Parse GBNF text.

    Takes the grammars llama.cpp's parser takes (a ``<name>`` token reference, which
    llama.cpp looks up in the model's vocabulary, is taken whatever it names; two corners
    differ: see the module's docstring).

    Raises
    ------
    GrammarError
        Where llama.cpp refuses the grammar: a syntax error, an undefined rule or a missing
        ``root``, left recursion, a repetition over llama.cpp's limits. Also for a
        repetition whose maximum is below its minimum, which llama.cpp does not refuse but
        builds rules for until memory runs out. And for groups nested past Python's
        recursion limit (a few hundred levels of groups, or a chain of about a thousand
        rules), which llama.cpp's C++ stack may take.
    """
    try:
        return Grammar(_Parser(text).rules())
    except RecursionError:  # found by a probe: the emulator answered "RecursionError"
        raise GrammarError(_TOO_DEEP) from None


def sample_gbnf(text: str, rng: random.Random) -> str:
    """Parse ``text`` and return one random string of its language."""
    return draw_gbnf(text, rng)[0]


def draw_gbnf(text: str, rng: random.Random) -> tuple[str, bool]:
    """As `sample_gbnf`, and whether the string is whole (see `Grammar.draw`)."""
    return parse_gbnf(text).draw(rng, rng.randint(20, 60))
