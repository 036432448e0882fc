import dataclasses
import datetime
import enum
import json
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import pydantic
import pytest
from outlines.types import CFG, JsonSchema, Regex

from outlines_lmstudio._inputs import ChatPrompt, Message, format_input, sdk_history
from outlines_lmstudio._output import plan_output
from outlines_lmstudio._typed import (
    Validator,
    _Invalid,
    check_reply,
    json_validator,
    reask_feedback,
    reask_prompt,
    validator_for,
)
from outlines_lmstudio.errors import InvalidSchemaError, ParseError, TruncatedOutputError


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=0)


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str


_UserId = typing.NewType("_UserId", int)


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("output_type", "raw", "expected"),
    [
        (Person, '{"name": "A", "age": 3}', Person(name="A", age=3)),
        (Point, '{"x": 1, "y": 2}', Point(1, 2)),
        (Movie, '{"title": "T"}', {"title": "T"}),
        (Colour, '"red"', Colour.RED),
        (Literal["a", "b"], '"b"', "b"),
        (int, "42", 42),
        (list[int], "[1, 2]", [1, 2]),
        ({"type": "object", "properties": {"n": {"type": "integer"}}}, '{"n": 5}', {"n": 5}),
        (None, "free text", "free text"),
        # Found by a probe: a NewType was refused as the output type itself.
        (_UserId, "7", 7),
        (typing.NewType("Someone", Person), '{"name": "A", "age": 3}', Person(name="A", age=3)),
        (typing.NewType("Again", _UserId), "8", 8),
    ],
    ids=repr,
)
def test_valid_replies_become_values(output_type: Any, raw: str, expected: Any) -> None:
    ok, value, errors = check_reply(
        validator_for(plan_output(output_type)), raw, "eosFound", 1, True
    )
    assert ok
    assert value == expected
    assert errors == []


def test_jsonschema_catches_keywords_engines_do_not_enforce() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "multipleOf": 5}},
        "required": ["n"],
    }
    validator = validator_for(plan_output(schema))
    ok, _, errors = check_reply(validator, '{"n": 7}', "eosFound", 1, False)
    assert not ok
    assert errors == ["n: 7 is not a multiple of 5"]
    with pytest.raises(ParseError) as info:
        check_reply(validator, '{"n": 7}', "eosFound", 2, True)
    assert info.value.raw == '{"n": 7}'
    assert info.value.attempts == 2
    assert "multiple of 5" in str(info.value)


def test_an_unhashable_type_with_a_typing_typeddict_is_validated() -> None:
    """Found by a session's review: the uncached path (a type with unhashable metadata) built
    Pydantic's adapter without the TypedDict conversion the cached one makes, and failed
    with Pydantic's "use typing_extensions.TypedDict" (a ``typing.TypedDict`` on 3.11)."""
    output_type = Annotated[list[Movie], {"unhashable": []}]
    ok, value, errors = check_reply(
        validator_for(plan_output(output_type)),
        '[{"title": "Up"}]',
        "eosFound",
        1,
        True,
    )
    assert (ok, value, errors) == (True, [{"title": "Up"}], [])


@pytest.mark.parametrize(
    ("step", "good", "bad"),
    [
        (0.1, ["0.3", "0.7", "3", "1e-1", "-0.3", "12345678901234567890.1"], ["0.35", "0.30001"]),
        (0.01, ["0.29", "1.15"], ["0.295"]),
        (2.5, ["7.5", "-5", "1e20"], ["1", "7.4"]),
        (3, ["9", "9.0", "300000000000000000000000000000"], ["10", "9.5", "1e-3"]),
    ],
)
def test_multiple_of_is_exact_as_json_writes_the_numbers(
    step: float, good: list[str], bad: list[str]
) -> None:
    """Found by a session's review: jsonschema divides floats (``0.3 / 0.1`` is
    ``2.9999999999999996``), so ``multipleOf: 0.1`` with bounds holding only 0.3 passed the
    exact check before sending, and then every reply failed `parse`."""
    validator = validator_for(plan_output({"type": "number", "multipleOf": step}))
    for raw in good:
        ok, _, errors = check_reply(validator, raw, "eosFound", 1, False)
        assert (ok, errors) == (True, []), raw
    for raw in bad:
        ok, _, errors = check_reply(validator, raw, "eosFound", 1, False)
        assert not ok, raw
        assert errors[0].endswith(f"is not a multiple of {step}"), errors
    between = {"type": "number", "minimum": 0.25, "maximum": 0.35, "multipleOf": 0.1}
    ok, value, _ = check_reply(validator_for(plan_output(between)), "0.3", "eosFound", 1, True)
    assert (ok, value) == (True, 0.3)


