"""Pattern keywords searched in linear time (`outlines_lmstudio._search`)."""

from __future__ import annotations

import re
import warnings
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from outlines_lmstudio._search import (
    UnsearchablePatternError,
    linear_time,
    rust_reads_otherwise,
    search,
)
from outlines_lmstudio._typed import json_validator

PATTERNS = [r"^[a-z]+$", r"\d{3}", r"^(ab|cd)*e?$", r"[A-Z][a-z]+ [A-Z]", r"^\s*x", "b", r"^$"]


@pytest.mark.parametrize("pattern", PATTERNS)
@given(text=st.text(alphabet="abcdeAZxz019 _-", max_size=12))
def test_the_search_finds_what_python_re_finds(pattern: str, text: str) -> None:
    """A search, as JSON Schema's pattern is: ``b`` is found in ``abc``."""
    assert search(pattern)(text) == (re.search(pattern, text) is not None)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"^[a&&b]+$", "a&b"),
        (r"^[[:alpha:]]+$", ":]"),
        (r"^[a-c--b]$", "-"),
        (r"^[a~~b]+$", "~"),
        (r"a\<b", "a<b"),
    ],
)
def test_syntax_rust_reads_otherwise_is_searched_as_python_reads_it(
    pattern: str, text: str
) -> None:
    """Rust's regex reads these as set operations, POSIX classes, word boundaries; the
    engines were told ECMA-262's reading, so valid replies were refused (found by a review)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = re.search(pattern, text) is not None
    assert expected
    assert search(pattern)(text) is expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(?P<x>a)(?P=x)", "cannot read"),  # a backreference: Rust's regex has none
        (r"^(?=a)([a-z]+ ?)+$", "cannot read"),  # a lookaround
        (r"^(\w{1,300} ?)+$", "size limit"),  # \w is Unicode-wide: a huge program
    ],
)
def test_a_pattern_the_linear_engine_cannot_compile_is_refused(pattern: str, reason: str) -> None:
    """It was searched with Python's re: ``^(\\w{1,300} ?)+$`` took 3.6 s at 26 letters,
    exponential, in the caller's thread (found by a probe)."""
    with pytest.raises(UnsearchablePatternError, match=reason):
        search(pattern)


@pytest.mark.parametrize(
    ("pattern", "instead"),
    [
        (r"^[a-z]+\Z", r"$ instead of \Z"),
        (r"^a{,3}$", "{0,N} instead of {,N}"),
        (r"^a(?#note)b$", "(?#...) comment"),
    ],
)
def test_python_only_syntax_is_refused_for_what_it_is(pattern: str, instead: str) -> None:
    """The reason given was exponential time, which has nothing to do with ``\\Z`` or
    ``{,3}``, and named no way out (found by a probe)."""
    with pytest.raises(UnsearchablePatternError) as info:
        search(pattern)
    assert "only Python's re reads" in info.value.reason
    assert instead in info.value.reason
    assert "exponential" not in info.value.reason


@pytest.mark.parametrize(("pattern", "text"), [(r"^a\\Z$", "a\\Z"), (r"^a\{,3}$", "a{,3}")])
def test_escaped_python_only_spellings_are_plain_text(pattern: str, text: str) -> None:
    """An escaped backslash then ``Z``, an escaped ``{``: both engines read them as text."""
    assert search(pattern)(text)
    assert re.search(pattern, text)


@pytest.mark.parametrize(
    ("pattern", "texts"),
    [
        (r"^[^\0]*$", ["ab", "a\x00"]),
        (r"^a\0b$", ["a\x00b", "a0b"]),
        (r"^a\012b$", ["a\nb", "a\x00b"]),  # octal, as re reads it
        (r"^\08$", ["\x008", "8"]),
        (r"^[^\b]*$", ["ab", "a\x08"]),  # backspace in a class; a word boundary outside
        (r"^[\b-\x0a]$", ["\t", "a"]),
        (r"^\\0[\\b]$", ["\\0b", "\x00\x08"]),  # escaped backslashes: text
    ],
)
def test_ecma_s_nul_and_backspace_escapes_are_searched_as_python_reads_them(
    pattern: str, texts: list[str]
) -> None:
    """``\\0`` is NUL and ``[\\b]`` a backspace to ECMA-262 and Python's re, errors to
    Rust's regex: a schema using them was refused, \\0 as a "backreference" (found by a
    probe)."""
    assert rust_reads_otherwise(pattern) is None  # Pydantic's Rust regex refuses them itself
    for text in texts:
        assert search(pattern)(text) == (re.search(pattern, text) is not None)


