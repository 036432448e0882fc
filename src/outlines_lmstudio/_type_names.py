"""Output types named in messages, and the kinds of type the checks tell apart (pure)."""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import typing
from typing import Any

import pydantic
import typing_extensions
from outlines.types import JsonSchema, Regex
from outlines.types.dsl import Choice, Term

__all__ = ["SETS", "is_model_like", "output_type_name", "type_name"]


def type_name(tp: Any) -> str:
    """Name a class by its qualified name, anything else by its repr."""
    return tp.__qualname__ if isinstance(tp, type) else repr(tp)


def output_type_name(output_type: object) -> str:
    """Name an output type for a message: ``Person``, or in full ``list[uuid.UUID]``.

    Parameters
    ----------
    output_type
        The output type.

    Returns
    -------
    str
        Its name; the whole expression for a parameterised type (whose ``__name__`` is
        only its origin's: ``list``, ``Optional``, ``Annotated``).
    """
    if isinstance(output_type, JsonSchema):
        output_type = output_type.schema
    elif type(output_type).__name__ == "SchemaBuilder":  # genson's: a schema as data too
        with contextlib.suppress(Exception):  # (found by a review: named by its repr)
            output_type = output_type.to_schema()  # type: ignore[attr-defined]
    if isinstance(output_type, dict | str):  # a schema as data: its title, not its text
        title = output_type.get("title") if isinstance(output_type, dict) else None
        return f"JSON schema {title!r}" if isinstance(title, str) else "JSON schema"
    if isinstance(output_type, Regex):  # as written: not "Regex(pattern='[0-9]+')" (a probe)
        name = f"Regex({output_type.pattern!r})"
    elif isinstance(output_type, Choice):  # nor "Choice(items=['a', 'b'])"
        name = f"Choice({list(output_type.items)!r})"
    elif typing.get_origin(output_type) is not None:
        name = repr(output_type)
    else:
        name = getattr(output_type, "__name__", None) or repr(output_type)
    return name if len(name) <= _LONGEST_NAME else name[: _LONGEST_NAME - 3] + "..."


_LONGEST_NAME = 200
"""Longer type names are cut in messages (a ``Literal`` of a thousand values...)."""


def is_model_like(tp: object) -> bool:
    """Whether ``tp`` is a Pydantic model, dataclass or TypedDict, whose fields make an object.

    A generic one counts with its parameters given; Outlines' DSL dataclasses do not.
    """
    origin = typing.get_origin(tp)
    if origin is not None and typing.get_args(tp):  # a generic one with its parameters given
        return (dataclasses.is_dataclass(origin) or typing_extensions.is_typeddict(origin)) and (
            is_model_like(origin)
        )
    return isinstance(tp, type) and (
        issubclass(tp, pydantic.BaseModel)
        # Outlines' DSL classes (Regex, Choice...) are dataclasses too, but no schema
        or (dataclasses.is_dataclass(tp) and not issubclass(tp, Term))
        or typing_extensions.is_typeddict(tp)  # typing's and typing_extensions' (Python < 3.12)
    )


SETS: dict[Any, str] = {
    set: "set",
    frozenset: "frozenset",
    collections.abc.MutableSet: "set",  # what Pydantic makes of them
    collections.abc.Set: "frozenset",  # typing.AbstractSet too (found by a probe)
}
"""The set types, each spelling with the class Pydantic builds for it."""
