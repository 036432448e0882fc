"""Output types -> LM Studio structured settings (pure, no I/O).

`plan_output` turns an Outlines output type into an `OutputPlan`: the
``response_format`` sent to LM Studio (always the explicit
``{"type": "json", "jsonSchema": ...}`` form, so unions and ``$ref`` roots
survive the SDK) and how the returned text is turned into what Outlines'
own models return for that type.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import enum
import fractions
import functools
import inspect
import json
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Literal, cast

import jsonschema
import msgspec
import pydantic
import pydantic_core
import typing_extensions
from outlines.types import CFG, JsonSchema, Regex
from outlines.types.dsl import Choice, Term
from typing_inspection import typing_objects

from ._config import describe, named, shortened
from ._foreign import abstract_methods, foreign_class_problem
from ._json_keys import RepeatedKey, repeated_at, without_repeats
from ._late_names import LateName, kept, late_names
from ._later_grammar import later_requested
from ._schema_walk import MAX_SCHEMA_DEPTH, core_nodes, ref_target, schema_nodes
from ._simple import (
    FullMatchTerms,
    TermWithoutRegex,
    is_simple_type,
    is_str_key,
    literal_values,
    pydantic_schema,
    render_simple,
    simple_schema,
)
from .errors import InvalidSchemaError, UnsupportedOutputTypeError

__all__ = [
    "portable_typeddicts",
    "meta_schema_error",
    "REFERENCE_KEYWORDS",
    "OutputPlan",
    "argument_order",
    "check_json_schema",
    "identity",
    "output_type_name",
    "plan_output",
    "unaliased",
]

Kind = Literal["text", "json", "simple", "grammar"]

_SUPPORTED = (
    "None (plain text); a Pydantic model, TypedDict, dataclass, JSON schema (dict or str), "
    "outlines.types.JsonSchema or genson SchemaBuilder; int, float, bool, str, Literal, Enum, "
    "outlines.types.Choice, datetime.date/time/datetime; list/tuple/dict/Optional/Union "
    "of these; Annotated of these with Pydantic constraints (Field(ge=1, le=5)); and other "
    "types Pydantic writes a JSON schema for (uuid.UUID, Decimal, a NamedTuple...)"
)


def identity(text: str) -> str:
    """Return the text as it came: the render of free text and JSON plans."""
    return text


class OutputPlan(msgspec.Struct, frozen=True):
    """How one output type is requested from LM Studio and rendered back.

    Attributes
    ----------
    kind
        ``"text"`` (unconstrained), ``"json"`` (a JSON document), ``"simple"``
        (a scalar constrained through JSON schema) or ``"grammar"`` (GBNF).
    response_format
        The structured setting for the SDK, or ``None`` for plain text.
    output_type
        The output type the plan was made for.
    render
        Turns the model's text into the text Outlines returns for the type.
    full_schema
        The user's whole JSON schema, which ``parse`` validates against (the schema
        sent is its normalised form, see `outlines_lmstudio._dialects`).
    """

    kind: Kind
    response_format: dict[str, Any] | None = None
    output_type: Any = None
    render: Callable[[str], str] = identity
    full_schema: dict[str, Any] | None = None

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema sent, if any."""
        if self.response_format and self.response_format.get("type") == "json":
            schema: dict[str, Any] = self.response_format["jsonSchema"]
            return schema
        return None


REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
"""The keywords jsonschema follows to another schema (none of them is ever fetched)."""


def _too_deep(where: str) -> InvalidSchemaError:
    """Return the error for a schema nested more than `MAX_SCHEMA_DEPTH` levels."""
    if len(where) > 120:  # a path 64 levels long: its end says where
        where = f"at ...{where[-100:]}"
    return InvalidSchemaError(
        f"JSON schema is nested more than {MAX_SCHEMA_DEPTH} levels of JSON deep, each "
        "object and array counted (a subschema under properties is two levels below its "
        f"parent, so about {MAX_SCHEMA_DEPTH // 2} nested objects) ({where}). Flatten it, "
        "or define repeated parts under $defs and refer to them with $ref."
    )


