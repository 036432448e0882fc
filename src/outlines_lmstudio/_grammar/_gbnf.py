r"""A small grammar IR and the emitter of the conservative GBNF dialect.

The dialect is what every llama.cpp build LM Studio has bundled accepts:

- rule names of ASCII letters, digits and ``-``; the start rule is ``root``;
- one rule per line, no comments, no blank lines;
- only ``"..."`` literals, ``[...]`` classes (``[^...]`` only for the empty set), ``( )``,
  ``|``, ``*``, ``+`` and ``?``: no ``.``, no ``{m,n}`` (counted repeats are expanded
  here, at most 2000);
- escapes only ``\xHH``, ``\uHHHH``, ``\t \r \n \\ \" \[ \]``; code points above
  U+FFFF are written as raw UTF-8.

Nothing ever repeats an expression that can match the empty string (llama.cpp reports
that as left recursion), so repeats are rewritten over the non-empty part first.

The emulator has its own GBNF node model (``outlines_lmstudio.testing._gbnf``) on
purpose: it is the receiving side, standing in for llama.cpp, and parses the emitted
text independently. Sharing one model would let an emitter bug be read back by the
code that wrote it, and the tests would no longer catch it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from ..errors import UnsupportedGrammarError
from ._charset import MAX_CODE_POINT, Ranges

__all__ = [
    "EMPTY",
    "MAX_REPEAT",
    "NOTHING",
    "Alt",
    "Chars",
    "GbnfBuilder",
    "Lit",
    "Node",
    "Ref",
    "Rep",
    "Seq",
    "alt",
    "chars",
    "factored_literals",
    "nonempty",
    "nullable",
    "productive",
    "rep",
    "repeat_counts",
    "uncollapsed_count",
    "rules_where",
    "seq",
]

MAX_REPEAT = 2000
"""llama.cpp's ``MAX_REPETITION_THRESHOLD``: the largest repetition count we expand."""

_LIFT_CLASS_OVER = 48  # a class longer than this (as text) becomes a shared rule
# llama.cpp refuses a repeated group holding more than 2000 generated rules (each group and
# each repeat inside it is one): keep nesting inside one rule well below that.
_MAX_NESTED_OPTIONAL = 32
_MAX_GROUPS_IN_REPEAT = 200
# Nested repeats whose counts form at most this many ranges become one repeat per range.
_MAX_COUNT_RANGES = 4


@dataclass(frozen=True)
class Chars:
    """One character out of a set (never a single code point: that is a `Lit`)."""

    ranges: Ranges


@dataclass(frozen=True)
class Lit:
    """A literal string; ``Lit("")`` matches the empty string."""

    text: str


@dataclass(frozen=True)
class Seq:
    """A concatenation of at least two items."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    """An alternation of at least two items."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Rep:
    """``item`` repeated ``low`` to ``high`` times (``None``: unbounded)."""

    item: Node
    low: int
    high: int | None


@dataclass(frozen=True)
class Ref:
    """A reference to a named rule."""

    name: str


Node: TypeAlias = Chars | Lit | Seq | Alt | Rep | Ref

EMPTY = Lit("")
NOTHING = Chars(())


def chars(ranges: Ranges) -> Node:
    """Build a one-character node from normalized ranges."""
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return Lit(chr(ranges[0][0]))
    return Chars(ranges)


def seq(*items: Node) -> Node:
    """Concatenate, flattening nested sequences and merging adjacent literals."""
    out: list[Node] = []
    for item in items:
        for part in item.items if isinstance(item, Seq) else (item,):
            if part == NOTHING:
                return NOTHING
            if isinstance(part, Lit) and out and isinstance(out[-1], Lit):
                out[-1] = Lit(out[-1].text + part.text)
            elif part != EMPTY:
                out.append(part)
    if not out:
        return EMPTY
    return out[0] if len(out) == 1 else Seq(tuple(out))


def alt(*items: Node) -> Node:
    """Alternate, flattening nested alternations and dropping duplicates."""
    out: list[Node] = []
    seen: set[Node] = {NOTHING}  # a set: a Choice of 10,000 items took seconds as a list
    for item in items:
        for part in item.items if isinstance(item, Alt) else (item,):
            if part not in seen:
                seen.add(part)
                out.append(part)
    if not out:
        return NOTHING
    return out[0] if len(out) == 1 else Alt(tuple(out))


_FACTOR_DEPTH = 24
"""The most shared beginnings `factored_literals` nests (each a group in the GBNF text)."""


