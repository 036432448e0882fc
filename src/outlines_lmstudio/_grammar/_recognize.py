"""Checking a text against the language a Lark grammar is sent as (pure, no I/O).

A Lark grammar goes to LM Studio as GBNF (`add_lark_grammar`), which is scannerless: any
split of the text into terminal matches that forms a sentence is taken. Lark's own lexer
is not: a terminal's regex takes Python's first match (``/<|<=/`` reads ``<`` of ``<=``,
``/".*?"/`` stops at the first quote) and ignored text is matched greedily, so Lark
refused replies the engine had written (found by a probe: ``nothing.`` for ``/no|no[a-z]+/``,
from the real engine). This spells the GBNF translation's rules in Lark's syntax with
terminals of one character or one literal each, which leaves Lark's Earley parser no
lexing choice to make: it takes exactly the GBNF language.

Hand-written: no Python library reads GBNF (llama-cpp-python's parser needs a model), and
Lark does the parsing; this only writes the rules.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any

from ._gbnf import Alt, Chars, GbnfBuilder, Lit, Node, Ref, Rep, Seq
from ._lark import add_lark_grammar, load_lark

if TYPE_CHECKING:
    import lark

__all__ = ["gbnf_language", "read_otherwise_by_lark"]

_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

_EXPANDED_UP_TO = 8
"""Bounded repeats up to this count are Lark's own ``~ n..m`` (it writes each count out)."""
_WIDEST_RANGE = 64
"""The widest counted range (``x{5,69}``) written: a wider one is a chain of that many rules,
which Earley walks in time quadratic in its width (a review: 60 s for ``a{1,2000}``)."""


def _char(code: int, specials: str) -> str:
    """Write one code point inside a Lark string or regex literal (Lark reads the escapes)."""
    char = chr(code)
    if char in specials:
        return "\\" + char
    if 0x21 <= code <= 0x7E:
        return char
    return f"\\U{code:08x}" if code > 0xFFFF else f"\\u{code:04x}"


class _Writer:
    """Writes a GBNF translation's rules as Lark rules (``r0`` is the root)."""

    def __init__(self, bodies: dict[str, Node]) -> None:
        self.names = {name: f"r{i}" for i, name in enumerate(bodies)}
        self.lines = [f"start: {self.names['root']}"]
        self.chains: dict[tuple[str, int], str] = {}  # (item, count) -> its optional chain
        for name, body in bodies.items():
            self.lines.append(f"{self.names[name]}: {self.expr(body)}")

    def expr(self, node: Node) -> str:
        if isinstance(node, Lit):
            if not node.text:
                return ""
            return '"' + "".join(_char(ord(c), '"\\') for c in node.text) + '"'
        if isinstance(node, Chars):
            if not node.ranges:  # no character: Lark has no empty class
                return "/(?!)./"
            ranges = (
                _char(low, "\\]^-[/") + ("" if low == high else "-" + _char(high, "\\]^-[/"))
                for low, high in node.ranges
            )
            return "/[" + "".join(ranges) + "]/"
        if isinstance(node, Ref):
            return self.names[node.name]
        if isinstance(node, Seq):
            return "(" + " ".join(self.expr(item) for item in node.items) + ")"
        if isinstance(node, Alt):
            # An empty alternative: Lark's optional (Lark has no empty literal).
            written = [self.expr(item) for item in node.items]
            kept = " | ".join(text for text in written if text)
            return f"[{kept}]" if "" in written else f"({kept})"
        return self.repeat(node)

    def repeat(self, node: Rep) -> str:
        item, low, high = f"({self.expr(node.item)})", node.low, node.high
        if high is None:
            more = f"{item}*"
        elif high - low <= _EXPANDED_UP_TO:
            more = f"[{item} ~ 1..{high - low}]" if high > low else ""
        elif high - low <= _WIDEST_RANGE:  # a chain: Lark's ``~`` writes out every count
            more = self.chain(item, high - low)
        else:
            raise ValueError(f"a counted repeat {{{low},{high}}} is too wide to check")
        exact = f"{item} ~ {low}" if low else ""
        return f"({exact} {more})"

    def chain(self, item: str, count: int) -> str:
        """Name a rule taking ``item`` 0 to ``count`` times, one rule per count."""
        for k in range(1, count + 1):
            if (item, k) not in self.chains:
                name = self.chains[(item, k)] = f"c{len(self.chains)}"
                rest = f" {self.chains[(item, k - 1)]}" if k > 1 else ""
                self.lines.append(f"{name}: [{item}{rest}]")
        return self.chains[(item, count)]


def _first_match(items: Any) -> bool:
    """Whether a parsed regex has an alternation or a lazy repeat (`re._parser` ops)."""
    for op, av in items:
        if op is _c.BRANCH or op is _c.MIN_REPEAT:
            return True
        if op is _c.SUBPATTERN and _first_match(av[3]):
            return True
        if op is _c.MAX_REPEAT and _first_match(av[2]):
            return True
    return False


@functools.lru_cache(maxsize=32)
def read_otherwise_by_lark(grammar: str) -> bool:
    """Whether a terminal's regex has a Python first match that is not always its longest.

    An alternation (``/<|<=/``) or a lazy repeat (``/".*?"/``, Outlines' ``C_COMMENT``):
    Lark's lexers read such a terminal otherwise than GBNF, even the complete one. Without
    one, they read the grammar as GBNF does but for lengths, which the complete lexer tries.
    """
    for terminal in load_lark(grammar).terminals:
        pattern = terminal.pattern
        if pattern.type == "re" and _first_match(_parser.parse(pattern.to_regexp())):
            return True
    return False


@functools.lru_cache(maxsize=32)
def gbnf_language(grammar: str) -> lark.Lark:
    """Return an Earley parser of the language a Lark grammar is sent as (its GBNF), once.

    Parameters
    ----------
    grammar
        Lark grammar text that `lark_to_gbnf` translates.

    Returns
    -------
    lark.Lark
        A parser whose ``parse`` takes exactly the texts llama.cpp's grammar takes.

    Raises
    ------
    ValueError
        If a counted repeat is wider than `_WIDEST_RANGE` (slow to build and to parse).
    """
    import lark

    builder = GbnfBuilder()
    builder.define("root", add_lark_grammar(builder, grammar))
    text = "\n".join(_Writer(builder.bodies()).lines)
    return lark.Lark(text, start="start", parser="earley", lexer="dynamic")
