"""JSON schemas in the dialects of LM Studio's engines (pure, no I/O).

LM Studio does not constrain with "JSON Schema". A GGUF model runs on llama.cpp, whose
JSON-schema-to-grammar converter reads a subset; an MLX model runs on mlx-engine, which
turns the schema into a regex with outlines-core. This module knows both subsets:

- `outlines_lmstudio._rewrites.normalise_schema` rewrites constructs the engines misread
  into equivalent ones they read correctly (each rewrite keeps the set of valid values);
- `schema_findings` lists what an engine refuses, and what it accepts but does not
  enforce ("loose");
- `dialect_schema` is the one call made before a request: it returns the schema to
  send, or raises `UnsupportedOutputTypeError` naming the keyword, its JSON pointer,
  the engine and the ways out.

The user's full schema is always what ``parse`` validates against, so what an engine
does not enforce is still checked (and re-asked with ``retries``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import unquote

import jsonschema
import msgspec

from ._exclusive import exclusive_branches
from ._patterns import PatternError, engine_pattern
from ._rewrites import (
    ALL_FORMATS,
    COUNT_LIMIT,
    FINDING_REWRITES,
    FORMATS,
    INT64,
    LAST_REWRITES,
    UNWRITABLE_NAME,
    apply,
    distinct_ref_rules,
    drop_unwritable_numbers,
    enum_values_allowed,
    integer_bounds,
    local_refs,
    ref_rule_clashes,
    root_rule_clashes,
    shield_root_rules,
    time_as_pattern,
    unwritable_range,
)
from ._schema_walk import (
    ANNOTATIONS,
    CONTAINERS,
    SUB_ONE,
    assertions,
    pointer_token,
    recursive_refs,
    ref_target,
    schema_nodes,
)
from .errors import InvalidSchemaError, UnsupportedOutputTypeError

__all__ = [
    "ENGINES",
    "Engine",
    "Finding",
    "Status",
    "PATTERN_WAYS_OUT",
    "WAYS_OUT",
    "dialect_schema",
    "engine_findings",
    "engine_for_format",
    "schema_findings",
]

Engine = Literal["llama.cpp", "outlines-core"]
Status = Literal["empty", "refused", "loose"]
ENGINES: tuple[Engine, ...] = ("llama.cpp", "outlines-core")


class Finding(msgspec.Struct, frozen=True):
    """One keyword an engine refuses or does not enforce.

    Attributes
    ----------
    pointer
        JSON pointer of the keyword in the sent schema (``/properties/a/not``).
    keyword
        The keyword (``not``, ``multipleOf``...).
    status
        ``"refused"``: the engine fails or misreads it; ``"loose"``: accepted, not enforced;
        ``"empty"``: no value is valid there, whatever the engine.
    why
        What the engine does with it.
    value
        The keyword's value there.
    """

    pointer: str
    keyword: str
    status: Status
    why: str
    value: Any = None


def engine_for_format(model_format: str | None) -> Engine:
    """Return the engine LM Studio runs for a model format (``gguf`` is llama.cpp).

    Parameters
    ----------
    model_format
        The ``format`` of the model's info (``"gguf"``, ``"safetensors"``, ``"mlx"``...).

    Returns
    -------
    Engine
        ``"llama.cpp"`` for GGUF models, else ``"outlines-core"`` (mlx-engine).
    """
    return "llama.cpp" if (model_format or "").lower() == "gguf" else "outlines-core"


# --- findings --------------------------------------------------------------------------

_REFUSED_EVERYWHERE = {
    "not": "no engine can express a negation",
    "if": "conditional schemas (if/then/else) are not supported",
    "then": "conditional schemas (if/then/else) are not supported",
    "else": "conditional schemas (if/then/else) are not supported",
    "$dynamicRef": "dynamic references are not supported",
    "$recursiveRef": "recursive references (draft 2019-09) are not supported",
}
_LOOSE_EVERYWHERE = {
    "multipleOf": "not enforced",
    "uniqueItems": "not enforced",
    "minimum": "not enforced",
    "maximum": "not enforced",
    "exclusiveMinimum": "not enforced",
    "exclusiveMaximum": "not enforced",
    "contains": "not enforced",
    "minContains": "not enforced",
    "maxContains": "not enforced",
    "propertyNames": "not enforced",
    "patternProperties": "not enforced (only the declared properties are written)",
    "dependentRequired": "not enforced",
    "dependentSchemas": "not enforced",
    "unevaluatedProperties": "not enforced (undeclared properties are never written)",
    "unevaluatedItems": "not enforced",
    "contentSchema": "not enforced: the string's content is not constrained",
}
_LOOSE: dict[Engine, dict[str, str]] = {
    "llama.cpp": {
        "minProperties": "not enforced",
        "maxProperties": "not enforced",
    },
    "outlines-core": {},
}


def _string_findings(node: Mapping[str, Any], engine: Engine) -> Iterator[tuple[str, Status, str]]:
    lengths = [k for k in ("minLength", "maxLength") if k in node]
    if "pattern" in node:
        pattern = node["pattern"]
        if not isinstance(pattern, str):
            return
        try:
            engine_pattern(pattern)
        except PatternError as exc:
            yield "pattern", "refused", f"the engines' regex subset cannot match it: {exc.reason}"
        if lengths:
            dropped = "minLength/maxLength" if engine == "llama.cpp" else "pattern"
            yield lengths[0], "loose", f"with both a pattern and a length, {dropped} is ignored"
    fmt = node.get("format")
    if isinstance(fmt, str):
        if fmt not in FORMATS[engine]:
            yield "format", "loose", f"format {fmt!r} is not enforced"
        elif "pattern" in node or (lengths and engine == "outlines-core"):
            yield "format", "loose", "the format is ignored beside a pattern or length"
        elif lengths and engine == "llama.cpp":
            yield lengths[0], "loose", "minLength/maxLength are ignored beside a format"


MAX_REPETITION = 2000
"""llama.cpp's ``MAX_REPETITION_THRESHOLD``: its grammar parser refuses a grammar that
repeats something more than this many times at least (``x{2001,}``), and reads a larger
upper bound as none (older builds refuse that too)."""
_COUNTED = re.compile(r"\{(\d+)(?:(,)(\d*))?\}")


def _counts(node: Mapping[str, Any]) -> Iterator[tuple[str, int, int | None]]:
    """Yield ``(keyword, least, most)`` for each repetition llama.cpp's converter writes.

    As llama.cpp's C++ converter builds them: a string's length bounds repeat a character
    (``char{min,max}``; beside a pattern or a format they are not read), an array's item
    bounds repeat ``"," item`` after the first item (``{min-1,max-1}``), and a pattern's
    counted quantifiers are kept as they are.
    """
    string = node.get("type") == "string" and "pattern" not in node
    if string and node.get("format") not in ALL_FORMATS:  # the others are not sent
        yield "minLength", node.get("minLength", 0), node.get("maxLength")
    if isinstance(node.get("items"), dict) and "prefixItems" not in node:
        least, most = node.get("minItems", 0), node.get("maxItems")
        yield "minItems", max(least - 1, 0), None if most is None else most - 1
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        try:
            sent = engine_pattern(pattern)
        except PatternError:
            return
        for match in _COUNTED.finditer(sent):
            most = (match.group(3) or None) if match.group(2) else match.group(1)
            yield "pattern", int(match.group(1)), None if most is None else int(most)


def _repetition_findings(node: Mapping[str, Any]) -> Iterator[tuple[str, Status, str]]:
    """Yield what llama.cpp's grammar parser refuses or drops of a node's repetitions."""
    for key, least, most in _counts(node):
        if not (type(least) is int and (most is None or type(most) is int)):
            continue
        if least > MAX_REPETITION:
            yield (
                key,
                "refused",
                f"llama.cpp's grammar parser refuses a repetition of more than "
                f"{MAX_REPETITION} ('number of repetitions exceeds sane defaults'); lower it",
            )
        elif most is not None and most > MAX_REPETITION:
            upper = "maxLength" if key == "minLength" else "maxItems" if key == "minItems" else key
            yield (
                upper,
                "loose",
                f"an upper bound over {MAX_REPETITION} repetitions is not enforced",
            )


_INTEGER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _one_sided_miswritten(low: int | None, high: int | None) -> bool:
    """Whether llama.cpp's C++ ``build_min_max_int`` writes a one-sided integer range wrongly.

    With both bounds it writes exactly the integers between them. With one, it drops the
    leading zeros of the digits after the first (``minimum: 105`` goes on as ``5``, so
    ``100`` passes), lets a negative maximum's digits start with ``0`` (``maximum: -1``
    takes ``-01``, not JSON), and writes a reversed repetition (``[0-9]{16,15}``) from 16
    digits on.
    """
    if low is not None and high is None:
        digits = str(low)
        return low >= 100 and ("0" in digits[1:-1] or len(digits) >= 16)
    if high is not None and low is None and high < 0:
        digits = str(-high)
        return -high <= 9 or digits[0] != "1" or "0" in digits[1:-1] or len(digits) >= 16
    return False


def _integer_bound(node: Mapping[str, Any], key: str) -> bool:
    """Whether llama.cpp constrains ``key``: a whole-number bound of an ``integer``.

    llama.cpp's converter writes the integers between an integer's bounds as a grammar
    (``_build_min_max_int``), reading them as 64-bit integers; a bound with a fraction
    would be cut, and a number's bounds are not read at all. It reads ``minimum``, else
    ``exclusiveMinimum`` (beside ``minimum`` it is ignored), and the same for the
    maximum; some one-sided ranges it writes wrongly (`_one_sided_miswritten`).
    """
    value = node.get(key)
    if not (
        key in _INTEGER_BOUNDS
        and node.get("type") == "integer"
        and type(value) is int
        and value in INT64
    ):
        return False
    inclusive = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}.get(key)
    if inclusive is not None and inclusive in node:  # ignored, unless the other implies it
        other = node[inclusive]
        implied = isinstance(other, int | float) and not isinstance(other, bool)
        lower = key == "exclusiveMinimum"
        if not (implied and (value < other if lower else value > other)):
            return False

    for plain, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        raw = node.get(plain, node.get(exclusive))
        within = isinstance(raw, int | float) and INT64.start <= raw < INT64.stop
        if raw is not None and not within:
            return False  # cast to 64 bits, the other side's range is garbage (u64's max: -1)
    low, high = integer_bounds(node)  # the ends of int64 mean none: one-sided then
    if unwritable_range(low, high):  # not sent (`drop_unwritable_numbers`)
        return False
    if (low is None) != (high is None):
        return not _one_sided_miswritten(low, high)
    return True


def _unwritable_name(node: Mapping[str, Any], engine: Engine) -> str | None:
    """Return a property name ``engine`` would write as invalid JSON, if any."""
    properties = node.get("properties")
    if engine != "outlines-core" or not isinstance(properties, Mapping):
        return None
    return next((name for name in properties if UNWRITABLE_NAME.search(name)), None)


_NAMED_MAPS = (
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependentRequired",
)
"""Keywords whose keys are names the user chose, not keywords."""


def _ref_named(node: Mapping[str, Any], engine: Engine) -> str | None:
    """Return a keyword of ``node`` that has an entry named ``$ref`` llama.cpp would misread.

    llama.cpp's converter reads every ``$ref`` key of the schema's JSON as a reference,
    a property named ``$ref`` included: its value (a schema, not a string) fails the
    conversion (the C++ converter's JSON library throws; the port fails on a dict).
    """
    if engine != "llama.cpp":
        return None
    return next(
        (k for k in _NAMED_MAPS if isinstance(node.get(k), Mapping) and "$ref" in node[k]), None
    )


_DATA_KEYWORDS = ("const", "enum", "default", "examples")
"""Keywords whose values are JSON data, not schemas."""
_KEYWORDS = (
    frozenset(jsonschema.Draft202012Validator.VALIDATORS)
    | ANNOTATIONS
    | CONTAINERS
    | frozenset(SUB_ONE)
    | {"$recursiveRef", "$recursiveAnchor", "$dynamicAnchor", "dependencies"}
    | {"minContains", "maxContains"}
)
"""The keywords JSON Schema defines; any other key (``x-source``...) holds data."""


def _refs_within(value: Any) -> Iterator[Any]:
    """Yield the ``$ref`` values of every object in some JSON, at any depth.

    Written out with a stack: data may nest deeper than the recursion limit.
    """
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            if "$ref" in value:
                yield value["$ref"]
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _ref_in_data(node: Mapping[str, Any], engine: Engine) -> str | None:
    """Return a keyword of ``node`` whose JSON data holds a ``$ref`` key llama.cpp would misread.

    llama.cpp's converter walks the schema's whole JSON, data included, and reads every
    object with a ``$ref`` key as a reference: it rewrites a ``#/...`` value in place (a
    ``const`` or ``enum`` value then asks for other text than the one given) and fails on
    any other value.
    """
    if engine != "llama.cpp":
        return None
    return next((k for k in _DATA_KEYWORDS if k in node and any(_refs_within(node[k]))), None)


def _unresolved_in_other_keys(root: dict[str, Any], node: Mapping[str, Any]) -> str | None:
    """Return a key no JSON Schema vocabulary defines that holds a ``$ref`` leading nowhere.

    llama.cpp's converter reads the ``$ref`` keys there too (``x-source``, OpenAPI's
    ``components``): one that points into the schema is resolved (and may be what other
    references point to), one that does not fails the conversion (found by a probe).
    """
    for key in node:
        if key in _KEYWORDS:
            continue
        for ref in _refs_within(node[key]):
            if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
                return key
            if ref_target(root, ref) is None:
                return key
    return None


_WITHIN_64_BITS = range(-(2**63), 2**64)
"""The integers outlines-core's JSON reader (serde_json) keeps as integers (i64 or u64)."""