def factored_literals(items: list[Node], depth: int = 0) -> Node:
    """Alternate ``items``, the literals' shared beginnings written once.

    ``"apple" | "apricot" | "band"`` becomes ``"ap" ("ple" | "ricot") | "band"``. llama.cpp
    follows every alternative at once: an Outlines ``either`` of 4,750 labels (or a ``Choice``
    in a term) took 6-8 s a call on the embedded model, 0.6 s factored (found by a probe).
    GBNF alternatives are unordered, and a regex's full match takes any of them, so grouping
    keeps the language; other items are alternated as they are.
    """
    items = [part for item in items for part in (item.items if isinstance(item, Alt) else (item,))]
    texts = [item.text for item in items if isinstance(item, Lit)]
    if len(texts) < 2 or depth >= _FACTOR_DEPTH:
        return alt(*items)
    groups: dict[str, list[str]] = {}  # by first character, in order
    ends = False  # a literal that ends where another goes on
    for text in texts:
        if text:
            groups.setdefault(text[0], []).append(text)
        else:
            ends = True
    factored: list[Node] = []
    for texts_alike in groups.values():
        shared = texts_alike[0]
        for text in texts_alike[1:]:
            while not text.startswith(shared):
                shared = shared[:-1]
        rests: list[Node] = [Lit(text[len(shared) :]) for text in texts_alike]
        factored.append(seq(Lit(shared), factored_literals(rests, depth + 1)))
    literals = alt(*factored)
    if ends:
        literals = rep(literals, 0, 1)
    return alt(literals, *(item for item in items if not isinstance(item, Lit)))


def nullable(node: Node, rules: dict[str, bool] | None = None) -> bool:
    """Whether ``node`` matches the empty string (``rules`` gives it for references)."""
    return _holds(node, rules, _empty)


def productive(node: Node, rules: dict[str, bool] | None = None) -> bool:
    """Whether ``node`` matches some text (``rules`` gives it for references)."""
    return _holds(node, rules, _some)


def _empty(leaf: Lit | Chars) -> bool:
    return isinstance(leaf, Lit) and leaf.text == ""


def _some(leaf: Lit | Chars) -> bool:
    return isinstance(leaf, Lit) or bool(leaf.ranges)


def _holds(node: Node, rules: dict[str, bool] | None, leaf: Callable[[Lit | Chars], bool]) -> bool:
    """Whether a language property holds of ``node``, given it of its literals and classes.

    Sequences need it of every item, alternatives of one, repeats of their item unless they
    may repeat zero times; references look it up in ``rules``.
    """
    if isinstance(node, Lit | Chars):
        return leaf(node)
    if isinstance(node, Seq):
        return all(_holds(item, rules, leaf) for item in node.items)
    if isinstance(node, Alt):
        return any(_holds(item, rules, leaf) for item in node.items)
    if isinstance(node, Rep):
        return node.low == 0 or _holds(node.item, rules, leaf)
    return bool(rules and rules.get(node.name, False))


def rules_where(
    rules: dict[str, Node], holds: Callable[[Node, dict[str, bool]], bool]
) -> dict[str, bool]:
    """Tell for each rule whether ``holds`` (`nullable`, `productive`) is true of it.

    The least fixpoint: a rule is marked once ``holds`` is true of its body, given the
    rules marked so far, until nothing changes.
    """
    found = dict.fromkeys(rules, False)
    changed = True
    while changed:
        changed = False
        for name, body in rules.items():
            if not found[name] and holds(body, found):
                found[name] = changed = True
    return found


def nonempty(node: Node) -> Node:
    """Return a node for the language of ``node`` without the empty string."""
    if not nullable(node):
        return node
    if isinstance(node, Lit):
        return NOTHING
    if isinstance(node, Alt):
        return alt(*(nonempty(item) for item in node.items))
    if isinstance(node, Rep):
        # rep() keeps items non-nullable, so only low == 0 makes it nullable.
        return rep(node.item, 1, node.high)
    if isinstance(node, Seq):
        # The first non-empty item decides: everything before it matched empty.
        items = node.items
        return alt(*(seq(nonempty(items[i]), *items[i + 1 :]) for i in range(len(items))))
    # Chars never match empty; a Ref is not known to here (callers that have references
    # check nullable repeats over whole grammars: see _lark.refuse_left_recursion).
    return node