def _walk(node: object, depth: int, path: str) -> None:
    """Refuse remote references, non-finite numbers and absurd nesting before sending."""
    if depth > MAX_SCHEMA_DEPTH:
        raise _too_deep(f"at {path}")
    if isinstance(node, dict):
        for keyword in REFERENCE_KEYWORDS:
            ref = node.get(keyword)
            if isinstance(ref, str) and not ref.startswith("#"):
                # Not "remote": a relative file, or a URL that is the schema's own $id, is
                # no reference the engines can follow either (found by a probe).
                raise InvalidSchemaError(
                    f"JSON schema has the {keyword} {describe(ref, 200)} at {path}, which "
                    "is not a '#...' "
                    "reference: references are never fetched or read from files (nor resolved "
                    "against an $id). Inline the referenced schema under $defs and use "
                    "'#/$defs/...'."
                )
        for key, value in node.items():
            if isinstance(key, str) and not key.isascii():
                _refuse_surrogates(key, f"{path} (a key)")
            _walk(value, depth + 1, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _walk(value, depth + 1, f"{path}/{index}")
    elif isinstance(node, float) and not math.isfinite(node):
        raise InvalidSchemaError(
            f"JSON schema has the number {node!r} at {path}, which JSON cannot represent. "
            "Use finite numbers only (no NaN or infinity)."
        )
    elif isinstance(node, str) and not node.isascii():
        _refuse_surrogates(node, path)


def _lone_surrogate(text: str) -> str | None:
    """Return the first lone surrogate in ``text`` (not valid Unicode), or ``None``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start : exc.end]
    return None


def _refuse_surrogates(text: str, path: str) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate): no engine can match it."""
    if (half := _lone_surrogate(text)) is not None:
        raise InvalidSchemaError(
            f"JSON schema has text at {path} with a lone surrogate ({half!r}), which is not "
            "valid Unicode: LM Studio's engines cannot read it. Use valid Unicode text (a "
            "character, not half of one)."
        )


_BOUNDS = (
    ("minLength", "maxLength"),
    ("minItems", "maxItems"),
    ("minProperties", "maxProperties"),
    ("minContains", "maxContains"),
)
_BOUNDED = ("string", "array", "object", "array")  # what each pair of _BOUNDS binds
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER
_CHECKED = frozenset(
    {*(key for pair in _BOUNDS for key in pair), "minimum", "maximum", "exclusiveMinimum"}
    | {"exclusiveMaximum", "enum", "const", "required"}
)  # a node with none of these (most: {"type": "integer"}) has nothing to contradict


def _number(node: dict[str, Any], key: str) -> float | None:
    value = node.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


_KINDS = frozenset({"anyOf", "oneOf", "allOf", "enum", "const"})
"""Keywords that give an untyped node its kind (`_required_contradiction`)."""


def _required_contradiction(node: dict[str, Any], listed: set[Any] | None) -> str | None:
    """Return why an object node's ``required`` names cannot all be written, or ``None``.

    Found by a probe: such a schema was sent, and every reply broke it (``parse`` failed
    after the request). Only for a node that is an object: typed ``object`` alone, or with
    ``properties`` and no type, which both engines write as an object, unless a keyword
    beside gives its kind (``anyOf``, ``oneOf``, ``allOf``, ``enum``, ``const``: a value of
    another type may satisfy it). Not beside a ``$ref`` (draft 7 ignores the keywords
    there), nor under ``not`` or ``if`` (`_check_structure`), where a schema no value
    satisfies means something (found by reviews).
    """
    required = node.get("required")
    if not isinstance(required, list) or "$ref" in node:
        return None
    untyped_object = listed is None and "properties" in node and node.keys().isdisjoint(_KINDS)
    if listed != {"object"} and not untyped_object:
        return None
    names = {name for name in required if isinstance(name, str)}
    most = _number(node, "maxProperties")
    if most is not None and len(names) > most:
        count = f"{len(names)} propert{'y' if len(names) == 1 else 'ies'}"
        return f"'required' names {count}, more than maxProperties {most!r}"
    if node.get("additionalProperties") is False and "patternProperties" not in node:
        declared = node.get("properties")
        declared = declared if isinstance(declared, Mapping) else {}
        forbidden = sorted(names.difference(declared))
        if forbidden:
            return (
                f"'required' names {named(forbidden)}, which additionalProperties: false "
                "forbids (not in 'properties')"
            )
    return None


def _contradiction(node: dict[str, Any], pointer: str = "") -> str | None:
    """Return why no value can satisfy a schema object's own keywords, or ``None``.

    ``pointer`` is where the node is: under ``not`` or ``if`` its ``required`` names are not
    checked against the other keywords (see `_required_contradiction`).

    The engines fail on such a schema after it is sent (outlines-core cannot build its
    regex), or write a value that breaks it (an empty ``enum``); it is refused first.
    """
    if node.keys().isdisjoint(_CHECKED):
        return None
    # Each bound binds its own kind of value: a "string" node's minimum, a "number" node's
    # minLength are no contradiction (found by a review). A type list's branch is refused
    # as a branch of anyOf is (the engines fail to build it once sent).
    kinds = node.get("type")
    listed = set(kinds) if isinstance(kinds, list) else {kinds} if kinds is not None else None
    for (low, high), kind in zip(_BOUNDS, _BOUNDED, strict=True):
        lo, hi = _number(node, low), _number(node, high)
        bound = listed is None or kind in listed
        if bound and lo is not None and hi is not None and lo > hi:
            return f"{low} {lo!r} is greater than {high} {hi!r}"
    # An integer's meaning when "integer" is the one numeric type.
    numbers = {"integer", "number"} if listed is None else listed & {"integer", "number"}
    integer = numbers == {"integer"}
    lows, highs = _bounds(node, "minimum", "exclusiveMinimum"), _bounds(node, *_HIGH)
    if not numbers:
        lows = highs = []
    for lower in lows:
        for upper in highs:
            if lower.value > upper.value or (
                lower.value == upper.value and (lower.exclusive or upper.exclusive)
            ):
                return f"no number is both {lower.said} and {upper.said}"
    if lows and highs and integer:
        # The least and greatest integers each bound allows: 3 < x < 4 holds no integer.
        first, lower = max(
            (((math.floor(b.value) + 1 if b.exclusive else math.ceil(b.value)), b) for b in lows),
            key=lambda pair: pair[0],
        )
        last, upper = min(
            (((math.ceil(b.value) - 1 if b.exclusive else math.floor(b.value)), b) for b in highs),
            key=lambda pair: pair[0],
        )
        if first > last:
            return f"no integer is both {lower.said} and {upper.said}"
    if lows and highs and (why := _no_multiple(node, lows, highs, integer)):
        return why
    prefix, least = node.get("prefixItems"), _number(node, "minItems")
    if node.get("items") is False and isinstance(prefix, list) and (least or 0) > len(prefix):
        return f"minItems {least!r} is more than the {len(prefix)} items that items: false allows"
    if node.get("enum") == []:
        return "'enum' is empty"
    if (why := _required_contradiction(node, listed)) is not None and not _negated(pointer):
        return why  # where the node is, read only then: most nodes have nothing to refuse
    kinds = node.get("type")
    if isinstance(kinds, str):
        kinds = [kinds]
    if isinstance(kinds, list) and all(isinstance(k, str) for k in kinds):

        def typed(value: object) -> bool:
            for kind in kinds:
                try:
                    if _TYPES.is_type(value, kind):
                        return True
                except jsonschema.exceptions.UndefinedTypeCheck:
                    return True  # a type the meta-schema check reports, not this one
            return False

        if "const" in node and not typed(node["const"]):
            return f"'const' {node['const']!r:.40} is not of type {' or '.join(kinds)}"
        if isinstance(node.get("enum"), list) and not any(typed(v) for v in node["enum"]):
            return f"no 'enum' value is of type {' or '.join(kinds)}"
    return None


_HIGH = ("maximum", "exclusiveMaximum")


class _Bound(typing.NamedTuple):
    """A lower or upper bound of a number, and how the schema writes it (for messages)."""

    value: Any
    exclusive: bool
    said: str


def _bounds(node: dict[str, Any], plain: str, strict: str) -> list[_Bound]:
    """Return a node's lower (or upper) bounds.

    Draft 4's ``exclusiveMinimum: true`` makes ``minimum`` exclusive: read so here, where
    the schema is checked as the user wrote it (the translation comes later; a review
    found a contradiction hidden that way). Its message names both keywords as written.
    """
    value = _number(node, plain)
    if node.get(strict) is True and value is not None:
        return [_Bound(value, True, f"{plain} {value!r} with {strict} true")]
    return [
        _Bound(v, k == strict, f"{k} {v!r}")
        for k in (plain, strict)
        if (v := _number(node, k)) is not None
    ]


def _no_multiple(
    node: dict[str, Any],
    lows: list[_Bound],
    highs: list[_Bound],
    integer: bool,
) -> str | None:
    """Say why no multiple of ``multipleOf`` lies within a node's bounds, or ``None``.

    Exact, with fractions of the numbers as written (``0.1`` is a tenth). An integer's
    multiples of ``p/q`` are the multiples of ``p``. Found by a probe: ``gt=5, le=8,
    multiple_of=5`` was sent, and a value outside the bounds came back.
    """
    from ._search import exact  # the schema modules load with the first schema

    step = _number(node, "multipleOf")
    if step is None or step <= 0:
        return None
    unit = exact(step)
    if integer:
        unit = fractions.Fraction(unit.numerator)

    def first(low: _Bound) -> fractions.Fraction:
        bound = exact(low.value)
        n = math.ceil(bound / unit)
        return (n + 1 if low.exclusive and n * unit == bound else n) * unit

    def last(high: _Bound) -> fractions.Fraction:
        bound = exact(high.value)
        n = math.floor(bound / unit)
        return (n - 1 if high.exclusive and n * unit == bound else n) * unit

    least, low = max(((first(b), b) for b in lows), key=lambda pair: pair[0])
    most, high = min(((last(b), b) for b in highs), key=lambda pair: pair[0])
    if least <= most:
        return None
    kind = "integer" if integer else "number"
    return f"no {kind} that is a multipleOf {step!r} is both {low.said} and {high.said}"


_NAMING = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
"""Keywords whose members are named by the user: a member named ``not`` is no ``not``."""


def _negated(pointer: str) -> bool:
    """Whether the node at ``pointer`` is under a ``not`` or an ``if`` (JSON pointer)."""
    steps = pointer.split("/")
    return any(
        step in ("not", "if") and steps[index - 1] not in _NAMING
        for index, step in enumerate(steps)
        if index
    )


def _check_structure(schema: dict[str, Any]) -> None:
    """Refuse invalid patterns, contradictions, dangling references and in-place loops."""
    # The schema modules load with the first schema, not with the package (import time).
    from ._patterns import PatternError, engine_pattern
    from ._schema_walk import endless_ref, ref_target, schema_nodes, unguarded_ref_cycle

    refers = embedded = False
    dangling: tuple[str, str] | None = None
    for pointer, node in schema_nodes(schema):
        if not isinstance(node, dict):
            continue
        why = _contradiction(node, pointer)
        if why is not None:
            raise InvalidSchemaError(
                f"JSON schema at {pointer or '/'} can never be satisfied: {why}. No model can "
                "write a value for it: fix those keywords."
            )
        refers = refers or any(k in node for k in REFERENCE_KEYWORDS)
        embedded = embedded or (bool(pointer) and "$id" in node)
        ref = node.get("$ref")
        if (
            dangling is None
            and isinstance(ref, str)
            and (ref == "#" or ref.startswith("#/"))
            and ref_target(schema, ref) is None
        ):
            dangling = (pointer or "/", ref)
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            try:
                engine_pattern(pattern)
            except PatternError as exc:
                if exc.reason.startswith("not a valid"):  # with what to write instead
                    where = f"{pointer or '/'}/pattern"
                    raise InvalidSchemaError(_not_a_regex(where, pattern)) from exc
    # A subschema with its own $id resolves its references against itself: leave those to
    # jsonschema's resolver when a reply is validated (a JSON pointer from the root would
    # misjudge them).
    if dangling is not None and not embedded:
        where, ref = dangling
        raise InvalidSchemaError(
            f"JSON schema reference {describe(ref, 200)} at {where} points to nothing "
            "in the schema. "
            "Define the referenced schema there (for example under '$defs') or fix the "
            "reference; references are never fetched."
        )
    loop = unguarded_ref_cycle(schema) if refers else None
    if loop is not None:
        raise InvalidSchemaError(
            f"JSON schema reference {loop!r} leads back to itself without reading any part of "
            "the value (as {'$ref': '#'} does), so no value can ever be checked against it. "
            "Put the recursive reference under 'properties' or 'items'."
        )
    endless = endless_ref(schema) if refers else None
    if endless is not None:
        raise InvalidSchemaError(
            f"JSON schema reference {endless!r} can never end: each of its values must hold "
            "another (a required property, item or key that refers back to it), so no finite "
            "value exists and a model would write until its token limit. Make the recursion "
            "optional: for a Pydantic model, a field such as child: Node | None = None, or a "
            "list or dict that may be empty."
        )


def check_json_schema(schema: object, *, meta: bool = True) -> dict[str, Any]:
    """Check a JSON schema against its meta-schema and our safety rules.

    Parameters
    ----------
    schema
        The schema (a dict).
    meta
        Check it against its meta-schema. ``False`` only for schemas Pydantic generated
        itself with no part its user wrote (`pydantic_schema` tells), which are valid by
        construction (the check is ~90% of the first call's time for a large model); the
        safety rules always run.

    Returns
    -------
    dict
        The same schema.

    Raises
    ------
    InvalidSchemaError
        If it is not an object, breaks its meta-schema, has a remote reference, a
        non-finite number, an invalid pattern or a reference loop, or is nested too deeply.
    """
    if not isinstance(schema, dict):
        raise InvalidSchemaError(
            f"A JSON schema must be a JSON object, got {type(schema).__name__}: {schema!r:.80}."
        )
    declared = schema.get("$schema")
    if declared is not None and not isinstance(declared, str):  # jsonschema would crash on it
        raise InvalidSchemaError(
            f"Invalid JSON schema at /$schema: it must be a string, the URI of a JSON Schema "
            f"draft (or leave it out), got {declared!r:.80}."
        )
    if declared is not None and (
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        is jsonschema.Draft3Validator
    ):
        # Found by a review: it was checked by draft 3's rules and sent untranslated, where
        # its keywords mean nothing (`required: true`, `divisibleBy`): re-asks that could
        # never pass, and a message naming no draft.
        raise InvalidSchemaError(
            "JSON Schema draft 3 (its $schema) is not supported: LM Studio's engines read "
            "draft 2020-12, where draft 3's own keywords (`required: true` on a property, "
            "`divisibleBy`, `extends`, `disallow`) mean nothing. Write it for draft 4 or "
            "later: `required` as a list of names on the object, `multipleOf` for "
            "`divisibleBy`, `allOf` for `extends`."
        )
    _walk(schema, 0, "#")
    if not meta:
        _check_structure(schema)
        return schema
    from ._patterns import ecma_patterns  # the schema modules load with the first schema

    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        with ecma_patterns():
            validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where, message = meta_schema_error(exc)
        if exc.validator == "format" and exc.validator_value == "regex":
            raise InvalidSchemaError(_not_a_regex(where, exc.instance)) from exc
        draft = _draft_name(validator.__name__)
        older = (
            " A schema written for an older draft (Outlines' JsonSchema checks draft-07) "
            'says so: "$schema": "http://json-schema.org/draft-07/schema#".'
            if declared is None
            and jsonschema.Draft7Validator(jsonschema.Draft7Validator.META_SCHEMA).is_valid(schema)
            else ""
        )
        raise InvalidSchemaError(
            f"Invalid JSON schema at {where}: {message}. Fix the schema so it validates "
            f"against the meta-schema of JSON Schema {draft}.{older}"
        ) from exc
    _check_structure(schema)
    _check_patterns(schema)
    return schema


class _UnconstrainablePatternError(UnsupportedOutputTypeError, InvalidSchemaError):
    """A schema ``pattern`` with a lookaround or backreference, which no engine constrains.

    An `UnsupportedOutputTypeError`, as every construct the engines refuse is, and an
    `InvalidSchemaError`, as it was before: `parse` cannot check a reply against it either.
    """


def _check_patterns(schema: dict[str, Any]) -> None:
    """Refuse a pattern replies could not be checked against in linear time (`_search`).

    A ``pattern`` keyword the engines cannot constrain either (a lookaround, a
    backreference) is refused as the engines' other refusals are, naming its pointer
    (issue 17); a ``patternProperties`` key, which no engine reads, as a schema error.
    """
    from ._search import UnsearchablePatternError, check_patterns

    try:
        check_patterns(schema)
    except UnsearchablePatternError as exc:
        why = _engines_refuse(exc.pattern) if str(exc.pointer).endswith("/pattern") else None
        if why is not None:
            raise _UnconstrainablePatternError(
                "Neither of LM Studio's engines (llama.cpp, outlines-core) can constrain the "
                f"JSON-schema keyword 'pattern' at {exc.pointer} (the engines' regex subset "
                f"cannot match it: {why}), and parse could not check a reply against it "
                f"either: {exc.reason}. Write the pattern without it (a lookahead can often "
                "be folded in: ^(?=A)[A-Z]+$ is ^A[A-Z]*$; a backreference spelt out as the "
                "alternatives it stands for), or leave the pattern out of the schema and "
                "check that value yourself after parse."
            ) from exc
        raise InvalidSchemaError(
            f"Invalid JSON schema: the pattern {exc.pattern!r:.200} is refused: {exc.reason}."
        ) from exc


def _engines_refuse(pattern: str) -> str | None:
    """Why the engines' regex subset cannot match ``pattern`` (`_patterns`), or ``None``."""
    from ._patterns import PatternError, engine_pattern

    try:
        engine_pattern(pattern)
    except PatternError as exc:
        return exc.reason
    return None


_TYPE_NAMES = ("array", "boolean", "integer", "null", "number", "object", "string")


def meta_schema_error(exc: jsonschema.SchemaError) -> tuple[str, str]:
    """Return where a schema fails its meta-schema (a JSON pointer) and what is wrong.

    Parameters
    ----------
    exc
        jsonschema's error.

    Returns
    -------
    tuple[str, str]
        ``("/properties/a/type", "'strin' is no JSON Schema type: ...")``. A misspelt type
        was jsonschema's "'strin' is not valid under any of the given schemas" (found by a
        probe).
    """
    from ._schema_walk import pointer_token

    path = list(exc.absolute_path)
    where = "/" + "/".join(pointer_token(part) for part in path)
    message = exc.message
    if path and path[-1] == "type" and exc.validator in ("anyOf", "enum"):
        written = exc.instance if isinstance(exc.instance, list) else [exc.instance]
        odd = [t for t in written if not isinstance(t, str) or t not in _TYPE_NAMES]
        if odd:  # not a repeated or empty list of type names (a review): jsonschema's says
            value = odd[0]  # a string quoted as our messages quote, other values as JSON
            quoted = isinstance(value, str) or not _is_json(value)
            shown = repr(value) if quoted else json.dumps(value)
            message = f"{shown:.80} is no JSON Schema type: write one of {', '.join(_TYPE_NAMES)}"
    # jsonschema quotes the value (and the path its keys): cut, as our own quotes are.
    return shortened(where, 300), shortened(message, 500)


def _is_json(value: object) -> bool:
    """Whether ``value`` can be written as JSON (to show it as JSON, not as Python)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _draft_name(validator: str) -> str:
    """Name a jsonschema validator's draft as JSON Schema does: ``2020-12``, ``draft-07``."""
    recent = re.fullmatch(r"Draft(\d{4})(\d{2})Validator", validator)
    if recent is not None:
        return f"{recent[1]}-{recent[2]}"
    old = re.fullmatch(r"Draft(\d)Validator", validator)
    return f"draft-0{old[1]}" if old is not None else validator


_JS_ONLY = (
    ("[^]", "[\\s\\S] instead of [^]"),
    ("\\c", "an escape such as \\n or \\x0a instead of \\cJ"),
    ("(?<", "(?:...) instead of (?<name>...)"),
    ("\\p{", "a character class instead of \\p{...}"),
    ("\\u{", "\\uXXXX or the character itself instead of \\u{...}"),
)
"""JavaScript-only regex syntax (ECMA-262) Python cannot read, and what to write instead."""


def _not_a_regex(where: str, pattern: object) -> str:
    """Say why a ``pattern`` (or a ``format: regex`` value) is not a regex, and what to do.

    JSON Schema's patterns are ECMA-262 regexes; jsonschema checks them with Python's
    ``re``, and the engines' regex subsets are narrower still, so syntax only JavaScript
    reads is refused: the message names its portable spelling.
    """
    from ._patterns import ecma_compile  # the schema modules load with the first schema

    text = str(pattern)
    try:
        ecma_compile(text)
        reason = "not a regex"
    except re.error as exc:
        reason = f"not a regex Python can read ({exc})"
    instead = [how for what, how in _JS_ONLY if what in text]
    hint = (
        f" It uses syntax JavaScript reads and Python's re does not: write {'; '.join(instead)}."
        if instead
        else " Write it in the syntax Python's re and JavaScript share."
    )
    return f"Invalid JSON schema at {where}: {describe(text, 200)} is {reason}.{hint}"


def _sendable(schema: dict[str, Any], strict: bool) -> dict[str, Any]:
    """Return the form of a checked schema both engines read (`outlines_lmstudio._dialects`)."""
    from ._dialects import dialect_schema  # with the first schema (import time)

    return dialect_schema(schema, None, strict=strict)


def _json_plan(
    schema: object, output_type: object, *, strict: bool, generated: bool = False
) -> OutputPlan:
    checked = check_json_schema(schema, meta=not generated)
    sent = _sendable(checked, strict)
    return OutputPlan(
        "json",
        {"type": "json", "jsonSchema": sent},
        output_type=output_type,
        full_schema=checked,
    )


def _schema_from_str(text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=without_repeats)
    except RepeatedKey as exc:
        # Found by a probe: `json.loads` kept the last one, so a schema whose `properties`
        # was written twice lost its first fields (the command line's --schema refused it).
        raise InvalidSchemaError(
            f"The JSON schema text has the key {exc.args[0]!r} twice in one object "
            f"(the object at {repeated_at(text, pointer=True)}): JSON readers keep only the "
            "last and drop the other silently. Write each key once."
        ) from None
    except RecursionError:  # Python's JSON decoder gives up around 1,000 levels
        raise _too_deep("too deep for Python's JSON decoder") from None
    except json.JSONDecodeError as exc:
        raise InvalidSchemaError(
            f"The output type is a str but not a JSON schema ({exc}). Pass a JSON schema "
            "string, or use the str type (not an instance) for free text."
        ) from exc


def portable_typeddicts(tp: Any, memo: dict[int, Any]) -> Any:
    """Rebuild ``typing.TypedDict`` classes as ``typing_extensions`` ones, recursively.

    Pydantic refuses ``typing.TypedDict`` before Python 3.12 (and so does
    Outlines); the rebuilt class has the same fields and required keys. It is made
    empty and given its fields after: a TypedDict that refers to itself (a tree's
    ``kids: list["Node"]``) then finds its rebuilt class in ``memo`` (before, the walk
    recursed until Python's limit).
    """
    if typing.is_typeddict(tp) and type(tp).__module__ == "typing":
        if id(tp) in memo:
            return memo[id(tp)]
        make_typeddict: Any = typing_extensions.TypedDict  # functional form, dynamic name
        rebuilt = memo[id(tp)] = make_typeddict(tp.__name__, {})
        hints = typing.get_type_hints(tp, include_extras=True)
        rebuilt.__annotations__ = {
            key: portable_typeddicts(value, memo) for key, value in hints.items()
        }
        rebuilt.__required_keys__ = frozenset(tp.__required_keys__)
        rebuilt.__optional_keys__ = frozenset(tp.__optional_keys__)
        rebuilt.__doc__ = tp.__doc__
        config = getattr(tp, "__pydantic_config__", None)  # pydantic.with_config(...)
        if config is not None:  # (found by a probe: extra="forbid" was dropped)
            rebuilt.__pydantic_config__ = config
        return rebuilt
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None or not args:
        return tp
    new_args = tuple(portable_typeddicts(a, memo) for a in args)
    if new_args == args:
        return tp
    if origin is typing.Annotated:
        return typing.Annotated[new_args[0], *tp.__metadata__]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[new_args]  # noqa: UP007 - built from a runtime tuple
    if len(new_args) == 1:
        # Required[B], NotRequired[B] (kept by include_extras) take one type, not a tuple
        # (found by a probe: "NotRequired accepts only a single type"); list[B] takes both.
        return origin[new_args[0]]
    return origin[new_args]


_BUILD_ERRORS = (
    pydantic.PydanticSchemaGenerationError,
    pydantic.PydanticUserError,
    pydantic_core.SchemaError,  # e.g. a Literal holding a lone surrogate
    NameError,
)


def _field_annotations(tp: Any) -> list[tuple[str, Any]]:
    """Return the fields of a model-like type with their annotations (strings as written)."""
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        # Pydantic keeps a field's Annotated metadata (constraints, an Outlines term) apart
        # from its annotation: put it back, so the walks see a term in it.
        return [
            (
                name,
                typing.Annotated[(f.annotation, *f.metadata)]
                if f.metadata and not isinstance(f.annotation, str | typing.ForwardRef)
                else f.annotation,
            )
            for name, f in tp.model_fields.items()
        ]
    if isinstance(tp, type) and (
        dataclasses.is_dataclass(tp) or typing_extensions.is_typeddict(tp)
    ):
        raw: dict[str, Any] = {}
        for klass in reversed(tp.__mro__):
            raw.update(getattr(klass, "__annotations__", {}))
        return list(raw.items())
    return []


def _resolve(tp: type, annotation: Any) -> Any:
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        # What typing.get_type_hints does for one annotation (it evaluates the string).
        module = vars(sys.modules.get(tp.__module__, types.ModuleType("_")))
        return eval(annotation, dict(module), dict(vars(tp)))
    return annotation


def _field_problem(tp: Any, seen: set[int]) -> tuple[str, str] | None:
    """Find the first field whose type has no JSON schema: ``(field path, its type)``."""
    if id(tp) in seen:
        return None
    seen.add(id(tp))
    for name, annotation in _field_annotations(tp):
        shown = getattr(annotation, "__forward_arg__", annotation)
        try:
            resolved = _resolve(tp, annotation)
        except Exception:  # an unresolved name: this field is the culprit
            return name, str(shown)
        inner = _field_problem(resolved, seen)
        if inner is not None:
            return f"{name}.{inner[0]}", inner[1]
        try:
            pydantic.TypeAdapter(portable_typeddicts(resolved, {})).json_schema()
        except (*_BUILD_ERRORS, TypeError):  # TypeError: Outlines' for a CFG in metadata
            return name, _type_name(resolved)
    for arg in typing.get_args(tp):
        found = _field_problem(arg, seen)
        if found is not None:
            return found
    return None


def _unhashable(tp: Any, seen: frozenset[int] = frozenset()) -> str | None:
    """Say why values validated as ``tp`` can never be set items, or ``None`` if they can.

    ``Cat`` (not frozen), ``list[int]``, a tuple or frozenset holding one, and a frozen
    model or dataclass with such a field, whose generated ``__hash__`` hashes every field
    (a class that writes its own ``__hash__`` is taken at its word).
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _unhashable(args[0], seen)
    if origin in (list, dict, set):
        return f"a {_type_name(tp)} cannot be hashed"
    if origin in (tuple, frozenset, typing.Union, types.UnionType):
        for arg in args:
            why = None if arg is Ellipsis else _unhashable(arg, seen)
            if why is not None:
                return why
        return None
    if not isinstance(tp, type):
        return None
    if getattr(tp, "__hash__", None) is None:
        return f"{_type_name(tp)} cannot be hashed"
    if id(tp) in seen or not (_is_model_like(tp) and _generated_hash(tp)):
        return None
    for name, annotation in _field_annotations(tp):
        try:
            why = _unhashable(_resolve(tp, annotation), seen | {id(tp)})
        except Exception:  # unresolvable names were reported when the schema was built
            continue
        if why is not None:
            return f"{_type_name(tp)}'s field {name!r}: {why}"
    return None


def _generated_hash(tp: type) -> bool:
    """Tell whether a class's ``__hash__`` is the one a frozen model or dataclass is given.

    Pydantic's hashes the fields' values (``pydantic._internal``); a dataclass's is compiled
    from generated source (``<string>``). Either fails on a field that cannot be hashed.
    """
    function = tp.__hash__
    code = getattr(function, "__code__", None)
    module = getattr(function, "__module__", None) or ""
    return code is not None and (code.co_filename == "<string>" or module.startswith("pydantic."))


def _type_problem(
    tp: Any,
    problem: Callable[[Any], str | None],
    seen: set[int],
    name_of: Callable[[Any], str] | None = None,
    *,
    past_validators: bool = False,
) -> tuple[str, str] | None:
    """Find a part of a type (fields and arguments, depth first) that ``problem`` names.

    ``past_validators``: skip the parts a validator of the user's reads first (a
    ``BeforeValidator``, a ``field_validator(mode="before")``...): it may turn the reply's
    value into one the part takes.

    Returns
    -------
    tuple or None
        ``(where, what problem said)``: where is the part's name (``name_of``, by
        default `output_type_name`), behind the fields that lead to it
        (``field 'pets' (set[Cat])``).
    """
    if id(tp) in seen:
        return None
    seen.add(id(tp))
    validated = _validated_first(tp) if past_validators else set()
    if "*" in validated:
        return None
    what = problem(tp)
    if what is not None:
        return (name_of or output_type_name)(tp), what
    for name, annotation in _field_annotations(tp):
        if name in validated:
            continue
        try:
            resolved = _resolve(tp, annotation)
        except Exception:  # unresolvable names were reported when the schema was built
            continue
        found = _type_problem(resolved, problem, seen, name_of, past_validators=past_validators)
        if found is not None:
            return f"field {name!r} ({found[0]})", found[1]
    for arg in typing.get_args(tp):
        found = _type_problem(arg, problem, seen, name_of, past_validators=past_validators)
        if found is not None:
            return found
    return None


_FIRST_VALIDATORS = (pydantic.BeforeValidator, pydantic.WrapValidator, pydantic.PlainValidator)
_FIRST_MODES = ("before", "wrap", "plain")


def _validated_first(tp: Any) -> set[str]:
    """Return the fields of ``tp`` a validator of the user's reads before Pydantic does.

    ``{"*"}`` when one reads the whole value first (an ``Annotated`` before, wrap or plain
    validator, a model validator in before or wrap mode, or a field validator on every
    field). Found by a review: an Enum of dates a ``mode="before"`` validator reads from
    its ISO text was refused as one no reply could validate.
    """
    if typing.get_origin(tp) is typing.Annotated and any(
        isinstance(meta, _FIRST_VALIDATORS) for meta in tp.__metadata__
    ):
        return {"*"}
    decorators = getattr(tp, "__pydantic_decorators__", None) if isinstance(tp, type) else None
    if decorators is None:
        return set()
    if any(d.info.mode in ("before", "wrap") for d in decorators.model_validators.values()):
        return {"*"}
    return {
        field
        for d in decorators.field_validators.values()
        if d.info.mode in _FIRST_MODES
        for field in d.info.fields
    }


def _unhashable_set_item(tp: Any) -> str | None:
    """Name the item type of a set whose items cannot be hashed, and why.

    Pydantic builds a schema for ``set[Cat]`` (an array with ``uniqueItems``) but refuses
    every reply with an item, since a (non-frozen) ``Cat`` cannot be put in a set.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _SETS and args:
        why, item = _unhashable(args[0]), _type_name(args[0])
        if why is not None:
            return item if why == f"{item} cannot be hashed" else f"{item} ({why})"
    return None


