"""Rewrites that keep a schema's valid values, into the form LM Studio's engines read.

Each rewrite is a pure function (the input is not modified) with a property test: a value
is valid under the rewritten schema exactly when it is valid under the original.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema

from ._formats import format_checker
from ._patterns import PatternError, engine_pattern
from ._schema_walk import (
    ANY_TYPES,
    CONTAINERS,
    JSON_TYPES,
    MAX_SCHEMA_DEPTH,
    assertions,
    core_nodes,
    kept,
    pointer_token,
    rebuild,
    recursive_refs,
    ref_target,
    schema_nodes,
)

__all__ = [
    "ALL_FORMATS",
    "FORMATS",
    "FINDING_REWRITES",
    "LAST_REWRITES",
    "REWRITES",
    "anchor_patterns",
    "any_value",
    "apply",
    "close_tuples",
    "close_unevaluated",
    "cut_tuples",
    "declare_required",
    "distinct_ref_rules",
    "drop_dollar_schema",
    "drop_unsupported_formats",
    "COUNT_LIMIT",
    "INT64",
    "drop_unwritable_numbers",
    "empty_object_properties",
    "inline_deep_refs",
    "inline_root_ref",
    "enum_values_allowed",
    "inline_single_all_of",
    "integer_bounds",
    "local_refs",
    "name_listed_keys",
    "narrow_enums",
    "normalise_schema",
    "ref_rule_clashes",
    "root_rule_clashes",
    "shield_root_rules",
    "split_type_lists",
    "spread_one_of",
    "time_as_pattern",
    "unwritable_range",
    "uuid_versions",
    "whole_numbers",
    "TIME_PATTERN",
    "UNWRITABLE_NAME",
]

FORMATS: dict[str, frozenset[str]] = {
    # llama.cpp's converter (llama-cpp-python 0.3.36 port and llama.cpp's C++ one).
    "llama.cpp": frozenset(
        {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
    ),
    # outlines-core 0.1 and 0.2: any other format is an error.
    "outlines-core": frozenset({"date", "time", "date-time", "uuid", "email", "uri"}),
}
ALL_FORMATS = FORMATS["llama.cpp"] & FORMATS["outlines-core"]


_COUNTS = (
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minContains",
    "maxContains",
)
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def whole_numbers(schema: dict[str, Any]) -> dict[str, Any]:
    """Write a count or bound with a zero fraction (``maxLength: 3.0``) as an integer.

    JSON Schema reads ``3.0`` as the integer 3, so the valid values are the same.
    llama.cpp's C++ converter refuses a count that is not a JSON integer ("maxLength must
    be a non-negative integer": the prediction failed; found by a probe), and reads an
    integer's bounds only when they are integers.
    """

    def whole(node: dict[str, Any]) -> dict[str, Any]:
        changed = {  # a count whatever its size (one too large is then refused or not sent);
            # a bound within 64 bits: 1e308 is not worth 309 digits (one so wide is not sent)
            key: int(value)
            for key in (*_COUNTS, *_BOUNDS)
            if type(value := node.get(key)) is float
            and math.isfinite(value)
            and value.is_integer()
            and (key in _COUNTS or abs(value) < 2**63)
        }
        return {**node, **changed} if changed else node

    rebuilt: dict[str, Any] = rebuild(schema, whole)
    return rebuilt


INT64 = range(-(2**63), 2**63)
"""The integers llama.cpp's converter reads a bound as (``int64_t``)."""
COUNT_LIMIT = 2**31
"""llama.cpp's C++ converter reads a count as an ``int``: from this one on, it fails."""


