"""JSON Schemas checked before they are sent (pure, no I/O).

`check_json_schema` refuses a schema that is malformed (against its draft's meta-schema),
too deep, unsafe to walk, holds a pattern neither engine reads, or that no document can
satisfy; `meta_schema_error` says a meta-schema error in a sentence.
"""

from __future__ import annotations

import fractions
import json
import math
import re
import typing
from collections.abc import Mapping
from typing import Any

import jsonschema

from ._config import describe, named, shortened
from ._schema_walk import MAX_SCHEMA_DEPTH
from .errors import InvalidSchemaError, UnsupportedOutputTypeError

__all__ = [
    "REFERENCE_KEYWORDS",
    "check_json_schema",
    "lone_surrogate",
    "meta_schema_error",
    "too_deep",
]

REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
"""The keywords jsonschema follows to another schema (none of them is ever fetched)."""


def too_deep(where: str) -> InvalidSchemaError:
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
        raise too_deep(f"at {path}")
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


def lone_surrogate(text: str) -> str | None:
    """Return the first lone surrogate in ``text`` (not valid Unicode), or ``None``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start : exc.end]
    return None


def _refuse_surrogates(text: str, path: str) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate): no engine can match it."""
    if (half := lone_surrogate(text)) is not None:
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


_NOT_KEYWORDS = {
    "dependencies": "'dependentRequired' for the lists of names, 'dependentSchemas' for the "
    "schemas",
    "additionalItems": "'items' beside 'prefixItems' (2020-12's 'prefixItems' and 'items' are "
    "the older drafts' array 'items' and 'additionalItems')",
}
"""Older drafts' keywords that draft 2019-09 or 2020-12 dropped, with what replaced them."""
_KEPT_BY = {"2019-09": ("additionalItems",)}
"""Those a later draft still has (2019-09 dropped only ``dependencies``)."""


def _dropped_keyword(node: dict[str, Any], where: str, draft: str, read_as: str) -> None:
    """Refuse a keyword of an older draft that ``draft`` dropped (`_NOT_KEYWORDS`).

    Its validator (`parse`'s check) ignores it, and so would the engines: the constraint the
    user wrote would hold nowhere (found by a probe: ``dependencies`` in a schema without
    ``$schema`` was sent, and a reply without the dependent property was taken).
    """
    for key in _NOT_KEYWORDS:
        if key in node and key not in _KEPT_BY.get(draft, ()):
            raise InvalidSchemaError(
                f"JSON schema keyword {key!r} at {where or ''}/{key} is not a keyword of JSON "
                f"Schema {draft}{read_as}: no validator checks it there, and no engine "
                f"would. Write it as {draft} does, with {_NOT_KEYWORDS[key]}, or declare the "
                'draft it was written for: "$schema": '
                '"http://json-schema.org/draft-07/schema#".'
            )


def _check_structure(schema: dict[str, Any], draft: str | None = None, read_as: str = "") -> None:
    """Refuse invalid patterns, contradictions, dangling references and in-place loops.

    ``draft``: the schema's draft when it is 2019-09 or later, to refuse the keywords it
    dropped (`_dropped_keyword`); ``read_as`` says why it is that draft.
    """
    # The schema modules load with the first schema, not with the package (import time).
    from ._patterns import PatternError, engine_pattern
    from ._schema_walk import endless_ref, ref_target, schema_nodes, unguarded_ref_cycle

    refers = embedded = False
    dangling: tuple[str, str] | None = None
    own_drafts: list[str] = []  # subschemas with a $schema of their own: their draft rules
    for pointer, node in schema_nodes(schema):
        if not isinstance(node, dict):
            continue
        if pointer and "$schema" in node:
            own_drafts.append(pointer + "/")
        if draft is not None and not any((pointer + "/").startswith(p) for p in own_drafts):
            _dropped_keyword(node, pointer, draft, read_as)
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
    from ._formats import check_schema  # the schema modules load with the first schema

    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    draft = _draft_name(validator.__name__)
    try:
        check_schema(validator, schema)
    except jsonschema.SchemaError as exc:
        where, message = meta_schema_error(exc)
        if exc.validator == "format" and exc.validator_value == "regex":
            raise InvalidSchemaError(_not_a_regex(where, exc.instance)) from exc
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
    later = draft if draft in ("2019-09", "2020-12") else None
    read_as = "" if declared is not None else ', which a schema without "$schema" is read as'
    _check_structure(schema, later, read_as)
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