def _unreadable_enum_literal(tp: Any) -> str | None:
    """Name an Enum member of a ``Literal`` that Pydantic cannot read back from JSON.

    Pydantic writes ``Literal[Color.RED]`` as ``{"const": "red"}`` but, for a plain
    ``Enum`` (not a ``str`` or ``int`` one), takes only the member itself, never
    ``"red"``: every reply would fail to validate. Pydantic is asked, not guessed.
    """
    if typing.get_origin(tp) is not Literal:
        return None
    for value in typing.get_args(tp):
        if not isinstance(value, enum.Enum):
            continue
        try:
            text = json.dumps(value.value)
        except (TypeError, ValueError):  # no JSON form: the schema build says so
            continue
        try:
            pydantic.TypeAdapter(Literal[value]).validate_json(text)
        except pydantic.ValidationError:
            return f"{type(value).__qualname__}.{value.name}"
    return None


def _unreadable_value(tp: Any) -> str | None:
    """Name a value of an Enum or Literal that Pydantic cannot read back from its JSON form.

    Pydantic writes an ``Enum`` of dates as ``{"enum": ["2024-01-01"]}`` (``Decimal``,
    ``bytes``... alike) but takes only the values themselves, never their JSON form: every
    reply would fail to validate. Each value is dumped to JSON and read back by Pydantic (a
    table of types would guess). Enum members in a ``Literal`` are
    `_unreadable_enum_literal`'s.
    """
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values: list[Any] = list(tp)
    elif typing.get_origin(tp) is Literal:
        values = [v for v in typing.get_args(tp) if not isinstance(v, enum.Enum)]
    else:
        return None
    if not values:
        return None
    try:
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(tp)
    except _BUILD_ERRORS:  # no schema: the schema build says so
        return None
    for value in values:
        try:
            adapter.validate_json(adapter.dump_json(value))
        except (pydantic.ValidationError, pydantic_core.PydanticSerializationError):
            if isinstance(value, enum.Enum):
                return f"{value.value!r:.80} ({type(value).__qualname__}.{value.name})"
            return f"{value!r:.80}"
    return None