def test_a_schema_with_a_nul_escape_is_sent() -> None:
    from outlines_lmstudio._output import plan_output

    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": r"^[^\0]*$"}}}
    assert plan_output(schema).kind == "json"  # was InvalidSchemaError


@pytest.mark.parametrize("where", ["pattern", "patternProperties"])
def test_a_schema_with_such_a_pattern_is_refused_before_sending(where: str) -> None:
    from outlines_lmstudio._output import plan_output
    from outlines_lmstudio.errors import InvalidSchemaError

    pattern = r"^(\w{1,300} ?)+$"
    value: dict[str, object] = (
        {"type": "string", "pattern": pattern}
        if where == "pattern"
        else {"type": "object", "patternProperties": {pattern: {}}}
    )
    schema = {"type": "object", "properties": {"v": value}}
    with pytest.raises(InvalidSchemaError, match=r"size limit.*narrower"):
        plan_output(schema)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "string", "pattern": r"^([A-Za-z]+ ?)+$"}, "a" * 40 + "1"),
        (
            {
                "type": "object",
                "patternProperties": {r"^([a-z]+_?)+$": {}},
                "additionalProperties": False,
            },
            {"a" * 40 + "-": 1},
        ),
        ({"type": "object", "propertyNames": {"pattern": r"^([a-z]+_?)+$"}}, {"a" * 40 + "-": 1}),
    ],
    ids=["pattern", "patternProperties", "propertyNames"],
)
def test_a_reply_that_nearly_matches_a_catastrophic_pattern_is_refused_at_once(
    schema: dict[str, object], value: Any
) -> None:
    """Python's re (jsonschema's) takes exponential time here: 20 s at 28 letters, in the
    caller's thread where no timeout= stops it (found by a probe); at 40 letters, days."""
    errors = list(json_validator(schema).iter_errors(value))
    assert len(errors) == 1


def test_the_keywords_keep_jsonschema_s_messages() -> None:
    schema = {"type": "object", "properties": {"a": {}}, "additionalProperties": False}
    ours = [
        e.message
        for e in linear_time(jsonschema.Draft202012Validator)(schema).iter_errors(
            {"a": 1, "b": 2, "c": 3}
        )
    ]
    theirs = [
        e.message
        for e in jsonschema.Draft202012Validator(schema).iter_errors({"a": 1, "b": 2, "c": 3})
    ]
    assert ours == theirs
    schema = {"patternProperties": {"^x": {}}, "additionalProperties": False}
    ours = [
        e.message
        for e in linear_time(jsonschema.Draft202012Validator)(schema).iter_errors({"y": 1})
    ]
    theirs = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors({"y": 1})]
    assert ours == theirs
    schema = {"pattern": "^x"}
    ours = [
        e.message for e in linear_time(jsonschema.Draft202012Validator)(schema).iter_errors("y")
    ]
    assert ours == [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors("y")]


def test_a_subschema_naming_the_root_draft_is_searched_in_linear_time_too() -> None:
    """jsonschema gave a subschema with its own $schema the draft's stock class, whose
    patterns search with Python's re: the same near-match took exponential time there
    (found by a review)."""
    from outlines_lmstudio._output import plan_output
    from outlines_lmstudio._typed import _Invalid, validator_for

    draft = "https://json-schema.org/draft/2020-12/schema"
    person = {"$schema": draft, "type": "string", "pattern": r"^([a-z]+ ?)+$"}
    schema = {"$schema": draft, "type": "array", "items": {"$ref": "#/$defs/p"}}
    schema["$defs"] = {"p": person}
    with pytest.raises(_Invalid, match="does not match"):
        validator_for(plan_output(schema)).validate('["' + "a" * 40 + '1"]')
    assert person["$schema"] == draft  # the caller's schema is left as it is


@pytest.mark.parametrize("draft", ["http://json-schema.org/draft-07/schema#", "draft-04"])
def test_a_subschema_naming_another_draft_is_searched_in_linear_time_too(draft: str) -> None:
    """``_one_draft`` left another draft's stock class, whose patterns search with Python's
    re: 12.6 s at 28 letters, past ``timeout=5`` (found by a probe); at 40 letters, days."""
    from outlines_lmstudio._output import plan_output
    from outlines_lmstudio._typed import _Invalid, validator_for

    if draft == "draft-04":
        draft = "http://json-schema.org/draft-04/schema#"
    sub = {"$schema": draft, "type": "string", "pattern": r"^([A-Za-z]+ ?)+$", "minLength": 1}
    schema = {"$defs": {"s": sub}, "type": "object", "properties": {"v": {"$ref": "#/$defs/s"}}}
    with pytest.raises(_Invalid, match="does not match"):
        validator_for(plan_output(schema)).validate('{"v": "' + "a" * 40 + '!"}')
    validator_for(plan_output(schema)).validate('{"v": "ab cd"}')


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([0.0, 1.0, -1.0, 1.5]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("ab"), inner, max_size=2)
    ),
    max_leaves=8,
) | st.sampled_from(["", "a", "1"])