def _huge_integer(values: list[Any]) -> int | None:
    """Return an integer that outlines-core would read as a float, if any."""
    return next((v for v in values if type(v) is int and v not in _WITHIN_64_BITS), None)


def _node_findings(
    node: Mapping[str, Any],
    engine: Engine,
    looping: set[str],
    unfollowed: set[str],
    objectless: set[str],
    exclusive: bool = False,
) -> Iterator[tuple[str, Status, str]]:
    """Yield ``(keyword, status, why)`` for one schema object (its children aside).

    ``looping``: the recursive references; ``objectless``: those whose recursion goes
    through no object property (`recursive_refs` with ``through_properties=False``);
    ``exclusive``: the node's ``oneOf`` branches exclude each other (`exclusive_branches`).
    """
    for key, why in _REFUSED_EVERYWHERE.items():
        if key in node:
            yield key, "refused", why
    name = _unwritable_name(node, engine)
    if name is not None:
        yield (
            "properties",
            "refused",
            f"the property name {name!r} would be written unescaped, as invalid JSON; rename "
            "it without '\"', '\\' or control characters, with a Pydantic alias if need be",
        )
    named = _ref_named(node, engine)
    if named is not None:
        yield (
            named,
            "refused",
            "an entry named '$ref' is read as a reference and fails the conversion; rename "
            "it, with a Pydantic alias if need be",
        )
    data = _ref_in_data(node, engine)
    if data is not None:
        yield (
            data,
            "refused",
            f"a '$ref' key inside {data} values is read as a reference (a '#/...' one is "
            "rewritten, changing the value; any other fails the conversion); remove it from "
            f"{data}, or rename the key",
        )
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        branches = node.get(key)
        if isinstance(branches, list) and any(isinstance(b, bool) for b in branches):
            yield key, "refused", "a boolean schema here is not supported"
    ref = node.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#/") and ref != "#":
            why = (
                f"an anchor ({ref!r:.80}) names no path: only references by a path inside the "
                "schema ('#/$defs/...') work; write the path of its target"
                if ref.startswith("#")
                else "only references inside the schema ('#/$defs/...') work"
            )
            yield "$ref", "refused", why
        elif ref == "#" and engine == "llama.cpp":
            yield (
                "$ref",
                "refused",
                "a reference to the whole schema ('#') is not supported: put the schema under "
                "$defs and refer to it as '#/$defs/Name'",
            )
        elif ref in unfollowed:
            yield (
                "$ref",
                "refused",
                "the engines follow a reference's path only through object keys written as "
                "they are (no '~0', '~1' or '%' escapes, no array indexes): move what it "
                "points to under $defs, with a name that needs no escape",
            )
        elif ref in objectless and engine == "outlines-core":
            yield (
                "$ref",
                "refused",
                "a recursion that goes through no object property (only array items, "
                "additionalProperties or anyOf/oneOf branches: a list of lists, a JSON-value "
                "type) cannot be cut at depth 3: outlines-core fails, or drops the property "
                "around it and writes invalid JSON; put an object with the recursive value "
                "under a property in the cycle",
            )
        elif ref in looping and engine == "outlines-core":
            yield "$ref", "loose", "recursion is cut at depth 3 (deeper fields are dropped)"
        for key in assertions(node):
            if key != "$ref":
                yield key, "loose", "keywords beside a $ref are ignored"
        return
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) > 1:
        yield "allOf", "refused", "allOf with several branches is misread (merge them into one)"
    elif isinstance(all_of, list) and all_of and isinstance(all_of[0], Mapping):
        yield (
            "allOf",
            "refused",
            "an allOf beside keywords it cannot be merged with is dropped (merge them)",
        )
    if "anyOf" in node and "oneOf" in node:
        yield "oneOf", "refused", "anyOf and oneOf together: one of them is dropped"
    elif "oneOf" in node or "anyOf" in node:
        key = "oneOf" if "oneOf" in node else "anyOf"
        if key == "oneOf" and not exclusive:
            yield "oneOf", "loose", "matched as anyOf: 'exactly one' is not enforced"
        for other in assertions(node):
            if other != key:
                yield other, "loose", f"keywords beside {key} are ignored"
        return
    for key, value in node.items():
        boolean = isinstance(value, bool) and key in SUB_ONE and key != "additionalProperties"
        if boolean:
            yield key, "refused", "a boolean schema here is not supported"
    for key, sub in ((k, node.get(k)) for k in ("properties", "$defs", "definitions")):
        if isinstance(sub, Mapping) and any(isinstance(v, bool) for v in sub.values()):
            yield key, "refused", "a boolean schema here is not supported"
    if isinstance(node.get("prefixItems"), list) and isinstance(node.get("items"), dict):
        yield "items", "refused", "items beside prefixItems is misread by the engines"
    prefix, least = node.get("prefixItems"), node.get("minItems")
    if isinstance(prefix, list) and type(least) is int and least > len(prefix):
        yield (
            "minItems",
            "refused",
            f"the engines write exactly the {len(prefix)} prefixItems and ignore minItems, "
            f"so every array they wrote would have fewer than {least} items",
        )
    for container, bad in (("enum", node.get("enum")), ("const", node.get("const"))):
        values = bad if container == "enum" and isinstance(bad, list) else [bad]
        compound = any(isinstance(v, dict | list) for v in values)
        if container in node and engine == "outlines-core" and compound:
            yield container, "refused", "outlines-core takes only scalar enum/const values"
        huge = _huge_integer(values) if container in node else None
        if huge is not None and engine == "outlines-core":
            yield (
                container,
                "refused",
                f"outlines-core reads the integer {huge} as a float and "
                "writes another number (it reads integers within 64 bits only)",
            )
    if "enum" in node or "const" in node:
        # Both engines write a listed value and ignore the keywords beside it. Values those
        # keywords refuse are dropped first (`narrow_enums`); what is left here is refused
        # (no value at all) or beside a reference.
        if enum_values_allowed(node) == []:
            listed = "enum" if "enum" in node else "const"
            yield listed, "empty", f"no {listed} value satisfies the keywords beside it"
        for other in assertions(node):
            if other not in ("enum", "const", "type"):
                yield other, "loose", "keywords beside enum/const are ignored"
        return
    required = node.get("required")
    if isinstance(required, list) and not set(required) <= set(node.get("properties", {})):
        yield "required", "loose", "required names missing from properties are not enforced"
    yield from _string_findings(node, engine)
    if engine == "llama.cpp":
        yield from _repetition_findings(node)
    else:  # llama.cpp's own: over 2000, in `_repetition_findings`
        for key in ("maxLength", "maxItems"):
            if type(most := node.get(key)) is int and most >= COUNT_LIMIT:
                yield (
                    key,
                    "loose",
                    f"a count of {COUNT_LIMIT} or more is not sent: llama.cpp's converter "
                    "fails on it",
                )
    if engine == "llama.cpp" and not {"items", "prefixItems"} & set(node):
        for key in ("minItems", "maxItems"):
            if key in node:
                yield key, "loose", "not enforced without items or prefixItems (any array)"
    for key, why in (*_LOOSE_EVERYWHERE.items(), *_LOOSE[engine].items()):
        if key in node and not (engine == "llama.cpp" and _integer_bound(node, key)):
            yield key, "loose", why
    if engine == "outlines-core":
        # Without properties it writes a non-empty object for minProperties >= 1 and an
        # empty one for maxProperties 0; other counts are not enforced.
        for key, kept in (("minProperties", (0, 1)), ("maxProperties", (0,))):
            if key in node and "properties" in node:
                yield key, "loose", "ignored beside properties"
            elif key in node and node[key] not in kept:
                yield key, "loose", f"only {key} {' or '.join(map(str, kept))} is enforced"


