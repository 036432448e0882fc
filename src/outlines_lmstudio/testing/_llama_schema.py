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

__all__ = ["local_target", "read_patterns", "refused_pattern"]


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
    for pattern in read_patterns(schema):
        if not (pattern.startswith("^") and pattern.endswith("$")):
            return pattern
    return None


def read_patterns(root: Any) -> Iterator[str]:
    """Yield the patterns the converter reads in ``root``, in its order of keywords.

    An empty pattern is none: the converter then reads the string's other keywords.

    Depth first with a stack of its own, not recursion: a ``$ref`` chain 1,000 long, which
    the C++ converter follows, overflowed Python's recursion (found by a probe). A stack
    entry is a node, or an ``allOf`` member still to resolve (resolved when it is reached,
    in the converter's order).
    """
    refs: set[str] = set()
    stack: list[tuple[bool, Any]] = [(False, root)]
    while stack:
        member, node = stack.pop()
        if member:  # an allOf member: its properties (a reference resolved now)
            if isinstance(node, dict) and "$ref" in node:
                node = _target(node["$ref"], root, refs)
            if isinstance(node, dict):
                stack.extend((False, sub) for sub in reversed(_values(node.get("properties"))))
            continue
        pattern, children = _step(node, root, refs)
        if pattern is not None:
            yield pattern
        stack.extend(reversed(children))


def _step(node: Any, root: Any, refs: set[str]) -> tuple[str | None, list[tuple[bool, Any]]]:
    """Return the pattern the converter reads at ``node``, and what it visits below it.

    As its ``visit`` branches; the nodes below come in its order (``True``: an ``allOf``
    member).
    """
    if not isinstance(node, dict):
        return None, []
    kind = node.get("type")
    if "$ref" in node:
        return None, [(False, _target(node["$ref"], root, refs))]
    if "oneOf" in node or "anyOf" in node:
        return None, [(False, sub) for sub in _list(node.get("oneOf", node.get("anyOf")))]
    if isinstance(kind, list):
        return None, [(False, {**node, "type": single}) for single in kind]
    if "const" in node or "enum" in node:
        return None, []
    if kind in (None, "object") and _is_object(node):
        properties = [(False, sub) for sub in _values(node.get("properties"))]
        return None, [*properties, (False, node.get("additionalProperties"))]
    if kind in (None, "object", "string") and "allOf" in node:
        members: list[tuple[bool, Any]] = []
        for part in _list(node["allOf"]):
            inner = part.get("anyOf") if isinstance(part, dict) and "anyOf" in part else [part]
            members.extend((True, member) for member in _list(inner))
        return None, members
    if kind in (None, "array") and ("items" in node or "prefixItems" in node):
        items = node.get("items", node.get("prefixItems"))
        return None, [(False, sub) for sub in (items if isinstance(items, list) else [items])]
    if kind in (None, "string") and isinstance(node.get("pattern"), str) and node["pattern"]:
        return node["pattern"], []
    return None, []


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_object(node: dict[str, Any]) -> bool:
    """Whether the converter builds an object rule for ``node`` (properties, or strict extras)."""
    return "properties" in node or node.get("additionalProperties", True) is not True


def _values(properties: Any) -> list[Any]:
    return list(properties.values()) if isinstance(properties, dict) else []


def _target(ref: Any, root: Any, refs: set[str]) -> Any:
    """Return the local schema ``ref`` points at, once per ref (None otherwise)."""
    if not isinstance(ref, str) or ref in refs:
        return None
    refs.add(ref)
    return local_target(ref, root)


def local_target(ref: str, root: Any) -> Any:
    """Return the schema ``ref`` points at in ``root`` (None if none), as llama.cpp resolves it."""
    if not ref.startswith("#/"):
        return None
    target = root
    for part in ref[2:].split("/"):  # as the converter: no "~1" / "~0" unescaping
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return None
    return target
