"""`engine_pattern`: a search pattern as the anchored regex the engines read."""

from __future__ import annotations

import json
import re
import types
import warnings

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from outlines_lmstudio._patterns import ANY, PatternError, ecma_compile, engine_pattern

# Characters on which Python's re (with re.ASCII) and ECMA-262 agree for . \d \w \s:
# no \r, \u2028, \u2029 (ECMA's dot excludes them) and no Unicode spaces. Non-ASCII
# letters and digits are in, to show \d and \w keep ECMA's ASCII meaning; so are the
# characters JSON escapes with a short escape (", \, \n, \t).
ALPHABET = 'abcAZ019_- .\t\n"\\[]{}()|^$*+?/é٣'
RARE = "\x01\x1f"  # control characters without a short JSON escape


def json_text(text: str) -> str:
    """The text between the quotes of a JSON string: what the engines match patterns on."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


_ATOMS = st.sampled_from(
    [
        "a",
        "b",
        "Z",
        "0",
        "-",
        " ",
        "é",
        r"\d",
        r"\w",
        r"\s",
        r"\D",
        r"\W",
        r"\S",
        ".",
        r"\.",
        r"\-",
        r"\\",
        r"\[",
        r"\]",
        r"\(",
        r"\{",
        r"\^",
        r"\$",
        r"\|",
        r"\/",
        r"\"",
        '"',
        "]",
        "}",
        "\\x01",
        "[a-c]",
        "[^a]",
        r"[\d_]",
        r"[\w-]",
        r"[\s.]",
        r"[\]a]",
        "[]a]",
        r"\x41",
        r"\u00e9",
        r"\t",
        r"\n",
    ]
)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    quantifier = st.sampled_from(["", "*", "+", "?", "{2}", "{1,2}", "{0,}", "*?", "+?", "??"])
    return st.one_of(
        st.lists(inner, min_size=1, max_size=3).map("".join),
        st.tuples(inner, quantifier).map(lambda t: f"({t[0]}){t[1]}"),
        st.tuples(_ATOMS, quantifier).map("".join),  # an atom quantified directly
        st.tuples(inner, inner).map(lambda t: f"{t[0]}|{t[1]}"),
        st.tuples(st.sampled_from(["(", "(?:", "(?P<n>"]), inner).map(lambda t: f"{t[0]}{t[1]})"),
        st.tuples(st.sampled_from(["", "^"]), inner, st.sampled_from(["", "$"])).map("".join),
        st.tuples(inner, quantifier).map(lambda t: f"[ab]{t[1]}{t[0]}"),
    )


PATTERNS = st.recursive(_ATOMS, _extend, max_leaves=6)
TEXTS = st.text(alphabet=ALPHABET, max_size=8).filter(lambda t: not t.endswith("\n"))
RARE_TEXTS = st.text(alphabet=ALPHABET + RARE, max_size=8).filter(lambda t: not t.endswith("\n"))


def searches(pattern: str, text: str) -> bool:
    """JSON Schema's meaning of ``pattern`` (ECMA-262 classes: Python's with re.ASCII)."""
    return re.search(pattern, text, re.ASCII) is not None


def engine_form(pattern: str) -> str | None:
    try:
        re.compile(pattern)
        return engine_pattern(pattern)
    except (re.error, PatternError):
        return None  # not a pattern, or refused (the refusals are tested below)


@settings(max_examples=300, deadline=None)
@given(pattern=PATTERNS, texts=st.lists(TEXTS, min_size=1, max_size=12))
def test_the_engine_form_matches_the_json_text_exactly_when_the_pattern_finds_a_match(
    pattern: str, texts: list[str]
) -> None:
    anchored = engine_form(pattern)
    if anchored is None:
        return
    assert anchored.startswith("^")
    assert anchored.endswith("$")
    for text in texts:
        assert searches(anchored, json_text(text)) == searches(pattern, text), (
            pattern,
            anchored,
            text,
        )


@settings(max_examples=200, deadline=None)
@given(pattern=PATTERNS, texts=st.lists(RARE_TEXTS, min_size=1, max_size=12))
def test_the_engine_form_is_never_wider(pattern: str, texts: list[str]) -> None:
    """With rare control characters too: what the engine may write, the pattern accepts."""
    anchored = engine_form(pattern)
    if anchored is None:
        return
    for text in texts:
        if searches(anchored, json_text(text)):
            assert searches(pattern, text), (pattern, anchored, text)


def test_any_is_one_json_string_character() -> None:
    for char in ["a", '"', "\\", "\n", "\x01", "é", "\u2028"]:
        assert re.fullmatch(ANY, json_text(char)), char
    assert not re.fullmatch(ANY, '"')  # a raw quote would end the string
    assert not re.fullmatch(ANY, "\\")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"[A-Z]{3}-\d+", rf"^{ANY}*[A-Z]{{3}}-[0-9]+{ANY}*$"),
        (r"^[A-Z]{3}-\d+$", r"^[A-Z]{3}-[0-9]+$"),
        (r"^a|b$", rf"^(a{ANY}*|{ANY}*b)$"),
        (r"^a\.b$", r"^a[\x2e]b$"),
        (r"^(?:ab)+?$", r"^(ab)+$"),
        (r"^(?P<year>\d{4})$", r"^([0-9]{4})$"),
        ('^"x$', r'^\\"x$'),
        (r"^[\"\\]$", r'^(\\"|\\\\)$'),
        (r"^\t$", r"^\\t$"),
        (r"^[\]]$", r"^[\x5d]$"),
        (r"^x{}$", r"^x[\x7b][\x7d]$"),
        ('^a"+$', r'^a(\\")+$'),
        (r"^\n{2}\\?$", r"^(\\n){2}(\\\\)?$"),
        (r"^[\n]*$", r"^(\\n)*$"),
        # overlapping and adjacent ranges merge into one (found by mutation testing)
        (r"^[a-cb-d]$", r"^[a-d]$"),
        (r"^[a-bc-d]$", r"^[a-d]$"),
        (r"^[0-9\d]$", r"^[0-9]$"),
        (r"^[a-bx-yz]$", r"^[a-bx-z]$"),
        (r"^.$", r'^([^\x00-\x1f\x22\x5c\u2028-\u2029]|\\b|\\t|\\f|\\"|\\\\)$'),
        # a quantified non-ASCII character is grouped: llama.cpp's C++ converter repeated
        # its last UTF-8 byte alone, a grammar llama.cpp refuses (found by a fuzz)
        (r"^Café?$", r"^Caf(é)?$"),
        (r"^é+$", r"^(é)+$"),
        (r"^日{2}$", r"^(日){2}$"),
        (r"^\u00e9*$", r"^(é)*$"),
        (r"^\xe9+?$", r"^(é)+$"),
        (r"^\U0001F600{1,2}$", r"^(😀){1,2}$"),
        (r"^(a|ü+)b$", r"^(a|(ü)+)b$"),
        (r"é?", rf"^{ANY}*(é)?{ANY}*$"),
        (r"^éa+[é]?é$", r"^éa+[\xe9]?é$"),  # not quantified: unchanged
    ],
)
def test_rewrites(pattern: str, expected: str) -> None:
    assert engine_pattern(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "text"),
    [('^"+$', '""'), (r"^\n{2}$", "\n\n"), (r"^[\n]+$", "\n\n"), (r"^\x01*$", "\x01\x01")],
)
def test_a_quantifier_repeats_a_whole_json_escape(pattern: str, text: str) -> None:
    """``"+`` is ``\\"`` repeated, not a backslash and then quotes."""
    assert searches(engine_pattern(pattern), json_text(text))


@pytest.mark.parametrize(
    ("pattern", "text", "not_text"),
    [
        (r"^\01$", "\x01", "\x001"),
        (r"^\0$", "\x00", "0"),
        (r"^\101\0012$", "A\x012", "A\x0012"),
        (r"^[\01]$", "\x01", "1"),
        (r"^[\1]$", "\x01", "1"),
        (r"^[\101-\103]+$", "ABC", "\x01"),
    ],
)
def test_octal_escapes_are_read_as_python_reads_them(
    pattern: str, text: str, not_text: str
) -> None:
    """``\\01`` is U+0001 (not NUL and then ``1``); in a class ``\\1`` is U+0001 too."""
    assert searches(pattern, text)
    assert not searches(pattern, not_text)
    assert searches(engine_pattern(pattern), json_text(text))
    assert not searches(engine_pattern(pattern), json_text(not_text))


def test_dot_refuses_every_raw_control_character() -> None:
    """JSON text holds U+0000-U+001F only escaped: the form of ``.`` takes none raw, and
    takes the characters either side of that range (found by mutation testing)."""
    form = engine_pattern(r"^.$")
    for code in range(0x20):
        assert re.fullmatch(form, chr(code)) is None, hex(code)
    for char in (" ", "a", "\x7f", "\x85"):
        assert re.fullmatch(form, char), repr(char)


def test_ecma_meaning_of_classes() -> None:
    """JSON Schema patterns are ECMA-262: \\d is ASCII, . stops at \\r."""
    assert re.search(engine_pattern(r"^\d$"), "٣") is None
    assert re.search(engine_pattern(r"^\d$"), "3")
    assert re.search(engine_pattern(r"^.$"), json_text("\r")) is None
    assert re.search(engine_pattern(r"^\s$"), json_text("\u3000"))
    assert re.search(engine_pattern(r"^\s$"), json_text("\n"))


def test_the_byte_order_mark_is_neither_a_space_nor_a_non_space() -> None:
    """ECMA-262's \\s holds U+FEFF, Python's and Pydantic's do not: a reply with it would fail
    ``parse``. Neither \\s nor \\S sends it (found by a probe: the emulator wrote it for \\s)."""
    assert re.fullmatch(r"\s", "\ufeff") is None  # Python's reading, as Pydantic's
    assert re.search(engine_pattern(r"^\s+$"), json_text(" \u3000"))
    assert re.search(engine_pattern(r"^\s+$"), json_text(" \ufeff")) is None
    assert re.search(engine_pattern(r"^\S+$"), json_text("a\ufeff")) is None
    assert re.search(engine_pattern(r"^\S+$"), json_text("aé"))
    assert re.search(engine_pattern(r"^[^\s]+$"), json_text("a\ufeff")) is None
    assert re.search(engine_pattern(r"^[^\s]+$"), json_text("aé"))
    # U+0085 the other way round: a space to Python and Rust, not to ECMA-262 (a review)
    assert re.search(engine_pattern(r"^\S+$"), json_text("a\x85")) is None
    assert re.search(engine_pattern(r"^[^\s]+$"), json_text("a\x85")) is None
    assert re.search(engine_pattern(r"^\s+$"), json_text("\x85")) is None
    assert re.search(engine_pattern(r"^[\s]+$"), json_text("\ufeff")) is None
    # only U+0085: its neighbours are non-spaces to both (found by mutation testing)
    assert re.search(engine_pattern(r"^\S+$"), json_text("\x84\x86"))
    assert re.search(engine_pattern(r"^[^\s]+$"), json_text("\x84\x86"))


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(?=a)a", "lookaround"),
        ("(?<!a)b", "lookaround"),
        (r"(a)\1", "backreference"),
        ("(?P<x>a)(?P=x)", "backreference"),
        (r"\bword", "assertion"),
        ("a^b", "anchor"),
        ("(^a)", "anchor"),
        ("(?i)abc", "group extension"),
        ("a{,3}", "{,n}"),
        (r"\p{L}", "not a valid"),
        ("(", "not a valid"),
        (r"[\D]", "negated class escape"),
        # a pair the engines read as one character and Python's re as two (a probe)
        (r"^\uD83D\uDE00$", "write the character itself ('\U0001f600')"),
        (r"a\uDE00", "half of a UTF-16 surrogate pair"),
    ],
)
def test_refusals_name_the_construct(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError, match=re.escape(reason)):
        engine_pattern(pattern)


def test_surrogates_in_a_class_are_a_range_end_not_a_character() -> None:
    """Found by a review: ``[^\\uD800-\\uDFFF]`` (every real character) was refused."""
    form = engine_pattern(r"^[^\uD800-\uDFFF]$")
    assert re.search(form, json_text("é"))


# -- Python's FutureWarnings, without touching the warning filters ------------------------


def _parsed(pattern: str) -> object:
    """What Python's re reads ``pattern`` as (its parse tree), its FutureWarnings ignored."""
    import re._parser as parser  # type: ignore[import-not-found]  # private: what re reads

    def plain(node: object) -> object:
        if isinstance(node, parser.SubPattern):
            return plain(node.data)
        if isinstance(node, list | tuple):
            return tuple(plain(item) for item in node)
        return node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return plain(parser.parse(pattern))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="[]^-&~|\\a()?#:x\n", max_size=14))
