"""JSON schemas in the dialects of LM Studio's engines (pure, no I/O).

LM Studio does not constrain with "JSON Schema". A GGUF model runs on llama.cpp, whose
JSON-schema-to-grammar converter reads a subset; an MLX model runs on mlx-engine, which
turns the schema into a regex with outlines-core. This module knows both subsets:

- `normalise_schema` rewrites constructs the engines misread into equivalent ones they
  read correctly (each rewrite is a pure function that keeps the set of valid values);
- `schema_findings` lists what an engine refuses, and what it accepts but does not
  enforce ("loose");
- `dialect_schema` is the one call made before a request: it returns the schema to
  send, or raises `UnsupportedOutputTypeError` naming the keyword, its JSON pointer,
  the engine and the ways out.

The user's full schema is always what ``parse`` validates against, so what an engine
does not enforce is still checked (and re-asked with ``retries``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

from ._patterns import PatternError, engine_pattern
from .errors import UnsupportedOutputTypeError

__all__ = [
    "ANY_TYPES",
    "ENGINES",
    "REWRITES",
    "Engine",
    "Finding",
    "Status",
    "anchor_patterns",
    "any_value",
    "close_tuples",
    "dialect_schema",
    "drop_dollar_schema",
    "drop_unsupported_formats",
    "empty_object_properties",
    "engine_findings",
    "engine_for_format",
    "inline_root_ref",
    "inline_single_all_of",
    "normalise_schema",
    "schema_findings",
    "schema_nodes",
    "spread_one_of",
    "split_type_lists",
    "unguarded_ref_cycle",
]

Engine = Literal["llama.cpp", "outlines-core"]
Status = Literal["refused", "loose"]
ENGINES: tuple[Engine, ...] = ("llama.cpp", "outlines-core")

JSON_TYPES = ("null", "boolean", "number", "string", "array", "object")
ANY_TYPES: list[dict[str, str]] = [{"type": t} for t in JSON_TYPES]
"""An ``anyOf`` of these accepts every JSON value."""
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "readOnly",
        "writeOnly",
        "deprecated",
        "$id",
        "$anchor",
        "$schema",
        "$vocabulary",
        "contentEncoding",
        "contentMediaType",
        "discriminator",  # OpenAPI (Pydantic), not a JSON Schema keyword
    }
)
CONTAINERS = frozenset({"$defs", "definitions"})
_SUB_ONE = (
    "additionalProperties",
    "items",
    "additionalItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
_SUB_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUB_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_FORMATS: dict[Engine, frozenset[str]] = {
    # llama.cpp's converter (llama-cpp-python 0.3.36 port and llama.cpp's C++ one).
    "llama.cpp": frozenset(
        {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
    ),
    # outlines-core 0.1 and 0.2: any other format is an error.
    "outlines-core": frozenset({"date", "time", "date-time", "uuid", "email", "uri"}),
}
_ALL_FORMATS = _FORMATS["llama.cpp"] & _FORMATS["outlines-core"]


@dataclasses.dataclass(frozen=True)
class Finding:
    """One keyword an engine refuses or does not enforce.

    Attributes
    ----------
    pointer
        JSON pointer of the keyword in the sent schema (``/properties/a/not``).
    keyword
        The keyword (``not``, ``multipleOf``...).
    status
        ``"refused"``: the engine fails or misreads it; ``"loose"``: accepted, not enforced.
    why
        What the engine does with it.
    """

    pointer: str
    keyword: str
    status: Status
    why: str


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


# --- walking -------------------------------------------------------------------------


def _pointer_token(key: str | int) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


_ONE, _MAP, _LIST = frozenset(_SUB_ONE), frozenset(_SUB_MAP), frozenset(_SUB_LIST)
_SUBSCHEMA_KEYS = _ONE | _MAP | _LIST


def _children(node: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield ``(relative pointer, subschema)`` for each subschema of a schema node."""
    for key, value in node.items():
        if key not in _SUBSCHEMA_KEYS:
            continue
        if isinstance(value, list):
            if key in _LIST:
                for index, sub in enumerate(value):
                    yield f"{key}/{index}", sub
        elif key in _MAP:
            if isinstance(value, Mapping):
                for name, sub in value.items():
                    yield f"{key}/{_pointer_token(name)}", sub
        elif key in _ONE:
            yield _pointer_token(key), value


