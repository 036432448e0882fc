"""Whether a text is in a regular grammar's language, in time linear in the text (pure).

``re.fullmatch`` backtracks: on a text it does not match, some patterns take time
exponential in the text's length. Outlines' own ``paragraph`` type takes a third of a
second on a 260-character paragraph cut off by ``max_tokens``, and days on one twice as
long. ``parse`` checks grammar-mode replies, cut-off ones included, so it matches on the
grammar IR that the GBNF is written from (the same language as ``re.fullmatch``, proven
against llama.cpp: see ``docs/grammar.md``), simulated as a Thompson NFA whose sets of
states are kept as a DFA built as the text needs it. No library matches with Python's
regex semantics without backtracking (``re2`` has its own semantics).
"""

from __future__ import annotations

import bisect

from ._charset import MAX_CODE_POINT, Ranges
from ._gbnf import Alt, Chars, Lit, Node, Rep, Seq

__all__ = ["MAX_STATES", "Matcher", "MatcherTooLarge"]

_CACHE_LIMIT = 4096  # DFA transitions kept per matcher
MAX_STATES = 1_000_000
"""The most NFA states a matcher builds (about a second). Counted repeats are copied out,
so nested counts multiply (``((ab){2000}){2000}`` is eight million states) and nested
optional stars grow exponentially; the GBNF shares them as rules and stays small."""


class MatcherTooLarge(Exception):
    """The regex needs more than `MAX_STATES` states (or nests beyond the recursion limit)."""


class Matcher:
    """Matches whole texts against a grammar IR without rule references.

    Parameters
    ----------
    node
        The IR (``regex_to_node``'s result).

    Examples
    --------
    >>> from outlines_lmstudio._grammar._regex import regex_to_node
    >>> matcher = Matcher(regex_to_node(r"(a+)+b"))
    >>> matcher.matches("aab"), matcher.matches("a" * 10_000)
    (True, False)
    >>> matcher.goes_on("aab"), matcher.goes_on("aa")
    (False, True)
    """

    def __init__(self, node: Node) -> None:
        # A state reads one character (its ranges, then `_next`), or splits without
        # reading (`_splits`); the accepting state does neither.
        self._ranges: list[Ranges | None] = []
        self._next: list[int] = []
        self._splits: list[tuple[int, ...]] = []
        self._accept = self._state(None, -1, ())
        try:
            start = self._build(node, self._accept)
        except RecursionError as exc:
            raise MatcherTooLarge("nested beyond Python's recursion limit") from exc
        self._start = self._closure((start,))
        self._moves: dict[tuple[frozenset[int], str], frozenset[int]] = {}

    def _state(self, ranges: Ranges | None, then: int, splits: tuple[int, ...]) -> int:
        if len(self._ranges) >= MAX_STATES:
            raise MatcherTooLarge(f"more than {MAX_STATES:,} states")
        self._ranges.append(ranges)
        self._next.append(then)
        self._splits.append(splits)
        return len(self._ranges) - 1

    def _build(self, node: Node, then: int) -> int:
        """Add the states of ``node`` followed by state ``then``; return its first state."""
        if isinstance(node, Lit):
            for char in reversed(node.text):
                then = self._state(((ord(char), ord(char)),), then, ())
            return then
        if isinstance(node, Chars):
            return self._state(node.ranges, then, ())
        if isinstance(node, Seq):
            for item in reversed(node.items):
                then = self._build(item, then)
            return then
        if isinstance(node, Alt):
            return self._state(None, -1, tuple(self._build(item, then) for item in node.items))
        if isinstance(node, Rep):
            return self._repeat(node, then)
        raise TypeError(f"a rule reference ({node.name!r}) is not a regular language")

    def _repeat(self, node: Rep, then: int) -> int:
        if node.high is None:
            loop = self._state(None, -1, ())
            self._splits[loop] = (self._build(node.item, loop), then)
            start = loop
        else:
            start = then
            for _ in range(node.high - node.low):  # x{0,2}: ("" | x ("" | x))
                start = self._state(None, -1, (self._build(node.item, start), then))
        for _ in range(node.low):
            start = self._build(node.item, start)
        return start

    def _closure(self, states: tuple[int, ...] | list[int]) -> frozenset[int]:
        """Return the reading and accepting states ``states`` reach without reading."""
        seen: set[int] = set()
        found: set[int] = set()
        stack = list(states)
        while stack:
            state = stack.pop()
            if state in seen:
                continue
            seen.add(state)
            splits = self._splits[state]
            if splits or (self._ranges[state] is None and state != self._accept):
                stack.extend(splits)
            else:
                found.add(state)
        return frozenset(found)

    def _move(self, states: frozenset[int], char: str) -> frozenset[int]:
        code = ord(char)
        targets = []
        for state in states:
            ranges = self._ranges[state]
            if ranges is None:
                continue
            index = bisect.bisect_right(ranges, (code, MAX_CODE_POINT)) - 1
            if index >= 0 and ranges[index][1] >= code:
                targets.append(self._next[state])
        return self._closure(targets)

    def _after(self, text: str) -> frozenset[int]:
        """Return the states the whole of ``text`` leads to (none once a character fails)."""
        states = self._start
        moves = self._moves
        for char in text:
            key = (states, char)
            after = moves.get(key)
            if after is None:
                after = self._move(states, char)
                if len(moves) >= _CACHE_LIMIT:
                    moves.clear()
                moves[key] = after
            if not after:
                return after
            states = after
        return states

    def matches(self, text: str) -> bool:
        """Tell whether the whole of ``text`` is in the language."""
        return self._accept in self._after(text)

    def goes_on(self, text: str) -> bool:
        r"""Tell whether ``text`` followed by more characters can still be in the language.

        A state that reads a character leads on to the accepting one (every state of the
        automaton does, unless its language is empty), so it is a way on. ``\d+`` goes on
        after ``12``; ``\d{2}`` does not.
        """
        return any(self._ranges[state] for state in self._after(text))