_POINTER_ESCAPE = re.compile("~[01]")
"""JSON Pointer's escapes of ``~`` and ``/`` (RFC 6901)."""


def _unfollowed_refs(schema: dict[str, Any]) -> set[str]:
    """Return the local references whose path leads nowhere when read as written.

    Both engines split a reference's path at ``/`` and look each part up as an object key
    as it is, so ``#/$defs/a~1b`` (the definition ``a/b``), ``#/$defs/a%20b`` (``a b``) or
    ``#/prefixItems/0`` (an array item; outlines-core and llama-cpp-python's port) is not
    found.
    """
    found = set()
    for ref in local_refs(schema):
        if unquote(ref) != ref or _POINTER_ESCAPE.search(ref):
            # Read as written by the engines, as decoded by JSON Pointer (and the reply's
            # check): with both keys in the schema (``C%61t`` and ``Cat``), each would
            # enforce another schema (found by a review).
            found.add(ref)
            continue
        target: Any = schema
        for part in ref[2:].split("/"):
            if isinstance(target, Mapping) and part in target:
                target = target[part]
            else:
                found.add(ref)
                break
    return found


def _scoped_refs(node: Mapping[str, Any], root: Mapping[str, Any]) -> bool:
    """Whether ``node`` has an ``$id`` and a local ``$ref`` in it, resolved against that id.

    Found by a probe: a subschema's ``$id`` makes ``#/$defs/B`` inside it its own ``B``;
    both engines look it up from the root, and enforce the root's ``B``. Not an ``$id``
    that is a plain name (``#address``, draft 6 and 7: it names a place, the base stays)
    or the root's own.
    """
    ident = node.get("$id")
    if not isinstance(ident, str) or ident.startswith("#") or ident == root.get("$id"):
        return False
    return any(
        isinstance(sub, Mapping) and str(sub.get("$ref", "")).startswith("#")
        for _, sub in schema_nodes(node)
    )