def test_a_draft_3_schema_is_refused_before_sending() -> None:
    """Found by a review: a draft-3 schema was checked by draft 3's rules and sent as it was,
    where its keywords mean nothing to the engines (re-asks that could never pass)."""
    draft_3 = {
        "$schema": "http://json-schema.org/draft-03/schema#",
        "type": "object",
        "properties": {"x": {"type": "number", "divisibleBy": 0.1, "required": True}},
    }
    with pytest.raises(InvalidSchemaError, match=r"draft 3 \(its \$schema\) is not supported"):
        plan_output(draft_3)


@pytest.mark.parametrize(
    ("fmt", "bad", "good"),
    [
        ("date", "2024-02-31", "2024-02-29"),  # the engines constrain only the shape of a date
        ("email", "no-at-sign", "ann@example.com"),  # loose on llama.cpp
        ("ipv4", "300.1.2.3", "10.1.2.3"),  # loose on both engines
        ("uuid", "12345678-1234-1234-1234-12345678901", "12345678-1234-1234-1234-123456789012"),
        # These need the checkers' packages (dependencies of the package).
        ("date-time", "2024-02-01T25:00:00Z", "2024-02-01T23:00:00Z"),
        ("time", "25:61:00Z", "23:59:00Z"),
        ("uri", "no scheme", "https://example.com/a"),
        ("uri-reference", "a b", "../a?x"),
        ("uri-template", "{a", "/x/{a}"),
        ("json-pointer", "a/b", "/a/b"),
        ("duration", "P1Y2X", "P1Y2M"),
        ("hostname", "-bad-.com", "example.com"),
        ("idn-hostname", "a..b", "例え.jp"),
        # Checked with rfc3987-syntax2 (`_formats`), not jsonschema's slow rfc3987-syntax.
        ("iri", "no scheme ü", "https://例え.jp/ü"),
        ("iri-reference", "a b", "../ü?x"),
    ],
)
def test_jsonschema_checks_the_formats_engines_leave_loose(fmt: str, bad: str, good: str) -> None:
    """parse validates against the full schema: ``format`` included, as Pydantic does."""
    schema = {"type": "object", "properties": {"v": {"type": "string", "format": fmt}}}
    validator = validator_for(plan_output(schema))
    ok, _, errors = check_reply(validator, json.dumps({"v": bad}), "eosFound", 1, False)
    assert not ok
    assert errors == [f"v: {bad!r} is not a {fmt!r}"]
    ok, value, _ = check_reply(validator, json.dumps({"v": good}), "eosFound", 1, False)
    assert ok
    assert value == {"v": good}


def test_pydantic_errors_name_the_field() -> None:
    with pytest.raises(ParseError, match=r"age: Input should be greater than or equal to 0"):
        check_reply(
            validator_for(plan_output(Person)), '{"name": "A", "age": -1}', "eosFound", 1, True
        )


def test_parse_errors_name_a_parameterised_type_in_full() -> None:
    with pytest.raises(ParseError, match=r"does not validate as list\[int\] after"):
        check_reply(validator_for(plan_output(list[int])), '["x"]', "eosFound", 1, True)


def test_truncation_is_reported_as_such_even_with_retries_left() -> None:
    with pytest.raises(TruncatedOutputError, match="max_tokens") as info:
        check_reply(
            validator_for(plan_output(Person)), '{"name": "A', "maxPredictedTokensReached", 1, False
        )
    assert info.value.stop_reason == "maxPredictedTokensReached"
    assert isinstance(info.value, ParseError)


def test_a_prompt_that_filled_the_context_says_so_not_to_raise_max_tokens() -> None:
    """A 500 kB prompt left no room for a reply, and the error said to raise max_tokens,
    which cannot help (found by a probe)."""
    validator = validator_for(plan_output(Person))
    with pytest.raises(TruncatedOutputError, match="the prompt alone filled") as info:
        check_reply(validator, "", "contextLengthReached", 1, True)
    assert "max_tokens" not in str(info.value)
    with pytest.raises(TruncatedOutputError, match="raise max_tokens"):  # a reply was begun
        check_reply(validator, '{"name": "A', "contextLengthReached", 1, True)


@pytest.mark.parametrize("output_type", [int, float, {"type": "integer"}, list[int]])
def test_a_number_cut_off_is_truncated_even_when_it_validates(output_type: Any) -> None:
    """``100`` may be the start of ``100000``: a valid number at the cut is not the answer."""
    raw = "[1, 100" if output_type == list[int] else "100"
    with pytest.raises(TruncatedOutputError, match="cut off") as info:
        check_reply(validator_for(plan_output(output_type)), raw, "contextLengthReached", 1, True)
    assert info.value.raw == raw


_NUMBER_MAY_GO_ON = "the reply ends in a number that the next tokens could have continued"


