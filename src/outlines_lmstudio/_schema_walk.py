"""Walking JSON schemas: subschemas, pointers, references (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote

__all__ = [
    "ANNOTATIONS",
    "ANY_TYPES",
    "CONTAINERS",
    "JSON_TYPES",
    "MAX_SCHEMA_DEPTH",
    "SUB_ONE",
    "assertions",
    "core_nodes",
    "kept",
    "pointer_token",
    "rebuild",
    "endless_ref",
    "recursive_refs",
    "ref_target",
    "schema_nodes",
    "unguarded_ref_cycle",
]

MAX_SCHEMA_DEPTH = 64
"""Deepest nesting of a JSON schema we accept (deeper ones are refused, not sent)."""

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
SUB_ONE = (
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


def core_nodes(core_schema: object, *, strict: bool = False) -> Iterator[dict[str, Any]]:
    """Yield each dict of a Pydantic core schema once (it may hold cycles).

    Parameters
    ----------
    core_schema
        A type's ``__pydantic_core_schema__`` (or a ``TypeAdapter``'s ``core_schema``).
    strict
        Leave out what strict validation never runs: a ``lax-or-strict`` node's
        ``lax_schema`` (Pydantic's ``SecretStr`` holds a ``strict: False`` string there).

    Yields
    ------
    dict
        Every node, and every dict inside one (metadata, config).
    """
    stack, seen = [core_schema], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            yield node
            lax = strict and node.get("type") == "lax-or-strict"
            stack.extend(v for k, v in node.items() if not (lax and k == "lax_schema"))
        elif isinstance(node, list | tuple):
            stack.extend(node)


def pointer_token(key: str | int) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


_ONE, _MAP, _LIST = frozenset(SUB_ONE), frozenset(_SUB_MAP), frozenset(_SUB_LIST)
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
                    yield f"{key}/{pointer_token(name)}", sub
        elif key in _ONE:
            yield pointer_token(key), value


def rebuild(node: Any, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Apply ``fn`` to every schema object, children first (returns new objects)."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key not in _SUBSCHEMA_KEYS:
            out[key] = value
        elif isinstance(value, list):
            out[key] = [rebuild(sub, fn) for sub in value] if key in _LIST else value
        elif key in _MAP:
            if isinstance(value, dict):
                out[key] = {name: rebuild(sub, fn) for name, sub in value.items()}
            else:
                out[key] = value
        elif key in _ONE:
            out[key] = rebuild(value, fn)
        else:
            out[key] = value
    return fn(out)


def schema_nodes(schema: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(JSON pointer, subschema)`` for a schema and every subschema, depth first.

    Parameters
    ----------
    schema
        A JSON schema.
    pointer
        The pointer of ``schema`` itself (``""`` for a root).

    Yields
    ------
    tuple
        The pointer and the subschema (a dict or a bool).
    """
    stack = [(pointer, schema)]
    while stack:
        where, node = stack.pop()
        yield where, node
        if isinstance(node, Mapping):
            children = [(f"{where}/{rel}", sub) for rel, sub in _children(node)]
            stack.extend(reversed(children))


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
        for _, node in schema_nodes(schema)
        if isinstance(node, Mapping)
        for ref in _in_place_refs(node)
    ]
    while todo:
        ref = todo.pop()
        if ref in graph or not ref.startswith("#"):
            continue
        graph[ref] = {r for r in _in_place_refs(ref_target(schema, ref)) if r.startswith("#")}
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


def assertions(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in ANNOTATIONS and k not in CONTAINERS}


def kept(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k in ANNOTATIONS or k in CONTAINERS}