def _unreadable_value_message(name: str, value: str, at: str) -> str:
    return (
        f"The output type {name} has the value {value}{at}, which Pydantic writes in the "
        "schema as its JSON form but cannot read back from JSON, so every reply would fail "
        "to validate. Give the enum or Literal JSON values (str, int, float, bool or None: "
        "a date's isoformat(), a Decimal's str), or use the values' type itself (date, "
        "Decimal) for the field."
    )


def _unhashable_set_message(name: str, item: str, at: str) -> str:
    return (
        f"The output type {name} asks for a set of {item}{at}: its items cannot be hashed, "
        "so every reply with an item would fail to validate. Use a list instead, or make "
        "the items hashable (a frozen model: model_config = ConfigDict(frozen=True); a "
        "frozen dataclass; in a frozen one, tuples and frozensets for its lists and sets)."
    )


def _enum_literal_message(name: str, member: str, at: str) -> str:
    return (
        f"The output type {name} has {member} in a Literal{at}, which Pydantic writes in "
        "the schema as its value but cannot read back from JSON, so every reply would fail "
        f"to validate. Use Literal[{member}.value] (the value itself), the enum "
        f"{member.rsplit('.', 1)[0]} as the type, or an enum that subclasses str or int."
    )


def _refuse_lazy_items(output_type: object, core_schema: object) -> None:
    """Refuse a type holding an ``Iterable`` or ``Generator`` that Pydantic checks lazily.

    Its items are checked only when it is iterated, after ``parse`` returned (found by a
    probe: ``["not an int"]`` for ``Iterable[int]`` was taken, not re-asked, and the
    error came as a raw Pydantic one in the user's loop). One an after validator receives
    (``AfterValidator(list)``) may be consumed there, inside the validation: it is left to
    the validator (found by a review). A before validator cannot make it eager.
    """
    given: set[int] = set()
    generators: list[int] = []
    for node in core_nodes(core_schema):
        kind, inner = node.get("type"), node.get("schema")
        if kind == "function-after" and isinstance(inner, dict):
            given.add(id(inner))
        elif kind == "generator":
            generators.append(id(node))
    if any(generator not in given for generator in generators):
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} holds an Iterable or a "
            "Generator: Pydantic checks its items only when it is iterated, after the "
            "reply was taken, so a reply could not be checked or asked again. Use a list "
            "(list[int]) or a tuple (tuple[int, ...]) instead; to see the items as they "
            "come, model.parse_stream(prompt, list[Item]) yields the list as it grows."
        )


