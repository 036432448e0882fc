"""Names an output type's string annotations resolve when it is planned.

Pydantic resolves a dataclass's or a TypedDict's string annotations (``b: "B"``, or any
annotation under ``from __future__ import annotations``) each time it builds an adapter
for it, from the names its module holds then. A plan and a validator kept per type were
built from the names of their first use, so after ``B`` was defined again (a notebook cell
run again) the engine was sent the old ``B``'s schema and ``parse`` refused every reply
against the new one, or returned an instance of the old class (found by a probe). What is
kept per type notes what these names were (`late_names`), and is made again once one of
them holds another object (`still_resolved`). Pydantic models resolve theirs once, when
the class is complete, so they keep what they were made with, here as in Pydantic.

Only names read as types count: a ``Literal``'s values and an ``Annotated`` type's
metadata are not names (found by a review: ``Literal["answer"]`` noted the global
``answer``, which a notebook rebinds on every call, so every call planned anew).

Hand-written: neither Pydantic nor ``typing`` tells which names an annotation resolved.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any

import typing_extensions

__all__ = ["LateName", "late_names", "still_resolved"]

LateName = tuple[dict[str, Any], str, object]
"""A namespace (a module's, or a module an annotation reads an attribute of), a name in
it, and the object the name held when planned."""

_LONGEST = 2_000
"""The longest annotation text read (characters): a longer one is a value, not a type
(found by a review: Python's parser ran out of recursion on a 3,000-character one)."""


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
        such classes count (not through a Pydantic model, which resolved its own). A
        dotted name (``models.B``) notes each step through a module, so a module
        reloaded (``importlib.reload``) counts too.
    """
    found: list[LateName] = []
    seen: set[int] = set()
    stack: list[Any] = [output_type]
    while stack:
        node = stack.pop()
        if id(node) in seen or isinstance(node, str | typing.ForwardRef):
            continue  # a string outside a class's annotations: no namespace to read
        seen.add(id(node))
        stack.extend(typing.get_args(node))
        origin = typing.get_origin(node)
        if origin is not None:
            stack.append(origin)
        if _resolves_late(node):
            stack.extend(_annotated(node, found))
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


def _annotated(cls: type, found: list[LateName]) -> Iterator[Any]:
    """Note the names a class's string annotations read; yield the objects to walk on."""
    for owner in cls.__mro__:
        module = sys.modules.get(owner.__module__)
        for annotation in vars(owner).get("__annotations__", {}).values():
            home = module
            if isinstance(annotation, typing.ForwardRef):
                # A TypedDict's inherited annotation: read in its parent's module, which
                # a TypedDict's __mro__ does not hold (found by a review).
                home = sys.modules.get(annotation.__forward_module__ or "", module)
                annotation = annotation.__forward_arg__
            if not isinstance(annotation, str):
                yield annotation
                if home is not None:  # ``list["B"]``: a forward reference inside
                    for inner in _inner_references(annotation):
                        yield from _resolve(vars(home), inner, found)
            elif home is not None:
                yield from _resolve(vars(home), annotation, found)


def _inner_references(annotation: object) -> Iterator[str]:
    """Yield the forward references inside a typing expression (not a Literal's values)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal or origin is typing_extensions.Literal:
        return
    arguments = typing.get_args(annotation)
    if origin is typing.Annotated or origin is typing_extensions.Annotated:
        arguments = arguments[:1]  # metadata: no types
    for argument in arguments:
        if isinstance(argument, typing.ForwardRef):
            yield argument.__forward_arg__
        elif isinstance(argument, str):
            yield argument
        else:
            yield from _inner_references(argument)


def _resolve(namespace: dict[str, Any], annotation: str, found: list[LateName]) -> Iterator[Any]:
    for dotted in _names_in(annotation):
        scope: dict[str, Any] | None = namespace
        for part in dotted:
            if scope is None or part not in scope:
                break
            held = scope[part]
            found.append((scope, part, held))
            yield held
            scope = vars(held) if isinstance(held, types.ModuleType) else None


def _names_in(annotation: str) -> list[list[str]]:
    """Return the (dotted) names an annotation's text reads as types.

    ``Optional[m.B]``: ``Optional`` and ``m.B``; ``list['B']``: ``list`` and ``B``;
    ``Literal["a"]`` and ``Annotated[int, Field(description="b")]``: only the types.
    """
    if len(annotation) > _LONGEST:
        return []
    try:
        tree = ast.parse(annotation, mode="eval")
        return list(_type_names(tree.body))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # not a type Python reads: Pydantic refuses it, named, as before


def _type_names(node: ast.AST) -> Iterator[list[str]]:
    if isinstance(node, ast.Name):
        yield [node.id]
    elif isinstance(node, ast.Attribute):
        for base in _type_names(node.value):
            yield [*base, node.attr]
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, str):  # a forward reference inside the annotation
            yield from _names_in(node.value)
    elif isinstance(node, ast.Subscript):
        yield from _type_names(node.value)
        head = node.value.attr if isinstance(node.value, ast.Attribute) else None
        head = node.value.id if isinstance(node.value, ast.Name) else head
        if head == "Literal":
            return  # values, not types
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        for item in items[:1] if head == "Annotated" else items:  # metadata: no types
            yield from _type_names(item)
    elif isinstance(node, ast.BinOp):  # ``A | B``
        yield from _type_names(node.left)
        yield from _type_names(node.right)
    elif isinstance(node, ast.Tuple | ast.List):  # ``Callable[[A], B]``'s arguments
        for item in node.elts:
            yield from _type_names(item)
