"""What llama.cpp's JSON-schema converter refuses, found without llama.cpp.

The synthetic engine writes JSON with outlines-core for every model, but LM Studio runs
a GGUF model's schema through llama.cpp's converter (``common/json-schema-to-grammar.cpp``),
which refuses a ``pattern`` that is not anchored ``^...$`` (lmstudio-bug-tracker #2168).
`refused_pattern` walks a schema the way the converter's ``visit`` does, so only the
patterns the converter reads count: one beside ``enum``, ``const``, ``anyOf`` or
``properties`` is never read, as there. `integer_range_failure` finds, the same way, an
integer's range the converter writes as a repetition whose maximum is below its minimum,
on which llama.cpp's grammar parser makes rules until memory runs out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from outlines_lmstudio.testing._llama_integers import integer_bounds, reversed_repetition

__all__ = [
    "REVERSED_REPETITION",
    "local_target",
    "read_patterns",
    "refused_pattern",
    "integer_range_failure",
]

REVERSED_REPETITION = "the repetition {} has a maximum below its minimum"
"""Why a grammar with a reversed repetition fails (llama.cpp would not end parsing it)."""


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
    """
    for leaf in _leaves(root):
        if leaf.get("type") != "integer":
            yield leaf["pattern"]


def integer_range_failure(root: Any) -> str | None:
    """Return how LM Studio fails on an integer's range the converter cannot write, or None.

    Parameters
    ----------
    root
        A JSON schema, as the request carries it.

    Returns
    -------
    str | None
        For an ``integer`` node the converter reaches whose range's negation reaches an
        end of ``int64_t`` (``minimum: -(2**63 - 1)`` alone), the converter's failure;
        else, for one whose ``build_min_max_int`` writes a repetition with its maximum
        below its minimum (``{16,15}``: mostly a minimum alone of 16 digits or more, or a
        negative maximum alone of as many), the grammar parser's, naming the first such
        repetition found (in the order of the schema's nodes, not of the grammar's
        rules). Bounds as the converter reads them (`integer_bounds`).
    """
    repeats = []
    for leaf in _leaves(root):
        if leaf.get("type") != "integer":
            continue
        low, high = integer_bounds(leaf)
        if low is None and high is None:
            continue  # a plain integer
        try:
            repeats.append(reversed_repetition(low, high))
        except ValueError as failed:  # the conversion fails before any grammar is parsed
            return (
                "Failed to convert the JSON schema to a grammar: JSON schema conversion "
                f"failed: {failed}"
            )
    repeat = next((r for r in repeats if r is not None), None)
    if repeat is None:
        return None
    return f"Failed to parse the grammar: {REVERSED_REPETITION.format(repeat)}"


def _leaves(root: Any) -> Iterator[dict[str, Any]]:
    """Yield the nodes the converter writes a pattern or an integer range for, in its order.

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
        leaf, children = _step(node, root, refs)
        if leaf is not None:
            yield leaf
        stack.extend(reversed(children))


def _step(
    node: Any, root: Any, refs: set[str]
) -> tuple[dict[str, Any] | None, list[tuple[bool, Any]]]:
    """Return ``node`` if the converter writes its pattern or range, and what it visits below.

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
        return node, []
    if kind == "integer" and any(key in node for key in _INTEGER_BOUNDS):
        return node, []  # read after the string's keywords: a string node never gets here
    return None, []


_INTEGER_BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")


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
