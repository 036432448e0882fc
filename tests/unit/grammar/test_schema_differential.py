"""Differential: every schema we would send, through the engines LM Studio runs.

For each schema (every supported output type, and a few hundred generated ones) we ask
`dialect_schema` per engine. When we accept, the engine must accept what we send:

- llama.cpp (GGUF models): llama-cpp-python 0.3.36's port of llama.cpp's JSON-schema
  converter writes the GBNF, and llama.cpp's own grammar parser (the C library, through
  the vocab-only harness) must parse it;
- outlines-core (MLX models): ``build_regex_from_schema`` writes the regex, and
  outlines-core's ``Index`` must compile it.

When we refuse, the error names the keyword, its JSON pointer and the engine. A schema
accepted by us and rejected by the engine fails the test. Counts are printed (``-s``).
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

from outlines_lmstudio._dialects import ENGINES, Engine, dialect_schema
from outlines_lmstudio._output import plan_output
from outlines_lmstudio._schema_checks import check_json_schema
from outlines_lmstudio._schema_walk import schema_nodes
from outlines_lmstudio.errors import InvalidSchemaError, UnsupportedOutputTypeError
from tests.cpp_converter import CPP_CONVERTER, run_cpp_converter
from tests.unit._schema_corpus import generated_schemas, output_type_corpus

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness

FORMATS: dict[Engine, str] = {"llama.cpp": "gguf", "outlines-core": "safetensors"}
COUNTS: collections.Counter[str] = collections.Counter()


def llama_accepts(llama: LlamaGrammarHarness, schema: dict[str, Any]) -> str | None:
    """Return why llama.cpp refuses the schema, or ``None`` when it takes it."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter asserts, or fails with KeyError...
        return f"converter: {type(exc).__name__}: {exc}"
    try:
        llama.check_parses(gbnf)
    except ValueError as exc:
        return f"grammar parser: {exc}"
    return None


MAX_INDEXED_REGEX = 4000
"""Longer regexes are not compiled whole (Person's 15,726 characters take 13 s): their
patterns are compiled one by one, which is where the regex features a DFA lacks live."""