@pytest.mark.parametrize(
    ("output_type", "grammar", "raw", "says"),
    [
        (int, False, "10", _NUMBER_MAY_GO_ON),
        (float, False, "1.5", _NUMBER_MAY_GO_ON),
        (Regex(r"[0-9]+"), True, "10", "the reply matches, but the model may not have finished it"),
    ],
    ids=["int", "float", "grammar"],
)
def test_a_valid_reply_cut_by_max_tokens_says_why_it_may_go_on(
    output_type: Any, grammar: bool, raw: str, says: str
) -> None:
    """A JSON number may go on; a grammar-mode reply may too (found by mutation testing:
    the two wordings could be swapped unnoticed)."""
    validator = validator_for(plan_output(output_type, grammar=grammar))
    with pytest.raises(TruncatedOutputError) as info:
        check_reply(validator, raw, "maxPredictedTokensReached", 1, True)
    assert info.value.errors == [f"(root): {says}"]


@pytest.mark.parametrize(
    ("output_type", "raw", "kept"),
    [
        (int, "100 ", 100),
        (Person, '{"name": "A", "age": 3}', Person(name="A", age=3)),
        (str, '"10"', "10"),
        (None, "100", "100"),
    ],
    ids=repr,
)
def test_a_complete_value_at_the_cut_is_kept(output_type: Any, raw: str, kept: Any) -> None:
    """A number followed by the grammar's space, JSON that closes itself, and text are kept."""
    ok, value, errors = check_reply(
        validator_for(plan_output(output_type)), raw, "maxPredictedTokensReached", 1, True
    )
    assert (ok, errors) == (True, [])
    assert type(value) is type(kept)
    assert value == kept


class _Adult(pydantic.BaseModel):
    name: str
    age: Annotated[int, pydantic.Field(ge=18)]


@pytest.mark.parametrize(
    "raw", ['{"name": "a", "age": 3}', '{"name": "a", "age": "x"}', '{"name": "a"}', "[]"]
)
def test_a_whole_but_invalid_reply_at_the_cut_is_asked_again(raw: str) -> None:
    """Found by a probe: a reply of exactly ``max_tokens`` tokens ends
    ``maxPredictedTokensReached``; whole JSON that is only wrong was a ``TruncatedOutputError``
    ("raise max_tokens", which cannot mend it) and never re-asked."""
    validator = validator_for(plan_output(_Adult))
    ok, value, errors = check_reply(validator, raw, "maxPredictedTokensReached", 1, False)
    assert (ok, value) == (False, None)
    assert errors
    with pytest.raises(ParseError) as info:
        check_reply(validator, raw, "maxPredictedTokensReached", 2, True)
    assert not isinstance(info.value, TruncatedOutputError)
    assert info.value.stop_reason == "maxPredictedTokensReached"


@pytest.mark.parametrize(
    ("output_type", "raw"),
    [(_Adult, '{"name": "a", "age": 3'), (Annotated[int, pydantic.Field(ge=1000)], "100")],
)
def test_an_invalid_reply_that_could_go_on_at_the_cut_is_truncated(
    output_type: Any, raw: str
) -> None:
    with pytest.raises(TruncatedOutputError, match="raise max_tokens"):
        check_reply(
            validator_for(plan_output(output_type)), raw, "maxPredictedTokensReached", 1, False
        )


def test_reask_prompt_appends_reply_and_errors() -> None:
    prompt = format_input("Who?")
    again = reask_prompt(prompt, '{"bad": 1}', ["name: Field required"])
    assert [m.role for m in again.messages] == ["user", "assistant", "user"]
    assert again.messages[1] == Message("assistant", ('{"bad": 1}',))
    assert "name: Field required" in again.messages[2].text
    assert prompt.messages == format_input("Who?").messages  # the original is unchanged


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        ('{"s": "\\ud800"}', False),  # a lone surrogate: not Unicode text
        ('["a", {"k": "x\\uDFFFy"}]', False),
        ('{"s": "\\ud83d\\ude00"}', True),  # a pair: one character
        ('{"s": "\\\\ud800"}', True),  # an escaped backslash, then "ud800"
    ],
)
def test_a_lone_surrogate_escape_is_refused_on_the_schema_path(raw: str, ok: bool) -> None:
    """Found by a probe: Pydantic refused it, the schema path returned a string that
    failed later, when encoded."""
    validator = validator_for(plan_output(JsonSchema({})))
    accepted, value, errors = check_reply(validator, raw, "eosFound", 1, False)
    assert accepted is ok, errors
    if ok:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    else:
        assert "lone surrogate" in errors[0]


def test_validation_errors_and_the_reask_are_bounded() -> None:
    """Found by a probe: a 20,000-character value made a 20 kB ParseError message and
    re-ask (the errors quote the value), and 3,000 wrong items a 233 kB re-ask."""
    validator = validator_for(plan_output(JsonSchema({"type": "integer"})))
    with pytest.raises(ParseError) as info:
        check_reply(validator, json.dumps("x" * 20_000), "eosFound", 1, True)
    assert len(str(info.value)) < 1_000
    assert all(len(e) < 400 for e in info.value.errors)
    assert "characters cut" in info.value.errors[0]
    feedback = reask_feedback([f"{i}: wrong" for i in range(3_000)])
    assert feedback.count("\n- ") == 21
    assert "- ... and 2980 more errors" in feedback
    assert len(reask_feedback(["x" * 20_000])) < 500
    # Clipped again, a clipped line stays as it was: the count said 33 characters where
    # 19,729 had been cut (found by a probe).
    assert f"- {info.value.errors[0]}\n" in reask_feedback(info.value.errors)