def ref_target(root: Any, ref: str) -> Any:
    """Return what a local ``$ref`` points to, as JSON Schema reads it (``None`` if nothing).

    The fragment is percent-decoded first (``#/$defs/C%61t`` is ``Cat``), then read as a
    JSON Pointer (``~1`` is ``/``), as jsonschema, which checks the replies, reads it. The
    engines read it as written: `_dialects` refuses a reference whose two readings differ.
    """
    # Not jsonpointer's resolve: it finds nothing at an index such as "01", which jsonschema's
    # `referencing` reads with int() as this does; and a miss here is None, not an error.
    node = root
    ref = unquote(ref)
    for part in ref[2:].split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def recursive_refs(root: Any, *, through_properties: bool = True) -> set[str]:
    """Return the local ``$ref`` targets that reach themselves again.

    With ``through_properties=False``, only those that do without going through an object's
    ``properties`` (through array items, ``additionalProperties``, branches): outlines-core
    cuts a recursion at depth 3 by dropping the object property it is in, and such a cycle
    has none to drop, so it fails ("Ref recursion limit reached"), or drops the nearest
    enclosing property, required or not, and writes invalid JSON (found by a probe).
    """
    graph: dict[str, set[str]] = {}
    refs_under = _refs_under if through_properties else _refs_outside_properties
    todo = list(_refs_under(root))  # every reference; the steps from each, as asked
    while todo:
        ref = todo.pop()
        if ref in graph or not ref.startswith("#"):
            continue
        target = ref_target(root, ref)
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


def _refs_under(node: Any) -> set[str]:
    found = set()
    for _, sub in schema_nodes(node):
        if isinstance(sub, Mapping) and isinstance(sub.get("$ref"), str):
            found.add(sub["$ref"])
    return found


_NOT_FOLLOWED = frozenset({"properties", "$defs", "definitions", "enum", "const", *ANNOTATIONS})
"""Keys `_refs_outside_properties` does not enter: object properties, and what no value
goes through (definitions, annotations such as ``default`` and ``examples``)."""


def _refs_outside_properties(node: Any) -> set[str]:
    found, stack = set(), [node]
    while stack:  # a stack: data may nest deeper than the recursion limit
        sub = stack.pop()
        if isinstance(sub, Mapping):
            ref = sub.get("$ref")
            if isinstance(ref, str):
                found.add(ref)
            stack.extend(v for k, v in sub.items() if k not in _NOT_FOLLOWED)
        elif isinstance(sub, list):
            stack.extend(sub)
    return found


def endless_ref(schema: dict[str, Any]) -> str | None:
    """Return a recursive local reference no finite value can satisfy, if any.

    ``{"properties": {"child": {"$ref": "#"}}, "required": ["child"]}`` is one: each value
    must hold another, so none ends (a model writes until its token limit). Found as a least
    fixpoint: a recursive reference counts as endless until one of its values is shown
    to end without it. Keywords this does not follow (``not``, ``if``...) count as ending,
    so only a schema that certainly has no finite value is reported.

    Parameters
    ----------
    schema
        A JSON schema.

    Returns
    -------
    str | None
        The first such reference (``"#/$defs/Node"``...), in order, or ``None``.
    """
    refs = sorted(r for r in recursive_refs(schema) if r.startswith("#"))
    ends = dict.fromkeys(refs, False)
    changed = True
    while changed:  # at most one more reference shown to end per round: it terminates
        changed = False
        for ref in refs:
            if not ends[ref] and _can_end(ref_target(schema, ref), ends):
                ends[ref] = changed = True
    return next((ref for ref in refs if not ends[ref]), None)


def _can_end(node: Any, ends: dict[str, bool]) -> bool:
    """Whether ``node`` has a finite value, with ``ends`` for the recursive references."""
    if node is False:
        return False
    if not isinstance(node, Mapping):
        return True
    ref = node.get("$ref")
    if isinstance(ref, str) and not ends.get(ref, True):
        return False
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if isinstance(branches, list) and not any(_can_end(b, ends) for b in branches):
            return False
    branches = node.get("allOf")
    if isinstance(branches, list) and not all(_can_end(b, ends) for b in branches):
        return False
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = node.get("required")
        if isinstance(required, list) and not all(
            _can_end(properties[name], ends)
            for name in required
            if isinstance(name, str) and name in properties
        ):
            return False
        # At least N keys (`dict[str, Node]` with min_length, found by a probe): those the
        # declared properties cannot give must come from additionalProperties.
        least = node.get("minProperties", 0)
        if isinstance(least, int) and least > 0 and not node.get("patternProperties"):
            ending = sum(1 for value in properties.values() if _can_end(value, ends))
            if least > ending and not _can_end(node.get("additionalProperties", True), ends):
                return False
    elif kind == "array":
        least = node.get("minItems", 0)
        prefix = node.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        if not isinstance(least, int) or least <= 0:
            return True
        if not all(_can_end(item, ends) for item in prefix[:least]):
            return False
        if least > len(prefix):
            return _can_end(node.get("items", True), ends)
    return True