def outlines_core_accepts(schema: dict[str, Any]) -> str | None:
    """Return why outlines-core refuses the schema, or ``None`` when it takes it."""
    from outlines_core import Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    def compile_regex(regex: str) -> None:
        # One token per character: printable ASCII, and every character of the schema.
        text = json.dumps(schema, ensure_ascii=False)
        chars = sorted({chr(c) for c in range(32, 127)} | set(text))
        Index(regex, Vocabulary(len(chars), {char: [i] for i, char in enumerate(chars)}))

    try:
        regex = build_regex_from_schema(json.dumps(schema), r"[ ]?")
        if len(regex) <= MAX_INDEXED_REGEX:
            compile_regex(regex)
        else:
            for _, node in schema_nodes(schema):
                if isinstance(node, dict) and isinstance(node.get("pattern"), str):
                    piece = {"type": "string", "pattern": node["pattern"]}
                    compile_regex(build_regex_from_schema(json.dumps(piece), r"[ ]?"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def cpp_accepts(llama: LlamaGrammarHarness, schema: dict[str, Any]) -> str | None:
    """Return why llama.cpp's C++ converter refuses or weakens the schema, or ``None``."""
    done = run_cpp_converter(schema)
    if not done.stdout.startswith("OK "):
        return done.stdout.strip()
    if done.stderr.strip():  # e.g. "pattern ... is not supported ..., accepting any string"
        return done.stderr.strip()
    try:
        llama.check_parses(done.stdout[3:].rstrip("\n").replace("\x01", "\n"))
    except ValueError as exc:
        return f"grammar parser: {exc}"
    return None


def engine_refusal(
    llama: LlamaGrammarHarness, engine: Engine, schema: dict[str, Any]
) -> str | None:
    if engine == "llama.cpp":
        why = llama_accepts(llama, schema)
        if why is None and CPP_CONVERTER:
            why = cpp_accepts(llama, schema)
        return why
    return outlines_core_accepts(schema)


REFUSAL = re.compile(
    r"engine (cannot constrain|does not enforce) the JSON-schema keyword '[^']+' at /"
)


def check_schema_everywhere(llama: LlamaGrammarHarness, label: str, full: dict[str, Any]) -> None:
    """Our decision per engine, and the engine's verdict on what we would send."""
    for engine in ENGINES:
        try:
            sent = dialect_schema(full, FORMATS[engine])
        except InvalidSchemaError as exc:  # a part accepts no value: no engine could help
            if "accepts no value" not in str(exc):
                pytest.fail(f"an invalid schema must say which part accepts no value: {exc}")
            COUNTS[f"{engine}: refused by us, a part accepts no value"] += 1
            continue
        except UnsupportedOutputTypeError as exc:
            message = str(exc)
            refused_well = REFUSAL.search(message) and engine in message
            ways_out = "grammar mode" in message and "retries" in message
            if not (refused_well and ways_out):
                pytest.fail(f"a refusal must name the keyword, pointer, engine, ways out: {exc}")
            COUNTS[f"{engine}: refused by us"] += 1
            raw = engine_refusal(llama, engine, full) if not full.get("$schema") else "n/a"
            COUNTS[f"{engine}: refused by us, raw schema accepted by the engine"] += raw is None
            continue
        why = engine_refusal(llama, engine, sent)
        assert why is None, f"{label}: we accept it, {engine} refuses it: {why}\n{sent}"
        COUNTS[f"{engine}: accepted"] += 1
        COUNTS[f"{engine}: accepted after a rewrite"] += sent != full


@pytest.mark.parametrize(("label", "output_type"), list(output_type_corpus().items()))
def test_every_output_type_is_taken_by_both_engines_or_refused(
    llama: LlamaGrammarHarness, label: str, output_type: Any
) -> None:
    plan = plan_output(output_type)
    assert plan.full_schema is not None
    check_schema_everywhere(llama, label, plan.full_schema)
    # What plan_output sends suits both engines.
    for engine in ENGINES:
        assert plan.schema is not None
        why = engine_refusal(llama, engine, plan.schema)
        assert why is None, f"{label}: {engine} refuses the planned schema: {why}"


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(schema=generated_schemas())
def test_generated_schemas_are_taken_by_the_engine_or_refused(
    llama: LlamaGrammarHarness, schema: dict[str, Any]
) -> None:
    try:
        full = check_json_schema(schema)
    except InvalidSchemaError:
        COUNTS["generated: invalid JSON schema (refused before the dialect check)"] += 1
        return
    COUNTS["generated: valid"] += 1
    check_schema_everywhere(llama, json.dumps(schema), full)


@pytest.fixture(scope="module", autouse=True)
def _print_counts() -> Iterator[None]:
    """Print the differential counts after the module's tests (run with -s).

    A fixture, not a test: a test that only printed could not fail (found by an audit).
    """
    yield
    for key in sorted(COUNTS):
        print(f"{key}: {COUNTS[key]}")


def test_llama_cpp_repeats_at_most_2000_times(llama: LlamaGrammarHarness) -> None:
    """The limit `_dialects` refuses above, in llama.cpp's own grammar parser."""
    from outlines_lmstudio._dialects import MAX_REPETITION

    llama.check_parses(f'root ::= "a"{{{MAX_REPETITION},}}')
    with pytest.raises(ValueError, match="rejected the grammar"):
        llama.check_parses(f'root ::= "a"{{{MAX_REPETITION + 1},}}')


def test_validator_and_engines_agree_on_a_pattern(llama: LlamaGrammarHarness) -> None:
    """An unanchored Pydantic pattern: search semantics, in both engines."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    from outlines_core.json_schema import build_regex_from_schema

    from tests.unit._schema_corpus import Code

    sent = plan_output(Code).schema
    assert sent is not None
    gbnf = json_schema_to_gbnf(json.dumps(sent))
    regex = build_regex_from_schema(json.dumps(sent), r"[ ]?")
    validator = jsonschema.Draft202012Validator(Code.model_json_schema())
    for code in ["ABC-12", "xxABC-1yy", "AB-1", "ABC-", "abc-12", "ABC-12 and more"]:
        text = json.dumps({"code": code}, separators=(",", ":"))
        valid = validator.is_valid({"code": code})
        assert llama.matches(gbnf, text) is valid, code
        assert (re.fullmatch(regex, text) is not None) is valid, code


@pytest.mark.parametrize(
    ("pattern", "valid", "invalid"),
    [
        ('^"+$', ['""', '"'], ["", 'a"']),
        (r"^a\\+$", ["a\\", "a\\\\"], ["a\\a\\", "a"]),
        (r"^x\n{2}$", ["x\n\n"], ["x\nx\n", "x\n"]),
    ],
)
def test_a_quantified_json_escape_in_a_pattern(
    llama: LlamaGrammarHarness, pattern: str, valid: list[str], invalid: list[str]
) -> None:
    """A quantifier after a character JSON escapes repeats that character, in both engines.

    llama.cpp's converter reads ``a\\\\+`` as the literal ``a\\`` repeated: the engine
    form must group the escape.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    from outlines_core.json_schema import build_regex_from_schema

    schema = {"type": "string", "pattern": pattern}
    gbnf = json_schema_to_gbnf(json.dumps(dialect_schema(schema, "gguf")))
    regex = build_regex_from_schema(json.dumps(dialect_schema(schema, "mlx")), r"[ ]?")
    for value in valid + invalid:
        expected = value in valid
        assert (re.search(pattern, value) is not None) is expected, value
        assert llama.matches(gbnf, json.dumps(value)) is expected, ("llama.cpp", value)
        assert (re.fullmatch(regex, json.dumps(value)) is not None) is expected, value
