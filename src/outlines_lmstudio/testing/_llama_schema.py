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

__all__ = ["refused_boolean", "refused_pattern"]


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
    for _, node in _visited(schema):
        pattern = _pattern(node)
        if pattern is not None and not (pattern.startswith("^") and pattern.endswith("$")):
            return pattern
    return None


def refused_boolean(schema: Any) -> str | None:
    """Return where the converter reaches a boolean schema it refuses, or None.

    llama.cpp's C++ converter takes ``true``/``false`` only as ``additionalProperties``;
    anywhere else it reaches one (``items: false`` after ``prefixItems``, a property's
    ``true``, an ``anyOf`` branch) it fails: "JSON schema error at #/items: schema must be
    an object" (llama-cpp-python 0.3.36's sources, built and run). Unreached ones (an
    unused ``$defs`` entry) are not read.

    Returns
    -------
    str | None
        The JSON pointer of the first one, as the converter writes it (``#/items``).
    """
    for pointer, node in _visited(schema):
        if isinstance(node, bool) and not pointer.endswith("/additionalProperties"):
            return f"#{pointer}"
    return None


def _pattern(node: Any) -> str | None:
    """Return the pattern the converter reads at ``node``: a string's, as its ``visit``."""
    if _branch(node) == "string":
        return str(node["pattern"])
    return None


def _branch(node: Any) -> str:
    """Name the branch of the converter's ``visit`` that ``node`` takes, in its order."""
    if not isinstance(node, dict):
        return "other"
    kind = node.get("type")
    if "$ref" in node:
        return "ref"
    if "oneOf" in node or "anyOf" in node:
        return "union"
    if isinstance(kind, list):
        return "types"
    if "const" in node or "enum" in node:
        return "value"
    if kind in (None, "object") and _is_object(node):
        return "object"
    if kind in (None, "object", "string") and "allOf" in node:
        return "allOf"
    if kind in (None, "array") and ("items" in node or "prefixItems" in node):
        return "array"
    if kind in (None, "string") and isinstance(node.get("pattern"), str):
        return "string"
    return "other"


def _visited(root: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``(pointer, node)`` for each node the converter visits, in its order.

    Depth first with a stack of its own, not recursion: a ``$ref`` chain 1,000 long, which
    the C++ converter follows, overflowed Python's recursion (found by a probe). A stack
    entry is a node, or an ``allOf`` member still to resolve (resolved when it is reached,
    in the converter's order). A node reached through ``$ref`` has its target's pointer.
    """
    refs: set[str] = set()
    stack: list[tuple[bool, str, Any]] = [(False, "", root)]
    while stack:
        member, pointer, node = stack.pop()
        if member:  # an allOf member: its properties (a reference resolved now)
            if isinstance(node, dict) and "$ref" in node:
                pointer, node = str(node["$ref"])[1:], _target(node["$ref"], root, refs)
            if isinstance(node, bool):
                yield pointer, node
            elif isinstance(node, dict):
                stack.extend(reversed(_properties(node, pointer)))
            continue
        yield pointer, node
        stack.extend(reversed(_step(node, pointer, root, refs)))


def _step(node: Any, at: str, root: Any, refs: set[str]) -> list[tuple[bool, str, Any]]:
    """Return what the converter visits below ``node`` (at pointer ``at``), in its order.

    As its ``visit`` branches (``True``: an ``allOf`` member); a leaf visits nothing.
    """
    branch = _branch(node)
    if branch == "ref":
        return [(False, str(node["$ref"])[1:], _target(node["$ref"], root, refs))]
    if branch == "union":
        key = "oneOf" if "oneOf" in node else "anyOf"
        return [(False, f"{at}/{key}/{i}", sub) for i, sub in enumerate(_list(node[key]))]
    if branch == "types":
        return [(False, at, {**node, "type": single}) for single in node["type"]]
    if branch == "object":
        extra = (False, f"{at}/additionalProperties", node.get("additionalProperties"))
        return [*_properties(node, at), extra]
    if branch == "allOf":
        members: list[tuple[bool, str, Any]] = []
        for i, part in enumerate(_list(node["allOf"])):
            where = f"{at}/allOf/{i}"
            if isinstance(part, dict) and "anyOf" in part:
                members.extend(
                    (True, f"{where}/anyOf/{j}", sub) for j, sub in enumerate(_list(part["anyOf"]))
                )
            else:
                members.append((True, where, part))
        return members
    if branch == "array":
        key = "items" if "items" in node else "prefixItems"
        items = node[key]
        if isinstance(items, list):
            return [(False, f"{at}/{key}/{i}", sub) for i, sub in enumerate(items)]
        return [(False, f"{at}/{key}", items)]
    return []


def _properties(node: dict[str, Any], at: str) -> list[tuple[bool, str, Any]]:
    properties = node.get("properties")
    if not isinstance(properties, dict):
        return []
    return [(False, f"{at}/properties/{name}", sub) for name, sub in properties.items()]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_object(node: dict[str, Any]) -> bool:
    """Whether the converter builds an object rule for ``node`` (properties, or strict extras)."""
    return "properties" in node or node.get("additionalProperties", True) is not True


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
