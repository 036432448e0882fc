"""JSON schemas no document can match, found before the sampler builds a constraint.

outlines-core builds a regex for some of them anyway and the sampler wrote documents that
break the schema: ``{"type": "integer", "minimum": 5, "maximum": 3}`` gave ``14`` (the
bounds are checked apart from the regex), ``{"enum": []}`` gave an empty reply, and a
required property whose schema is the schema itself (``{"type": "object", "properties":
{"c": {"$ref": "#"}}, "required": ["c"]}``: only an infinitely deep document matches; without
``type`` a number would match) gave an object missing that property where outlines-core
stops recursing. LM Studio's engines fail to
build a grammar for such schemas; the emulator refuses them the same way.

The checks are conservative: a schema they pass may still admit no document (then the
sampler's own check, or its re-draws, take over), but one they refuse admits none.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

__all__ = ["impossible"]


def impossible(schema: Any) -> str | None:
    """Say why no JSON document matches ``schema`` (None if none of the checks finds it)."""
    problem = _empty(schema, "$")
    return problem if problem is not None else _endless(schema)


def _empty(node: Any, path: str) -> str | None:
    """Say which part of ``node`` that every value must match admits no value (or None).

    Only parts every matching value goes through count: the node's own keywords, its
    ``allOf`` members, its required properties, its first ``minItems`` items, and
    ``anyOf`` / ``oneOf`` when every branch is empty. An optional property, one branch
    of several, or a ``not`` may be empty while the schema still admits documents.
    """
    if not isinstance(node, dict):
        return None
    problem = _empty_node(node)
    if problem is not None:
        return f"{path} admits no value: {problem}"
    members = node.get("allOf")
    for index, member in enumerate(members if isinstance(members, list) else []):
        if (problem := _empty(member, f"{path}.allOf[{index}]")) is not None:
            return problem
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if isinstance(branches, list) and branches:
            problems = [_empty(b, f"{path}.{key}[{i}]") for i, b in enumerate(branches)]
            if all(p is not None for p in problems):
                return problems[0]
    for name, sub in _required_parts(node):
        if (problem := _empty(sub, f"{path}.{name}")) is not None:
            return problem
    return None


def _required_parts(node: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield the subschemas of an object's required properties and an array's first items."""
    if node.get("type") == "object":
        properties, required = node.get("properties"), node.get("required")
        if isinstance(properties, dict) and isinstance(required, list):
            for name in required:
                if isinstance(name, str) and name in properties:
                    yield f"properties.{name}", properties[name]
    if node.get("type") == "array":
        least = node.get("minItems")
        count = least if isinstance(least, int) and not isinstance(least, bool) else 0
        prefix = node.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        for index, item in enumerate(prefix[:count]):
            yield f"prefixItems[{index}]", item
        if count > len(prefix) and isinstance(node.get("items"), dict):
            yield "items", node["items"]


def _bound(node: dict[str, Any], key: str) -> float | None:
    value = node.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _empty_node(node: dict[str, Any]) -> str | None:
    """Say why one node admits no value by its own keywords (None if it may)."""
    if node.get("enum") == []:
        return "its enum lists no value"
    kind = node.get("type")
    if kind not in ("integer", "number") or "enum" in node or "const" in node:
        return None
    low, xlow = _bound(node, "minimum"), _bound(node, "exclusiveMinimum")
    high, xhigh = _bound(node, "maximum"), _bound(node, "exclusiveMaximum")
    if kind == "integer":
        # The least and the greatest integer within the bounds.
        lows = [math.ceil(low)] if low is not None else []
        lows += [math.floor(xlow) + 1] if xlow is not None else []
        highs = [math.floor(high)] if high is not None else []
        highs += [math.ceil(xhigh) - 1] if xhigh is not None else []
        if lows and highs and max(lows) > min(highs):
            return f"no integer lies within its bounds ({_bounds_text(node)})"
        return None
    strict_lows = [(v, False) for v in (low,) if v is not None]
    strict_lows += [(v, True) for v in (xlow,) if v is not None]
    strict_highs = [(v, False) for v in (high,) if v is not None]
    strict_highs += [(v, True) for v in (xhigh,) if v is not None]
    for lo, lo_strict in strict_lows:
        for hi, hi_strict in strict_highs:
            if lo > hi or (lo == hi and (lo_strict or hi_strict)):
                return f"no number lies within its bounds ({_bounds_text(node)})"
    return None


def _bounds_text(node: dict[str, Any]) -> str:
    keys = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
    return ", ".join(f"{key} {node[key]}" for key in keys if _bound(node, key) is not None)


# -- a required recursion without end ------------------------------------------------------


def _endless(schema: Any) -> str | None:
    """Say which local ``$ref`` every matching document must nest in itself forever.

    A reference must be followed when the value it names must be present: the node itself,
    its ``allOf`` members, its required properties, the first ``minItems`` of its items
    (``prefixItems`` and ``items``), and a reference every ``anyOf`` / ``oneOf`` branch
    must follow. A reference that must, through these, follow itself admits only infinite
    documents.
    """
    if not isinstance(schema, dict):
        return None
    graph: dict[str, set[str]] = {}
    pending = ["#"]
    while pending:
        ref = pending.pop()
        if ref in graph:
            continue
        target = _resolve(schema, ref)
        graph[ref] = _must_follow(target) if target is not None else set()
        pending.extend(graph[ref])
    for start in graph:
        seen: set[str] = set()
        stack = list(graph[start])
        while stack:
            ref = stack.pop()
            if ref == start:
                return (
                    f"every document must nest {start!r} in itself without end (a required "
                    "property or item refers back to it): only an infinite document matches; "
                    "make the recursion optional"
                )
            if ref not in seen:
                seen.add(ref)
                stack.extend(graph.get(ref, ()))
    return None


def _resolve(schema: dict[str, Any], ref: str) -> Any:
    """Return the subschema a local reference (``#``, ``#/$defs/Name``) names, or None."""
    if not ref.startswith("#"):
        return None
    node: Any = schema
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _must_follow(node: Any) -> set[str]:
    """Return the local references every value matching ``node`` must contain a value of."""
    if not isinstance(node, dict):
        return set()
    refs: set[str] = set()
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        refs.add(ref)
    for member in node.get("allOf", []) if isinstance(node.get("allOf"), list) else []:
        refs |= _must_follow(member)
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if isinstance(branches, list) and branches:
            common = set.intersection(*(_must_follow(b) for b in branches))
            refs |= common
    for _, part in _required_parts(node):
        refs |= _must_follow(part)
    return refs
