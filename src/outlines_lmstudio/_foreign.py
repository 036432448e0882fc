"""Classes from other libraries (or that cannot be built) given as output types.

Each is refused before anything is sent, with what to write instead (found by a probe):
a Pydantic v1 model was told that Pydantic models are supported, after Pydantic's own
warning about mixing v1 and v2; an attrs class or a msgspec Struct got the generic list
of supported types; a SQLModel table class, whose rows SQLModel builds without validating,
made ``parse`` return values that break the class's own rules; an abstract model was sent,
and reading the reply failed with a bare ``TypeError``.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys

import lmstudio as lms
import msgspec
import pydantic

__all__ = ["abstract_methods", "foreign_class", "foreign_class_problem"]


def foreign_class_problem(output_type: object) -> str | None:
    """Return why a class cannot be an output type, and what to use instead, or ``None``.

    Parameters
    ----------
    output_type
        An output type as given.

    Returns
    -------
    str | None
        The whole message, naming the class; ``None`` for any other type.
    """
    found = foreign_class(output_type)
    if found is None:
        return None
    what, instead = found
    name = getattr(output_type, "__qualname__", output_type)
    return f"The output type {name} is {what}: {instead}"


def foreign_class(output_type: object) -> tuple[str, str] | None:
    """Return what a class that cannot be an output type is, and what to use instead.

    Returns
    -------
    tuple[str, str] | None
        ``("a Pydantic v1 model (...)", "make it subclass pydantic.BaseModel.")``, say;
        ``None`` for any other type.
    """
    if not isinstance(output_type, type):
        return None
    name = output_type.__qualname__
    v1 = sys.modules.get("pydantic.v1")  # not imported: no v1 model can exist
    if v1 is not None and issubclass(output_type, v1.BaseModel):
        return (
            "a Pydantic v1 model (pydantic.v1.BaseModel), which Pydantic 2 cannot write a JSON "
            "schema for or validate with",
            "make it subclass pydantic.BaseModel.",
        )
    if issubclass(output_type, pydantic.BaseModel):
        pass  # a Pydantic model's attributes are its own (found by a review: "attrs class")
    elif getattr(output_type, "__attrs_attrs__", None) is not None:  # as attrs.has reads it
        return (
            "an attrs class, which Pydantic cannot read",
            "write it as a dataclass or a Pydantic model (or pass its JSON schema as a dict).",
        )
    elif issubclass(output_type, lms.BaseModel):
        # The class the SDK's own structured-response example and docs use (found by a probe
        # running them): its schema is a call away.
        return (
            "the lmstudio SDK's BaseModel (a msgspec Struct), which Pydantic cannot read",
            f"pass {output_type.__name__}.model_json_schema() (what the SDK sends for it): the "
            "value is then a dict, as the SDK's .parsed is; or write it as a Pydantic model "
            "for a typed value.",
        )
    elif issubclass(output_type, msgspec.Struct):
        return (
            "a msgspec Struct, which Pydantic cannot read",
            "pass its JSON schema as a dict (msgspec.json.schema(...)) and decode the value "
            "with msgspec, or write it as a dataclass or a Pydantic model.",
        )
    if _sqlmodel_table(output_type):
        return (
            "a SQLModel table class, whose rows SQLModel builds without validating them (a "
            "reply that breaks its rules would be returned as it is)",
            "use its data model (the same fields without table=True) as the output type, and "
            f"make the row from the value ({name}.model_validate(value)).",
        )
    missing = abstract_methods(output_type)
    if missing is not None:
        return (
            f"an abstract class (abstract: {missing}), which can never be made from a reply",
            "use a subclass that implements them.",
        )
    return None


def abstract_methods(tp: object) -> str | None:
    """Name the abstract methods of an abstract Pydantic model or dataclass, or ``None``.

    Pydantic writes such a class's schema, then fails on every reply with a bare
    ``TypeError`` when it makes the instance.

    Returns
    -------
    str | None
        ``"area, perimeter"``; ``None`` for any other type.
    """
    if not isinstance(tp, type) or not inspect.isabstract(tp):
        return None
    if not (issubclass(tp, pydantic.BaseModel) or dataclasses.is_dataclass(tp)):
        return None
    return ", ".join(sorted(getattr(tp, "__abstractmethods__", ())))


def _sqlmodel_table(cls: type) -> bool:
    """Whether a class is a SQLModel ``table=True`` model (its rows are not validated)."""
    config = getattr(cls, "model_config", None)
    if not issubclass(cls, pydantic.BaseModel) or not isinstance(config, dict):
        return False
    if config.get("table") is not True:
        return False
    return any(base.__module__.split(".")[0] == "sqlmodel" for base in cls.__mro__)
