"""Names an output type's string annotations resolve when it is planned.

Pydantic resolves a dataclass's or a TypedDict's string annotations (``b: "B"``, or any
annotation under ``from __future__ import annotations``) each time it builds an adapter
for it, from the names its module holds then. A plan and a validator kept per type were
built from the names of their first use, so after ``B`` was defined again (a notebook cell
run again) the engine was sent the old ``B``'s schema and ``parse`` refused every reply
against the new one, or returned an instance of the old class (found by a probe). A kept
plan notes what these names were (`late_names`); a plan whose names now hold other
objects is made again (`still_resolved`). Pydantic models resolve theirs once, when the
class is complete, so they keep what they were made with, here as in Pydantic.

Hand-written: neither Pydantic nor ``typing`` tells which names an annotation resolved.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
import typing
from collections.abc import Iterator
from typing import Any

import typing_extensions

__all__ = ["LateName", "late_names", "still_resolved"]

LateName = tuple[dict[str, Any], str, object]
"""A module's namespace, a name in it, and the object the name held when planned."""


def late_names(output_type: object) -> tuple[LateName, ...]:
    """Return the names the string annotations reachable from a type resolve now.

    Parameters
    ----------
    output_type
        An output type (a class, or a typing expression such as ``list[A]``).

    Returns
    -------
    tuple[LateName, ...]
        Empty for most types: only the string annotations of the stdlib dataclasses and
        TypedDicts reachable from ``output_type`` through typing expressions and other
        such classes count (not through a Pydantic model, which resolved its own).
    """
    found: list[LateName] = []
    seen: set[int] = set()
    stack: list[Any] = [output_type]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, typing.ForwardRef):
            node = node.__forward_arg__
        if isinstance(node, str):
            continue  # a string outside a class's annotations: no namespace to read
        stack.extend(typing.get_args(node))
        origin = typing.get_origin(node)
        if origin is not None:
            stack.append(origin)
        if not _resolves_late(node):
            continue
        for owner in node.__mro__:
            namespace = getattr(sys.modules.get(owner.__module__), "__dict__", None)
            for annotation in vars(owner).get("__annotations__", {}).values():
                if isinstance(annotation, typing.ForwardRef):
                    annotation = annotation.__forward_arg__
                if not isinstance(annotation, str):
                    stack.append(annotation)
                    continue
                if namespace is None:
                    continue
                for name in _names_in(annotation):
                    if name in namespace:
                        found.append((namespace, name, namespace[name]))
                        stack.append(namespace[name])
    return tuple(found)


def still_resolved(names: tuple[LateName, ...]) -> bool:
    """Return whether every noted name still holds the object it held when planned."""
    return all(namespace.get(name, _GONE) is held for namespace, name, held in names)


_GONE = object()


def _resolves_late(node: object) -> bool:
    """Whether Pydantic resolves a class's string annotations anew for each adapter."""
    if not isinstance(node, type) or hasattr(node, "__pydantic_core_schema__"):
        return False  # Pydantic models and Pydantic dataclasses keep what they resolved
    return dataclasses.is_dataclass(node) or typing_extensions.is_typeddict(node)


def _names_in(annotation: str) -> Iterator[str]:
    """Yield the names an annotation's text reads (``Optional[m.B]``: Optional, m)."""
    try:
        tree = ast.parse(annotation, mode="eval")
    except SyntaxError:
        return
    for part in ast.walk(tree):
        if isinstance(part, ast.Name):
            yield part.id
        elif isinstance(part, ast.Constant) and isinstance(part.value, str):
            yield from _names_in(part.value)  # "list['B']": a string in the string