def _abstract_message(name: str, missing: str, at: str) -> str:
    """Say that ``name`` holds an abstract class (``at``: where), missing ``missing``."""
    return (
        f"The output type {name} holds an abstract class{at} (abstract: {missing}), which "
        "can never be made from a reply, so every reply with it would fail to validate. "
        "Use a subclass that implements them (or a union of such subclasses)."
    )


_UNREADABLE_PARTS = (
    (abstract_methods, _abstract_message),
    (_unhashable_set_item, _unhashable_set_message),
    (_unreadable_enum_literal, _enum_literal_message),
    (_unreadable_value, _unreadable_value_message),
)
"""Parts of a type Pydantic writes a schema for but never reads a reply of, and what to say."""


def _refuse_unreadable_parts(output_type: object, core_schema: object) -> None:
    """Refuse a type whose schema Pydantic writes but whose replies it would never read.

    ``core_schema``: the type's, from the model or the adapter its schema was built with.
    """
    _refuse_lazy_items(output_type, core_schema)
    name = output_type_name(output_type)
    for problem, message in _UNREADABLE_PARTS:
        found = _type_problem(output_type, problem, set(), past_validators=True)
        if found is not None:
            where, what = found
            at = "" if where == name else f" (at {where})"
            raise UnsupportedOutputTypeError(message(name, what, at))


def _type_name(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp)


def _schema_error(output_type: object, exc: BaseException) -> UnsupportedOutputTypeError:
    """Name the type and, when it can be found, the field whose schema cannot be built."""
    reason = str(exc).split("\n")[0].rstrip(".")
    found = _field_problem(output_type, set())
    where = f" (field {found[0]!r} of type {found[1]})" if found else ""
    return UnsupportedOutputTypeError(
        f"Cannot build a JSON schema for {output_type_name(output_type)}{where}: {reason}. "
        "Give the field a type JSON can represent (define every type it names before using the "
        "model), or exclude it from the output type."
    )


def _term_without_regex(output_type: object, exc: TermWithoutRegex) -> UnsupportedOutputTypeError:
    """Name the field that holds a CFG, which no JSON-schema ``pattern`` can write."""

    def holds_it(tp: Any) -> str | None:
        # Pydantic copies Annotated metadata: the same term, not the same object.
        return "it" if isinstance(tp, Term) and tp == exc.term else None

    name = output_type_name(output_type)
    found = _type_problem(output_type, holds_it, set(), lambda term: type(term).__name__)
    at = f" (at {found[0]:.300})" if found is not None else f" (in {exc.term!r:.200})"
    return UnsupportedOutputTypeError(
        f"The output type {name} holds an Outlines CFG{at}: a context-free grammar has no "
        "regular expression, so no JSON-schema pattern can ask for it. Use a Regex (or "
        "another regular term) for the field, or "
        "make the whole reply one CFG in grammar mode: from_lmstudio(client, model, "
        "grammar=True)."
    )


def _generated(
    output_type: object, build: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """`pydantic_schema`, refusing a type Pydantic leaves out of its own schema.

    A ``SkipJsonSchema`` where a reply needs a value: Pydantic's bare ``PydanticOmit()``
    came out of ``plan_output`` (found by a review).

    Raises
    ------
    UnsupportedOutputTypeError
        Saying so.
    """
    try:
        return pydantic_schema(build)
    except pydantic_core.PydanticOmit:
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} has a part Pydantic leaves out "
            "of its JSON schema (SkipJsonSchema, or a type with no JSON schema), where a reply "
            "needs it: no engine could be asked for it. Ask for a type the schema shows."
        ) from None


def _model_schema(model: type[pydantic.BaseModel]) -> tuple[dict[str, Any], bool]:
    """Pydantic's schema of a model, and whether its user wrote parts of it."""
    try:
        schema, written = _generated(
            model, lambda: model.model_json_schema(schema_generator=FullMatchTerms)
        )
    except TermWithoutRegex as exc:
        raise _term_without_regex(model, exc) from exc
    except _BUILD_ERRORS as exc:
        raise _schema_error(model, exc) from exc
    return _unique_required(_require_tags(schema)), written


def _type_adapter_schema(output_type: object) -> tuple[dict[str, Any], bool, object]:
    """Pydantic's schema of a type, whether its user wrote parts of it, and its core schema."""
    try:
        portable = portable_typeddicts(output_type, {})
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(cast(Any, portable))
        schema, written = _generated(
            output_type, lambda: adapter.json_schema(schema_generator=FullMatchTerms)
        )
    except TermWithoutRegex as exc:
        raise _term_without_regex(output_type, exc) from exc
    except _BUILD_ERRORS as exc:
        raise _schema_error(output_type, exc) from exc
    return _unique_required(_require_tags(schema)), written, adapter.core_schema


def _unique_required(schema: dict[str, Any]) -> dict[str, Any]:
    """Name each ``required`` property once (Pydantic's fresh output, changed in place).

    Pydantic repeats a name two fields are read from (``b: int = Field(alias="a")`` beside
    ``a: int``), which JSON Schema's meta-schema refuses; the set of names is the same.
    """
    for _, node in schema_nodes(schema):
        required = node.get("required") if isinstance(node, dict) else None
        if isinstance(required, list) and all(isinstance(n, str) for n in required):
            node["required"] = list(dict.fromkeys(required))
    return schema