def rep(item: Node, low: int, high: int | None) -> Node:
    """Repeat ``item``; simplifies trivial cases and never repeats a nullable item."""
    if high is not None and high < low:
        raise ValueError(f"bad repeat bounds {{{low},{high}}}")
    if high == 0 or item == EMPTY:
        return EMPTY
    if item == NOTHING:
        return EMPTY if low == 0 else NOTHING
    if low == 1 and high == 1:
        return item
    if nullable(item):
        return rep(nonempty(item), 0, high)
    if isinstance(item, Rep) and item.high != item.low:
        counts = repeat_counts(item.low, item.high, low, high)
        if len(counts) <= _MAX_COUNT_RANGES and all(
            a <= MAX_REPEAT and (b is None or b <= MAX_REPEAT) for a, b in counts
        ):
            return alt(*(rep(item.item, a, b) for a, b in counts))
    return Rep(item, low, high)


def uncollapsed_count(node: Rep) -> int | None:
    """Return the count nested repeats collapse to, if `rep` kept them nested for its size.

    ``(x{1,1600}){0,40}`` is ``x{0,64000}``, over `MAX_REPEAT`: left nested, with 40
    copies of a count that varies, llama.cpp's grammar check follows every way of splitting
    a reply into the copies, and slows down sharply with its length. ``None`` for any other
    repeat (fixed inner counts such as ``((ab){1000}){1000}`` split one way only).
    """
    item = node.item
    if not isinstance(item, Rep) or item.low == item.high or node.high is None:
        return None
    counts = repeat_counts(item.low, item.high, node.low, node.high)
    if len(counts) > _MAX_COUNT_RANGES:
        return None
    return max(b if b is not None else a for a, b in counts)


def repeat_counts(
    inner_low: int, inner_high: int | None, low: int, high: int | None
) -> list[tuple[int, int | None]]:
    """Return how many times ``(x{inner_low,inner_high}){low,high}`` repeats ``x``.

    As disjoint ranges, in order: ``(x{1,40}){0,40}`` is ``x{0,1600}``, and
    ``(x{2,3}){0,40}`` is ``x{0}|x{2,120}``. Exact for any ``x``: ``j`` copies of
    ``x{a,b}`` are ``x{j*a,j*b}``, so the counts are the union of those ranges over ``j``.
    From the first ``j`` whose range reaches the next one's start, they all join up.
    Stops after `_MAX_COUNT_RANGES` + 1 ranges (the caller keeps the nested repeat).
    """
    if inner_high == 0:
        return [(0, 0)]
    ranges: list[tuple[int, int | None]] = []
    j = low
    while True:
        first = j * inner_low
        last: int | None = 0 if j == 0 else None if inner_high is None else j * inner_high
        done = j == high
        if j > 0 and (last is None or (j + 1) * inner_low <= last + 1):
            done = True  # this range and all the later ones form one range
            last = None if inner_high is None or high is None else high * inner_high
        if ranges and (ranges[-1][1] is None or first <= ranges[-1][1] + 1):
            previous = ranges[-1][1]
            ranges[-1] = (ranges[-1][0], None if last is None or previous is None else last)
        else:
            ranges.append((first, last))
        if done or len(ranges) > _MAX_COUNT_RANGES:
            return ranges
        j += 1


_NAME_SAFE = re.compile(r"[^A-Za-z0-9-]+")