def _rebuild(node: Any, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Apply ``fn`` to every schema object, children first (returns new objects)."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key not in _SUBSCHEMA_KEYS:
            out[key] = value
        elif isinstance(value, list):
            out[key] = [_rebuild(sub, fn) for sub in value] if key in _LIST else value
        elif key in _MAP:
            if isinstance(value, dict):
                out[key] = {name: _rebuild(sub, fn) for name, sub in value.items()}
            else:
                out[key] = value
        elif key in _ONE:
            out[key] = _rebuild(value, fn)
        else:
            out[key] = value
    return fn(out)


def _nodes(schema: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(pointer, node)`` for the schema and all its subschemas (depth first)."""
    stack = [(pointer, schema)]
    while stack:
        where, node = stack.pop()
        yield where, node
        if isinstance(node, Mapping):
            children = [(f"{where}/{rel}", sub) for rel, sub in _children(node)]
            stack.extend(reversed(children))


def schema_nodes(schema: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``(JSON pointer, subschema)`` for a schema and every subschema in it.

    Parameters
    ----------
    schema
        A JSON schema.

    Yields
    ------
    tuple
        The pointer (``""`` for the root) and the subschema (a dict or a bool).
    """
    return _nodes(schema)


_IN_PLACE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas")


def _in_place_refs(node: Any) -> set[str]:
    """Return the references a node applies to the same value (not to a part of it)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if not isinstance(current, Mapping):
            continue
        for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
            if isinstance(current.get(keyword), str):
                found.add(current[keyword])
        for keyword in _IN_PLACE:
            value = current.get(keyword)
            if isinstance(value, list):
                stack.extend(value)
            elif isinstance(value, Mapping):
                stack.extend(value.values() if keyword == "dependentSchemas" else [value])
    return found


def unguarded_ref_cycle(schema: dict[str, Any]) -> str | None:
    """Return a local reference that leads back to itself on the same value, if any.

    ``{"$ref": "#"}`` is one: validating it never reads any of the value, and never ends
    (jsonschema hits ``RecursionError``; the engines loop). A recursion through
    ``properties`` or ``items`` is fine: each step reads a smaller part of the value.

    Parameters
    ----------
    schema
        A JSON schema.

    Returns
    -------
    str | None
        The reference (``"#"``, ``"#/$defs/A"``...), or ``None``.
    """
    graph: dict[str, set[str]] = {}
    todo = [
        ref
        for _, node in _nodes(schema)
        if isinstance(node, Mapping)
        for ref in _in_place_refs(node)
    ]
    while todo:
        ref = todo.pop()
        if ref in graph or not ref.startswith("#"):
            continue
        graph[ref] = {r for r in _in_place_refs(_ref_target(schema, ref)) if r.startswith("#")}
        todo.extend(graph[ref])
    for start in sorted(graph):
        seen: set[str] = set()
        stack = list(graph[start])
        while stack:
            ref = stack.pop()
            if ref == start:
                return start
            if ref not in seen:
                seen.add(ref)
                stack.extend(graph.get(ref, ()))
    return None


def _assertions(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in ANNOTATIONS and k not in CONTAINERS}


def _kept(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k in ANNOTATIONS or k in CONTAINERS}


# --- rewrites (each keeps the set of valid values) --------------------------------------


def drop_dollar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop ``$schema``, translating the older drafts' forms into draft 2020-12.

    LM Studio 0.4 has been seen to skip enforcement for a schema with ``$schema``.
    Draft 4-7 spellings are rewritten so that the schema means the same under 2020-12:
    ``items: [...]`` becomes ``prefixItems`` (``additionalItems`` becomes ``items``),
    ``dependencies`` splits into ``dependentRequired`` / ``dependentSchemas``, draft 4's
    boolean ``exclusiveMinimum``/``exclusiveMaximum`` become numbers, and a ``$ref``'s
    siblings (ignored before 2019-09) are removed.
    """
    dialect = str(schema.get("$schema", ""))
    old = any(f"draft-0{n}" in dialect for n in range(3, 8))
    draft4 = any(f"draft-0{n}" in dialect for n in (3, 4))

    def translate(node: dict[str, Any]) -> dict[str, Any]:
        node.pop("$schema", None)
        if not old:
            return node
        if "$ref" in node:
            return {k: v for k, v in node.items() if k == "$ref" or k in CONTAINERS}
        if isinstance(node.get("items"), list):
            node["prefixItems"] = node.pop("items")
            if "additionalItems" in node:
                node["items"] = node.pop("additionalItems")
        else:
            node.pop("additionalItems", None)  # no effect without an items array
        deps = node.pop("dependencies", None)
        if isinstance(deps, dict):
            required = {k: v for k, v in deps.items() if isinstance(v, list)}
            schemas = {k: v for k, v in deps.items() if not isinstance(v, list)}
            if required:
                node["dependentRequired"] = required
            if schemas:
                node["dependentSchemas"] = schemas
        if draft4:
            for bound, strict in (
                ("minimum", "exclusiveMinimum"),
                ("maximum", "exclusiveMaximum"),
            ):
                if isinstance(node.get(strict), bool) and node.pop(strict) and bound in node:
                    node[strict] = node.pop(bound)
        return node

    if "$schema" not in schema:
        return schema
    rebuilt: dict[str, Any] = _rebuild(schema, translate)
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

    rebuilt: dict[str, Any] = _rebuild(schema, anchor)
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
        rest = {k: v for k, v in _assertions(node).items() if k != "type"}
        if types is None and _untyped(rest):
            types = list(JSON_TYPES)
        if not isinstance(types, list) or not rest or not types:
            return node
        branches = []
        for t in types:
            own = _TYPE_KEYWORDS.get(t, frozenset())
            keep = {k: v for k, v in rest.items() if k not in _TYPED or k in own}
            branches.append({"type": t, **copy.deepcopy(keep)})
        return {**_kept(node), "anyOf": branches}

    rebuilt: dict[str, Any] = _rebuild(schema, split)
    return rebuilt


def spread_one_of(schema: dict[str, Any]) -> dict[str, Any]:
    """Move the assertions beside an ``anyOf``/``oneOf`` into each branch.

    Both engines read only the branches and drop the keywords beside them.
    ``S and (A or B)`` is ``(S and A) or (S and B)``, and exactly one of ``A, B`` holds under
    ``S`` exactly when exactly one of ``S and A, S and B`` holds. Skipped when a branch
    already has one of those keywords, or is not an object (a ``$ref`` or ``true``).
    """

    def spread(node: dict[str, Any]) -> dict[str, Any]:
        key = "anyOf" if "anyOf" in node else "oneOf" if "oneOf" in node else None
        if key is None or not isinstance(node[key], list) or ("anyOf" in node and "oneOf" in node):
            return node
        rest = {k: v for k, v in _assertions(node).items() if k != key}
        branches = node[key]
        if not rest or not all(
            isinstance(b, dict) and "$ref" not in b and not (rest.keys() & b.keys())
            for b in branches
        ):
            return node
        return {**_kept(node), key: [{**b, **copy.deepcopy(rest)} for b in branches]}

    rebuilt: dict[str, Any] = _rebuild(schema, spread)
    return rebuilt


def inline_single_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    """Write ``{"allOf": [A], ...}`` as ``A`` merged with its siblings (no keyword shared).

    Both engines misread ``allOf`` (llama.cpp builds an object, outlines-core concatenates
    the branches); a one-branch ``allOf`` is just its branch.
    """

    def inline(node: dict[str, Any]) -> dict[str, Any]:
        parts = node.get("allOf")
        if not (isinstance(parts, list) and len(parts) == 1 and isinstance(parts[0], dict)):
            return node
        rest = {k: v for k, v in node.items() if k != "allOf"}
        branch = parts[0]
        if _assertions(rest).keys() & _assertions(branch).keys():
            return node
        if "$ref" in branch and _assertions(rest):
            return node  # the engines drop a $ref's siblings
        return {**branch, **rest}

    rebuilt: dict[str, Any] = _rebuild(schema, inline)
    return rebuilt


def any_value(schema: dict[str, Any]) -> dict[str, Any]:
    """Write a schema without assertions (``{}``, ``{"title": ...}``) as an explicit union.

    llama.cpp's converter reads ``{}`` as "any object" and refuses ``{"title": "x"}``;
    outlines-core refuses ``{"title": "x"}``. Both read an ``anyOf`` of the six JSON
    types, which accepts every value, as the original does.
    """

    def explicit(node: dict[str, Any]) -> dict[str, Any]:
        if _assertions(node):
            return node
        return {**node, "anyOf": copy.deepcopy(ANY_TYPES)}

    rebuilt: dict[str, Any] = _rebuild(schema, explicit)
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

    rebuilt: dict[str, Any] = _rebuild(schema, fill)
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

    rebuilt: dict[str, Any] = _rebuild(schema, close)
    return rebuilt


def drop_unsupported_formats(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop a string ``format`` that not every engine knows (``ipv4``, ``hostname``...).

    In JSON Schema 2020-12 ``format`` is an annotation unless a validator opts in, so the
    set of valid values is unchanged. llama.cpp ignores such a format; outlines-core
    refuses the whole schema. `schema_findings` reports it as loose, from the original.
    """

    def drop(node: dict[str, Any]) -> dict[str, Any]:
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt not in _ALL_FORMATS:
            return {k: v for k, v in node.items() if k != "format"}
        return node

    rebuilt: dict[str, Any] = _rebuild(schema, drop)
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
            or _assertions(result).keys() != {"$ref"}
        ):
            return result
        target = _ref_target(result, ref)
        if not isinstance(target, dict):
            return result
        annotations = {k: v for k, v in result.items() if k != "$ref"}
        result = {**copy.deepcopy(target), **annotations}
    return result


_REWRITES: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (
    drop_dollar_schema,
    inline_root_ref,
    inline_single_all_of,
    spread_one_of,
    split_type_lists,
    empty_object_properties,
    close_tuples,
)
_LAST: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (
    # After the findings, which report dropped formats and patterns no engine can match.
    drop_unsupported_formats,
    anchor_patterns,
    any_value,
)
REWRITES = _REWRITES + _LAST
"""Every rewrite `normalise_schema` applies, in order."""


def _rewrite(schema: dict[str, Any], steps: tuple[Callable[..., dict[str, Any]], ...]) -> Any:
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
    result: dict[str, Any] = _rewrite(_rewrite(schema, _REWRITES), _LAST)
    return result


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
}
_LOOSE: dict[Engine, dict[str, str]] = {
    "llama.cpp": {
        "minProperties": "not enforced",
        "maxProperties": "not enforced",
    },
    "outlines-core": {},
}


def _ref_target(root: Any, ref: str) -> Any:
    node = root
    for part in ref[2:].split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _recursive_refs(root: Any) -> set[str]:
    """Return the local ``$ref`` targets that reach themselves again."""
    graph: dict[str, set[str]] = {}

    def refs_under(node: Any) -> set[str]:
        found = set()
        for _, sub in _nodes(node):
            if isinstance(sub, Mapping) and isinstance(sub.get("$ref"), str):
                found.add(sub["$ref"])
        return found

    todo = list(refs_under(root))
    while todo:
        ref = todo.pop()
        if ref in graph or not ref.startswith("#"):
            continue
        target = _ref_target(root, ref)
        graph[ref] = refs_under(target) if target is not None else set()
        todo.extend(graph[ref])
    looping = set()
    for start in graph:
        seen, stack = set(), list(graph[start])
        while stack:
            ref = stack.pop()
            if ref == start:
                looping.add(start)
                break
            if ref not in seen:
                seen.add(ref)
                stack.extend(graph.get(ref, ()))
    return looping


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
        if fmt not in _FORMATS[engine]:
            yield "format", "loose", f"format {fmt!r} is not enforced"
        elif "pattern" in node or (lengths and engine == "outlines-core"):
            yield "format", "loose", "the format is ignored beside a pattern or length"
        elif lengths and engine == "llama.cpp":
            yield lengths[0], "loose", "minLength/maxLength are ignored beside a format"


def _node_findings(
    node: Mapping[str, Any], engine: Engine, looping: set[str]
) -> Iterator[tuple[str, Status, str]]:
    """Yield ``(keyword, status, why)`` for one schema object (its children aside)."""
    for key, why in _REFUSED_EVERYWHERE.items():
        if key in node:
            yield key, "refused", why
    ref = node.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#/") and ref != "#":
            yield "$ref", "refused", "only references inside the schema ('#/$defs/...') work"
        elif ref in looping and engine == "outlines-core":
            yield "$ref", "loose", "recursion is cut at depth 3 (deeper fields are dropped)"
        for key in _assertions(node):
            if key != "$ref":
                yield key, "loose", "keywords beside a $ref are ignored"
        return
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) > 1:
        yield "allOf", "refused", "allOf with several branches is misread (merge them into one)"
    if "anyOf" in node and "oneOf" in node:
        yield "oneOf", "refused", "anyOf and oneOf together: one of them is dropped"
    elif "oneOf" in node or "anyOf" in node:
        key = "oneOf" if "oneOf" in node else "anyOf"
        if key == "oneOf":
            yield "oneOf", "loose", "matched as anyOf: 'exactly one' is not enforced"
        for other in _assertions(node):
            if other != key:
                yield other, "loose", f"keywords beside {key} are ignored"
        return
    for key, value in node.items():
        boolean = isinstance(value, bool) and key in _SUB_ONE and key != "additionalProperties"
        if boolean:
            yield key, "refused", "a boolean schema here is not supported"
    for key, sub in ((k, node.get(k)) for k in ("properties", "$defs", "definitions")):
        if isinstance(sub, Mapping) and any(isinstance(v, bool) for v in sub.values()):
            yield key, "refused", "a boolean schema here is not supported"
    if isinstance(node.get("prefixItems"), list) and isinstance(node.get("items"), dict):
        yield "items", "refused", "items beside prefixItems is misread by the engines"
    for container, bad in (("enum", node.get("enum")), ("const", node.get("const"))):
        values = bad if container == "enum" and isinstance(bad, list) else [bad]
        compound = any(isinstance(v, dict | list) for v in values)
        if container in node and engine == "outlines-core" and compound:
            yield container, "refused", "outlines-core takes only scalar enum/const values"
    if ("enum" in node or "const" in node) and engine == "llama.cpp":
        for other in _assertions(node):
            if other not in ("enum", "const", "type"):
                yield other, "loose", "keywords beside enum/const are ignored"
        return
    required = node.get("required")
    if isinstance(required, list) and not set(required) <= set(node.get("properties", {})):
        yield "required", "loose", "required names missing from properties are not enforced"
    yield from _string_findings(node, engine)
    for key, why in (*_LOOSE_EVERYWHERE.items(), *_LOOSE[engine].items()):
        if key in node:
            yield key, "loose", why
    if "properties" in node and engine == "outlines-core":
        for key in ("minProperties", "maxProperties"):
            if key in node:
                yield key, "loose", "ignored beside properties"


def _plain(node: Mapping[str, Any]) -> bool:
    """Whether a node is just a type with annotations (most nodes; nothing to report)."""
    return isinstance(node.get("type"), str) and all(
        key == "type" or key in ANNOTATIONS for key in node
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
    looping = _recursive_refs(schema)
    found: list[Finding] = []
    for pointer, node in _nodes(schema):
        if isinstance(node, Mapping) and not _plain(node):
            for keyword, status, why in _node_findings(node, engine, looping):
                found.append(Finding(f"{pointer}/{_pointer_token(keyword)}", keyword, status, why))
    return sorted(found, key=lambda f: f.status != "refused")


_WAYS_OUT = (
    "Ways out: restructure the schema without it; for a GGUF model, turn on grammar mode "
    "(from_lmstudio(..., grammar=True)) and send a Regex/CFG output type; or send a schema "
    "without it and rely on model.parse(..., retries=N), which validates every reply "
    "against your full schema."
)


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
    return schema_findings(_rewrite(schema, _REWRITES), engine)


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
    UnsupportedOutputTypeError
        For the first keyword the engine cannot constrain (or, when ``strict``, does not
        enforce), naming the keyword, its JSON pointer, the engine and the ways out.
    """
    prepared = _rewrite(schema, _REWRITES)  # each rewrite builds new objects
    engines = ENGINES if engine_format is None else (engine_for_format(engine_format),)
    for engine in engines:
        for finding in schema_findings(prepared, engine):
            if finding.status == "refused" or strict:
                what = "cannot constrain" if finding.status == "refused" else "does not enforce"
                raise UnsupportedOutputTypeError(
                    f"LM Studio's {engine} engine {what} the JSON-schema keyword "
                    f"{finding.keyword!r} at {finding.pointer or '/'} ({finding.why}). "
                    + ("" if finding.status == "refused" else "Strict schema checking is on. ")
                    + _WAYS_OUT
                )
    result: dict[str, Any] = _rewrite(prepared, _LAST)
    return result
