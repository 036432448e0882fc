r"""The llama.cpp engine converts a string ``pattern`` as LM Studio's C++ converter does.

llama-cpp-python's Python port kept the backslash of ``\.``, ``\$`` and ``\^`` (llama.cpp's
grammar parser refused ``"\."``: "unknown escape"), copied ``\d``, ``\w``, ``\/`` or an escape
in a class into the grammar (refused too), asserted on ``(?:``, hung on a stray ``]`` and
wrote ``^a|b$`` with the alternation outside the quotes. The C++ converter reads the first
as the characters, keeps GBNF's own escapes, and accepts any string (a warning) for what it
cannot translate; it fails only for what is not a regular expression. Each grammar is parsed
and matched by llama.cpp's own grammar code; with ``LLAMA_JSON_SCHEMA_TO_GRAMMAR`` set, the
pattern's rules are also compared with the C++ build's.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import TYPE_CHECKING, Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outlines_lmstudio._output import plan_output
from outlines_lmstudio.testing._llama import json_schema_grammar
from tests.cpp_converter import CPP_CONVERTER, run_cpp_converter

from .conftest import LLAMA_MISSING

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness

# Every test runs llama.cpp's converter (found by a probe: from an sdist without the
# grammar-tests extra they failed on its ImportError, where the other grammar tests skip).
pytestmark = pytest.mark.skipif(
    LLAMA_MISSING, reason="json_schema_grammar runs llama.cpp's converter (grammar-tests extra)"
)

ANY = "any string"
"""The C++ converter's warning: the pattern is not supported, any string is accepted."""

# (pattern, the root rule's GBNF between the quotes or ANY, JSON strings taken, refused)
CASES: list[tuple[str, str, list[str], list[str]]] = [
    (r"^v[0-9]+\.[0-9]+$", '"v" [0-9]+ "." [0-9]+', ['"v1.20"'], ['"v1x2"', '"v1\\\\.2"']),
    (r"^[a-z]+\.com$", '[a-z]+ ".com"', ['"ab.com"'], ['"abxcom"']),
    (r"^\$[0-9]+$", '"$" [0-9]+', ['"$12"'], ['"12"']),
    (r"^\^x$", '"^x"', ['"^x"'], ['"x"']),
    (r"^x\*\+\?\(\)\{\}\|\[\]$", '"x*+?(){}|[]"', ['"x*+?(){}|[]"'], ['"x"']),
    (r"^\d{3}$", ANY, ['"12"', '"abcd"'], []),
    (r"^\w+$", ANY, ['"a b"'], []),
    (r"^\s$", ANY, ['"xy"'], []),
    (r"^a\/b$", ANY, ['"a/b"', '"c"'], []),
    (r"^a\b$", ANY, ['"c"'], []),
    (r"^\u00e$", ANY, ['"c"'], []),  # too few hex digits
    (r"^[\.\-]$", ANY, ['"."', '"ab"'], []),  # an escape in a class: only GBNF's own
    (r"^[\d]$", ANY, ['"a"'], []),
    (r"^a\-b$", '"a\\-b"', ['"a-b"'], ['"ab"']),
    (r"^[\-a]$", "[\\-a]", ['"-"', '"a"'], ['"b"']),
    # The pattern is matched on the JSON text, not on the value, by both converters: a
    # backslash is written as one (then read as an escape by a JSON parser).
    (r"^a\\b$", '"a\\\\b"', ['"a\\b"'], ['"ab"']),
    (r"^[\\]$", "[\\\\]", ['"\\"'], ['"a"']),
    (r"^\u00e9$", '"\\u00e9"', ['"é"'], ['"e"']),
    (r"^[\u00e9]$", "[\\u00e9]", ['"é"'], ['"e"']),
    (r"^\x41$", '"\\x41"', ['"A"'], ['"B"']),
    (r"^\U0001F600$", '"\\U0001F600"', ['"😀"'], ['"a"']),
    (r"^a\tb$", '"a\\tb"', ['"a\tb"'], ['"ab"']),
    (r"^a|b$", '"a" | "b"', ['"a"', '"b"'], ['"ab"']),
    (r"^(?:ab)+$", '("ab")+', ['"abab"'], ['"a"']),
    (r"^(?=a)b$", ANY, ['"c"'], []),
    (r"^a^b$", ANY, ['"c"'], []),
    (r"^a]$", ANY, ['"c"'], []),  # the port looped for ever on a stray "]"
    (r"^a{x}$", ANY, ['"c"'], []),
    (r"^a{1,2,3}$", ANY, ['"c"'], []),
    (r"^a{2$", ANY, ['"c"'], []),
    # std::stoi skips C's whitespace only: a Unicode space before a count is no number
    # (Python's \s took U+00A0 and U+001C; found by a differential fuzz)
    ("^a{\u00a02}$", ANY, ['"aa"', '"zzz"'], []),
    ("^a{\x1c2}$", ANY, ['"aa"', '"zzz"'], []),
    ("^(a{\u00a02}$", ANY, ['"aa"'], []),  # given up on before the parentheses count
    ("^a{ \t2,\n3}$", '"a"{2,3}', ['"aa"', '"aaa"'], ['"a"']),
]

