"""What llama.cpp's JSON-schema converter refuses, found without llama.cpp.

The synthetic engine writes JSON with outlines-core for every model, but LM Studio runs
a GGUF model's schema through llama.cpp's converter (``common/json-schema-to-grammar.cpp``),
which refuses a ``pattern`` that is not anchored ``^...$`` (lmstudio-bug-tracker #2168).
`refused_pattern` walks a schema the way the converter's ``visit`` does, so only the
patterns the converter reads count: one beside ``enum``, ``const``, ``anyOf`` or
``properties`` is never read, as there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["refused_pattern"]


def refused_pattern(schema: Any) -> str | None:
    """Return the first pattern llama.cpp's converter would refuse, or None.

    Parameters
    ----------
    schema
        A JSON schema, as the request carries it.

    Returns
    -------
    str | None
        A ``pattern`` the converter reaches that does not start with ``^`` and end
        with ``$``.
    """
    for pattern in _patterns(schema, schema, set()):
        if not (pattern.startswith("^") and pattern.endswith("$")):
            return pattern
    return None


def _patterns(node: Any, root: Any, refs: set[str]) -> Iterator[str]:
    """Yield the patterns the converter reads in ``node``, in its order of keywords."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if "$ref" in node:
        yield from _patterns(_target(node["$ref"], root, refs), root, refs)
    elif "oneOf" in node or "anyOf" in node:
        yield from _each(node.get("oneOf", node.get("anyOf")), root, refs)
    elif isinstance(kind, list):
        for single in kind:
            yield from _patterns({**node, "type": single}, root, refs)
    elif "const" in node or "enum" in node:
        return
    elif kind in (None, "object") and _is_object(node):
        yield from _each(_values(node.get("properties")), root, refs)
        yield from _patterns(node.get("additionalProperties"), root, refs)
    elif kind in (None, "object", "string") and "allOf" in node:
        yield from _all_of(node["allOf"], root, refs)
    elif kind in (None, "array") and ("items" in node or "prefixItems" in node):
        items = node.get("items", node.get("prefixItems"))
        yield from _each(items if isinstance(items, list) else [items], root, refs)
    elif kind in (None, "string") and isinstance(node.get("pattern"), str):
        yield node["pattern"]


def _is_object(node: dict[str, Any]) -> bool:
    """Whether the converter builds an object rule for ``node`` (properties, or strict extras)."""
    return "properties" in node or node.get("additionalProperties", True) is not True


def _all_of(parts: Any, root: Any, refs: set[str]) -> Iterator[str]:
    """Yield the patterns of the properties ``allOf`` merges (its members' ``anyOf`` too)."""
    for part in parts if isinstance(parts, list) else []:
        members = part.get("anyOf") if isinstance(part, dict) and "anyOf" in part else [part]
        for member in members if isinstance(members, list) else []:
            if isinstance(member, dict) and "$ref" in member:
                member = _target(member["$ref"], root, refs)
            if isinstance(member, dict):
                yield from _each(_values(member.get("properties")), root, refs)


def _each(nodes: Any, root: Any, refs: set[str]) -> Iterator[str]:
    for node in nodes if isinstance(nodes, list) else []:
        yield from _patterns(node, root, refs)


def _values(properties: Any) -> list[Any]:
    return list(properties.values()) if isinstance(properties, dict) else []


def _target(ref: Any, root: Any, refs: set[str]) -> Any:
    """Return the local schema ``ref`` points at, once per ref (None otherwise)."""
    if not isinstance(ref, str) or not ref.startswith("#/") or ref in refs:
        return None
    refs.add(ref)
    target = root
    for part in ref[2:].split("/"):  # as the converter: no "~1" / "~0" unescaping
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return None
    return target
