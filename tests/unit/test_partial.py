"""`PartialJson` gives exactly pydantic-core's partial values, fragment by fragment."""

import itertools
import json
from typing import Any

import pydantic_core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outlines_lmstudio._partial import PartialJson


def whole(text: str) -> Any:
    try:
        return pydantic_core.from_json(text, allow_partial="trailing-strings")
    except ValueError:
        return None


def check(fragments: list[str]) -> None:
    parser = PartialJson()
    text = ""
    for fragment in fragments:
        text += fragment
        got = parser.feed(fragment)
        expected = whole(text)
        assert got == expected, (text, got, expected)
        assert type(got) is type(expected)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def split_documents(draw: st.DrawFn) -> list[str]:
    value = draw(json_values)
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 1])),
        separators=draw(st.sampled_from([None, (",", ":")])),
    )
    if draw(st.booleans()):
        text = "  " + text + draw(st.sampled_from(["", " ", "\n", " x", "}", ",1"]))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return [p for p in pieces if p]


@settings(max_examples=400, deadline=None)
@given(split_documents())
def test_same_values_as_parsing_the_whole_text(fragments: list[str]) -> None:
    check(fragments)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet='{}[]":,. -+0123456789eEtruefalsn\\u"abcdD8', max_size=6)))
def test_same_values_on_arbitrary_text(fragments: list[str]) -> None:
    check(fragments)


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "ab\\u00e9 \\ud83d\\ude00 \\\\ \\" \\n end", "age": 12}',
        '[1, 2.5e3, -0, true, false, null, {"a": [[]]}, "x"]',
        '{"a": "x", "b": "z", "a": "yy"}',
        '{"a": 1} trailing',
        "[1 2]",
        '{"a": "\\ud83dx"}',
        '{"a": 1e400, "b": 123456789012345678901234567890}',
    ],
)
def test_every_split_of_tricky_documents(text: str) -> None:
    check(list(text))  # one character at a time
    for cut in range(len(text) + 1):
        check([text[:cut], text[cut:]])


def test_empty_and_whitespace_give_none() -> None:
    parser = PartialJson()
    assert parser.feed("") is None
    assert parser.feed("  ") is None
    assert parser.feed('{"a') == {}


def test_long_string_is_read_once() -> None:
    parser = PartialJson()
    parser.feed('{"text": "')
    for _ in range(5000):
        value = parser.feed("ab ")
    assert value == {"text": "ab " * 5000}
    assert parser._decoded_to == len(parser.text)  # decoded incrementally, up to the end


def grows_into(partial: Any, final: Any) -> bool:
    """Tell whether ``final`` extends ``partial``: strings and lists at the end, objects by keys."""
    if isinstance(partial, str) and isinstance(final, str):
        return final.startswith(partial)
    if isinstance(partial, list) and isinstance(final, list):
        if len(partial) > len(final) or not partial:
            return len(partial) <= len(final)
        *done, last = partial
        return done == final[: len(done)] and grows_into(last, final[len(done)])
    if isinstance(partial, dict) and isinstance(final, dict):
        return all(k in final and grows_into(v, final[k]) for k, v in partial.items())
    return partial == final and type(partial) is type(final)


@settings(max_examples=400, deadline=None)
@given(split_documents())
def test_whole_scalars_values_only_grow(fragments: list[str]) -> None:
    """No number shows as far as it goes, no key vanishes: each value grows into the next."""
    parser = PartialJson(whole_scalars=True)
    values = [v for v in (parser.feed(f) for f in fragments) if v is not None]
    for earlier, later in itertools.pairwise(values):
        if not parser._broken:
            assert grows_into(earlier, later), (fragments, earlier, later)


@pytest.mark.parametrize("cut", range(1, len('{"a": -12.5e3, "b": [true, 10]}')))
def test_whole_scalars_show_a_number_once_delimited(cut: int) -> None:
    text = '{"a": -12.5e3, "b": [true, 10]}'
    parser = PartialJson(whole_scalars=True)
    first, second = parser.feed(text[:cut]), parser.feed(text[cut:])
    assert second == {"a": -12500.0, "b": [True, 10]}
    assert first is None or grows_into(first, second)
    assert PartialJson(whole_scalars=True).feed("-12345") is None  # may go on: -123456


def test_nan_and_infinity_are_followed_as_numbers() -> None:
    """The scanner fell back for good to whole parses at ``NaN`` (not JSON, but a number to
    pydantic-core), which then showed ``123456`` of ``12345678901.5`` and dropped a key it
    had shown (found by a probe)."""
    fragments = ['{"x":', " NaN,", ' "y":', " 123456", "78901.", "5, ", '"z": -Inf', "inity}"]
    parser = PartialJson(whole_scalars=True)
    values = [repr(parser.feed(f)) for f in fragments]
    assert not parser._broken
    assert values[1:] == [
        *["{'x': nan}"] * 4,
        *["{'x': nan, 'y': 12345678901.5}"] * 2,
        "{'x': nan, 'y': 12345678901.5, 'z': -inf}",
    ]


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_text_nested_deeper_than_pydantic_core_reads_is_its_value(opener: str) -> None:
    """The scanner nested without bound: a partial value 3,000 levels deep, where
    pydantic-core refuses the text (None), and comparing two of them hit Python's
    recursion limit (parse_stream raised RecursionError)."""
    check([opener] * 3000)
