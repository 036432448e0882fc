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


@settings(max_examples=2000, deadline=None)
@given(split_documents())
def test_whole_scalars_values_only_grow(fragments: list[str]) -> None:
    """No number shows as far as it goes, no key vanishes: each value grows into the next."""
    parser = PartialJson(whole_scalars=True)
    values = [v for v in (parser.feed(f) for f in fragments) if v is not None]
    for earlier, later in itertools.pairwise(values):
        assert grows_into(earlier, later), (fragments, earlier, later)  # fallen back or not


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


SURROGATE_REPLIES = [
    r'{"a": "ab\ud83d\ude04", "n": -1234567890.5}',  # Gemma writes an emoji as a pair
    r'["ab\ud83d\ude04", -1234567890.5]',
    r'{"k\ud83d\ude04\u00e9": [-12.5e3, "\u0041\\\uD83D\uDE04\"\/"], "m": 1}',
    r'{"a": "\\ud83d", "n": -1.5, "b": "\\\\\ud83d\ude04"}',  # escaped backslashes: no escapes
]
LONE_SURROGATE_REPLIES = [
    r'{"n": -1234567890.5, "a": "x\ud83d", "b": 2}',
    r'{"n": -12.5, "a": "\ude04", "b": 2}',
    r'{"n": -12.5, "a": "\ud83d\ud83d\ude04", "b": 2}',
    r'{"n": -12.5, "a": "\ud83d\\", "b": 2}',
    r'{"n": -12.5, "\ud83d": 1, "b": 2}',
    r'[{"n": -12.5}, {"\ud83d\n": 1}, {"\ude04": 2}]',  # pydantic-core refuses at once
]


def splits(text: str, parts: int) -> list[list[str]]:
    """Every way of cutting ``text`` into ``parts`` non-empty fragments."""
    return [
        [text[a:b] for a, b in zip((0, *cuts), (*cuts, len(text)), strict=True)]
        for cuts in itertools.combinations(range(1, len(text)), parts - 1)
    ]


@pytest.mark.parametrize("text", SURROGATE_REPLIES + LONE_SURROGATE_REPLIES)
@pytest.mark.parametrize("parts", [2, 3])
def test_every_split_of_unicode_escapes_keeps_the_guarantees(text: str, parts: int) -> None:
    r"""A cut in the low half of an escaped pair (``\ud83d\ude0`` | ``4``) made the scanner
    decode the high half alone, which pydantic-core refuses: it fell back for good to whole
    parses, which showed ``-12345`` of a number and then dropped its key (found by a probe).
    Now a key once shown stays, a number shows whole, the last value is the parsed reply,
    and a lone surrogate (refused by pydantic-core, so by ``parse``) shows nothing more."""
    try:
        final = pydantic_core.from_json(text)
    except ValueError:
        final = None  # a lone surrogate: parse refuses the reply
    for fragments in splits(text, parts):
        check(fragments)  # pydantic-core's values, fragment by fragment
        parser = PartialJson(whole_scalars=True)
        values = [parser.feed(fragment) for fragment in fragments]
        shown = [v for v in values if v is not None]
        for earlier, later in itertools.pairwise(shown):
            assert grows_into(earlier, later), (fragments, earlier, later)
        if final is None:
            assert values[-1] is None, fragments
        else:
            assert not parser._broken, fragments
            assert values[-1] == final, fragments
            assert all(grows_into(value, final) for value in shown), fragments


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet='{}[]":, 1-.truex\n\\', max_size=5), max_size=12))
def test_same_values_on_text_that_stops_being_json(fragments: list[str]) -> None:
    """A raw newline in a string, a stray letter, text after the document: the value stays
    pydantic-core's once the parser stops parsing the whole text again."""
    check(fragments)


def test_text_that_can_no_longer_be_json_is_not_parsed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every fragment after a broken place re-parsed the whole text: 19 s for a 341 kB
    reply with a raw newline in a string (found by a probe)."""
    parses: list[int] = []
    real = pydantic_core.from_json

    def counted(text: Any, **kwargs: Any) -> Any:
        parses.append(len(text))
        return real(text, **kwargs)

    monkeypatch.setattr(pydantic_core, "from_json", counted)
    items = [f'"line {i}"' for i in range(2_000)]
    items[10] = '"a\nb"'  # a raw newline inside a string: a common model mistake
    reply = '{"xs": [' + ", ".join(items) + "]}"
    parser = PartialJson(whole_scalars=True)
    for start in range(0, len(reply), 4):
        assert parser.feed(reply[start : start + 4]) is None or start < 150
    assert sum(1 for length in parses if length > 200) <= 1  # whole-text parses

    parses.clear()  # after a finished document, text the model goes on with is ignored
    parser = PartialJson()
    assert parser.feed('{"a": 1} and then') == {"a": 1}
    for _ in range(100):
        assert parser.feed(" more words") == {"a": 1}
    assert sum(1 for length in parses if length >= 17) == 1  # whole-text parses


@pytest.mark.parametrize(
    ("text", "before"),
    [
        ('{"x": {"a": 1}, "x": {"b": 2}}', '{"x": {"a": 1}, "x"'),
        ('{"name": "A", "name": "B"}', '{"name": "A", "name"'),
        ("[1.5, 1e999, 2]", "[1.5, 1e999,"),
        ('{"v": NaN, "w": 1}', '{"v": NaN,'),
    ],
)
def test_a_text_no_typed_result_takes_is_known_as_soon_as_it_is_written(
    text: str, before: str
) -> None:
    """Found by a probe: a repeated key's value replaced one given out (a key shown went
    away), and ``inf`` was given out, before the final ParseError."""
    parser = PartialJson(whole_scalars=True)
    for index, char in enumerate(text):
        parser.feed(char)
        assert parser.invalid == (index >= len(before) - 1), text[: index + 1]


def test_a_key_in_two_objects_is_not_a_repeat() -> None:
    parser = PartialJson(whole_scalars=True)
    parser.feed('{"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}')
    assert not parser.invalid