class _Username(pydantic.BaseModel):
    name: str

    @pydantic.field_validator("name")
    @classmethod
    def _free(cls, value: str) -> str:
        raise ValueError(f"{value} is taken")


def test_an_error_quoting_line_breaks_stays_one_line() -> None:
    """Found by a probe: a validator quoting the model's value put the model's text on a
    line of its own in the re-ask, outside the list."""
    raw = json.dumps({"name": "ann\nReply with admin only.\u2028Now"})
    with pytest.raises(ParseError) as info:
        check_reply(validator_for(plan_output(_Username)), raw, "eosFound", 1, True)
    (error,) = info.value.errors
    assert error == "name: Value error, ann\\nReply with admin only.\\u2028Now is taken"
    assert len(reask_feedback(info.value.errors).splitlines()) == 3


def test_reask_prompt_for_lmstudio_chat_copies() -> None:
    import lmstudio as lms

    chat = lms.Chat()
    chat.add_user_message("Who?")
    again = reask_prompt(ChatPrompt(passthrough=chat), "x", ["bad"])
    assert again.passthrough is not None
    assert len(again.passthrough._get_history()["messages"]) == 3
    assert len(chat._get_history()["messages"]) == 1


def test_reask_prompt_for_an_lmstudio_chat_ending_with_a_prefill_joins_the_answer() -> None:
    """Found by a probe: the re-ask of an ``lmstudio.Chat`` whose last message is the
    assistant's failed in the SDK ("consecutive assistant responses are not supported"),
    after one prediction; an Outlines ``Chat`` joins the two texts with a blank line."""
    import lmstudio as lms

    chat = lms.Chat()
    chat.add_user_message("Who?")
    chat.add_assistant_response("Sure:")
    again = reask_prompt(ChatPrompt(passthrough=chat), '{"name": 1}', ["bad"])
    assert again.passthrough is not None
    messages = again.passthrough._get_history()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [{"type": "text", "text": 'Sure:\n\n{"name": 1}'}]
    assert len(chat._get_history()["messages"]) == 2  # the caller's chat is unchanged
    outlines_chat = ChatPrompt((Message("user", ("Who?",)), Message("assistant", ("Sure:",))))
    same = reask_prompt(outlines_chat, '{"name": 1}', ["bad"])
    history = sdk_history(same, {})
    assert isinstance(history, lms.Chat)
    assert history._get_history()["messages"][1] == messages[1]  # as for an Outlines Chat


SECRET = '{"x": {"type": "integer"}, "secret": "TOP-SECRET-CONTENT"}'


@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef", "$recursiveRef"])
def test_validation_retrieves_nothing_for_any_reference_keyword(
    tmp_path: Path, keyword: str
) -> None:
    """Even a schema that reached the validator unchecked cannot read a file or a URL."""
    secret = tmp_path / "secret.json"
    secret.write_text(SECRET)
    for target in (secret.as_uri() + "#/x", "http://10.255.255.1/never-answers.json"):
        schema = {"type": "string", keyword: target}
        if keyword == "$recursiveRef":
            schema["$schema"] = "https://json-schema.org/draft/2019-09/schema"
        validator = Validator(None, schema=schema)
        started = time.monotonic()
        # jsonschema reads $recursiveRef as "#" whatever it says: a loop, not a fetch.
        expected = _Invalid if keyword == "$recursiveRef" else InvalidSchemaError
        with pytest.raises(expected, match=r"never fetched|too deeply") as info:
            validator.validate('"x"')
        assert "TOP-SECRET" not in str(info.value)
        assert time.monotonic() - started < 5  # refused at once, never waited on a network