# (pattern, the C++ converter's reason)
FAILS: list[tuple[str, str]] = [
    ("^a\\$", "trailing backslash"),
    ("^(ab$", "unbalanced parentheses"),
    ("^ab)$", "unbalanced parentheses"),
    ("^[ab$", "unterminated character class"),
    ("^*a$", "nothing to repeat"),
    ("^{2}a$", "nothing to repeat"),
]

_RULE = re.compile(r"^(\S+) ::= (.*)$", re.MULTILINE)


def _pattern_rules(gbnf: str) -> dict[str, str]:
    """The rules a pattern writes (``root``, ``root-1``..., ``dot``), without ``space``.

    The engine ends a string's rule with ``space``, as llama-cpp-python's port writes
    every value; the C++ build does not, and that is the one difference compared.
    """
    rules = dict(_RULE.findall(gbnf))
    kept = {k: v for k, v in rules.items() if k == "dot" or re.fullmatch(r"root(-\d+)?", k)}
    kept["root"] = kept["root"].removesuffix(" space")
    return kept


def _cpp(schema: dict[str, Any]) -> tuple[str, str]:
    """The C++ build's answer (``OK <grammar>`` or ``ERR <why>``) and its warnings."""
    done = run_cpp_converter(schema)
    return done.stdout.rstrip("\n").replace("\x01", "\n"), done.stderr


@pytest.mark.parametrize(("pattern", "inside", "taken", "refused"), CASES)
def test_a_pattern_is_converted_as_the_cpp_converter_converts_it(
    llama: LlamaGrammarHarness, pattern: str, inside: str, taken: list[str], refused: list[str]
) -> None:
    schema = {"type": "string", "pattern": pattern}
    gbnf = json_schema_grammar(schema)
    root = _pattern_rules(gbnf)["root"]
    assert root == ("string" if inside == ANY else f'"\\"" ({inside}) "\\""'), gbnf
    llama.assert_language(gbnf, taken, refused)
    if CPP_CONVERTER:
        answer, warnings = _cpp(schema)
        assert answer.startswith("OK "), answer
        assert _pattern_rules(answer[3:]) == _pattern_rules(gbnf)
        assert ("is not supported" in warnings) == (inside == ANY), warnings


def test_repeated_groups_and_dots_are_rules_named_as_the_cpp_converter_names_them(
    llama: LlamaGrammarHarness,
) -> None:
    schema = {"type": "string", "pattern": r"^(ab){2,3}\..{2}$"}
    gbnf = json_schema_grammar(schema)
    assert _pattern_rules(gbnf) == {
        "root": '"\\"" (root-1{2,3} "." root-2{2,2}) "\\""',
        "root-1": '("ab")',
        "root-2": "dot",
        "dot": "[^\\x0A\\x0D]",
    }
    llama.assert_language(gbnf, ['"abab.xy"'], ['"ab.xy"', '"abab.x"'])
    if CPP_CONVERTER:
        answer, _ = _cpp(schema)
        assert _pattern_rules(answer[3:]) == _pattern_rules(gbnf)


@pytest.mark.parametrize(("pattern", "reason"), FAILS)
def test_what_is_not_a_regular_expression_fails_with_the_cpp_converters_reason(
    pattern: str, reason: str
) -> None:
    schema = {"type": "string", "pattern": pattern}
    message = f"JSON schema conversion failed: Invalid pattern {pattern}: {reason}"
    with pytest.raises(ValueError, match=re.escape(message)):
        json_schema_grammar(schema)
    if CPP_CONVERTER:
        assert _cpp(schema)[0] == f"ERR {message}"


