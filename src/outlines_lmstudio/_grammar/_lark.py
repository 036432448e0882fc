"""Lark grammar -> grammar IR, through Lark's own grammar loader.

Lark compiles the grammar (imports, templates, ``?rule``, ``[x]``, ``x*``, ``x~n..m``,
terminal definitions) into plain BNF rules over terminals, each terminal one regex. Rules
become GBNF rules, terminals go through the regex translator, and ``%ignore`` terminals
are allowed before every terminal and at the very end (so: at the start, between any two
tokens, and at the end, as Lark's lexer allows them; never inside a terminal).

llama.cpp cannot run left-recursive grammars. Direct left recursion (``a: a x | y``,
which Lark also produces for every ``x*``) is rewritten to ``a ::= y (x)*``; anything
left-recursive after that (``a: b x``, ``b: a y``) is refused, naming the cycle.
"""

from __future__ import annotations

import functools
import pkgutil
import re
from collections.abc import Callable

import lark
from lark.grammar import NonTerminal, Symbol
from lark.lexer import PatternStr

from ..errors import UnsupportedGrammarError, UnsupportedOutputTypeError
from ._charset import WRITABLE
from ._gbnf import (
    EMPTY,
    NOTHING,
    Alt,
    GbnfBuilder,
    Lit,
    Node,
    Ref,
    Rep,
    Seq,
    alt,
    nullable,
    rep,
    rules_where,
    seq,
)
from ._regex import regex_to_node

__all__ = ["add_lark_grammar", "import_loader", "load_lark", "refuse_left_recursion"]

# `%import common.X` resolves to this copy of Outlines' common.lark (the file Outlines'
# own grammars are written against): unlike Lark's, its ESCAPED_STRING has no lookbehind.
# Adapted from Lark's common.lark; Copyright (c) 2017 Erez Shinan, MIT License.
_COMMON = r"""
DIGIT: "0".."9"
HEXDIGIT: "a".."f"|"A".."F"|DIGIT
INT: DIGIT+
SIGNED_INT: ["+"|"-"] INT
DECIMAL: INT "." INT? | "." INT
_EXP: ("e"|"E") SIGNED_INT
FLOAT: INT _EXP | DECIMAL _EXP?
SIGNED_FLOAT: ["+"|"-"] FLOAT
NUMBER: FLOAT | INT
SIGNED_NUMBER: ["+"|"-"] NUMBER
UNESCAPED_STRING: /\"[^"]*\"/
_NON_CONTROL_CHAR: /([^"\\\x00-\x1F\x7F-\x9F])/
_ESCAPED_CHAR: /\\/ (_NON_CONTROL_CHAR | /\\/ | /"/)
ESCAPED_STRING_INNER: _NON_CONTROL_CHAR | _ESCAPED_CHAR
ESCAPED_STRING: /"/ ESCAPED_STRING_INNER* /"/
LCASE_LETTER: "a".."z"
UCASE_LETTER: "A".."Z"
LETTER: UCASE_LETTER | LCASE_LETTER
WORD: LETTER+
CNAME: ("_"|LETTER) ("_"|LETTER|DIGIT)*
WS_INLINE: (" "|/\t/)+
WS: /[ \t\f\r\n]/+
CR : /\r/
LF : /\n/
NEWLINE: (CR? LF)+
SH_COMMENT: /#[^\n]*/
CPP_COMMENT: /\/\/[^\n]*/
C_COMMENT: "/*" /(.|\n)*?/ "*/"
SQL_COMMENT: /--[^\n]*/
"""

_LARK_STDLIB = {"lark.lark", "python.lark", "unicode.lark"}


def import_loader(base_path: object, grammar_path: str) -> tuple[str, str]:
    """Resolve ``%import``: ``common`` from memory, Lark's bundled grammars, nothing else."""
    if grammar_path == "common.lark":
        return "<outlines common.lark>", _COMMON
    if grammar_path in _LARK_STDLIB:
        data = pkgutil.get_data("lark", f"grammars/{grammar_path}")
        if data is not None:
            return f"<lark {grammar_path}>", data.decode()
    raise UnsupportedGrammarError(
        f"%import of {grammar_path.removesuffix('.lark')!r}: grammar mode resolves only "
        "`common` (Outlines' common.lark) and Lark's bundled grammars; paste the imported "
        "definitions into the grammar instead."
    )