def drop_unwritable_numbers(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop the numbers llama.cpp's C++ converter fails on, which neither engine enforces.

    An ``integer``'s bound beyond 64 bits (``maximum: 2**63``, Pydantic's ``le=10**20``):
    the converter casts it to ``int64_t`` and fails ("At least one of min_value or
    max_value must be set") or writes a wrong range; outlines-core reads no integer bound.
    A ``maxLength``/``maxItems`` of `COUNT_LIMIT` or more: the converter fails, and
    llama.cpp's grammar parser drops any upper bound over 2000 anyway. Not meaning-keeping:
    applied after the findings, which report each as loose (found by a probe: the
    prediction failed). An integer's one-sided range the converter writes reversed
    (`unwritable_range`), left alone or by a wide bound dropped beside it: llama.cpp's
    grammar parser would take all the memory it can get.
    """

    def drop(node: dict[str, Any]) -> dict[str, Any]:
        integer = node.get("type") == "integer"
        wide = {
            key
            for key in _BOUNDS
            if integer
            and isinstance(value := node.get(key), int | float)
            and not isinstance(value, bool)
            and not (INT64.start <= value < INT64.stop)
        }
        wide |= {
            key
            for key in ("maxLength", "maxItems")
            if isinstance(value := node.get(key), int)
            and not isinstance(value, bool)
            and value >= COUNT_LIMIT
        }
        if integer:  # what is left of its range, as the converter reads it
            left = {k: v for k, v in node.items() if k not in wide}
            if unwritable_range(*integer_bounds(left)):
                wide |= set(_BOUNDS) & set(left)
        return {k: v for k, v in node.items() if k not in wide} if wide else node

    rebuilt: dict[str, Any] = rebuild(schema, drop)
    return rebuilt


def integer_bounds(node: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Return an integer's least and greatest value as llama.cpp's converter reads them.

    As its schema builder (``build_integer``): ``minimum`` rounded up, else
    ``exclusiveMinimum`` rounded down plus one; ``maximum`` rounded down, else
    ``exclusiveMaximum`` rounded up minus one; in ``int64_t``, where a step past the end
    wraps, and where the least and the greatest ``int64_t`` mean "none" (so ``maximum:
    2**63 - 1`` beside a minimum leaves the range one-sided). None: no bound; a bound that
    is not a number within 64 bits is not read here (the meta-schema check refuses the one,
    and `drop_unwritable_numbers` drops the other).
    """

    def read(plain: str, exclusive: str, step: int) -> int | None:
        key = plain if plain in node else exclusive
        value = node.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if isinstance(value, float):
            if not math.isfinite(value):
                return None
            up = (key == plain) == (step > 0)  # a least value rounds up, a greatest down
            value = math.ceil(value) if up else math.floor(value)
        if value not in INT64:
            return None
        if key == exclusive:
            value = (value + step - INT64.start) % 2**64 + INT64.start  # wraps, as in C++
        return None if value == (INT64.start if step > 0 else INT64.stop - 1) else value

    return read("minimum", "exclusiveMinimum", 1), read("maximum", "exclusiveMaximum", -1)


def unwritable_range(low: int | None, high: int | None) -> bool:
    """Whether llama.cpp's C++ converter fails to write an integer's range.

    Its ``build_min_max_int`` writes most minimums alone of 16 digits or more (Pydantic's
    ``ge=2**53``), and negative maximums alone of as many, with a repetition whose maximum
    is below its minimum (``[0-9]{16,15}``), and llama.cpp's grammar parser then makes
    rules until the process runs out of memory (found by a probe: the whole machine's
    memory, then the OOM killer); a range whose negation reaches an end of ``int64_t``
    fails the conversion ("At least one of min_value or max_value must be set"), or is
    written so. ``low``/``high``: the bounds as the converter reads them
    (`integer_bounds`; None: none).
    """
    if low is None and high is None:
        return False  # a plain integer: the converter writes no range
    try:
        return _reverses(
            _INT64_LEAST if low is None else low, _INT64_MOST if high is None else high
        )
    except ValueError:  # the converter's own failure
        return True


_INT64_LEAST, _INT64_MOST = INT64.start, INT64.stop - 1


def _negated(value: int) -> int:
    """``-value`` in ``int64_t`` (the least one is its own negation)."""
    return value if value == _INT64_LEAST else -value


def _reverses(low: int, high: int, decimals: int = 16) -> bool:
    """Whether ``build_min_max_int(low, high, decimals)`` writes a reversed repetition.

    Hand-written: the function is C++ inside llama.cpp; this follows its branches only to
    find its calls of ``more_digits`` with a minimum over the maximum (a minimum alone:
    ``[0-9]{len,decimals - 1}`` after a first digit over 1, the digits after the first
    with one decimal less, then ``[0-9]{len - 1,decimals - 1}`` after one under 9; no other
    branch writes one). The ends of ``int64_t`` mean no bound, as there. (The emulator reads
    the same off its own line-by-line port of the function, `testing._llama_integers`: the
    receiving side reads requests on its own.)

    Raises
    ------
    ValueError
        Where the converter fails: neither bound left.
    """
    has_low, has_high = low != _INT64_LEAST, high != _INT64_MOST
    if has_low and has_high:
        if low < 0 and high < 0:
            return _reverses(_negated(high), _negated(low), decimals)
        return low < 0 and _reverses(0, _negated(low), decimals)  # digit ranges: exact
    if has_high:
        return _reverses(*((0, high) if high >= 0 else (_negated(high), _INT64_MOST)), decimals)
    if not has_low:
        raise ValueError("At least one of min_value or max_value must be set")
    if low < 0:
        return _reverses(_INT64_LEAST, _negated(low), decimals)
    if low <= 9:
        return False
    digits, fewer = str(low), max(decimals - 1, 1)
    return (
        (digits[0] > "1" and len(digits) > fewer)
        or _reverses(int(digits[1:]), _INT64_MOST, fewer)
        or (digits[0] < "9" and len(digits) - 1 > fewer)
    )


_LATER_KEYWORDS: dict[int, tuple[str, ...]] = {
    3: ("const", "contains", "propertyNames", "if", "then", "else"),
    4: ("const", "contains", "propertyNames", "if", "then", "else"),
    6: ("if", "then", "else"),
}
"""The assertions an old draft does not have (``const``, ``contains`` and ``propertyNames``
came with draft 6, ``if``/``then``/``else`` with draft 7)."""


def drop_dollar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop ``$schema``, translating the older drafts' forms into draft 2020-12.

    LM Studio 0.4 has been seen to skip enforcement for a schema with ``$schema``.
    Draft 4-7 spellings (and 2019-09's tuples) are rewritten so that the schema means the same
    under 2020-12:
    ``items: [...]`` becomes ``prefixItems`` (``additionalItems`` becomes ``items``),
    ``dependencies`` splits into ``dependentRequired`` / ``dependentSchemas`` (its schemas
    translated too), draft 4's boolean ``exclusiveMinimum``/``exclusiveMaximum`` become
    numbers and its ``id`` becomes ``$id``, and a ``$ref``'s siblings (ignored before
    2019-09) are removed.
    """
    dialect = str(schema.get("$schema", ""))
    draft = next((n for n in range(3, 8) if f"draft-0{n}" in dialect), 0)  # 0: a later one
    old = draft != 0
    # 2019-09 keeps the tuple spelling (and honours a $ref's siblings); found by a probe.
    tuples = old or "draft/2019-09/" in dialect
    draft4 = draft in (3, 4)

    def translate(node: dict[str, Any]) -> dict[str, Any]:
        node.pop("$schema", None)
        if not tuples:
            return node
        if old and "$ref" in node:
            return {k: v for k, v in node.items() if k == "$ref" or k in CONTAINERS}
        if isinstance(node.get("items"), list):
            node["prefixItems"] = node.pop("items")
            if "additionalItems" in node:
                node["items"] = node.pop("additionalItems")
        else:
            node.pop("additionalItems", None)  # no effect without an items array
        deps = node.pop("dependencies", None) if old else None  # not 2019-09's (a review)
        if isinstance(deps, dict):
            required = {k: v for k, v in deps.items() if isinstance(v, list)}
            # Translated too: `rebuild` does not go into "dependencies" (no 2020-12 keyword),
            # and its schemas kept their old spellings (found by a review).
            schemas = {k: rebuild(v, translate) for k, v in deps.items() if not isinstance(v, list)}
            if required:
                node["dependentRequired"] = required
            if schemas:
                node["dependentSchemas"] = schemas
        for later in _LATER_KEYWORDS.get(draft, ()):  # "draft-05" (no such draft): none
            # Not keywords of the schema's draft: its validator (the reply's check) ignores
            # them, and the engines would enforce them (found by a review: a draft 4 oneOf
            # told apart by "const" alone was judged exclusive, and every reply matched
            # both branches).
            node.pop(later, None)
        if draft4:
            # Draft 4's "id" is 2020-12's "$id" (a subschema's own base: refused as such,
            # where it was sent and only parse failed; found by a probe).
            if isinstance(node.get("id"), str) and "$id" not in node:
                node["$id"] = node.pop("id")
            for bound, strict in (
                ("minimum", "exclusiveMinimum"),
                ("maximum", "exclusiveMaximum"),
            ):
                if isinstance(node.get(strict), bool) and node.pop(strict) and bound in node:
                    node[strict] = node.pop(bound)
        return node

    if "$schema" not in schema:
        return schema
    rebuilt: dict[str, Any] = rebuild(schema, translate)
    return rebuilt


def anchor_patterns(schema: dict[str, Any]) -> dict[str, Any]:
    """Write every ``pattern`` as the anchored regex the engines read (see `_patterns`).

    A pattern no engine can match is left as it is; `schema_findings` refuses it.
    """

    def anchor(node: dict[str, Any]) -> dict[str, Any]:
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            with contextlib.suppress(PatternError):
                node["pattern"] = engine_pattern(pattern)
        return node

    rebuilt: dict[str, Any] = rebuild(schema, anchor)
    return rebuilt


_TYPE_KEYWORDS = {
    "object": frozenset(
        {
            "properties",
            "patternProperties",
            "additionalProperties",
            "required",
            "minProperties",
            "maxProperties",
            "propertyNames",
            "dependentRequired",
            "dependentSchemas",
            "unevaluatedProperties",
        }
    ),
    "array": frozenset(
        {
            "items",
            "prefixItems",
            "contains",
            "minContains",
            "maxContains",
            "minItems",
            "maxItems",
            "uniqueItems",
            "unevaluatedItems",
        }
    ),
    "string": frozenset({"pattern", "minLength", "maxLength", "format"}),
    "number": frozenset(
        {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
    ),
}
_TYPE_KEYWORDS["integer"] = _TYPE_KEYWORDS["number"]
_TYPED = frozenset().union(*_TYPE_KEYWORDS.values())


def _untyped(assertions: Mapping[str, Any]) -> bool:
    """Whether a schema without ``type`` has keywords of some types only (``minimum``...).

    Schemas with ``properties`` are left alone (both engines read them as objects), and so
    are those whose values are fixed otherwise (``enum``, ``const``, ``$ref``, combinators).
    """
    fixed = {"properties", "enum", "const", "$ref", "anyOf", "oneOf", "allOf"}
    return bool(assertions.keys() & _TYPED) and not assertions.keys() & fixed


def split_type_lists(schema: dict[str, Any]) -> dict[str, Any]:
    """Write ``{"type": [A, B], ...}`` with other assertions as an ``anyOf`` of one type each.

    llama.cpp's converter keeps only the types of a type list and drops the keywords
    beside it (``maxLength``, ``pattern``...); both engines refuse a schema with such
    keywords and no ``type`` (``{"minimum": 2}``), which accepts every type. ``T and (A or B)``
    is ``(T and A) or (T and B)``; each branch keeps only the keywords that apply to its type
    (the others hold vacuously: ``minimum`` says nothing about a string).
    """

    def split(node: dict[str, Any]) -> dict[str, Any]:
        types = node.get("type")
        rest = {k: v for k, v in assertions(node).items() if k != "type"}
        if types is None and _untyped(rest):
            types = list(JSON_TYPES)
        if not isinstance(types, list) or not rest or not types:
            return node
        branches = []
        for t in types:
            own = _TYPE_KEYWORDS.get(t, frozenset())
            keep = {k: v for k, v in rest.items() if k not in _TYPED or k in own}
            branches.append({"type": t, **copy.deepcopy(keep)})
        return {**kept(node), "anyOf": branches}

    rebuilt: dict[str, Any] = rebuild(schema, split)
    return rebuilt


def spread_one_of(schema: dict[str, Any]) -> dict[str, Any]:
    """Move the assertions beside an ``anyOf``/``oneOf`` into each branch.

    Both engines read only the branches and drop the keywords beside them.
    ``S and (A or B)`` is ``(S and A) or (S and B)``, and exactly one of ``A, B`` holds under
    ``S`` exactly when exactly one of ``S and A, S and B`` holds. ``S and A`` is written as
    `_merge_all_of` writes a conjunction: a keyword both set is merged when the result means
    the same (``required`` beside and in the branches: "a name, and an email or a phone";
    found by a probe: it was skipped, and both engines then read branches of ``required``
    alone, which any JSON value meets). Skipped when a branch is not an object (a ``$ref``
    or ``true``), when a keyword both set cannot be merged, or when a keyword on one side
    reads the properties beside it and the other side has some (``additionalProperties:
    false`` beside the ``anyOf`` forbids the properties its branches declare; moved into a
    branch, it would allow them).
    """

    def spread(node: dict[str, Any]) -> dict[str, Any]:
        key = "anyOf" if "anyOf" in node else "oneOf" if "oneOf" in node else None
        if key is None or not isinstance(node[key], list) or ("anyOf" in node and "oneOf" in node):
            return node
        rest = {k: v for k, v in assertions(node).items() if k != key}
        if not rest:
            return node
        spread_out = []
        for branch in node[key]:
            if not isinstance(branch, dict) or "$ref" in branch:
                return node
            merged = _merge_all_of(copy.deepcopy(rest), branch)
            if merged is None:
                return node
            spread_out.append(merged)
        return {**kept(node), key: spread_out}

    rebuilt: dict[str, Any] = rebuild(schema, spread)
    return rebuilt


_SIBLING_BOUND = ("additionalProperties", "patternProperties", "unevaluatedProperties")
"""Keywords whose meaning depends on the ``properties`` beside them."""
_READ_BY_BOUND = ("properties", "patternProperties")
"""What those keywords read beside them."""
_READS_BESIDE = (
    (_SIBLING_BOUND, _READ_BY_BOUND),
    # Found by a probe: maxContains counts the items that match the contains beside it, and
    # is ignored without one; moved next to another's contains, it refused what was valid.
    (("minContains", "maxContains"), ("contains",)),
)
"""Pairs: keywords whose meaning depends on the others beside them."""


def _same(a: Any, b: Any) -> bool:
    """Whether two JSON values are the same (``1`` and ``true`` are not)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _merge_keyword(key: str, mine: Any, theirs: Any, free: bool) -> tuple[bool, Any]:
    """Merge one keyword both sides set: ``(merged, value)``; not merged when unsure."""
    if _same(mine, theirs):
        return True, mine
    if key == "required" and isinstance(mine, list) and isinstance(theirs, list):
        return True, list(dict.fromkeys([*theirs, *mine]))
    if key == "properties" and free and isinstance(mine, dict) and isinstance(theirs, dict):
        shared = mine.keys() & theirs.keys()
        if all(_same(mine[name], theirs[name]) for name in shared):
            return True, {**theirs, **mine}
    return False, None


def _reads_the_other(rest: Mapping[str, Any], branch: Mapping[str, Any]) -> bool:
    """Whether a keyword of one side reads properties the other side declares."""
    return any(
        any(k in one for k in reader) and any(k in other for k in read)
        for reader, read in _READS_BESIDE
        for one, other in ((rest, branch), (branch, rest))
    )


def _merge_all_of(rest: dict[str, Any], branch: dict[str, Any]) -> dict[str, Any] | None:
    """Return ``{"allOf": [branch], **rest}`` as one schema object, or ``None``.

    A keyword both set is merged when the result means the same: equal values,
    ``required`` (both lists hold), ``properties`` with equal schemas for shared names
    (when no keyword reads the properties beside it, as ``additionalProperties`` does).
    Not merged when one side's ``additionalProperties`` (or the like) would read the
    other side's properties: ``{"additionalProperties": false, "allOf": [{"properties":
    {"id": ...}}]}`` takes only ``{}``, and merged it would take ``{"id": 0}``.
    """
    if _reads_the_other(rest, branch):
        return None
    merged = {**branch, **rest}
    free = not any(k in rest or k in branch for k in _SIBLING_BOUND)
    for key in assertions(rest).keys() & assertions(branch).keys():
        ok, value = _merge_keyword(key, rest[key], branch[key], free)
        if not ok:
            return None
        merged[key] = value
    return merged


def inline_single_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    """Write ``{"allOf": [A], ...}`` as ``A`` merged with its siblings.

    Both engines misread ``allOf`` (llama.cpp builds an object, outlines-core concatenates
    the branches), and read only the ``properties`` or ``type`` beside one, dropping the
    branch; a one-branch ``allOf`` is just its branch. Left alone when a keyword both
    set cannot be merged (the findings refuse it then). A ``$ref`` branch becomes a
    ``$ref`` with the keywords beside it (which the engines drop, reported loose).
    """

    def inline(node: dict[str, Any]) -> dict[str, Any]:
        parts = node.get("allOf")
        if not (isinstance(parts, list) and len(parts) == 1 and isinstance(parts[0], dict)):
            return node
        rest = {k: v for k, v in node.items() if k != "allOf"}
        merged = _merge_all_of(rest, parts[0])
        return node if merged is None else merged

    rebuilt: dict[str, Any] = rebuild(schema, inline)
    return rebuilt


_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")


def enum_values_allowed(node: Mapping[str, Any]) -> list[Any] | None:
    """Return the ``enum`` (or ``const``) values the keywords beside them also accept.

    ``None`` when the node has no ``enum``/``const``, nothing beside it, or a reference
    beside it (whose target is elsewhere in the schema), or when a keyword there cannot be
    checked here (a pattern Python cannot compile).
    """
    if isinstance(node.get("enum"), list):
        values: list[Any] = node["enum"]
        source = "enum"
    elif "const" in node:
        values = [node["const"]]
        source = "const"
    else:
        return None
    checked = assertions(node)
    # ``const`` beside ``enum`` is checked as any keyword (found by a probe: both engines
    # wrote the const, which the enum refuses).
    if checked.keys() <= {source} or any(r in json.dumps(checked) for r in _REFERENCES):
        return None
    # Each value is one of its own keyword's: checked against the rest only. Checked against
    # the whole list too, 16,000 values (a Literal of them) took 79 s (found by a probe).
    del checked[source]
    try:
        # With ``format`` asserted, as `parse` checks replies (found by a probe: "nope" was
        # kept in an enum beside format: date, written, and refused by parse).
        validator = jsonschema.Draft202012Validator
        check = validator(checked, format_checker=format_checker(validator))
        return [value for value in values if check.is_valid(value)]
    except Exception:  # any keyword the validator cannot run: leave the node
        return None


def narrow_enums(schema: dict[str, Any]) -> dict[str, Any]:
    """Keep only the ``enum``/``const`` values the keywords beside them accept, alone.

    Both engines write one of the listed values and ignore every keyword beside an
    ``enum`` or a ``const`` (``type``, ``maxLength``, ``maximum``...), so
    ``{"type": "string", "enum": ["a", 1]}`` could be answered ``1``. A value is valid
    under ``{"enum": E, ...K}`` exactly when it is one of the values of ``E`` that ``K``
    accepts, so those values alone say the same. Left alone when none is accepted (the
    schema is refused before as unsatisfiable) or a reference is beside them, except in
    an ``anyOf``/``oneOf`` with other branches: a branch no value satisfies is left out
    there (no value could match it, so the union says the same without it).
    """

    def narrow(node: dict[str, Any]) -> dict[str, Any]:
        node = _without_empty_branches(node)
        allowed = enum_values_allowed(node)
        if not allowed:
            return node
        if isinstance(node.get("enum"), list):
            return {**kept(node), "enum": allowed}
        return {**kept(node), "const": node["const"]}

    rebuilt: dict[str, Any] = rebuild(schema, narrow)
    return rebuilt


def _without_empty_branches(node: dict[str, Any]) -> dict[str, Any]:
    """Leave out the ``anyOf``/``oneOf`` branches whose enum no value satisfies (not all)."""
    changed = {}
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if not isinstance(branches, list):
            continue
        kept_branches = [
            b for b in branches if not (isinstance(b, dict) and enum_values_allowed(b) == [])
        ]
        if kept_branches and len(kept_branches) < len(branches):
            changed[key] = kept_branches
    return {**node, **changed} if changed else node


_VALIDATING = frozenset().union(
    *(
        validator.VALIDATORS
        for validator in (
            jsonschema.Draft4Validator,
            jsonschema.Draft6Validator,
            jsonschema.Draft7Validator,
            jsonschema.Draft201909Validator,
            jsonschema.Draft202012Validator,
        )
    )
)
"""Every keyword some JSON Schema draft validates with (jsonschema's own tables)."""


def any_value(schema: dict[str, Any]) -> dict[str, Any]:
    """Write a schema without assertions (``{}``, ``{"title": ...}``) as an explicit union.

    llama.cpp's converter reads ``{}`` as "any object" and refuses ``{"title": "x"}``;
    outlines-core refuses ``{"title": "x"}``. Both read an ``anyOf`` of the six JSON
    types, which accepts every value, as the original does. So is a schema whose only
    keywords no draft defines (``{"foo": 1}``, Pydantic's ``{"ge": "x"}`` for an untyped
    field), which both engines refuse: validators ignore such keywords.
    """

    def explicit(node: dict[str, Any]) -> dict[str, Any]:
        if not _VALIDATING.isdisjoint(node):
            return node
        return {**node, "anyOf": copy.deepcopy(ANY_TYPES)}

    rebuilt: dict[str, Any] = rebuild(schema, explicit)
    return rebuilt


def _listed_names(names: Any, root: dict[str, Any]) -> list[str] | None:
    """Return the strings a ``propertyNames`` schema lists, or ``None`` if it says more.

    The names are an ``enum`` or a ``const`` of strings, maybe behind a local ``$ref``.
    """
    ref = names.get("$ref") if isinstance(names, dict) else None
    if isinstance(ref, str) and ref.startswith("#") and assertions(names).keys() == {"$ref"}:
        names = ref_target(root, ref)
    if not isinstance(names, dict) or not assertions(names).keys() <= {"enum", "const", "type"}:
        return None
    if names.get("type", "string") != "string":
        return None
    listed = names["enum"] if isinstance(names.get("enum"), list) else None
    if "const" in names:
        listed = [names["const"]] if listed is None or names["const"] in listed else []
    if not listed or not all(isinstance(n, str) for n in listed):
        return None
    return list(dict.fromkeys(listed))


UNWRITABLE_NAME = re.compile(r'["\\\x00-\x1f]')
"""What outlines-core cannot write in a property name: it puts the name in its regex
unescaped, so ``a"b`` is written ``"a"b"`` and a line break raw (no JSON either way)."""


def _unnameable(name: str) -> bool:
    """Whether a key name would be refused as a property by an engine (`_dialects`).

    ``$ref`` fails llama.cpp's conversion, ``""`` as the root's property becomes the whole
    reply there, and outlines-core writes a name with a quote unescaped. Listed as dict
    keys, such names stay a loose ``propertyNames`` (found by a probe: the refusal said to
    rename a field with a Pydantic alias, where the user wrote dict keys).
    """
    return name in ("$ref", "") or UNWRITABLE_NAME.search(name) is not None


def name_listed_keys(schema: dict[str, Any]) -> dict[str, Any]:
    """Write an object whose key names are listed as one with those properties, no others.

    ``{"propertyNames": {"enum": ["a", "b"]}, "additionalProperties": S}`` (Pydantic's
    ``dict[Literal["a", "b"], V]``) accepts the objects whose keys are among the names and
    whose values are valid for ``S``: exactly ``{"properties": {"a": S, "b": S},
    "additionalProperties": false}``. No engine reads ``propertyNames``; both read that.
    Left alone beside ``properties``, ``patternProperties`` or ``unevaluatedProperties``,
    and when a name is one an engine cannot take as a property (`_unnameable`).
    """

    def name(node: dict[str, Any]) -> dict[str, Any]:
        if (
            "propertyNames" not in node
            or {
                "properties",
                "patternProperties",
                "unevaluatedProperties",
            }
            & node.keys()
        ):
            return node
        listed = _listed_names(node["propertyNames"], schema)
        values = node.get("additionalProperties", {})
        if listed is None or values is False or any(map(_unnameable, listed)):
            return node
        rest = {k: v for k, v in node.items() if k not in ("propertyNames", "additionalProperties")}
        properties = {key: copy.deepcopy(values) for key in listed}
        return {**rest, "properties": properties, "additionalProperties": False}

    rebuilt: dict[str, Any] = rebuild(schema, name)
    return rebuilt


def empty_object_properties(schema: dict[str, Any]) -> dict[str, Any]:
    """Give ``{"type": "object", "additionalProperties": false}`` an empty ``properties``.

    outlines-core refuses the schema of the empty object unless it has ``properties``;
    an empty ``properties`` changes nothing.
    """

    def fill(node: dict[str, Any]) -> dict[str, Any]:
        if node.get("additionalProperties") is False and "properties" not in node:
            return {**node, "properties": {}}
        return node

    rebuilt: dict[str, Any] = rebuild(schema, fill)
    return rebuilt


_IN_PLACE = frozenset(
    {"allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref", "$dynamicRef"}
    | {"dependentSchemas"}
)
"""The keywords whose subschemas evaluate an instance's properties and items in place."""


def close_unevaluated(schema: dict[str, Any]) -> dict[str, Any]:
    """Write a boolean ``unevaluatedProperties``/``unevaluatedItems`` as what it means here.

    With no subschema that evaluates in place (`_IN_PLACE`), the evaluated properties are
    those ``properties``, ``patternProperties`` and ``additionalProperties`` read, so
    ``unevaluatedProperties: false`` is ``additionalProperties: false``, and nothing beside
    an ``additionalProperties`` (every property is evaluated then); ``true`` asserts
    nothing. So for items, with ``items``; left beside ``contains``, whose matches count
    as evaluated. Both engines refused the boolean schema (found by a probe), though they
    write only the properties and items listed.
    """

    def close(node: dict[str, Any]) -> dict[str, Any]:
        if not _IN_PLACE.isdisjoint(node):
            return node
        for key, closes, blocked in (
            ("unevaluatedProperties", "additionalProperties", ""),
            ("unevaluatedItems", "items", "contains"),
        ):
            if isinstance(node.get(key), bool) and blocked not in node:
                rest = {k: v for k, v in node.items() if k != key}
                if node[key] is False and closes not in rest:
                    if closes == "items" and "prefixItems" not in rest:
                        rest["maxItems"] = 0  # no item at all: what both engines take
                    else:
                        rest[closes] = False
                node = rest
        return node

    rebuilt: dict[str, Any] = rebuild(schema, close)
    return rebuilt


def declare_required(schema: dict[str, Any]) -> dict[str, Any]:
    """Add each required name missing from an object's ``properties`` to them.

    Both engines write only the listed properties, so a required name that is not listed
    was never written: every reply failed (found by a probe). Listed as ``{}``, or as the
    ``additionalProperties`` schema that judged it, it means the same. Left alone beside
    ``additionalProperties: false`` (no value is valid: refused as such),
    ``patternProperties``, ``unevaluatedProperties`` (which a listed name escapes) or a
    ``$ref``.
    """

    def fill(node: dict[str, Any]) -> dict[str, Any]:
        required, properties = node.get("required"), node.get("properties", {})
        if (
            not isinstance(required, list)
            or not isinstance(properties, Mapping)
            or not {"$ref", "patternProperties", "unevaluatedProperties"}.isdisjoint(node)
            or (node.get("type") != "object" and "properties" not in node)
        ):
            return node
        judge = node.get("additionalProperties", True)
        missing = [n for n in dict.fromkeys(required) if isinstance(n, str) and n not in properties]
        if not missing or judge is False:
            return node
        value = {} if judge is True else judge
        added = {name: copy.deepcopy(value) for name in missing}
        return {**node, "properties": {**properties, **added}}

    if any(
        isinstance(node, Mapping) and "unevaluatedProperties" in node
        for _, node in schema_nodes(schema)
    ):
        # A listed name counts as evaluated: beside an in-place branch of a node with
        # unevaluatedProperties, it would let the name through (found by a review).
        return schema
    rebuilt: dict[str, Any] = rebuild(schema, fill)
    return rebuilt


def close_tuples(schema: dict[str, Any]) -> dict[str, Any]:
    """Write ``{"prefixItems": [A, B], "items": false}`` as ``prefixItems`` with ``maxItems: 2``.

    llama.cpp's C++ converter reads ``items`` over ``prefixItems`` and refuses ``false``
    there. No item past the prefix is exactly at most as many items as the prefix has.
    """

    def close(node: dict[str, Any]) -> dict[str, Any]:
        prefix = node.get("prefixItems")
        if node.get("items") is not False or not isinstance(prefix, list):
            return node
        rest = {k: v for k, v in node.items() if k != "items"}
        limit = node.get("maxItems")
        size = len(prefix)
        rest["maxItems"] = min(limit, size) if isinstance(limit, int) else size
        return rest

    rebuilt: dict[str, Any] = rebuild(schema, close)
    return rebuilt


def cut_tuples(schema: dict[str, Any]) -> dict[str, Any]:
    """Leave out the ``prefixItems`` past ``maxItems``: ``[A, B]`` with ``maxItems: 1`` is ``[A]``.

    Both engines write exactly one item per ``prefixItems`` entry and ignore ``maxItems``
    beside them: with fewer allowed, every value they wrote was invalid. No array has an
    item past ``maxItems``, so the schemas for those positions say nothing.
    """

    def cut(node: dict[str, Any]) -> dict[str, Any]:
        prefix, limit = node.get("prefixItems"), node.get("maxItems")
        if not (isinstance(prefix, list) and type(limit) is int and 0 <= limit < len(prefix)):
            return node
        return {**node, "prefixItems": prefix[:limit]}

    rebuilt: dict[str, Any] = rebuild(schema, cut)
    return rebuilt


_UUID_VERSIONED = re.compile(r"uuid[1-8]")


def uuid_versions(schema: dict[str, Any]) -> dict[str, Any]:
    """Send ``format: uuid4`` (any version, as Pydantic's ``UUID4`` writes it) as ``uuid``.

    Both engines write a UUID for ``uuid``; outlines-core refuses ``uuid4``, so it was
    dropped, and the reply was any string (found by a probe: a Pydantic model's schema given
    as a dict). A format is an annotation in JSON Schema 2020-12, so the valid values are
    the same; jsonschema asserts no versioned format either.
    """

    def general(node: dict[str, Any]) -> dict[str, Any]:
        fmt = node.get("format")
        if isinstance(fmt, str) and _UUID_VERSIONED.fullmatch(fmt):
            return {**node, "format": "uuid"}
        return node

    rebuilt: dict[str, Any] = rebuild(schema, general)
    return rebuilt


def drop_unsupported_formats(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop a string ``format`` that not every engine knows (``ipv4``, ``hostname``...).

    In JSON Schema 2020-12 ``format`` is an annotation unless a validator opts in, so the
    set of valid values is unchanged. llama.cpp ignores such a format; outlines-core
    refuses the whole schema. `schema_findings` reports it as loose, from the original.
    """

    def drop(node: dict[str, Any]) -> dict[str, Any]:
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt not in ALL_FORMATS:
            return {k: v for k, v in node.items() if k != "format"}
        return node

    rebuilt: dict[str, Any] = rebuild(schema, drop)
    return rebuilt


_RULE_JUNK = re.compile(r"[^a-zA-Z0-9-]+")


def _ref_rule(ref: str) -> str:
    """Return the grammar rule llama.cpp's converter names a reference by (`_resolve_ref`)."""
    return "ref" + _RULE_JUNK.sub("-", ref.split("#")[-1])


def local_refs(schema: dict[str, Any]) -> set[str]:
    """Return the ``#/...`` references of a schema's subschemas."""
    found = set()
    for _, node in schema_nodes(schema):
        ref = node.get("$ref") if isinstance(node, Mapping) else None
        if isinstance(ref, str) and ref.startswith("#/"):
            found.add(ref)
    return found


_RESERVED_RULES = frozenset(
    {"root", "dot", "boolean", "decimal-part", "integral-part", "number", "integer", "value"}
    | {"object", "array", "uuid", "char", "string", "null", "date", "time", "date-time"}
    | {"date-string", "time-string", "date-time-string"}
)
"""The rule names llama.cpp's converter keeps for its own rules (its ``RESERVED_NAMES``)."""


def _property_rules(node: Any, name: str) -> Iterator[str]:
    """Yield the rule names llama.cpp's converter gives the properties under a node.

    ``name`` is the node's (``""`` for the root, ``ref-defs-A`` for ``#/$defs/A``); a
    property's is its parent's, ``-`` and its own, escaped as `_ref_rule` escapes (its
    ``_build_object_rule`` and ``_add_rule``), down chains of properties. A name that is
    reserved as written (``date``) gets a ``-`` appended, so it is not one that clashes.
    """
    properties = node.get("properties") if isinstance(node, Mapping) else None
    if not isinstance(properties, Mapping):
        return
    for key, sub in properties.items():
        raw = f"{name}-{key}" if name else str(key)
        if raw not in _RESERVED_RULES:
            yield _RULE_JUNK.sub("-", raw)
        yield from _property_rules(sub, raw)


def _definition_property_rules(schema: dict[str, Any]) -> dict[str, str]:
    """Return the rule name of each property inside a definition, with its definition's ref."""
    named: dict[str, str] = {}
    for container in _DEF_KEYS:
        definitions = schema.get(container)
        if isinstance(definitions, Mapping):
            for key, target in definitions.items():
                ref = f"#/{container}/{pointer_token(str(key))}"
                for rule in _property_rules(target, _ref_rule(ref)):
                    named.setdefault(rule, ref)
    return named


def ref_rule_clashes(schema: dict[str, Any]) -> list[list[str]]:
    """Return the groups of references llama.cpp's converter would give one rule.

    It names a reference's rule after its pointer with each run of characters other
    than letters, digits and ``-`` as one ``-``, and reuses a rule of that name: so
    ``#/$defs/A_B`` and ``#/$defs/A__B`` (two Pydantic models) both got ``A_B``'s grammar
    (found by a probe: every reply failed validation). A property's rule is reused alike:
    ``#/$defs/A_B`` got the rule of the property ``B`` of ``#/$defs/A`` (found by a probe);
    such a group holds the reference and its pointer to the property.
    """
    by_rule: dict[str, list[str]] = {}
    for ref in sorted(local_refs(schema)):
        by_rule.setdefault(_ref_rule(ref), []).append(ref)
    for rule, ref in _definition_property_rules(schema).items():
        if rule in by_rule and by_rule[rule] != [ref]:
            by_rule[rule].insert(0, f"{ref}/properties/...")
    return [refs for refs in by_rule.values() if len(refs) > 1]


def distinct_ref_rules(schema: dict[str, Any]) -> dict[str, Any]:
    """Rename definitions whose references llama.cpp would give one rule (`ref_rule_clashes`).

    A definition directly under the root's ``$defs``/``definitions`` gets a name of
    letters, digits and ``-`` whose rule no other reference has, and every reference to
    it (or into it) follows. Names mean nothing to validation: the valid values are the
    same. A clash this cannot mend (a reference elsewhere) is left; `schema_findings`
    refuses it.
    """
    clashes = ref_rule_clashes(schema)
    if not clashes:
        return schema
    rules = {_ref_rule(ref) for ref in local_refs(schema)} | set(_definition_property_rules(schema))
    rules |= set(_property_rules(schema, ""))  # nor a root property's (found by a review)
    renamed: dict[str, str] = {}  # old reference -> new one
    names: dict[str, dict[str, str]] = {}  # container -> old name -> new name
    for refs in clashes:
        for ref in refs[1:]:  # the first keeps its name
            parts = ref[2:].split("/")
            container = parts[0]
            if len(parts) != 2 or container not in CONTAINERS:
                continue
            if not isinstance(schema.get(container), dict) or parts[1] not in schema[container]:
                continue
            stem, number = _RULE_JUNK.sub("-", parts[1]).strip("-") or "def", 2
            while (
                f"{stem}-{number}" in schema[container]
                or _ref_rule(f"#/{container}/{stem}-{number}") in rules
            ):
                number += 1
            new = f"{stem}-{number}"
            rules.add(_ref_rule(f"#/{container}/{new}"))
            names.setdefault(container, {})[parts[1]] = new
            renamed[ref] = f"#/{container}/{new}"
    if not renamed:
        return schema

    def follow(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if isinstance(ref, str):
            for old, new in renamed.items():
                if ref == old or ref.startswith(old + "/"):
                    node["$ref"] = new + ref[len(old) :]
                    break
        return node

    rebuilt: dict[str, Any] = rebuild(schema, follow)
    for container, table in names.items():
        rebuilt[container] = {table.get(k, k): v for k, v in rebuilt[container].items()}
    return rebuilt


def root_rule_clashes(schema: dict[str, Any]) -> list[str]:
    """Return the rule names of root properties that llama.cpp's converter would mix up.

    A root property's rule is named after the property alone, escaped: ``date_time`` is
    ``date-time``, which is not reserved as written, so the user's rule takes the name of
    a built-in one. The converter adds a built-in rule only if no rule has its name, so
    ``date-time-string`` (a ``format: date-time`` field), ``integer`` and ``number`` were
    built on the user's rule: invalid JSON on llama.cpp (found by a probe). A reference's
    rule (``ref-defs-A``) is reused alike when a root property is named ``ref_defs_A``.
    """
    refs = {_ref_rule(ref) for ref in local_refs(schema)}
    return sorted(set(_property_rules(schema, "")) & (_RESERVED_RULES | refs))


def shield_root_rules(schema: dict[str, Any]) -> dict[str, Any]:
    """Put the root under a one-branch ``anyOf`` when its properties' rules clash.

    The converter names a union's branches ``alternative-0``..., and their properties'
    rules after them (``alternative-0-date-time``), so no name clashes
    (`root_rule_clashes`). The branch holds the same schema, so the valid values are the
    same; ``$defs`` stay at the root, where references point. A reference into the root
    itself (``#/properties/a``) would not follow, so such a schema is left (and refused).
    """
    if not root_rule_clashes(schema):
        return schema
    if any(
        not ref.startswith(tuple(f"#/{key}/" for key in _DEF_KEYS)) for ref in local_refs(schema)
    ):
        return schema
    branch = {k: v for k, v in schema.items() if k not in _ROOT_ONLY}
    return {"anyOf": [branch], **{k: v for k, v in schema.items() if k in _ROOT_ONLY}}


TIME_PATTERN = (
    "^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?"
    "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""RFC 3339's ``full-time`` (what jsonschema checks a ``format: time`` reply against), less
a leap second, a lower-case ``z``, which Pydantic's ``time`` may refuse, and fractions past 9
digits: greedy Gemma on llama.cpp wrote zeros until ``max_tokens`` (found by a probe);
Pydantic keeps 6 of them."""
_TIME_SENT = engine_pattern(TIME_PATTERN)


def time_as_pattern(schema: dict[str, Any]) -> dict[str, Any]:
    r"""Spell ``format: time`` out as the ``pattern`` it stands for, where none is given.

    outlines-core's regex for it (LM Studio's MLX engine) reads ``\\.`` as a backslash
    then any character: ``"13:13:25\d1"``, not even JSON, matched it (found by a probe).
    Both engines take a ``pattern`` before a ``format``. Not in `REWRITES`: the valid
    values are those of the format asserted (as replies are checked), not of the format
    as an annotation.
    """

    def spell(node: dict[str, Any]) -> dict[str, Any]:
        if node.get("format") == "time" and "pattern" not in node:
            node["pattern"] = _TIME_SENT
        return node

    rebuilt: dict[str, Any] = rebuild(schema, spell)
    return rebuilt


def inline_root_ref(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace a root ``{"$ref": "#/$defs/X", "$defs": ...}`` by ``X`` (keeping ``$defs``).

    Pydantic roots recursive models this way; llama.cpp's Python converter then never
    registers the references inside ``$defs`` and fails. A reference means its target.
    """
    result = schema
    for _ in range(8):  # a chain of root references, bounded
        ref = result.get("$ref")
        if (
            not isinstance(ref, str)
            or not ref.startswith("#/")
            or assertions(result).keys() != {"$ref"}
        ):
            return result
        target = ref_target(result, ref)
        if not isinstance(target, dict):
            return result
        annotations = {k: v for k, v in result.items() if k != "$ref"}
        result = {**copy.deepcopy(target), **annotations}
    return result


REF_DEPTH = 3
"""References outlines-core (LM Studio's MLX engine) follows along one path of a schema.

Deeper ones it cuts to ``{}``, recursive or not: a chain of six nested Pydantic models
(``Invoice`` ... ``Geo``, each a ``$ref``) was sent, and every reply stopped four levels
down, invalid (found by a probe; the emulator, which runs outlines-core, did the same).
"""

_INLINED_NODES = 20_000
"""The most schema objects `inline_deep_refs` makes: a definition used twice at each of
many levels doubles at each; past this the references stay (and are cut on MLX)."""

_DEF_KEYS = ("$defs", "definitions")

_ROOT_ONLY = (*_DEF_KEYS, "$id", "$anchor", "$dynamicAnchor", "$vocabulary")
"""What stays at a shielded root: in the branch, an ``$id`` would start a resource of its
own, where ``#/$defs/...`` points to nothing (found by a review)."""


def _ref_depth(schema: dict[str, Any], looping: set[str]) -> int:
    """Return how many references a path from the root follows at most (recursive ones not)."""
    depth: dict[str, int] = {}

    def visit(ref: str) -> int:
        if ref not in depth:
            depth[ref] = 1  # a guard while it is visited (no cycle is followed)
            inner = [
                r for _, n in schema_nodes(ref_target(schema, ref)) if (r := _inlinable(n, looping))
            ]
            depth[ref] = 1 + max((visit(r) for r in inner), default=0)
        return depth[ref]

    top = {k: v for k, v in schema.items() if k not in _DEF_KEYS}
    refs = [ref for _, node in schema_nodes(top) if (ref := _inlinable(node, looping))]
    return max((visit(ref) for ref in refs), default=0)


def _inlinable(node: Any, looping: set[str]) -> str | None:
    """Return the reference of ``node`` if `inline_deep_refs` may replace it by its target."""
    ref = node.get("$ref") if isinstance(node, Mapping) else None
    if (
        isinstance(ref, str)
        and ref.startswith("#/")
        and ref not in looping
        and assertions(node).keys() == {"$ref"}  # beside it only annotations (Pydantic's)
    ):
        return ref
    return None


class _TooLarge(Exception):
    """The inlining went past its budget (`_INLINED_NODES`)."""


def _json_depth(value: Any) -> int:
    """Return how deeply ``value``'s objects and arrays nest (a stack: no recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((sub, depth + 1) for sub in node.values())
        elif isinstance(node, list):
            stack.extend((sub, depth + 1) for sub in node)
    return deepest


def _mapped_refs(schema: Any) -> set[str]:
    """Return the references an OpenAPI ``discriminator.mapping`` (Pydantic's) names."""
    found: set[str] = set()
    for node in core_nodes(schema):
        mapping = node.get("mapping") if isinstance(node.get("propertyName"), str) else None
        if isinstance(mapping, dict):
            found.update(v for v in mapping.values() if isinstance(v, str))
    return found


def inline_deep_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Put the targets of references in their place, when a path follows 3 or more.

    Only references that do not reach themselves again (a recursive model keeps its) and
    stand alone beside annotations; definitions no reference is left to (nor a
    discriminator's mapping) are dropped. The same values are valid; `REF_DEPTH` says why.
    Schemas whose paths follow fewer are sent as they are, and so are those the inlining
    would make larger than `_INLINED_NODES` objects, or nest deeper than the sent schema may
    (a review found both: a 3 kB schema became 6 MB; 40 nested definitions, 81 levels).
    """
    if not any(isinstance(schema.get(k), dict) and schema[k] for k in _DEF_KEYS):
        return schema
    try:
        looping = recursive_refs(schema)
        if _ref_depth(schema, looping) < REF_DEPTH:
            return schema
    except RecursionError:  # references thousands deep: sent as they are
        return schema
    budget = [_INLINED_NODES]

    def inline(node: dict[str, Any]) -> dict[str, Any]:
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLarge
        ref = _inlinable(node, looping)
        if ref is None:
            return node
        target = ref_target(schema, ref)
        if not isinstance(target, dict):
            return node
        annotations = {k: v for k, v in node.items() if k != "$ref"}
        return {**rebuild(target, inline), **annotations}

    try:
        # The definitions are rebuilt only while a reference (or a mapping) still needs
        # them: an unused one, or one every reference to which was inlined, is not.
        result: dict[str, Any] = rebuild(
            {k: v for k, v in schema.items() if k not in _DEF_KEYS}, inline
        )
        kept: dict[str, dict[str, Any]] = {}
        todo = local_refs(result) | _mapped_refs(result)
        while todo:
            ref = todo.pop()
            for key in _DEF_KEYS:
                defs = schema.get(key)
                if not isinstance(defs, dict):
                    continue
                for name, sub in defs.items():
                    prefix = f"#/{key}/{pointer_token(name)}"
                    if name in kept.get(key, {}) or not (
                        ref == prefix or ref.startswith(prefix + "/")
                    ):
                        continue
                    rebuilt = rebuild(sub, inline)
                    kept.setdefault(key, {})[name] = rebuilt
                    if isinstance(rebuilt, dict):
                        todo |= local_refs(rebuilt) | _mapped_refs(rebuilt)
    except (_TooLarge, RecursionError):
        return schema
    for key in _DEF_KEYS:  # in the schema's own order
        if key in kept and isinstance(schema.get(key), dict):
            result[key] = {name: kept[key][name] for name in schema[key] if name in kept[key]}
    if _json_depth(result) > MAX_SCHEMA_DEPTH:  # the depth a schema may be sent at
        return schema
    return result


FINDING_REWRITES: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (
    drop_dollar_schema,
    whole_numbers,
    inline_root_ref,
    name_listed_keys,
    inline_single_all_of,
    narrow_enums,
    spread_one_of,
    split_type_lists,
    uuid_versions,  # after narrow_enums, which asserts formats: uuid4 is not asserted
    close_unevaluated,
    empty_object_properties,
    declare_required,
    close_tuples,
    cut_tuples,
)
LAST_REWRITES: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (
    # After the findings, which report dropped formats and patterns no engine can match.
    drop_unsupported_formats,
    anchor_patterns,
    any_value,
    inline_deep_refs,
    distinct_ref_rules,
    shield_root_rules,
)
REWRITES = FINDING_REWRITES + LAST_REWRITES
"""Every rewrite `normalise_schema` applies, in order."""


def apply(schema: dict[str, Any], steps: tuple[Callable[..., dict[str, Any]], ...]) -> Any:
    """Apply rewrites in order."""
    for step in steps:
        schema = step(schema)
    return schema


def normalise_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Apply every meaning-keeping rewrite, in order (the input is not modified).

    Parameters
    ----------
    schema
        A JSON schema that passed the meta-schema check.

    Returns
    -------
    dict
        A schema with the same valid values, in the form both engines read best.
    """
    result: dict[str, Any] = apply(apply(schema, FINDING_REWRITES), LAST_REWRITES)
    return result