def _escape_char(code: int, in_class: bool) -> str:
    special = {0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
    if in_class:
        special.update({0x5B: "\\[", 0x5D: "\\]", 0x2D: "\\x2D", 0x5E: "\\x5E"})
    if code in special:
        return special[code]
    if 0x20 <= code < 0x7F:
        return chr(code)
    if code < 0x80:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return chr(code)  # no \U in old builds: raw UTF-8


@functools.lru_cache(maxsize=256)  # \w alone is 734 ranges: 5 ms a call to write again
def _class_text(ranges: Ranges) -> str:
    r"""Render a positive class; the empty set is the negation of everything.

    Never ``[^...]`` otherwise: llama.cpp checks a partial UTF-8 character (a token that
    ends mid-character, as byte-fallback tokens do) against a negated class by rejecting
    it when *any* excluded range overlaps the characters it could complete to, so
    ``[^\u1040]`` would wrongly block every U+1xxx character produced byte by byte.
    """
    if not ranges:
        return "[^" + _class_text(((0, MAX_CODE_POINT),))[1:]
    body = []
    for low, high in ranges:
        text = _escape_char(low, True)
        if high > low:
            text += ("" if high == low + 1 else "-") + _escape_char(high, True)
        body.append(text)
    return "[" + "".join(body) + "]"


class GbnfBuilder:
    """Collects named rules and renders them as GBNF text.

    Names are allocated deterministically in the order they are asked for; sub-expressions
    that must be named (long classes, repeated groups) are shared by value.
    """

    def __init__(self) -> None:
        self._rules: dict[str, Node] = {}
        self._taken: set[str] = {"root"}
        self._shared: dict[Node, str] = {}
        self._used: list[str] = []

    def reserve(self, wanted: str) -> str:
        """Allocate a unique, dialect-safe rule name derived from ``wanted``."""
        base = _NAME_SAFE.sub("-", wanted).strip("-") or "r"
        name, n = base, 1
        while name in self._taken:
            n += 1
            name = f"{base}-{n}"
        self._taken.add(name)
        return name

    def define(self, name: str, node: Node) -> None:
        """Set the body of an already reserved (or the ``root``) rule."""
        self._rules[name] = node

    def body(self, name: str) -> Node:
        """Return the body of a defined rule."""
        return self._rules[name]

    def bodies(self) -> dict[str, Node]:
        """Return a copy of every rule defined so far."""
        return dict(self._rules)

    def render(self) -> str:
        """Render ``root`` and every rule reachable from it, in order of first use."""
        lines: list[str] = []
        seen = {"root"}
        queue = ["root"]
        while queue:
            name = queue.pop(0)
            self._used = []
            lines.append(f"{name} ::= {self._expr(self._rules[name], 0, inline=True)}")
            for used in self._used:
                if used not in seen:
                    seen.add(used)
                    queue.append(used)
        return "\n".join(lines) + "\n"

    def _share(self, node: Node, hint: str) -> str:
        if node not in self._shared:
            name = self.reserve(hint)
            self._shared[node] = name
            self._rules[name] = node
        self._used.append(self._shared[node])
        return self._shared[node]

    def _expr(self, node: Node, prec: int, inline: bool = False) -> str:
        """Render ``node``; ``prec`` 0 = alternation level, 1 = sequence, 2 = atom.

        ``inline`` renders a rule's own body: it must not be replaced by a shared rule.
        """
        if isinstance(node, Lit):
            return '"' + "".join(_escape_char(ord(c), False) for c in node.text) + '"'
        if isinstance(node, Ref):
            self._used.append(node.name)
            return node.name
        if isinstance(node, Chars):
            text = _class_text(node.ranges)
            return text if inline or len(text) <= _LIFT_CLASS_OVER else self._share(node, "char")
        if isinstance(node, Seq):
            text = " ".join(self._expr(item, 1) for item in node.items)
            return f"({text})" if prec > 1 else text
        if isinstance(node, Alt):
            text = " | ".join(self._expr(item, 0) for item in node.items)
            return f"({text})" if prec > 0 else text
        text = self._repeat(node)
        return f"({text})" if prec > 1 and " " in text else text

    def _repeat(self, node: Rep) -> str:
        low, high = node.low, node.high
        if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
            raise UnsupportedGrammarError(
                f"a repetition count of {max(low, high or 0)} is over llama.cpp's limit of "
                f"{MAX_REPEAT}; use a smaller bound or an unbounded repeat (* or +)."
            )
        copies = low if high is None else high
        item = node.item
        simple = isinstance(item, Ref | Chars) or (isinstance(item, Lit) and len(item.text) <= 8)
        if copies > 1 and not simple:
            item = Ref(self._share(item, "rep"))
        atom = self._expr(item, 2)
        if atom.count("(") > _MAX_GROUPS_IN_REPEAT:
            atom = self._share(item, "rep")
        if high is None:
            fixed, suffix = max(low - 1, 0), atom + ("+" if low else "*")
        else:
            fixed, suffix = low, ""
            optional = high - low
            if optional > _MAX_NESTED_OPTIONAL:  # continue the chain in another rule
                optional = _MAX_NESTED_OPTIONAL
                suffix = self._share(Rep(item, 0, high - low - optional), "opt")
                suffix = f"({atom} {suffix})?"
                optional -= 1
            for _ in range(optional):
                suffix = f"({atom} {suffix})?" if suffix else f"{atom}?"
        if isinstance(item, Lit) and fixed > 1:  # "ab"{3} is just "ababab"
            parts = [self._expr(Lit(item.text * fixed), 2)]
        else:
            parts = [atom] * fixed
        return " ".join([*parts, suffix] if suffix else parts)
