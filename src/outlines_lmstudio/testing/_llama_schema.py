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

import math
from collections.abc import Iterator
from typing import Any

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
        rules). Bounds as the converter reads them (`_integer_bounds`).
    """
    repeats = []
    for leaf in _leaves(root):
        if leaf.get("type") != "integer":
            continue
        low, high = _integer_bounds(leaf)
        if low is None and high is None:
            continue  # a plain integer
        least = _INT64_MIN if low is None else low
        most = _INT64_MAX if high is None else high
        try:
            repeats.append(_reversed_repetition(least, most, 16))
        except ValueError as failed:  # the conversion fails before any grammar is parsed
            return (
                "Failed to convert the JSON schema to a grammar: JSON schema conversion "
                f"failed: {failed}"
            )
    repeat = next((r for r in repeats if r is not None), None)
    return (
        None
        if repeat is None
        else f"Failed to parse the grammar: {REVERSED_REPETITION.format(repeat)}"
    )


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _integer_bounds(node: dict[str, Any]) -> tuple[int | None, int | None]:
    """Return the bounds as the converter's schema builder reads them (None: none).

    ``minimum`` rounded up, else ``exclusiveMinimum`` rounded down plus one; ``maximum``
    rounded down, else ``exclusiveMaximum`` rounded up minus one; in ``int64_t``, a step
    past its end wrapping, and its least and greatest values meaning none.
    """

    def read(plain: str, exclusive: str, step: int) -> int | None:
        key = plain if plain in node else exclusive
        value = node.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if isinstance(value, float):
            if not math.isfinite(value):
                return None
            value = math.ceil(value) if (key == plain) == (step > 0) else math.floor(value)
        if not _INT64_MIN <= value <= _INT64_MAX:
            return None  # cast: garbage the library never sends
        if key == exclusive:
            value = (value + step - _INT64_MIN) % 2**64 + _INT64_MIN
        return None if value == (_INT64_MIN if step > 0 else _INT64_MAX) else value

    return read("minimum", "exclusiveMinimum", 1), read("maximum", "exclusiveMaximum", -1)


def _negated(value: int) -> int:
    return value if value == _INT64_MIN else -value  # int64_t's least is its own negation


def _reversed_repetition(low: int, high: int, decimals: int) -> str | None:
    """Return the first reversed repetition ``build_min_max_int(low, high)`` writes, or None.

    Hand-written (no package has the C++ function): its branches, only as far as they
    call ``more_digits`` with a minimum over the maximum, in the order it writes (a
    minimum alone: ``[0-9]{len,decimals - 1}`` after a first digit over 1, the digits
    after the first with one decimal less, then ``[0-9]{len - 1,decimals - 1}`` after one
    under 9). The ends of ``int64_t`` mean no bound, as there.

    Raises
    ------
    ValueError
        With the converter's message, where neither bound is left.
    """
    has_low, has_high = low != _INT64_MIN, high != _INT64_MAX
    if has_low and has_high:
        if low < 0 and high < 0:
            return _reversed_repetition(_negated(high), _negated(low), decimals)
        return _reversed_repetition(0, _negated(low), decimals) if low < 0 else None
    if has_high:
        if high >= 0:
            return _reversed_repetition(0, high, decimals)
        return _reversed_repetition(_negated(high), _INT64_MAX, decimals)
    if not has_low:
        raise ValueError("At least one of min_value or max_value must be set")
    if low < 0:
        return _reversed_repetition(_INT64_MIN, _negated(low), decimals)
    if low <= 9:
        return None
    digits, fewer = str(low), max(decimals - 1, 1)
    if digits[0] > "1" and len(digits) > fewer:
        return f"{{{len(digits)},{fewer}}}"
    inner = _reversed_repetition(int(digits[1:]), _INT64_MAX, fewer)
    if inner is not None:
        return inner
    if digits[0] < "9" and len(digits) - 1 > fewer:
        return f"{{{len(digits) - 1},{fewer}}}"
    return None


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