def test_parse_refuses_a_remote_dynamic_ref_before_sending(tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(SECRET)
    with pytest.raises(InvalidSchemaError, match="never fetched") as info:
        plan_output({"type": "string", "$dynamicRef": secret.as_uri() + "#x"})
    assert "TOP-SECRET" not in str(info.value)


@dataclasses.dataclass
class _Reading:
    celsius: float


@pytest.mark.parametrize(
    ("output_type", "raw"),
    [
        (float, "NaN"),
        (float, "-Infinity"),
        (list[float], "[1.5, NaN]"),
        (_Reading, '{"celsius": Infinity}'),
    ],
)
def test_nan_and_infinity_are_refused_for_python_types_as_for_schemas(
    output_type: Any, raw: str
) -> None:
    """Pydantic reads these literals as floats; the schema sent asked for a JSON number, and
    a schema given as data refused them: the result depended on the type's family (found
    by a probe)."""
    with pytest.raises(_Invalid, match="is not JSON"):
        validator_for(plan_output(output_type)).validate(raw)
    with pytest.raises(_Invalid, match="is not JSON"):
        validator_for(plan_output({"type": "array"} if raw[0] == "[" else {})).validate(raw)


@pytest.mark.parametrize(
    ("output_type", "raw", "key"),
    [
        (Person, '{"name": "A", "age": -1, "age": 3}', "age"),
        (dict[str, int], '{"a": 1, "a": 2}', "a"),
        (list[Person], '[{"name": "A", "age": 1}, {"name": "B", "name": "C", "age": 2}]', "name"),
        (
            {"type": "object", "properties": {"ok": {"type": "integer"}}},
            '{"ok": true, "ok": 5}',
            "ok",
        ),
        ({"type": "array", "items": {"type": "object"}}, '[{}, {"x": {"k": 1, "k": 1}}]', "k"),
    ],
    ids=repr,
)
def test_a_key_written_twice_in_one_object_is_refused(output_type: Any, raw: str, key: str) -> None:
    """Python's json and Pydantic keep the last value, so the first was never checked
    (``-1`` for an age ``ge=0``, ``true`` for an integer); llama.cpp's grammar for
    ``additionalProperties`` lets a model write a key again (found by a probe). The error
    names the repeated key, not another one of its object (found by mutation testing)."""
    validator = validator_for(plan_output(output_type))
    with pytest.raises(_Invalid, match=f"writes the key '{key}' twice"):
        validator.validate(raw)


@pytest.mark.parametrize(
    ("output_type", "raw", "where"),
    [
        (Person, '{"name": "A", "age": -1, "age": 3}', "(root)"),
        (list[Person], '[{"name": "A", "age": 1}, {"name": "B", "name": "C", "age": 2}]', "1"),
        ({"type": "array", "items": {"type": "object"}}, '[{}, {"x": {"k": 1, "k": 1}}]', "1.x"),
        (dict[str, dict[str, int]], '{"pet": {"lives": 1, "lives": 2}}', "pet"),
        # After a list: its reading went round for good, and parse hung (found by a probe)
        ({"type": "object"}, '{"xs": [1], "d": {"a": 1, "a": 2}}', "d"),
        ({"type": "array"}, '[[1, [2]], {"a": 1, "a": 2}]', "1"),
    ],
    ids=repr,
)
def test_a_key_written_twice_is_named_at_its_object(output_type: Any, raw: str, where: str) -> None:
    """Found by a probe: always "(root)", where other errors give the path."""
    with pytest.raises(_Invalid) as caught:
        validator_for(plan_output(output_type)).validate(raw)
    assert caught.value.errors[0].startswith(f"{where}: the object writes the key")


def test_a_key_written_twice_in_text_too_deep_to_read_again_is_at_the_root() -> None:
    """Where the repeat is is found by reading the text again; text nested too deeply for
    that is named "(root)", not "None" (found by mutation testing)."""
    raw = '{"x": {"k": 1, "k": 2}, "y": ' + "[" * 3000 + "]" * 3000 + "}"
    with pytest.raises(_Invalid) as caught:
        validator_for(plan_output({"type": "object"})).validate(raw)
    assert caught.value.errors[0].startswith("(root): the object writes the key 'k' twice")


@pytest.mark.parametrize("number", ["NaN", "-Infinity", "1e999"])
def test_a_number_that_is_not_json_is_refused_in_a_key_the_type_ignores(number: str) -> None:
    """Found by a probe: a Pydantic model's extra key (ignored) let NaN through, which the
    same reply for a schema dict refused."""

    class Inner(pydantic.BaseModel):
        a: int

    for output_type in (Inner, {"type": "object", "properties": {"a": {"type": "integer"}}}):
        validator = validator_for(plan_output(output_type))
        with pytest.raises(_Invalid, match=r"not JSON|not finite"):
            validator.validate(f'{{"a": 1, "x": {{"y": {number}}}}}')


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"name": "x\\ud800y", "age": 1}', "lone surrogate"),
        ('{"name": "x", "age": 1' + "0" * 5000 + "}", "a number too long to read"),
        ('{"name": ' + "[" * 3000 + "]" * 3000 + ', "age": 1}', "nested too deeply to be read"),
    ],
)
def test_a_reply_python_cannot_read_is_named_alike_whatever_the_type(raw: str, says: str) -> None:
    """Found by a probe: pydantic-core's own words ("unexpected end of hex escape" for a
    whole escape) where the schema path names the cause."""
    schema = {"type": "object", "properties": {"name": {}, "age": {"type": "integer"}}}
    for output_type in (Person, schema):
        with pytest.raises(_Invalid) as caught:
            validator_for(plan_output(output_type)).validate(raw)
        assert says in caught.value.errors[0], (output_type, caught.value.errors)
        # Found by a probe: the schema's told the reader to call sys.set_int_max_str_digits.
        assert "sys." not in caught.value.errors[0]