def _plain(node: Mapping[str, Any]) -> bool:
    """Whether a node is just a type with annotations (most nodes; nothing to report).

    A ``default`` or ``examples`` that holds objects or arrays is looked into (`_ref_in_data`).
    """
    return isinstance(node.get("type"), str) and all(
        key == "type"
        or (key in ANNOTATIONS and not (key in _DATA_KEYWORDS and isinstance(value, list | dict)))
        for key, value in node.items()
    )


def schema_findings(schema: dict[str, Any], engine: Engine) -> list[Finding]:
    """List what ``engine`` refuses or does not enforce in a (normalised) schema.

    Parameters
    ----------
    schema
        The schema, after `normalise_schema`.
    engine
        ``"llama.cpp"`` or ``"outlines-core"``.

    Returns
    -------
    list of Finding
        Refusals first, each with its JSON pointer.
    """
    return _findings(schema, (engine,))[engine]


def _findings(schema: dict[str, Any], engines: tuple[Engine, ...]) -> dict[Engine, list[Finding]]:
    """`schema_findings` for several engines in one walk of the schema."""
    looping, unfollowed = recursive_refs(schema), _unfollowed_refs(schema)
    objectless = (
        recursive_refs(schema, through_properties=False)
        if looping and "outlines-core" in engines
        else set()
    )
    found: dict[Engine, list[Finding]] = {engine: [] for engine in engines}
    properties = schema.get("properties")
    if "llama.cpp" in found and isinstance(properties, Mapping) and "" in properties:
        # llama.cpp's converter names a property's rule after its parent's and its own
        # name: the root's is "", so a root property named "" takes the name "root" and
        # the whole reply becomes that property's value (a bare 42 for an object).
        why = (
            "a property of the root named '' is written as the whole reply; rename it, with "
            "a Pydantic alias if need be"
        )
        found["llama.cpp"].append(Finding("/properties", "properties", "refused", why, properties))
    if "llama.cpp" in found:
        renamed = distinct_ref_rules(schema)  # as sent: the clashes the rewrites leave
        for name in root_rule_clashes(shield_root_rules(renamed)):
            why = (
                f"a property of the root gets the grammar rule {name!r}, which llama.cpp's "
                "converter also gives one of its own rules or a reference, and the two would "
                "be mixed up; with a reference to elsewhere than $defs or definitions (such "
                "as #/properties/...) the schema cannot be rewritten to avoid it: move the "
                "target of that reference under $defs"
            )
            found["llama.cpp"].append(Finding("/properties", "properties", "refused", why, name))
        for refs in ref_rule_clashes(renamed):
            why = (
                f"the references {' and '.join(map(repr, refs))} get one grammar rule (their "
                "paths differ only in characters other than letters, digits and '-'), so "
                "both would be written as one; move their targets under $defs with names "
                "that differ in letters or digits"
            )
            found["llama.cpp"].append(Finding("", "$ref", "refused", why, refs[-1]))
    for pointer, node in schema_nodes(schema):
        llama = "llama.cpp" in found and isinstance(node, Mapping)
        other = _unresolved_in_other_keys(schema, node) if llama else None
        if other is not None:
            why = (
                f"a '$ref' inside {other} (not a JSON Schema keyword) is read as a reference, "
                "and this one points to nothing in the schema: the conversion fails; remove "
                "it, or rename the key"
            )
            where = f"{pointer}/{pointer_token(other)}"
            found["llama.cpp"].append(Finding(where, other, "refused", why, node[other]))
        if pointer and isinstance(node, Mapping) and _scoped_refs(node, schema):
            why = (
                "a '$ref' inside a subschema with its own '$id' refers within that subschema, "
                "but the engines resolve it from the root (another schema would be enforced); "
                "remove this '$id' and write the references from the root ('#/$defs/...')"
            )
            for engine in engines:
                found[engine].append(Finding(f"{pointer}/$id", "$id", "refused", why, node["$id"]))
        if isinstance(node, Mapping) and not _plain(node):
            exclusive = "oneOf" in node and exclusive_branches(schema, node["oneOf"])
            for engine in engines:
                findings = _node_findings(node, engine, looping, unfollowed, objectless, exclusive)
                for keyword, status, why in findings:
                    where = f"{pointer}/{pointer_token(keyword)}"
                    found[engine].append(Finding(where, keyword, status, why, node.get(keyword)))
    for listed in found.values():
        listed.sort(key=lambda f: ("empty", "refused", "loose").index(f.status))
    return found


