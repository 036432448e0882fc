"""Test data: regexes, Outlines types, DSL terms and Lark grammars for grammar mode."""

from __future__ import annotations

import enum
from typing import Literal

import outlines.types as ot
from outlines import grammars
from outlines.types import (
    at_least,
    at_most,
    between,
    either,
    exactly,
    one_or_more,
    optional,
    zero_or_more,
)
from outlines.types.dsl import Regex, String

# (id, pattern): realistic patterns first, then one or more per supported feature.
REGEXES: list[tuple[str, str]] = [
    ("us-phone", r"\(?[2-9]\d{2}\)?[-. ]?\d{3}[-. ]?\d{4}"),
    # Words sharing beginnings, some ending where others go on: written once (factored).
    ("shared-beginnings", r"(apple|apricot|april|ap|banana|band|b|)x?"),
    ("labels-and-class", r"label: (yes|no|n/a|none|[0-9]|no[0-9]+)"),
    ("intl-phone", r"\+[1-9][0-9]{0,2}( [0-9]{2,4}){2,4}"),
    ("e164", r"\+[1-9]\d{1,14}"),
    ("iso-date", r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"),
    ("iso-datetime", r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})"),
    ("time-12h", r"(1[0-2]|0?[1-9]):[0-5][0-9] ?([AaPp][Mm])"),
    ("uuid", r"[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
    ("python-identifier", r"[A-Za-z_][A-Za-z0-9_]*"),
    ("unicode-identifier", r"[^\W\d]\w*"),
    ("dotted-name", r"[a-z_]+(\.[a-z_]+)*"),
    ("csv-row", r'([^,"\n]*|"([^"]|"")*")(,([^,"\n]*|"([^"]|"")*"))*'),
    ("csv-numbers", r"-?\d+(\.\d+)?(,-?\d+(\.\d+)?){2}"),
    ("ipv4", r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"),
    ("hex-colour", r"#([0-9a-fA-F]{3}){1,2}"),
    ("semver", r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"),
    ("url", r"https?://[a-z0-9.-]+(:\d{2,5})?(/[A-Za-z0-9._~%-]*)*(\?[A-Za-z0-9=&]*)?"),
    ("email-simple", r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    ("zip-code", r"\d{5}(-\d{4})?"),
    ("uk-postcode", r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}"),
    ("credit-card", r"(\d{4}[- ]?){3}\d{4}"),
    ("money", r"\$(0|[1-9]\d{0,2}(,\d{3})*)(\.\d\d)?"),
    ("percent", r"(100|[1-9]?\d)(\.\d+)?%"),
    ("json-string", r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'),
    ("json-number", r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?"),
    ("yes-no", r"(?i:yes|no)"),
    ("markdown-heading", r"#{1,6} [^\n]+"),
    ("log-line", r"\[(DEBUG|INFO|WARN|ERROR)\] \d{2}:\d{2}:\d{2} .{1,40}"),
    ("key-value", r"(\w+=\w*)(;\w+=\w*)*"),
    ("mac-address", r"([0-9A-F]{2}:){5}[0-9A-F]{2}"),
    ("slug", r"[a-z0-9]+(-[a-z0-9]+)*"),
    ("sha256", r"[a-f0-9]{64}"),
    ("roman-numeral", r"M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})"),
    # Features.
    ("anchors-both", r"^abc$"),
    ("anchors-string", r"\Aab+\Z"),
    ("anchor-branches", r"^a|b$"),
    ("anchors-in-group", r"(^x|y)z(w$|v)"),
    # Nested counted repeats, collapsed into one repeat per range of counts
    ("nested-optional-counts", r"(\d{0,4}){0,3}x"),
    ("nested-count-gaps", r"(a{3,4}){0,5}b?"),
    ("nested-count-items", r"((ab|c){1,3}){2,4}"),
    ("star-of-counts", r"(x{2,3})*y"),
    ("empty", r""),
    ("empty-alt", r"a|"),
    ("dot", r"a.c"),
    ("dotall", r"(?s)a.c"),
    ("dotall-scoped", r"(?s:.)x."),
    ("negated-class", r"[^abc]+"),
    ("negated-category-class", r"[^\d\s]+"),
    ("digit-unicode", r"\d+"),
    ("word-unicode", r"\w+"),
    ("space-unicode", r"\s+"),
    ("non-word", r"\W\D\S"),
    ("ascii-flag", r"(?a)\w+\s\d"),
    ("ascii-scoped", r"(?a:\w)\w"),
    ("ignorecase", r"(?i)[a-f]+k"),
    ("ignorecase-scoped", r"A(?i:bc)D"),
    ("ignorecase-unicode", "(?i)straße|\u017f|\u03c3"),
    ("ignorecase-negated", r"(?i)[^k]"),
    ("ignorecase-off", r"(?i)a(?-i:b)c"),
    ("verbose", r"(?x) a  b # comment"),
    ("lazy", r"a+?b*?c??d{2,3}?"),
    ("counted", r"x{3}y{2,}z{0,2}"),
    ("counted-group", r"(ab|c){2,4}"),
    ("nested-quantifiers", r"((ab)+c|d)*"),  # unambiguous: re backtracks exponentially otherwise
    ("nullable-star", r"(a?)*b(c|d?)*"),
    ("nullable-plus", r"(a?b?)+c"),
    ("nullable-count", r"(a?){3,5}x"),
    ("escapes", r"\t\n\r\x0b\\\"\[\]\-\^\.\*"),
    ("class-specials", r"[\]\[\\^\-\"]+"),
    ("non-bmp", "[😀-🙏]+|\U0001d518\U0001d52b"),
    ("latin1", r"[À-ÿ]{2}é"),
    ("empty-set", r"a|[^\s\S]"),
    ("large-count", r"a{2000}"),
    ("large-bounded", r"b{0,2000}"),
    ("non-capturing", r"(?:ab)+(?P<name>c)"),
    ("multiline-flag", r"(?m)^ab$"),
]

# Outlines' own regex types, by name.
OUTLINES_TYPES: list[tuple[str, Regex]] = [
    (name, getattr(ot, name))
    for name in [
        "string",
        "integer",
        "boolean",
        "number",
        "date",
        "time",
        "datetime",
        "digit",
        "char",
        "newline",
        "whitespace",
        "hex_str",
        "uuid4",
        "ipv4",
        "ipv6",
        "semver",
        "mac_address",
        "hex_color",
        "slug",
        "credit_card",
        "iban",
        "bic",
        "e164",
        "latitude",
        "longitude",
        "sentence",
        "paragraph",
        "email",
    ]
]
# Outlines types whose regex GBNF cannot express (isbn uses lookaheads).
REFUSED_OUTLINES_TYPES = [ot.isbn]


class Colour(enum.Enum):
    """An enum output type."""

    RED = "red"
    GREEN = "green"


# DSL terms and Python types that become a regex through Outlines' `to_regex`.
DSL_TERMS: list[tuple[str, object]] = [
    ("either", either("yes", "no", ot.integer)),
    ("at-least", at_least(2, ot.digit)),
    ("at-most", at_most(3, String("ab"))),
    ("between", between(1, 3, either("x", ot.hex_color))),
    ("exactly", exactly(2, ot.ipv4 + String(","))),
    ("optional", optional(ot.integer) + String("!")),
    ("one-or-more", one_or_more(String("a.") | String("b"))),
    ("zero-or-more", zero_or_more(ot.whitespace) + ot.boolean),
    ("string-term", String('special "chars" [x] \\ .*')),
    ("sequence", String("date: ") + ot.date + String(", time: ") + ot.time),
    ("int", int),
    ("float", float),
    ("bool", bool),
    ("str", str),
    ("literal", Literal["pos", "neg", 3]),
    ("enum", Colour),
    ("list-int", list[int]),
    ("tuple", tuple[int, str]),
    ("dict-str-int", dict[str, int]),
    ("optional-int", int | None),
]

# Lark grammars: (id, grammar, sentences that Lark accepts, exact). Not `exact`: the
# grammar has a token boundary Lark's lexer decides by greedy matching (here a `#...`
# comment directly before a token), which GBNF does not model: there llama.cpp must accept
# what Lark accepts, and may accept more (see docs/grammar.md).
LARK_GRAMMARS: list[tuple[str, str, list[str], bool]] = [
    (  # terminals whose Python first match is not their longest: Lark's lexer reads less
        "first-match-terminals",
        r"""
        start: item+
        item: NUM OP NUM | ID | STR | WORD "."
        OP: /<|<=/
        NUM: /[0-9]+|[0-9]+\.[0-9]+/
        ID: /if|[a-z]+/
        STR: /".*?"/
        WORD: /NO|NO[A-Z]+/
        %import common.C_COMMENT
        %ignore C_COMMENT
        %ignore " "
        """,
        ["1<=2", "1.5<2", "ifx", '"a"b"', "NOTHING.", "a/* x */ y */b", "if 1<3"],
        False,
    ),
    (
        "arithmetic",
        grammars.arithmetic,
        ["1", "1+2", " 1 + 2 * 3 ", "-(4.5e3 / 2)-1", "((1))", "--1*\t2", "1.", ".5"],
        True,
    ),
    (
        "json",
        grammars.json,
        [
            "{}",
            "[]",
            '{"a": [1, 2.5, -3e2, true, false, null], "b": {"c": "d\\"e"}}',
            ' [ "x" , { } ]\n',
            '"only a string"',
            "-0.5E+10",
            '{"k":"v","k2":[[],[{}]]}',
        ],
        True,
    ),
    (
        "left-recursive-list",
        """
        start: list
        list: list "," item | item
        item: WORD | "(" list ")"
        %import common.WORD
        %ignore " "
        """,
        ["a", "a,b", "a , (b,c) ,d", "(a)"],
        True,
    ),
    (
        "ebnf-features",
        """
        start: greeting name ("!" | "?")~1..3 [suffix]
        greeting: "hello"i | "hi"
        name: /[A-Z][a-z]+/ (" " /[A-Z][a-z]+/)*
        suffix: _sep NUMBER+
        _sep: ";"
        NUMBER: /[0-9]/
        """,
        ["helloAnn!", "HeLLoBob Smith??", "hiXy!!!;123", "hiAb!;7"],
        True,
    ),
    (
        "templates-and-comments",
        """
        start: _list{item, ","}
        _list{x, sep}: x (sep x)*
        item: INT | "'" [/[a-z]+/] "'"
        %import common.INT
        %import common.WS
        %import common.SH_COMMENT
        %ignore WS
        %ignore SH_COMMENT
        """,
        ["1", "1, 2", "'abc' ,3 # trailing\n", "# lead\n 'x'", "''"],
        False,
    ),
]