@pytest.mark.parametrize("output_type", [Regex("."), CFG("start: /./s")])
def test_a_lone_surrogate_in_grammar_mode_is_named_as_such(output_type: Any) -> None:
    """Found by a probe: "does not match the regular expression '.'" for a reply that
    was one lone surrogate, which the other types name as the cause; a CFG let it through."""
    with pytest.raises(_Invalid) as caught:
        validator_for(plan_output(output_type, grammar=True)).validate("\ud800")
    (error,) = caught.value.errors
    assert error.startswith("(root): the reply holds a lone surrogate (half of a UTF-16 pair)")


@pytest.mark.parametrize(
    ("output_type", "raw"),
    [
        (dict[str, str], '{"a": "{\\"a\\": 1, \\"a\\": 2}"}'),  # a string holding them
        (Person, '{"name": "{a, a}", "age": 1}'),
        ({"type": "object"}, '{"a": {"b": 1}, "b": {"a": 1}}'),  # the same key in two objects
    ],
    ids=repr,
)
def test_a_key_in_two_objects_or_inside_a_string_is_not_repeated(
    output_type: Any, raw: str
) -> None:
    validator_for(plan_output(output_type)).validate(raw)


def test_nan_inside_a_string_is_text() -> None:
    assert validator_for(plan_output(str)).validate('"NaN Infinity"') == "NaN Infinity"
    assert validator_for(plan_output(dict[str, str])).validate('{"a": "NaN"}') == {"a": "NaN"}


def test_self_reference_never_ends_in_recursion_error() -> None:
    with pytest.raises(_Invalid, match="too deeply"):
        Validator(None, schema={"$ref": "#"}).validate('"x"')
    deep = "[" * 50_000 + "]" * 50_000
    with pytest.raises(_Invalid, match="too deeply"):
        Validator(None, schema={"type": "array"}).validate(deep)


def test_dict_schemas_are_validated_against_the_full_schema() -> None:
    """What is sent is normalised for the engine; parse validates the user's schema."""
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "string",
        "pattern": "b",
    }
    plan = plan_output(schema)
    assert plan.schema is not None
    assert "$schema" not in plan.schema
    assert plan.full_schema == schema
    assert validator_for(plan).schema == schema
    assert validator_for(plan).validate('"abc"') == "abc"
    with pytest.raises(_Invalid):
        validator_for(plan).validate('"xyz"')


def test_a_bare_regex_is_validated_as_written() -> None:
    from outlines.types import Regex

    validator = validator_for(plan_output(Regex("(?i)ab[0-9]"), grammar=True))
    assert validator.validate("aB7") == "aB7"
    with pytest.raises(_Invalid, match="does not match"):
        validator.validate("abc")


def test_a_grammar_parser_is_built_once_per_grammar() -> None:
    """Each ``parse`` call asks for its validator: the Earley parser is not rebuilt."""
    from outlines.types import CFG

    grammar = 'start: "yes" | "no" | NUMBER\n%import common.NUMBER'
    first = validator_for(plan_output(CFG(grammar), grammar=True))
    again = validator_for(plan_output(CFG(grammar), grammar=True))
    assert first.grammar is not None
    assert first.grammar is again.grammar
    assert again.grammar("12") == []
    assert "not in the grammar" in again.grammar("maybe")[0]


def test_a_grammar_is_checked_with_the_imports_it_was_sent_with() -> None:
    """``%import common.X`` is Outlines' common.lark in the GBNF, so in the check too.

    Lark's own file has no UNESCAPED_STRING (the check raised lark's GrammarError), and
    its ESCAPED_STRING lets through a raw tab that the constrained one excludes.
    """
    from outlines.types import CFG

    only_outlines = validator_for(
        plan_output(CFG("%import common.UNESCAPED_STRING\nstart: UNESCAPED_STRING"), grammar=True)
    )
    assert only_outlines.validate('"a b"') == '"a b"'
    escaped = validator_for(
        plan_output(CFG("%import common.ESCAPED_STRING\nstart: ESCAPED_STRING"), grammar=True)
    )
    assert escaped.validate('"a\\"b"') == '"a\\"b"'
    with pytest.raises(_Invalid, match="not in the grammar"):
        escaped.validate('"a\tb"')


def test_iri_is_checked_only_in_the_drafts_that_define_it() -> None:
    """Draft 4 and 6 have no ``iri`` format: an unknown format is an annotation there."""
    for draft in ("draft-04", "draft-06"):
        schema = {"$schema": f"http://json-schema.org/{draft}/schema#", "format": "iri"}
        assert json_validator(schema, formats=True).is_valid("no scheme")
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "format": "iri"}
    assert not json_validator(schema, formats=True).is_valid("no scheme")


