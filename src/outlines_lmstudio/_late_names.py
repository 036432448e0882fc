"""Names an output type's string annotations resolve when it is planned.

Pydantic resolves a dataclass's or a TypedDict's string annotations (``b: "B"``, or any
annotation under ``from __future__ import annotations``) each time it builds an adapter
for it, from the names its module holds then. A plan and a validator kept per type were
built from the names of their first use, so after ``B`` was defined again (a notebook cell
run again) the engine was sent the old ``B``'s schema and ``parse`` refused every reply
against the new one, or returned an instance of the old class (found by a probe). What is
kept per type notes what these names were (`late_names`), and is made again once one of
them holds another object (`kept`). Pydantic models resolve theirs once, when
the class is complete, so they keep what they were made with, here as in Pydantic.

Only names read as types count: a ``Literal``'s values and an ``Annotated`` type's
metadata are not names (found by a review: ``Literal["answer"]`` noted the global
``answer``, which a notebook rebinds on every call, so every call planned anew). Names are
followed through modules and classes (``models.B``, ``Outer.Inner``) and through type
aliases (``Items = list["B"]``), each noted once.

Hand-written: neither Pydantic nor ``typing`` tells which names an annotation resolved.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import typing_extensions

__all__ = ["LateName", "kept", "late_names"]

LateName = tuple[Mapping[str, Any], str, object]
"""A namespace (a module's, or a class's or module's an annotation reads an attribute of),
a name in it, and the object the name held when planned."""

_T = TypeVar("_T")

_LONGEST = 2_000
"""The longest annotation text read (characters): a longer one is a value, not a type
(found by a review: Python's parser ran out of recursion on a 3,000-character one)."""

_LITERALS = (typing.Literal, typing_extensions.Literal)
_ANNOTATED = (typing.Annotated, typing_extensions.Annotated)


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
    walk = _Walk()
    walk.objects.append(output_type)
    try:
        while walk.objects:
            node = walk.objects.pop()
            if id(node) in walk.seen or isinstance(node, str | typing.ForwardRef):
                continue  # a string outside a class's annotations: no namespace to read
            walk.seen.add(id(node))
            walk.objects.extend(typing.get_args(node))
            origin = typing.get_origin(node)
            if origin is not None:
                walk.objects.append(origin)
            if _resolves_late(node):
                walk.annotations_of(node)
    except Exception:  # a user's class whose attributes raise when read
        return ()  # (a metaclass's __getattr__): nothing noted, kept as at its first use
    return tuple(walk.found.values())


def still_resolved(names: tuple[LateName, ...]) -> bool:
    """Return whether every noted name still holds the object it held when planned."""
    return all(namespace.get(name, _GONE) is held for namespace, name, held in names)


def kept(cached: functools._lru_cache_wrapper[tuple[_T, tuple[LateName, ...]]], *key: Any) -> _T:
    """Return what ``cached`` keeps for ``key``, made again once a name it noted changed.

    Parameters
    ----------
    cached
        An ``lru_cache`` of a function returning a value and its `late_names`.
    *key
        Its arguments.

    Returns
    -------
    _T
        The kept value. On a change the whole cache is cleared: a rare event, and each
        cache (plans, validators) checks its own entries where they are kept.
    """
    value, names = cached(*key)
    if names and not still_resolved(names):
        cached.cache_clear()
        value, names = cached(*key)
    return value


_GONE = object()


def _resolves_late(node: object) -> bool:
    """Whether Pydantic resolves a class's string annotations anew for each adapter."""
    if not isinstance(node, type) or hasattr(node, "__pydantic_core_schema__"):
        return False  # Pydantic models and Pydantic dataclasses keep what they resolved
    return dataclasses.is_dataclass(node) or typing_extensions.is_typeddict(node)


class _Walk:
    """The objects left to walk, those seen, and the names noted (once each)."""

    def __init__(self) -> None:
        self.objects: list[Any] = []
        self.seen: set[int] = set()
        self.found: dict[tuple[int, str], LateName] = {}

    def annotations_of(self, cls: type) -> None:
        """Note the names a class's string annotations read; walk on to what they hold."""
        for owner in cls.__mro__:
            module = sys.modules.get(owner.__module__)
            for annotation in vars(owner).get("__annotations__", {}).values():
                home = module
                if isinstance(annotation, typing.ForwardRef):
                    # A TypedDict's inherited annotation: read in its parent's module,
                    # which a TypedDict's __mro__ does not hold (found by a review).
                    home = sys.modules.get(annotation.__forward_module__ or "", module)
                    annotation = annotation.__forward_arg__
                if home is None:
                    continue
                if isinstance(annotation, str):
                    self.resolve(vars(home), annotation)
                else:
                    self.objects.append(annotation)
                    self.references_in(vars(home), annotation)

    def references_in(self, namespace: Mapping[str, Any], expression: object) -> None:
        """Resolve the forward references inside a typing expression (``list["B"]``)."""
        origin = typing.get_origin(expression)
        if _is_one_of(origin, _LITERALS):
            return  # values, not types
        arguments = typing.get_args(expression)
        if _is_one_of(origin, _ANNOTATED):
            arguments = arguments[:1]  # metadata: no types
        for argument in arguments:
            if isinstance(argument, typing.ForwardRef):
                self.resolve(namespace, argument.__forward_arg__)
            elif isinstance(argument, str):
                self.resolve(namespace, argument)
            else:
                self.references_in(namespace, argument)

    def resolve(self, namespace: Mapping[str, Any], annotation: str) -> None:
        """Note the (dotted) names an annotation's text reads in ``namespace``."""
        for dotted in _names_in(annotation, namespace):
            scope: Mapping[str, Any] | None = namespace
            for part in dotted:
                if scope is None or part not in scope:
                    break
                held = scope[part]
                key = (id(scope), part)
                if key in self.found:
                    break  # noted, and walked on, already
                self.found[key] = (scope, part, held)
                self.objects.append(held)
                if not isinstance(held, type | types.ModuleType):
                    # A type alias (``Items = list["B"]``): its references are read where
                    # it was defined (found by a review: missed)
                    self.references_in(scope, held)
                scope = vars(held) if isinstance(held, type | types.ModuleType) else None


def _names_in(annotation: str, namespace: Mapping[str, Any]) -> list[list[str]]:
    """Return the (dotted) names an annotation's text reads as types.

    ``Optional[m.B]``: ``Optional`` and ``m.B``; ``list['B']``: ``list`` and ``B``;
    ``Literal["a"]`` and ``Annotated[int, Field(description="b")]``: only the types
    (``Literal`` known by what ``namespace`` holds, under any name).
    """
    if len(annotation) > _LONGEST:
        return []
    try:
        tree = ast.parse(annotation, mode="eval")
        return list(_type_names(tree.body, namespace))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # not a type Python reads: Pydantic refuses it, named, as before


def _type_names(node: ast.AST, namespace: Mapping[str, Any]) -> Iterator[list[str]]:
    if isinstance(node, ast.Name):
        yield [node.id]
    elif isinstance(node, ast.Attribute):
        for base in _type_names(node.value, namespace):
            yield [*base, node.attr]
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, str):  # a forward reference inside the annotation
            yield from _names_in(node.value, namespace)
    elif isinstance(node, ast.Subscript):
        heads = list(_type_names(node.value, namespace))
        yield from heads
        head = _held(heads[0], namespace) if len(heads) == 1 else None
        if _is_one_of(head, _LITERALS) or _last(node.value) == "Literal":
            return  # values, not types
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if _is_one_of(head, _ANNOTATED) or _last(node.value) == "Annotated":
            items = items[:1]  # metadata: no types
        for item in items:
            yield from _type_names(item, namespace)
    elif isinstance(node, ast.BinOp):  # ``A | B``
        yield from _type_names(node.left, namespace)
        yield from _type_names(node.right, namespace)
    elif isinstance(node, ast.Tuple | ast.List):  # ``Callable[[A], B]``'s arguments
        for item in node.elts:
            yield from _type_names(item, namespace)


def _held(dotted: list[str], namespace: Mapping[str, Any]) -> object:
    """Return what a dotted name holds in ``namespace`` now (``None`` if it holds nothing)."""
    held: Any = namespace.get(dotted[0])
    for part in dotted[1:]:
        held = getattr(held, part, None)
    return held


def _is_one_of(held: object, forms: tuple[object, ...]) -> bool:
    """Whether ``held`` is one of ``forms`` (by identity: a user's ``__eq__`` is not run)."""
    return any(held is form for form in forms)


def _last(node: ast.AST) -> str | None:
    """Return the last part of a name as written (``Literal`` of ``typing.Literal``)."""
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
