"""Whether a ``oneOf``'s branches exclude each other (pure, no I/O).

Both of LM Studio's engines match a ``oneOf`` as an ``anyOf``: a value matching two branches
is written as readily as one matching one. That loosens nothing when no value can match two
branches, as in every Pydantic discriminated union: each branch requires the tag property,
with a ``const`` of its own (found by a probe: ``strict_schema=True`` refused them all, and
accepted the same union without its discriminator, sent as an ``anyOf``).

No library decides this: whether two JSON schemas overlap is undecidable in general, so
only the forms the engines themselves write exactly are taken as exclusive, and any doubt
counts as overlap (which keeps the "loose" report, as before).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from ._schema_walk import ref_target

__all__ = ["exclusive_branches"]

_NUMBERS = frozenset({"integer", "number"})
"""The JSON types that share values (an integer is a number)."""

_SCALARS = (str, int, float, bool, type(None))


def exclusive_branches(root: Mapping[str, Any], branches: object) -> bool:
    """Tell whether no JSON value can match two of a ``oneOf``'s branches.

    Two branches exclude each other when they ask for different JSON types (``integer`` and
    ``number`` share values), for different values (``const`` or ``enum`` of scalars), or
    for different values of a property both require (a discriminated union's tag).

    Parameters
    ----------
    root
        The whole schema, where a branch's ``$ref`` (``#/$defs/Cat``) is resolved.
    branches
        The ``oneOf``'s value.

    Returns
    -------
    bool
        True when every pair of branches excludes each other; False in any doubt.
    """
    if not isinstance(branches, list):
        return False
    resolved = [node for branch in branches if (node := _resolved(root, branch)) is not None]
    if len(resolved) < len(branches):
        return False
    return all(_apart(root, a, b) for a, b in itertools.combinations(resolved, 2))


def _resolved(root: Mapping[str, Any], node: object, depth: int = 0) -> Mapping[str, Any] | None:
    """Follow a branch that is only a ``$ref`` (a few steps), as the engines do."""
    while isinstance(node, Mapping) and set(node) == {"$ref"} and depth < 8:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            return None
        node, depth = ref_target(root, ref), depth + 1
    return node if isinstance(node, Mapping) and "$ref" not in node else None


def _apart(root: Mapping[str, Any], a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two (resolved) schemas share no value, by the forms the engines enforce."""
    type_a, type_b = a.get("type"), b.get("type")
    if (
        isinstance(type_a, str)
        and isinstance(type_b, str)
        and type_a != type_b
        and not {type_a, type_b} <= _NUMBERS
    ):
        return True
    values_a, values_b = _values(a), _values(b)
    if values_a is not None and values_b is not None:
        return _disjoint(values_a, values_b)
    return any(
        _tag_apart(root, a, b, name) for name in _required(a) & _required(b) if _is_object(a, b)
    )


def _is_object(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.get("type") == "object" and b.get("type") == "object"


def _required(node: Mapping[str, Any]) -> set[str]:
    required = node.get("required")
    if not isinstance(required, list):
        return set()
    properties = node.get("properties")
    names = {name for name in required if isinstance(name, str)}
    return names & set(properties) if isinstance(properties, Mapping) else set()


def _tag_apart(
    root: Mapping[str, Any], a: Mapping[str, Any], b: Mapping[str, Any], name: str
) -> bool:
    """Whether a property both require takes different values in each."""
    tag_a = _resolved(root, a["properties"][name])
    tag_b = _resolved(root, b["properties"][name])
    if tag_a is None or tag_b is None:
        return False
    values_a, values_b = _values(tag_a), _values(tag_b)
    return values_a is not None and values_b is not None and _disjoint(values_a, values_b)


def _values(node: Mapping[str, Any]) -> list[Any] | None:
    """Return the values a ``const`` or ``enum`` of scalars allows (``None`` if neither)."""
    if "const" in node:
        values = [node["const"]]
    elif isinstance(node.get("enum"), list):
        values = node["enum"]
    else:
        return None
    return values if all(isinstance(v, _SCALARS) for v in values) else None


def _disjoint(values_a: list[Any], values_b: list[Any]) -> bool:
    # Python's == takes 1 == 1.0 (equal in JSON Schema too) and also True == 1 (not equal
    # in JSON Schema): the latter counts as overlap, the safe side.
    return not any(x == y for x in values_a for y in values_b)