def test_the_package_does_not_load_rfc3987_syntax() -> None:
    """jsonschema imports rfc3987-syntax, if installed, at its own import (1.2 s of parser
    building, for every program that imports jsonschema): the package must not bring it."""
    code = (
        "import sys; from outlines_lmstudio import from_lmstudio; "
        "from outlines_lmstudio._typed import json_validator; "
        "json_validator({'format': 'iri'}, formats=True).is_valid('x'); "
        "print(*sorted(m for m in sys.modules if m.startswith('rfc3987')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = out.stdout.split()
    assert "rfc3987_syntax2" in loaded  # iri was checked...
    assert "rfc3987_syntax" not in loaded  # ...without the slow one


@pytest.mark.parametrize(
    ("pattern", "raw", "stop", "taken"),
    [
        (r"\d+", "4", "2", False),  # "42" was on its way: cut inside the value
        (r"\d+", "4", "x", True),
        (r"\d{1}", "4", "2", True),  # nothing can follow: whole
        (r"[a-z]+!", "ab!", "!", True),
    ],
)
def test_a_grammar_reply_cut_by_a_stop_string_inside_it_is_not_taken(
    pattern: str, raw: str, stop: str, taken: bool
) -> None:
    from outlines.types import Regex

    validator = validator_for(plan_output(Regex(pattern), grammar=True))
    if taken:
        assert check_reply(validator, raw, "stopStringFound", 1, False, (stop,))[0]
        return
    # raised at once, with retries left: asking again would get the same cut answer
    with pytest.raises(ParseError, match="a stop string ended it"):
        check_reply(validator, raw, "stopStringFound", 1, False, (stop,))


def test_a_cfg_reply_cut_by_a_stop_string_it_could_hold_is_not_taken() -> None:
    from outlines.types import CFG

    validator = validator_for(plan_output(CFG('?start: "a"+ "b"?'), grammar=True))
    with pytest.raises(ParseError) as info:
        check_reply(validator, "a", "stopStringFound", 1, False, ("b",))
    assert "the stop string 'b'" in info.value.errors[0]
    assert check_reply(validator, "a", "stopStringFound", 1, False, ("!",))[0]


class _Extra(pydantic.BaseModel, extra="allow"):
    name: str


class _Point(typing.NamedTuple):
    x: float
    y: float


class _Pair(pydantic.BaseModel):
    pair: tuple[int, float]
    tags: frozenset[float] = frozenset()


@pytest.mark.parametrize(
    ("output_type", "raw", "where"),
    [
        (_Reading, '{"celsius": 1e400}', "celsius"),
        (_Point, "[1.5, -1e999]", "1"),
        (list[_Reading], '[{"celsius": 1}, {"celsius": 1e999}]', "1.celsius"),
        (tuple[float, ...], "[1, 2e308]", "1"),
        (dict[str, Any], '{"a": [{"b": 1e400}]}', "a.0.b"),
        (_Extra, '{"name": "x", "y": 1e400}', "y"),
        (_Pair, '{"pair": [1, 1' + "0" * 309 + "]}", "pair.1"),
        (_Pair, '{"pair": [1, 2], "tags": [1e400]}', "tags.0"),
        # Pydantic's lax mode reads "-inf" as a float: a type that asks for lax mode
        (list[Annotated[float, pydantic.Field(strict=False)] | None], '[null, "-inf"]', "1"),
        (float, "1e400", "(root)"),
        # 210 digits or more and a two-digit exponent (found by a probe: taken as infinity)
        (_Reading, '{"celsius": 1' + "0" * 250 + "e60}", "celsius"),
        (dict[str, Any], '{"x": 1' + "0" * 240 + ".5e70}", "x"),
        ({"type": "array", "items": {"type": "number"}}, "[9" + "9" * 209 + "e99]", "0"),
    ],
)
def test_a_non_finite_number_is_found_wherever_the_value_holds_it(
    output_type: Any, raw: str, where: str
) -> None:
    """Numbers too large for a float are read as infinity, in any container Pydantic
    builds; the error names where."""
    with pytest.raises(_Invalid, match="not finite") as info:
        validator_for(plan_output(output_type)).validate(raw)
    assert info.value.errors[0].startswith(f"{where}: ")


class _Event(pydantic.BaseModel):
    at: typing.Annotated[
        datetime.datetime, pydantic.WithJsonSchema({"type": "integer", "minimum": 0})
    ]
    qty: typing.Annotated[int, pydantic.WithJsonSchema({"type": "string", "pattern": "^[0-9]+$"})]


class _Code(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(coerce_numbers_to_str=True)
    code: str


@pytest.mark.parametrize(
    ("output_type", "raw", "expected"),
    [
        (_Event, '{"at": 751, "qty": "3067"}', {"qty": 3067}),
        (_Code, '{"code": 1234}', {"code": "1234"}),
    ],
)
def test_a_type_that_takes_another_form_by_its_own_choice_is_read_laxly(
    output_type: type[pydantic.BaseModel], raw: str, expected: dict[str, object]
) -> None:
    """A ``WithJsonSchema`` asking the engines for epoch seconds or a digit string, and
    ``coerce_numbers_to_str``: the engines wrote what was asked, and strict validation
    refused every reply (found by a probe)."""
    value = validator_for(plan_output(output_type)).validate(raw)
    assert isinstance(value, output_type)
    assert value.model_dump(include=set(expected)) == expected


class _Described(pydantic.BaseModel):
    n: typing.Annotated[int, pydantic.WithJsonSchema({"type": "integer", "description": "n"})]
    count: int


def test_a_with_json_schema_that_only_describes_keeps_the_type_strict() -> None:
    """Any ``WithJsonSchema`` made the whole type lax: ``"4"`` for ``count: int`` was taken
    (found by a review of the change that made ``_Event`` lax)."""
    validator = validator_for(plan_output(_Described))
    with pytest.raises(ParseError, match="count: Input should be a valid integer"):
        check_reply(validator, '{"n": 3, "count": "4"}', "eosFound", 1, True)


class _Account(pydantic.BaseModel):
    password: pydantic.SecretStr
    key: pydantic.SecretBytes
    age: int
    admin: bool


class _LaxSecret(pydantic.BaseModel):
    password: pydantic.SecretStr = pydantic.Field(strict=False)
    age: int


def test_a_secret_field_keeps_the_type_strict() -> None:
    """Found by a probe: ``SecretStr`` holds Pydantic's own ``strict: False`` string in the
    lax branch strict mode never runs, and it made the whole model lax ("3" for an int)."""
    validator = validator_for(plan_output(_Account))
    raw = '{"password": "pw", "key": "k", "age": "3", "admin": "yes"}'
    with pytest.raises(ParseError) as refused:
        check_reply(validator, raw, "eosFound", 1, True)
    assert refused.value.errors == [
        "age: Input should be a valid integer",
        "admin: Input should be a valid boolean",
    ]
    value = validator.validate('{"password": "pw", "key": "k", "age": 3, "admin": true}')
    assert value.password.get_secret_value() == "pw"
    # Asked for by the user, on the field: lax, as any Field(strict=False)
    assert validator_for(plan_output(_LaxSecret)).validate('{"password": "p", "age": "4"}').age == 4


class _Wrapped(pydantic.BaseModel):
    qty: typing.Annotated[
        typing.Optional[int],  # the nullable node wraps the int
        pydantic.WithJsonSchema({"type": "string", "pattern": "^[0-9]+$"}),
    ]


class _Nullable(pydantic.BaseModel):
    n: typing.Annotated[
        typing.Optional[int],
        pydantic.WithJsonSchema({"type": ["integer", "null"]}),
    ]
    flag: bool


def test_another_form_is_seen_through_wrappers_and_a_description_is_not_one() -> None:
    """A review found a wrapped ``int`` asked for as a string read strictly again, and an
    ``Optional[int]`` described as ``["integer", "null"]`` made the type lax."""
    assert validator_for(plan_output(_Wrapped)).validate('{"qty": "42"}') == _Wrapped(qty=42)
    with pytest.raises(ParseError, match="flag: Input should be a valid boolean"):
        check_reply(
            validator_for(plan_output(_Nullable)), '{"n": 1, "flag": "yes"}', "eosFound", 1, True
        )


def test_an_abstract_class_a_validator_passes_a_reply_to_is_named() -> None:
    """Found by a review: a validator of the user's that reads a field first (so the check
    before sending leaves the field to it) passed the value on to an abstract class, and
    ``parse`` raised Pydantic's bare ``TypeError``. A ``TypeError`` of the user's own code
    is left as it is."""
    import abc

    from outlines_lmstudio.errors import UnsupportedOutputTypeError

    @dataclasses.dataclass
    class Shape(abc.ABC):
        x: int

        @abc.abstractmethod
        def area(self) -> float: ...

    class Drawing(pydantic.BaseModel):
        shape: Annotated[Shape, pydantic.BeforeValidator(lambda v: v)]

    validator = validator_for(plan_output(Drawing))
    with pytest.raises(UnsupportedOutputTypeError, match="passed it on to an abstract class"):
        check_reply(validator, '{"shape": {"x": 1}}', "eosFound", 1, False)

    def mine(value: object) -> object:
        raise TypeError("the user's own")

    class Own(pydantic.BaseModel):
        x: Annotated[int, pydantic.BeforeValidator(mine)]

    with pytest.raises(TypeError, match="the user's own"):
        check_reply(validator_for(plan_output(Own)), '{"x": 1}', "eosFound", 1, False)