def _require_tags(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the tag of each Pydantic discriminated union required in its branches.

    Pydantic writes such a union as a ``oneOf`` beside an OpenAPI ``discriminator``, and
    leaves a tag field that has a default (``kind: Literal["a"] = "a"``) out of
    ``required``. Its validator still needs the tag ("Unable to extract tag"), and no
    engine reads ``discriminator``: a model could write a branch without the tag, which
    ``parse`` then refuses. ``schema`` is Pydantic's fresh output: it is changed in place.
    """
    for _, node in list(schema_nodes(schema)):
        tag = node.get("discriminator") if isinstance(node, dict) else None
        if not isinstance(tag, dict) or not isinstance(tag.get("propertyName"), str):
            continue
        for branch in node.get("oneOf", []):
            ref = branch.get("$ref") if isinstance(branch, dict) else None
            target = ref_target(schema, ref) if isinstance(ref, str) else branch
            properties = target.get("properties") if isinstance(target, dict) else None
            if isinstance(properties, dict) and tag["propertyName"] in properties:
                required = target.setdefault("required", [])
                if tag["propertyName"] not in required:
                    required.append(tag["propertyName"])
    return schema


def output_type_name(output_type: object) -> str:
    """Name an output type for a message: ``Person``, or in full ``list[uuid.UUID]``.

    Parameters
    ----------
    output_type
        The output type.

    Returns
    -------
    str
        Its name; the whole expression for a parameterised type (whose ``__name__`` is
        only its origin's: ``list``, ``Optional``, ``Annotated``).
    """
    if isinstance(output_type, JsonSchema):
        output_type = output_type.schema
    elif type(output_type).__name__ == "SchemaBuilder":  # genson's: a schema as data too
        with contextlib.suppress(Exception):  # (found by a review: named by its repr)
            output_type = output_type.to_schema()  # type: ignore[attr-defined]
    if isinstance(output_type, dict | str):  # a schema as data: its title, not its text
        title = output_type.get("title") if isinstance(output_type, dict) else None
        return f"JSON schema {title!r}" if isinstance(title, str) else "JSON schema"
    if isinstance(output_type, Regex):  # as written: not "Regex(pattern='[0-9]+')" (a probe)
        name = f"Regex({output_type.pattern!r})"
    elif isinstance(output_type, Choice):  # nor "Choice(items=['a', 'b'])"
        name = f"Choice({list(output_type.items)!r})"
    elif typing.get_origin(output_type) is not None:
        name = repr(output_type)
    else:
        name = getattr(output_type, "__name__", None) or repr(output_type)
    return name if len(name) <= _LONGEST_NAME else name[: _LONGEST_NAME - 3] + "..."


_LONGEST_NAME = 200
"""Longer type names are cut in messages (a ``Literal`` of a thousand values...)."""


def _is_model_like(tp: object) -> bool:
    origin = typing.get_origin(tp)
    if origin is not None and typing.get_args(tp):  # a generic one with its parameters given
        return (dataclasses.is_dataclass(origin) or typing_extensions.is_typeddict(origin)) and (
            _is_model_like(origin)
        )
    return isinstance(tp, type) and (
        issubclass(tp, pydantic.BaseModel)
        # Outlines' DSL classes (Regex, Choice...) are dataclasses too, but no schema
        or (dataclasses.is_dataclass(tp) and not issubclass(tp, Term))
        or typing_extensions.is_typeddict(tp)  # typing's and typing_extensions' (Python < 3.12)
    )


def _is_json_family(tp: object) -> bool:
    """Tell whether a type is a Pydantic/TypedDict/dataclass type or a container of them."""
    if _is_model_like(tp):
        return True
    origin = typing.get_origin(tp)
    if origin is None:
        return False
    args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
    if origin in (typing.Union, types.UnionType):
        return any(_is_json_family(a) for a in args)
    if origin in (list, tuple, dict) or origin in _SETS or origin is typing.Annotated:
        return any(_is_json_family(a) for a in args)
    return False


def _render_simple_text(text: str, *, output_type: object) -> str:
    return render_simple(text, output_type)


_GRAMMAR_HINT = (
    "Turn on grammar mode, from_lmstudio(client, model, grammar=True), to send it as a "
    "llama.cpp GBNF grammar (GGUF models only), or express the constraint as a JSON schema "
    "(a Pydantic model, or a dict with a 'pattern' for strings)"
)


def _grammar_plan(output_type: object, later: bool) -> OutputPlan:
    """Plan a grammar-mode term: its GBNF now, or converted later (`_later_grammar`)."""
    if later:
        from ._later_grammar import LaterGbnf

        gbnf: object = LaterGbnf(output_type)
    else:
        from ._grammar._api import sendable_gbnf

        gbnf = sendable_gbnf(output_type)
    return OutputPlan("grammar", {"type": "gbnf", "gbnfGrammar": gbnf}, output_type=output_type)


def _unwritable_literal(output_type: object) -> None:
    """Refuse Literal/Enum/Choice values no schema can hold (none, non-scalars, NaN...)."""
    values = literal_values(output_type)
    if values is not None and not values:
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} has no values, so there is "
            "nothing to choose from. Give it at least one."
        )
    odd = [v for v in values or () if not isinstance(v, str | int | float | bool | None)]
    if odd:
        value, name = odd[0], output_type_name(output_type)
        if isinstance(value, enum.Enum):  # found by a probe: "must be str" for a str value
            kind = type(value).__name__
            fix = (
                f"the enum member {kind}.{value.name}, which Pydantic takes only as the member "
                f"itself, not as the JSON value sent for it. Use Literal[{kind}.{value.name}"
                f".value], the enum {kind} itself as the type, or a str or int enum "
                f"(class {kind}(str, Enum)), whose members read back."
            )
        else:
            fix = (
                f"the value {value!r:.80} ({type(value).__name__}), which is no JSON value. "
                "Give it JSON values (str, int, float, bool or None), or make the output "
                f"type the values' type ({type(value).__name__})."
            )
        raise UnsupportedOutputTypeError(f"The output type {name} has {fix}")
    bad = [v for v in values or () if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} has the value {bad[0]!r}, which "
            "JSON cannot represent, so no schema can ask for it. Use finite numbers or strings."
        )
    for value in values or ():
        if isinstance(value, str) and not value.isascii() and _lone_surrogate(value):
            raise UnsupportedOutputTypeError(
                f"The output type {output_type_name(output_type)} has the value "
                f"{describe(value, 80)}, "
                "which holds a lone surrogate: not valid Unicode, so no engine can write it. "
                "Use valid Unicode text."
            )


def _plan(
    output_type: object, grammar: bool = False, strict: bool = False, later: bool = False
) -> OutputPlan:
    """Plan an output type (`plan_output`); ``later``: a term's GBNF left for later."""
    if output_type is None:
        return OutputPlan("text", output_type=None)
    inner = _unaliased(output_type)
    if inner is not output_type:  # planned as what it stands for, named as written
        try:
            plan = _plan(inner, grammar, strict, later)
        except UnsupportedOutputTypeError:
            # A recursive alias (type Json = dict[str, Json] | ...) names itself in its
            # value, which only Pydantic resolves from the alias: plan the alias as is.
            if not _names_inside(inner) or not _other_json_type(output_type):
                raise
            schema, written, _ = _type_adapter_schema(output_type)
            plan = _json_plan(schema, output_type, strict=strict, generated=not written)
        return msgspec.structs.replace(plan, output_type=output_type)
    if grammar and isinstance(output_type, Term) and not isinstance(output_type, JsonSchema):
        if literal_values(output_type) == []:  # an empty Choice: its grammar takes only ""
            _unwritable_literal(output_type)
        return _grammar_plan(output_type, later)  # a JsonSchema stays a JSON schema (below)
    if isinstance(output_type, Regex | CFG):
        kind = "Regex" if isinstance(output_type, Regex) else "CFG"
        raise UnsupportedOutputTypeError(
            f"{kind} output types cannot be expressed by LM Studio's JSON-schema structured "
            f"output. {_GRAMMAR_HINT}."
        )
    if isinstance(output_type, type) and issubclass(output_type, Term):
        name = output_type.__name__
        raise UnsupportedOutputTypeError(
            f"The output type is the Outlines class {name} itself, not an instance of it: "
            f"build one, e.g. {_TERM_EXAMPLES.get(name, name + '(...)')}."
        )
    if isinstance(output_type, JsonSchema):
        if output_type.whitespace_pattern is not None:
            raise UnsupportedOutputTypeError(
                "JsonSchema(whitespace_pattern=...) cannot be honoured: LM Studio chooses the "
                "JSON whitespace itself. Drop the whitespace_pattern argument."
            )
        return _json_plan(_schema_from_str(output_type.schema), output_type, strict=strict)
    if isinstance(output_type, dict):
        return _json_plan(output_type, output_type, strict=strict)
    if isinstance(output_type, str):
        return _json_plan(_schema_from_str(output_type), output_type, strict=strict)
    if type(output_type).__name__ == "SchemaBuilder" and hasattr(output_type, "to_schema"):
        return _json_plan(output_type.to_schema(), output_type, strict=strict)
    problem = foreign_class_problem(output_type)
    if problem is not None:
        raise UnsupportedOutputTypeError(problem)
    if isinstance(output_type, type) and issubclass(output_type, pydantic.BaseModel):
        schema, written = _model_schema(output_type)
        _refuse_unreadable_parts(output_type, output_type.__pydantic_core_schema__)
        return _json_plan(schema, output_type, strict=strict, generated=not written)
    if _is_json_family(output_type):
        schema, written, core_schema = _type_adapter_schema(output_type)
        _refuse_unreadable_parts(output_type, core_schema)
        return _json_plan(schema, output_type, strict=strict, generated=not written)
    _unwritable_literal(output_type)
    if is_simple_type(output_type):
        try:
            schema, written = _generated(output_type, lambda: simple_schema(output_type))
        except _BUILD_ERRORS as exc:  # e.g. Annotated[int, Field(ge="x")]
            # pydantic-core's own words, without its "Error building "int" validator:
            # ValueError:" and the reprs of Pydantic's FieldInfo (found by a probe)
            reason = re.sub(r"^.*validator:\s*(\w+Error:\s*)?", "", " ".join(str(exc).split()))
            annotated = typing.get_origin(output_type) is typing.Annotated
            name = output_type_name(typing.get_args(output_type)[0] if annotated else output_type)
            raise UnsupportedOutputTypeError(
                f"Cannot build a JSON schema for {name}"
                f"{' with its Annotated constraints' if annotated else ''}: "
                f"{reason.rstrip('.')}. Fix the constraint in its Annotated metadata."
            ) from exc
        full = check_json_schema(schema, meta=written)
        return OutputPlan(
            "simple",
            {"type": "json", "jsonSchema": _sendable(full, strict)},
            output_type=output_type,
            render=functools.partial(_render_simple_text, output_type=output_type),
            full_schema=full,
        )
    if isinstance(output_type, Term):
        raise UnsupportedOutputTypeError(
            f"The Outlines DSL term {output_type!r:.80} compiles to a regular expression, which "
            f"LM Studio's JSON-schema structured output cannot express. {_GRAMMAR_HINT}."
        )
    term = _term_inside(output_type)
    if term is not None and grammar:  # list[integer]: a regular type, as Outlines reads it
        return _grammar_plan(output_type, later)
    if term is not None:
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} holds the Outlines DSL term "
            f"{term!r:.80}, which compiles to a regular expression that LM Studio's "
            f"JSON-schema structured output cannot express. {_GRAMMAR_HINT}."
        )
    key = _non_str_key(output_type)
    set_like = _set_inside(output_type)
    if key is None and set_like is None and _other_json_type(output_type):
        # Types Outlines has no regex for, which work as fields (uuid.UUID, Decimal, a
        # NamedTuple, dict[str, Any]...): the reply is their JSON document, as for a model.
        schema, written, core_schema = _type_adapter_schema(output_type)
        _refuse_unreadable_parts(output_type, core_schema)
        return _json_plan(schema, output_type, strict=strict, generated=not written)
    why = (
        f" Its dict keys are {output_type_name(key)}; only str keys (or a Literal or Enum of "
        "strings) are supported (JSON object keys are strings): use dict[str, ...]."
        if key is not None
        else _set_hint(set_like, whole=set_like is output_type)
        if set_like is not None
        else _BARE_CONTAINERS.get(output_type, "")
        if isinstance(output_type, type)  # a value ([1, 2]) may be unhashable
        else _FUNCTION_HINT
        if inspect.isfunction(output_type) or inspect.ismethod(output_type)
        else _listed_types_hint(output_type)
    )
    raise UnsupportedOutputTypeError(
        f"The output type {output_type_name(output_type)} is not supported by outlines-lmstudio."
        f"{why} Supported: {_SUPPORTED}."
    )