# Found by mutation testing: the walk's class start ("]" first is a character, after "^"
# too), its comments and newlines, each a case the examples had not reached.
@example("[]&&a]")
@example("[^]&&a]")
@example("(?#[)[[a]")
@example("a\nb[\n--]")
def test_patterns_python_warns_of_are_read_as_written_without_a_warning(pattern: str) -> None:
    """Found by a probe: the FutureWarnings were silenced with ``warnings.catch_warnings``,
    which swaps the process-wide filters; two threads at once left a program that had made
    warnings errors ignoring FutureWarning for good. Now the pattern is escaped instead:
    what re reads is the same, and nothing warns."""
    try:
        expected = _parsed(pattern)
    except (re.error, RecursionError):
        with pytest.raises(re.error):
            ecma_compile(pattern)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a FutureWarning would be an error here
        compiled = ecma_compile(pattern)
        re.purge()
        re.compile(compiled.pattern)  # warns again if it would (the cache purged)
    assert _parsed(compiled.pattern) == expected


def test_compiling_a_schema_pattern_leaves_the_warning_filters_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probe's race needs threads; what made it is any swap of the filters: none now,
    for the patterns the meta-schema check reads and for the plan's own compiles."""
    from outlines_lmstudio._output import plan_output

    def swapped(*args: object, **kwargs: object) -> None:
        raise AssertionError("the process-wide warning filters were swapped")

    # The package's own module only: pytest swaps the filters around each test itself.
    stub = types.SimpleNamespace(catch_warnings=swapped, simplefilter=swapped)
    monkeypatch.setattr("outlines_lmstudio._patterns.warnings", stub)
    for pattern in ("^[[:alpha:]]+$", "[a&&b]", "[+--]?", "[x||y~~z]"):
        plan = plan_output({"type": "string", "pattern": pattern, "format": "regex"})
        assert plan.kind == "json"
        ecma_compile(pattern)


def test_a_newline_in_a_pattern_is_kept() -> None:
    """Found by mutation testing: the walk dropped a newline unless it read every character."""
    compiled = ecma_compile("a\nb")
    assert compiled.fullmatch("a\nb")
    assert not compiled.fullmatch("ab")


def test_a_verbose_pattern_is_still_read_quietly() -> None:
    """``#`` starts a comment under (?x): such a pattern is compiled as written, its
    warnings silenced under a lock (found by writing the escaping)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ecma_compile("(?x)[[a] # [[").pattern == "(?x)[[a] # [["