@functools.lru_cache(maxsize=32)
def load_lark(grammar: str, *, complete: bool = False) -> lark.Lark:
    """Load a Lark grammar (Earley, its imports from Outlines' ``common.lark``), once.

    The GBNF translation reads its rules, and ``parse`` checks replies with it: one parser,
    built once per grammar (it takes milliseconds). ``complete`` gives Lark's
    ``dynamic_complete`` lexer, which tries every length of each terminal's match, as GBNF
    does (the default ``dynamic`` lexer tries the longest only), in time quadratic in a
    token's length; still with Python's first match, which `_recognize` does without.

    Raises
    ------
    UnsupportedGrammarError
        If the grammar does not load.
    UnsupportedOutputTypeError
        If it is not a ``str``.
    """
    if not isinstance(grammar, str):
        raise UnsupportedOutputTypeError(
            f"expected the Lark grammar as str, got {type(grammar).__name__}: pass the "
            "grammar's text (decode bytes first)."
        )
    try:
        return lark.Lark(
            grammar,
            start="start",
            parser="earley",
            lexer="dynamic_complete" if complete else "dynamic",
            import_paths=[import_loader],
        )
    except UnsupportedGrammarError:
        raise
    except (lark.exceptions.LarkError, KeyError, AssertionError, OSError, OverflowError) as exc:
        # The start rule named only when it is missing: the advice followed every error, a
        # zero-width terminal's and a syntax error's too (found by a probe).
        missing = (
            ""
            if re.search(r"^\s*[?!]?start\s*:", grammar, re.MULTILINE)
            else (" It needs a `start` rule.")
        )
        if "::=" in grammar:  # found by a probe: GBNF, LM Studio's own grammar syntax
            missing += (
                " It looks like GBNF (`::=`): CFG takes Lark's syntax (`start: ...`); a GBNF "
                "grammar goes to LM Studio as config={'structured': {'type': 'gbnf', "
                "'gbnfGrammar': ...}}."
            )
        # Lark's message: its first line (the rest quotes the grammar under a caret), and
        # rule names rather than reprs (NonTerminal('start')).
        first = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else repr(exc)
        first = re.sub(r"(?:Non)?Terminal\('([^']*)'\)", r"\1", first)
        raise UnsupportedGrammarError(
            f"the Lark grammar could not be loaded: {first}.{missing} It must load with "
            "lark.Lark(grammar, start='start', parser='earley')."
        ) from exc