# Outlines' local models read a function's signature as an object of its parameters; its
# LM Studio adapter refuses a function, and so does this one (found by a probe: the message
# did not say what to write instead).
_FUNCTION_HINT = (
    " A function is not an output type here (Outlines' local models read its signature as "
    "an object of its parameters): write the parameters as a Pydantic model or a TypedDict, "
    "and call the function with the parsed value."
)


def _listed_types_hint(output_type: object) -> str:
    """Return what to write for a list or tuple value of types, ``[Cat, Dog]`` or ``[Cat]`` ("").

    pydantic-ai's ``output_type=[Cat, Dog]`` means one of them (found by a probe of what its
    users write), and ``[Cat]`` reads as a list of them: here a type says either.
    """
    if not isinstance(output_type, list | tuple) or not output_type:
        return ""
    if not all(isinstance(item, type) or typing.get_origin(item) for item in output_type):
        return ""
    names = [output_type_name(item) for item in output_type]
    if len(names) == 1:
        return f" For a list of {names[0]}, write list[{names[0]}]."
    return (
        f" For a reply that is one of these types, write their union, "
        f"Union[{', '.join(names)}] (or {' | '.join(names)})."
    )


# The deprecated typing aliases (typing.List: list...) by identity, as Pydantic reads them.
# Built here from typing-inspection's ``DEPRECATED_ALIASES`` (there since 0.4.0, which
# pydantic 2.11 allows): its own ``DEPRECATED_ALIASES_IDS`` came only in 0.4.4.
_DEPRECATED_ALIASES_IDS: dict[int, type[Any]] = {
    id(alias): bare for alias, bare in typing_objects.DEPRECATED_ALIASES.items()
}
# ``typing_objects.is_forwardref`` came in typing-inspection 0.4.1: the same check.
_FORWARD_REFS = (typing.ForwardRef, typing_extensions.ForwardRef)


def _unaliased(output_type: object) -> object:
    """Return the type an alias stands for, or the type itself when it is none.

    A bare ``typing.List`` (``Dict``, ``Tuple``, ``Set``...) is its builtin (``list``),
    as Pydantic reads it, so it is refused alike; a ``TypeAliasType`` (Python 3.12's
    ``type IntList = list[int]``), given with its parameters or not, is its value, which
    Pydantic also reads in a field. Pydantic's own tables (typing-inspection) tell both. A
    ``typing.NewType`` is its supertype, as Pydantic reads it (found by a probe: it was
    refused as the output type itself, though its value is the supertype's at run time).
    """
    bare = _DEPRECATED_ALIASES_IDS.get(id(output_type))
    if bare is not None:
        return bare
    if typing_objects.is_newtype(output_type):
        supertype: object = output_type.__supertype__
        return supertype
    if typing_objects.is_typealiastype(output_type):
        value = output_type.__value__
        # A value written as a string ("int") is a forward reference that only Pydantic
        # resolves from the alias (found by a review: it was read as JSON-schema text).
        return output_type if isinstance(value, str) else value
    origin = typing.get_origin(output_type)
    if typing_objects.is_typealiastype(origin):
        try:  # Pair[int] for type Pair[T] = tuple[T, T]: tuple[int, int]
            return origin.__value__[typing.get_args(output_type)]
        except TypeError:  # a value with no parameters to fill: Pydantic reads it as given
            return output_type
    return output_type