WAYS_OUT = (  # the CLI says it in its own terms: cli._common.error_message
    "Ways out: restructure the schema without it; for a GGUF model, turn on grammar mode "
    "(from_lmstudio(..., grammar=True)) and send a Regex/CFG output type; or send a schema "
    "without it and rely on model.parse(..., retries=N), which validates every reply "
    "against your full schema."
)
PATTERN_WAYS_OUT = (  # the CLI's too
    "Ways out: write the pattern without it (grammar mode's Regex cannot hold it either); or "
    "send a schema without it and rely on model.parse(..., retries=N), which validates every "
    "reply against your full schema."
)


def _ways_out(finding: Finding) -> str:
    """Return the ways out of a refusal: grammar mode only where it could help.

    A pattern grammar mode refuses too (a word boundary, a possessive quantifier) is not
    sent there: the advice went in a circle (found by a probe: ``--regex`` refused it too).
    Only a refusal's message, so the translation is tried here (it does no I/O).
    """
    if finding.keyword != "pattern" or not isinstance(finding.value, str):
        return WAYS_OUT
    from ._grammar import regex_to_gbnf  # the grammar modules load with grammar mode

    try:
        regex_to_gbnf(finding.value)
    except (UnsupportedOutputTypeError, ValueError):
        return PATTERN_WAYS_OUT
    return WAYS_OUT