@given(items=st.lists(_JSON, max_size=6))
def test_unique_items_agrees_with_jsonschema_s(items: list[object]) -> None:
    """JSON's equality: ``1 == 1.0``, ``true != 1``, object keys in any order."""
    schema = {"uniqueItems": True}
    ours = linear_time(jsonschema.Draft202012Validator)(schema).is_valid(items)
    assert ours == jsonschema.Draft202012Validator(schema).is_valid(items)


@pytest.mark.parametrize(
    ("items", "unique"),
    [
        ([1, 1.0], False),
        ([1, True], True),
        ([0, False], True),
        ([{"a": 1, "b": [1]}, {"b": [1.0], "a": 1}], False),
        ([[1, 2], [2, 1]], True),
        ([{"a": None}, {"a": False}], True),
    ],
)
def test_unique_items_reads_json_equality(items: list[object], unique: bool) -> None:
    schema = {"uniqueItems": True}
    assert linear_time(jsonschema.Draft202012Validator)(schema).is_valid(items) is unique


def test_unique_items_of_many_objects_is_checked_in_one_pass() -> None:
    """jsonschema compares every pair of objects: 45 s for 8,000 (found by a probe), past
    ``timeout=`` in the caller's thread; 40,000 would take about 20 minutes there."""
    schema = {"type": "array", "items": {"type": "object"}, "uniqueItems": True}
    items: list[Any] = [{"k": i} for i in range(40_000)]
    assert json_validator(schema).is_valid(items)
    assert not json_validator(schema).is_valid([*items, {"k": 7.0}])


def test_a_validator_built_without_a_plan_refuses_such_a_pattern_too() -> None:
    from outlines_lmstudio._typed import Validator
    from outlines_lmstudio.errors import InvalidSchemaError

    schema = {"type": "string", "pattern": r"^(?=a)([a-z]+ ?)+$"}
    with pytest.raises(InvalidSchemaError, match="look-around"):
        Validator(schema, schema=schema).validate('"' + "a" * 40 + '!"')


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        (r"^[[:digit:]]$", "a POSIX class ([:digit:]) at position 2"),
        (r"[[:^space:]]", "a POSIX class ([:^space:]) at position 1"),
        (r"[a[bc]]", "a nested class ([bc]) at position 2"),
        (r"[a&&b]", "a class intersection (&&) at position 2"),
        (r"[a~~b]", "a class symmetric difference (~~) at position 2"),
        (r"x\>", r"the end of a word (\>) at position 1"),
        (r"^[a-z]+\[[:x:]$", None),  # an escaped bracket opens no class
        (r"[\[:alpha:]]", None),
        (r"a&&b--c", None),  # outside a class, the characters themselves to every reader
        (r"\\<", None),  # an escaped backslash, then <
        (r"[a&-]", None),  # one & or -, as every reader takes it
        (r"^[--]$", None),  # the character - to every reader (found by a review)
        (r"^[^--]$", None),
        (r"^[--a]$", "a class difference (--) at position 2"),  # ECMA: a range - to a
        (r"^[a[\]b]]$", r"a nested class ([\]b]) at position 3"),  # to its real end
    ],
)
def test_syntax_rust_reads_otherwise_is_named(pattern: str, named: str | None) -> None:
    assert rust_reads_otherwise(pattern) == named


def test_multiple_of_is_exact_under_each_drafts_own_name() -> None:
    """Draft 3 names it ``divisibleBy`` (a review), and checks no ``multipleOf``."""
    draft_3 = linear_time(jsonschema.Draft3Validator)
    assert draft_3({"divisibleBy": 0.1}).is_valid(0.3)
    assert not draft_3({"divisibleBy": 0.1}).is_valid(0.35)
    assert draft_3({"multipleOf": 0.2}).is_valid(0.3)  # not a draft-3 keyword
    assert linear_time(jsonschema.Draft202012Validator)({"divisibleBy": 7}).is_valid(0.3)