def _names_inside(tp: Any) -> bool:
    """Tell whether a type names another by a string (``list["Json"]``), not a Literal's."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return False
    return any(
        isinstance(arg, (str, *_FORWARD_REFS)) or _names_inside(arg)
        for arg in (args[:1] if origin is typing.Annotated else args)
    )


def _other_json_type(output_type: object) -> bool:
    """Tell whether Pydantic writes a JSON schema for a type no other branch takes.

    Not for a bare ``list``/``dict``... (they say nothing of their items) or a type whose
    schema is ``{}`` (``Any``, ``object``: any JSON value, which asks for nothing).
    """
    if (
        not isinstance(output_type, type)
        and typing.get_origin(output_type) is None
        and not typing_objects.is_typealiastype(output_type)
    ):
        return False  # a value, not a type
    if isinstance(output_type, type) and output_type in _BARE_CONTAINERS:
        return False
    try:
        portable = portable_typeddicts(output_type, {})
        schema = pydantic.TypeAdapter(cast(Any, portable)).json_schema()
    except pydantic_core.PydanticOmit:
        return True  # a part left out of its schema: refused by name when it is planned
    except (*_BUILD_ERRORS, TypeError):
        return False
    return schema != {}


_TERM_EXAMPLES = {
    "Regex": 'Regex(r"[0-9]+")',
    "CFG": "CFG(lark_grammar_text)",
    "Choice": 'Choice(["yes", "no"])',
    "JsonSchema": "JsonSchema(Person)",
}
"""How to build the Outlines DSL classes people pass uninstantiated."""


_BARE_CONTAINERS: dict[object, str] = {
    container: f" A bare {container.__name__} does not say what it holds, so no schema can "
    f"be built: give its item types, e.g. {example}."
    for container, example in (
        (list, "list[int]"),
        (tuple, "tuple[int, str] or tuple[int, ...]"),
        (dict, "dict[str, int] (or a Pydantic model)"),
    )
}
"""The hint for ``list``, ``tuple`` and ``dict`` without item types (Outlines' ``dict``
means any JSON, a CFG, which LM Studio's JSON-schema output has no form for)."""


_SETS: dict[Any, str] = {
    set: "set",
    frozenset: "frozenset",
    collections.abc.MutableSet: "set",  # what Pydantic makes of them
    collections.abc.Set: "frozenset",  # typing.AbstractSet too (found by a probe)
}
"""The set types, each spelling with the class Pydantic builds for it."""


def _set_hint(set_type: Any, *, whole: bool) -> str:
    """Say what to ask for instead of a set of simple values (``set[int]``).

    ``whole``: the set is the output type itself, not a part of it (``Optional[set[int]]``).
    """
    container = _SETS[typing.get_origin(set_type) or set_type]
    args = typing.get_args(set_type)
    item = output_type_name(args[0]) if args else "int" if whole else "..."
    why = (
        "JSON has no set type, and LM Studio does not make array items unique (it does not "
        "enforce uniqueItems)"
    )
    if not whole:
        return (
            f" It holds {output_type_name(set_type)}: {why}. Write list[{item}] in its place "
            f"and build the {container} from the parsed value."
        )
    return (
        f" {why}: ask for list[{item}] and build the {container} from "
        f"the result, e.g. {container}(model.parse(prompt, list[{item}]))."
    )


def _set_inside(output_type: Any) -> Any:
    """Return a set type that is, or is inside, a type of simple values, if any.

    ``Optional[set[int]]`` and ``list[set[int]]`` are refused as ``set[int]`` is (found by
    a probe: only the bare set was); a set of frozen models is a JSON type, planned before.
    """
    origin = typing.get_origin(output_type)
    if origin in _SETS or (isinstance(output_type, type) and output_type in _SETS):
        return output_type
    if origin not in _HOLDING:  # not type[set[int]], Literal values... (a review)
        return None
    args = typing.get_args(output_type)
    for arg in args[:1] if origin is typing.Annotated else args:
        inner = _set_inside(arg)
        if inner is not None:
            return inner
    return None


_HOLDING = (typing.Union, types.UnionType, list, tuple, dict, typing.Annotated)
"""The types whose values hold their arguments' values, as JSON writes them."""


def unaliased(output_type: object) -> object:
    """Return what an alias, or an alias of an alias, stands for (the type if none)."""
    while (inner := _unaliased(output_type)) is not output_type:
        output_type = inner
    return output_type


def _grammar_term_type(output_type: object) -> bool:
    """Whether grammar mode sends a type as GBNF: an Outlines term, or a type holding one."""
    inner = unaliased(output_type)
    if isinstance(inner, Term):
        return not isinstance(inner, JsonSchema)
    return _term_inside(inner) is not None


def _term_inside(output_type: Any) -> Term | None:
    """Return an Outlines DSL term written inside a type (``list[integer]``), if any.

    Not in ``Annotated`` metadata (``Annotated[str, Regex(...)]`` is Pydantic's, sent as
    a JSON schema) nor among ``Literal`` values.
    """
    origin = typing.get_origin(output_type)
    if origin is Literal:
        return None
    args = typing.get_args(output_type)
    for arg in args[:1] if origin is typing.Annotated else args:
        if isinstance(arg, Term):
            return arg
        term = _term_inside(arg)
        if term is not None:
            return term
    return None


def _non_str_key(output_type: Any) -> Any:
    """Return the key type of a ``dict[K, ...]`` with ``K`` not of strings inside a type, if any."""
    args = typing.get_args(output_type)
    if typing.get_origin(output_type) is dict and args and not is_str_key(args[0]):
        return args[0]
    for arg in args:
        key = _non_str_key(arg)
        if key is not None:
            return key
    return None


def argument_order(output_type: object) -> object:
    """Return a type's arguments, nested, in the order they were written.

    ``Union[date, str] == Union[str, date]`` (and the same for ``Literal``), but the order
    decides what Pydantic's union validation returns and which member renders a reply, so
    a cache keyed on the type alone would serve one order's result for the other. Key it
    on the type and this too.

    Parameters
    ----------
    output_type
        A hashable output type.

    Returns
    -------
    object
        A hashable value, equal for two types only when their arguments are written alike.
    """
    args = typing.get_args(output_type)
    if isinstance(output_type, list):  # the parameters of Callable[[int], str]
        args = tuple(output_type)
    if args:
        return tuple(argument_order(arg) for arg in args)
    return type(output_type), output_type  # Literal[1, True]: 1 == True, but not alike


def _not_json_error(schema: dict[str, Any]) -> InvalidSchemaError:
    """Name where a schema dict holds what JSON cannot (NaN, a set...), and what it is.

    Found by a probe: json's own message named neither the place nor the value.
    """
    from ._schema_walk import pointer_token

    stack: list[tuple[str, object]] = [("", schema)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str | int | float | bool) and key is not None:
                    return InvalidSchemaError(
                        f"Invalid JSON schema at {where or '/'}: the key {key!r:.80} "
                        f"({type(key).__name__}) cannot be a JSON object's key: use a string."
                    )
                stack.append((f"{where}/{pointer_token(str(key))}", value))
        elif isinstance(node, list | tuple):
            stack.extend((f"{where}/{i}", v) for i, v in enumerate(node))
        elif (isinstance(node, float) and not math.isfinite(node)) or not isinstance(
            node, str | int | float | bool | None
        ):
            return InvalidSchemaError(
                f"Invalid JSON schema at {where or '/'}: {node!r:.80} ({type(node).__name__}) "
                "is no JSON value (JSON has no NaN or infinity, nor sets, bytes or other "
                "objects): write a number, string, list or object there."
            )
    return InvalidSchemaError("Invalid JSON schema: it cannot be written as JSON.")


@lru_cache(maxsize=512)
def _plan_cached(
    output_type: object, grammar: bool, strict: bool, order: object
) -> tuple[OutputPlan, tuple[LateName, ...]]:
    return _plan(output_type, grammar, strict), late_names(output_type)


@lru_cache(maxsize=256)
def _plan_schema_text(key: str, strict: bool) -> OutputPlan:
    return _json_plan(json.loads(key), None, strict=strict)


@lru_cache(maxsize=256)
def _plan_json_schema(text: str, whitespace: str | None, grammar: bool, strict: bool) -> OutputPlan:
    # The term as the caller's holds it, not through JsonSchema(), which checks the text
    # again with Outlines' own checker and its errors (found by a review).
    term = JsonSchema.__new__(JsonSchema)
    term.schema, term.whitespace_pattern = text, whitespace
    return _plan(term, grammar, strict)


def plan_output(
    output_type: object, *, grammar: bool = False, strict_schema: bool = False
) -> OutputPlan:
    """Return the `OutputPlan` for an output type (cached per type).

    Parameters
    ----------
    output_type
        The output type given to the model or ``outlines.Generator``.
    grammar
        Grammar mode: send Outlines DSL terms (``Regex``, ``CFG``, ``either``...) as
        llama.cpp GBNF grammars instead of refusing them.
    strict_schema
        Also refuse JSON-schema keywords that an engine accepts but does not enforce
        (``multipleOf``, ``uniqueItems``...; see ``docs/output-types.md``). Without it they
        are sent, and ``parse`` still validates every reply against the full schema.

    Returns
    -------
    OutputPlan
        What to send and how to render the reply.

    Raises
    ------
    UnsupportedOutputTypeError
        For types LM Studio cannot be asked for, and schemas using a keyword LM Studio's
        engines cannot constrain (the message names it, its JSON pointer and the ways out).
    InvalidSchemaError
        For malformed or unsafe JSON schemas.
    """
    if isinstance(output_type, dict):
        # dicts are unhashable: key the cache on their JSON text. Key order is kept: it is
        # the order the fields are written in where the engine sees it.
        try:
            key = json.dumps(output_type, allow_nan=False)
        except RecursionError:  # Python's JSON encoder gives up around 1,000 levels
            raise _too_deep("too deep for Python's JSON encoder") from None
        except (TypeError, ValueError) as exc:
            raise _not_json_error(output_type) from exc
        plan = _plan_schema_text(key, strict_schema)
        return msgspec.structs.replace(plan, output_type=output_type)
    if isinstance(output_type, JsonSchema) and isinstance(output_type.schema, str):
        # Unhashable too: keyed on its text (found by a probe: planned anew on every call,
        # 140 ms a call for a 300-field schema, where a dict's plan was kept).
        wanted = (output_type.schema, output_type.whitespace_pattern, grammar, strict_schema)
        try:
            plan = _plan_json_schema(*wanted)
        except RecursionError:
            raise _too_deep("too deep for Python's JSON decoder") from None
        return msgspec.structs.replace(plan, output_type=output_type)
    # A class or None has no arguments to order (skipping the walk keeps calls cheap).
    plain = output_type is None or isinstance(output_type, type)
    order = None if plain else argument_order(output_type)
    try:
        hash((output_type, order))
    except TypeError:
        hashable = False
    else:
        hashable = True
    try:
        if not hashable:  # planned outside the handler: its errors carry no hash TypeError
            # Never kept, so its GBNF may be converted later (the async front asks that)
            return _plan(output_type, grammar, strict_schema, later_requested())
        if grammar and later_requested() and _grammar_term_type(output_type):
            # An alias of a term is hashable: not kept either, so that the async front
            # converts it off the event loop too (found by a review: 0.4 s on the loop)
            return _plan(output_type, grammar, strict_schema, True)
        # made again once a name it resolved changed (`outlines_lmstudio._late_names`)
        return kept(_plan_cached, output_type, grammar, strict_schema, order)
    except RecursionError:
        # Pydantic's own schema generation recurses once a level: 50 nested models raised
        # a bare RecursionError with a 1,000-line traceback (found by a probe).
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} nests too deeply for its JSON "
            "schema to be written (Python's recursion limit, reached in Pydantic's schema "
            "generator and this library's, which runs inside it): nest fewer models."
        ) from None