def add_lark_grammar(builder: GbnfBuilder, grammar: str) -> Node:
    """Add the rules of a Lark grammar to ``builder``.

    Parameters
    ----------
    builder
        Receives one GBNF rule per Lark rule and per non-literal terminal.
    grammar
        Lark grammar text with a ``start`` rule.

    Returns
    -------
    Node
        The node that matches a whole sentence of the grammar (start rule, then ignorable
        text at the end).

    Raises
    ------
    UnsupportedGrammarError
        If the grammar does not load, or is left-recursive in a way that cannot be rewritten.
    """
    parser = load_lark(grammar)
    alternatives = _reachable_rules(parser)
    used = {sym.name for options in alternatives.values() for o in options for sym in o}
    used.update(parser.ignore_tokens)

    names = {name: builder.reserve(name) for name in alternatives}
    terminals: dict[str, Node] = {}
    for term in parser.terminals:
        if term.name not in used:
            continue
        pattern = term.pattern
        if isinstance(pattern, PatternStr) and not pattern.flags:
            text = pattern.value  # a character no reply can hold: matches nothing
            terminals[term.name] = NOTHING if _unwritable(text) else Lit(text)
        else:
            where = f"Lark terminal {term.name}"
            node = regex_to_node(pattern.to_regexp(), where=where, whole=False)
            name = builder.reserve(term.name)
            builder.define(name, node)
            terminals[term.name] = Ref(name)
    ignored = [terminals[name] for name in parser.ignore_tokens if name in terminals]
    ignore: Node = EMPTY
    if ignored:
        ignore_name = builder.reserve("ignore")
        builder.define(ignore_name, rep(alt(*(_body(builder, t) for t in ignored)), 0, None))
        ignore = Ref(ignore_name)

    def symbol(sym: Symbol) -> Node:
        if isinstance(sym, NonTerminal):
            return Ref(names[sym.name])
        if sym.name not in terminals:
            raise UnsupportedGrammarError(
                f"Lark terminal {sym.name} is declared but has no definition; define it."
            )
        return seq(ignore, terminals[sym.name])

    bodies: dict[str, Node] = {}
    for name, options in alternatives.items():
        own = NonTerminal(name)
        base = _factored([o for o in options if not (o and o[0] == own)], symbol)
        # Direct left recursion ``a: a x | a z | y`` is ``y (x | z)*`` (none: nothing repeats).
        tails = _factored([o[1:] for o in options if o and o[0] == own], symbol)
        bodies[names[name]] = seq(base, rep(tails, 0, None))
    refuse_left_recursion({**builder.bodies(), **bodies}, {v: k for k, v in names.items()})
    for gbnf_name, body in bodies.items():
        builder.define(gbnf_name, body)
    return seq(Ref(names["start"]), ignore)


def _factored(options: list[list[Symbol]], symbol: Callable[[Symbol], Node]) -> Node:
    """Alternate ``options``, each shared leading symbol written once.

    Lark writes ``[x]`` and ``x*`` as alternatives with a common prefix (its JSON grammar's
    ``array`` is ``"[" value star "]" | "[" value "]" | "[" "]"``). llama.cpp follows every
    alternative at once, so each nesting level multiplied the parse stacks: a 12-deep
    array took a minute per token (found by a probe). Factored, the prefix is followed once.
    GBNF alternatives are unordered, so grouping them keeps the language.
    """
    groups: dict[Symbol, list[list[Symbol]]] = {}  # by first symbol, in order
    ends = False  # an option that is empty (or ends where another goes on)
    for option in options:
        if option:
            groups.setdefault(option[0], []).append(option[1:])
        else:
            ends = True
    items = [
        # An option alone in its group is written out, not recursed into symbol by symbol
        # (a review: a 500-symbol alternative was refused as "nested too deeply").
        seq(symbol(first), *map(symbol, rests[0]))
        if len(rests) == 1
        else seq(symbol(first), _factored(rests, symbol))
        for first, rests in groups.items()
    ]
    if not ends:
        return alt(*items)
    return rep(alt(*items), 0, 1) if items else EMPTY


def _reachable_rules(parser: lark.Lark) -> dict[str, list[list[Symbol]]]:
    """Return the alternatives of each rule the ``start`` rule reaches, by rule name.

    Lark drops a rule no other rule refers to, but keeps unused rules that refer to each
    other; they are not part of the language, so they are neither checked nor translated.
    """
    alternatives: dict[str, list[list[Symbol]]] = {}
    for rule in parser.rules:
        alternatives.setdefault(rule.origin.name, []).append(list(rule.expansion))
    if "start" not in alternatives:
        raise UnsupportedGrammarError("the Lark grammar has no `start` rule; add one.")
    reached = {"start": alternatives["start"]}
    queue = ["start"]
    while queue:
        for option in alternatives[queue.pop()]:
            for sym in option:
                if isinstance(sym, NonTerminal) and sym.name not in reached:
                    reached[sym.name] = alternatives[sym.name]
                    queue.append(sym.name)
    return reached


def _body(builder: GbnfBuilder, node: Node) -> Node:
    return builder.body(node.name) if isinstance(node, Ref) else node