def test_a_pattern_given_up_on_leaves_no_rules_behind() -> None:
    # As the C++ converter: the rules written before the unsupported part are taken back.
    gbnf = json_schema_grammar({"type": "string", "pattern": r"^(ab){2}.\d$"})
    assert "root-1" not in gbnf
    assert "dot" not in gbnf


@pytest.mark.parametrize("schema", [True, False, [1], "x", 3])
def test_a_schema_that_is_not_an_object_fails_with_the_cpp_converters_reason(
    schema: Any,
) -> None:
    # The port failed with Python's words: "'bool' object has no attribute 'get'".
    message = "JSON schema conversion failed: JSON schema error at #: schema must be an object"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        json_schema_grammar(schema)
    if CPP_CONVERTER:
        assert _cpp(schema)[0] == f"ERR {message}"


def test_a_boolean_subschema_fails_with_its_place() -> None:
    message = "JSON schema error at #/properties/a: schema must be an object"
    with pytest.raises(ValueError, match=re.escape(message)):
        json_schema_grammar({"type": "object", "properties": {"a": True}})


@pytest.mark.parametrize(
    ("schema", "root"),
    [
        ({"type": "string", "pattern": "", "minLength": 3}, '"\\"" char{3,} "\\""'),
        ({"pattern": "", "maxLength": 2}, '"\\"" char{0,2} "\\""'),
        ({"type": "string", "pattern": ""}, '"\\"" char* "\\""'),
        ({"type": "string", "pattern": "", "format": "date"}, "date-string"),
    ],
)
def test_an_empty_pattern_is_no_pattern(
    llama: LlamaGrammarHarness, schema: dict[str, Any], root: str
) -> None:
    """The C++ converter reads ``"pattern": ""`` as none (its other keywords apply); the
    engine refused it as not anchored (found by a differential fuzz)."""
    gbnf = json_schema_grammar(schema)
    assert _pattern_rules(gbnf)["root"] == root
    llama.check_parses(gbnf)
    if CPP_CONVERTER:
        answer, warnings = _cpp(schema)
        assert _pattern_rules(answer.removeprefix("OK "))["root"] == root
        assert not warnings


@pytest.mark.parametrize(
    ("output_type", "taken", "refused"),
    [
        (datetime.timedelta, ["P1DT2H30M", "-PT0.5S", "P2W"], ["P", "1 day", "P1.5DT1H"]),
        (
            pydantic.HttpUrl,
            ["https://example.com/a?b=1#c", "http://127.0.0.1:8000"],
            ["ftp://a.com", "http://a.123", "http://a.com:65536", "http://a b.com"],
        ),
        (pydantic.AnyUrl, ["wss://a-b.io:443/x"], ["mailto:a@b.c"]),
        (pydantic.FileUrl, ["file:///C:/notes.txt"], ["file://a.com:1/x"]),
    ],
    ids=["timedelta", "HttpUrl", "AnyUrl", "FileUrl"],
)
@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_a_duration_and_a_url_are_patterns_both_engines_constrain(
    llama: LlamaGrammarHarness,
    output_type: Any,
    taken: list[str],
    refused: list[str],
    data: st.DataObject,
) -> None:
    """A ``timedelta`` and the URL types are sent as patterns (no engine constrains
    ``format: duration`` or ``uri``; found by a probe). Each is in the subset both engines
    read: llama.cpp's grammar (the C++ converter with no "any string" warning) and
    outlines-core's regex take what it allows, and only that."""
    from outlines_core.json_schema import build_regex_from_schema

    sent = plan_output(output_type).response_format["jsonSchema"]  # type: ignore[index]
    drawn = data.draw(st.from_regex(sent["pattern"].replace("$", r"\Z"), fullmatch=True))
    texts = [json.dumps(t) for t in (*taken, drawn)]
    gbnf = json_schema_grammar(sent)
    llama.assert_language(gbnf, texts, [json.dumps(t) for t in refused])
    regex = build_regex_from_schema(json.dumps(sent))
    assert all(re.fullmatch(regex, text) for text in texts)
    assert not any(re.fullmatch(regex, json.dumps(text)) for text in refused)
    if CPP_CONVERTER:
        answer, warnings = _cpp(sent)
        assert answer.startswith("OK "), answer
        assert not warnings, warnings
        cpp = answer[3:]
        llama.assert_language(cpp, texts, [json.dumps(t) for t in refused])