def engine_findings(schema: dict[str, Any], engine: Engine) -> list[Finding]:
    """List what ``engine`` refuses or does not enforce in a user's schema.

    Parameters
    ----------
    schema
        The user's schema (it is normalised first, as `dialect_schema` does).
    engine
        ``"llama.cpp"`` or ``"outlines-core"``.

    Returns
    -------
    list of Finding
        Refusals first; pointers are into the normalised schema.
    """
    return schema_findings(apply(schema, FINDING_REWRITES), engine)


def _users_pointer(schema: dict[str, Any], finding: Finding) -> str:
    """Return where a finding is in the user's own schema, found again by its value.

    The findings' pointers are into the normalised schema, whose rewrites move
    subschemas (a root ``$ref`` inlined, ``oneOf`` spread...): ``/pattern`` there may be
    ``/$defs/x/pattern`` in the schema the user wrote. The first place with the same
    keyword and value is taken; with none, the normalised pointer is said as such.
    """
    for pointer, node in schema_nodes(schema):
        if isinstance(node, Mapping) and node.get(finding.keyword, _NONE) == finding.value:
            return f"{pointer}/{pointer_token(finding.keyword)}"
    return f"{finding.pointer or '/'} (of the schema as normalised)"


_NONE = object()


def dialect_schema(
    schema: dict[str, Any], engine_format: str | None, *, strict: bool = False
) -> dict[str, Any]:
    """Return the schema to send to a model of ``engine_format``, or refuse it.

    Parameters
    ----------
    schema
        The user's JSON schema (already checked against its meta-schema).
    engine_format
        The model's format from its info (``"gguf"``: llama.cpp; else outlines-core),
        or ``None`` when unknown: then the schema must suit both engines.
    strict
        Also refuse keywords the engine accepts but does not enforce.

    Returns
    -------
    dict
        The normalised schema (same valid values).

    Raises
    ------
    InvalidSchemaError
        If a part of the schema accepts no value at all (an enum none of whose values
        the keywords beside it allow).
    UnsupportedOutputTypeError
        For the first keyword the engine cannot constrain (or, when ``strict``, does not
        enforce), naming the keyword, its JSON pointer, the engine and the ways out.
    """
    prepared = apply(schema, FINDING_REWRITES)  # each rewrite builds new objects
    engines = ENGINES if engine_format is None else (engine_for_format(engine_format),)
    findings = _findings(prepared, engines)
    for engine in engines:
        for finding in findings[engine]:
            if finding.status == "empty":  # no engine, no setting would help
                raise InvalidSchemaError(
                    f"A part of the JSON schema accepts no value: at "
                    f"{_users_pointer(schema, finding)}, {finding.why}. The engines would write "
                    "a value there anyway; fix the schema so that some value is valid there."
                )
            if finding.status == "refused" or strict:
                what = "cannot constrain" if finding.status == "refused" else "does not enforce"
                alike = [e for e in engines if finding in findings[e]]  # the same, whole
                refused = finding.status == "refused"
                who = (
                    f"LM Studio's {engine} engine {what}"
                    if len(alike) == 1
                    else f"Neither of LM Studio's engines ({', '.join(alike)}) "
                    + ("can constrain" if refused else "enforces")
                )
                # Found by a probe: an MLX model's call was refused for llama.cpp, unsaid why.
                unknown = (
                    "The schema is checked for both engines, since which one the model uses is "
                    "not known before the request. "
                    if engine_format is None and len(alike) == 1
                    else ""
                )
                raise UnsupportedOutputTypeError(
                    f"{who} the JSON-schema keyword "
                    f"{finding.keyword!r} at {_users_pointer(schema, finding)} ({finding.why}). "
                    + ("" if finding.status == "refused" else "Strict schema checking is on. ")
                    + unknown
                    + _ways_out(finding)
                )
    # Not meaning-keeping (not among the rewrites): each number it drops was reported loose.
    result: dict[str, Any] = time_as_pattern(
        drop_unwritable_numbers(apply(prepared, LAST_REWRITES))
    )
    return result