def _left_refs(node: Node, empty: dict[str, bool]) -> list[str]:
    """Rules that can be entered before any character is consumed in ``node``."""
    if isinstance(node, Ref):
        return [node.name]
    if isinstance(node, Rep):
        return _left_refs(node.item, empty)
    refs: list[str] = []
    if isinstance(node, Alt):
        for item in node.items:
            refs.extend(_left_refs(item, empty))
    elif isinstance(node, Seq):
        for item in node.items:
            refs.extend(_left_refs(item, empty))
            if not nullable(item, empty):
                break
    return refs


def _refuse_nullable_loops(node: Node, empty: dict[str, bool], rule: str) -> None:
    """Refuse ``x*`` / ``x+`` where ``x`` can match empty: llama.cpp calls it left recursion."""
    if isinstance(node, Rep):
        if node.high is None and nullable(node.item, empty):
            raise UnsupportedGrammarError(
                f"{rule} repeats (with *, + or left recursion) something that can match the "
                "empty string; llama.cpp treats that as left recursion. Make the repeated "
                "part non-empty."
            )
        _refuse_nullable_loops(node.item, empty, rule)
    elif isinstance(node, Seq | Alt):
        for item in node.items:
            _refuse_nullable_loops(item, empty, rule)


_HELPER = re.compile(r"__(\w+?)_(plus|star|repeat_a\d+_b\d+)_\d+")
"""The rules Lark makes for a ``+``, ``*`` or ``~n..m`` in a rule (``__start_plus_0``)."""


def _shown_rule(name: str, *, lark: bool = False) -> str:
    """Name a rule as its author wrote it: Lark's repetition helpers by their rule.

    ``lark``: as ``Lark rule 'x'`` (the rule alone is named so in a cycle's path).
    """
    helper = _HELPER.fullmatch(name)
    rule = name if helper is None else helper[1]
    shown = f"Lark rule {rule!r}" if lark else rule
    if helper is None:
        return shown
    kind = {"plus": "+", "star": "*"}.get(helper[2], "~")
    return f"a repetition ({kind}) in {shown}"


def refuse_left_recursion(rules: dict[str, Node], lark_names: dict[str, str]) -> None:
    """Raise `UnsupportedGrammarError` if llama.cpp would see left recursion in ``rules``.

    That is a cycle of rules entered before any character is consumed, or a ``*``/``+``
    over something that can match the empty string (llama.cpp expands ``x*`` into the
    rule ``r ::= x r |``).
    """
    empty = rules_where(rules, nullable)  # the rules that can match the empty string
    for name, body in rules.items():
        lark_name = lark_names.get(name, name)
        where = _shown_rule(lark_name, lark=True)  # a probe: Lark's '__start_plus_0' was named
        _refuse_nullable_loops(body, empty, where[0].upper() + where[1:])
    edges = {name: _left_refs(body, empty) for name, body in rules.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for nxt in edges.get(name, []):
            if state.get(nxt) == 1:
                cycle = [_shown_rule(lark_names.get(n, n)) for n in path[path.index(nxt) :]]
                shown = " -> ".join([*cycle, cycle[0]])
                repeats = any(n.startswith("a repetition") for n in cycle)
                raise UnsupportedGrammarError(
                    f"the Lark grammar is left-recursive through {shown}; llama.cpp cannot "
                    "run left recursion and only direct left recursion (a: a x | y) is "
                    "rewritten. "
                    + (
                        # found by a probe: Lark's helper rule (__start_plus_0) was named
                        "A repetition whose first item leads back to its own rule is left "
                        'recursion too (start: (start ",")+ "a"): write the rule '
                        "right-recursive, or repeat what follows the rule instead."
                        if repeats
                        else "Inline the rules so the recursion is direct, or make it "
                        "right-recursive."
                    )
                )
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[name] = 2

    for name in rules:
        if name not in state:
            visit(name)


def _unwritable(text: str) -> bool:
    """Tell whether a literal holds a character no reply can hold (see `WRITABLE`)."""
    return any(not any(low <= ord(c) <= high for low, high in WRITABLE) for c in text)
