"""Python output types Pydantic builds a schema for but cannot use (pure, no I/O).

Refused before anything is sent, naming the field: a ``typing.TypedDict`` before Python
3.12 (rebuilt by `portable_typeddicts`), a field annotation that does not resolve, a set of
unhashable items, an abstract class, a value its own validation cannot read back.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import pydantic
import pydantic_core
import typing_extensions

from ._foreign import abstract_methods
from ._schema_walk import core_nodes
from ._type_names import SETS, is_model_like, output_type_name, type_name
from .errors import UnsupportedOutputTypeError

__all__ = [
    "BUILD_ERRORS",
    "field_problem",
    "portable_typeddicts",
    "refuse_unreadable_parts",
    "type_problem",
]


def portable_typeddicts(tp: Any, memo: dict[int, Any]) -> Any:
    """Rebuild ``typing.TypedDict`` classes as ``typing_extensions`` ones, recursively.

    Pydantic refuses ``typing.TypedDict`` before Python 3.12 (and so does
    Outlines); the rebuilt class has the same fields and required keys. It is made
    empty and given its fields after: a TypedDict that refers to itself (a tree's
    ``kids: list["Node"]``) then finds its rebuilt class in ``memo`` (before, the walk
    recursed until Python's limit).
    """
    if typing.is_typeddict(tp) and type(tp).__module__ == "typing":
        if id(tp) in memo:
            return memo[id(tp)]
        make_typeddict: Any = typing_extensions.TypedDict  # functional form, dynamic name
        rebuilt = memo[id(tp)] = make_typeddict(tp.__name__, {})
        hints = typing.get_type_hints(tp, include_extras=True)
        rebuilt.__annotations__ = {
            key: portable_typeddicts(value, memo) for key, value in hints.items()
        }
        rebuilt.__required_keys__ = frozenset(tp.__required_keys__)
        rebuilt.__optional_keys__ = frozenset(tp.__optional_keys__)
        rebuilt.__doc__ = tp.__doc__
        config = getattr(tp, "__pydantic_config__", None)  # pydantic.with_config(...)
        if config is not None:  # (found by a probe: extra="forbid" was dropped)
            rebuilt.__pydantic_config__ = config
        return rebuilt
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None or not args:
        return tp
    new_args = tuple(portable_typeddicts(a, memo) for a in args)
    if new_args == args:
        return tp
    if origin is typing.Annotated:
        return typing.Annotated[new_args[0], *tp.__metadata__]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[new_args]  # noqa: UP007 - built from a runtime tuple
    if len(new_args) == 1:
        # Required[B], NotRequired[B] (kept by include_extras) take one type, not a tuple
        # (found by a probe: "NotRequired accepts only a single type"); list[B] takes both.
        return origin[new_args[0]]
    return origin[new_args]


BUILD_ERRORS = (
    pydantic.PydanticSchemaGenerationError,
    pydantic.PydanticUserError,
    pydantic_core.SchemaError,  # e.g. a Literal holding a lone surrogate
    NameError,
)


def _field_annotations(tp: Any) -> list[tuple[str, Any]]:
    """Return the fields of a model-like type with their annotations (strings as written)."""
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        # Pydantic keeps a field's Annotated metadata (constraints, an Outlines term) apart
        # from its annotation: put it back, so the walks see a term in it.
        return [
            (
                name,
                typing.Annotated[(f.annotation, *f.metadata)]
                if f.metadata and not isinstance(f.annotation, str | typing.ForwardRef)
                else f.annotation,
            )
            for name, f in tp.model_fields.items()
        ]
    if isinstance(tp, type) and (
        dataclasses.is_dataclass(tp) or typing_extensions.is_typeddict(tp)
    ):
        raw: dict[str, Any] = {}
        for klass in reversed(tp.__mro__):
            raw.update(getattr(klass, "__annotations__", {}))
        return list(raw.items())
    return []


def _resolve(tp: type, annotation: Any) -> Any:
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        # What typing.get_type_hints does for one annotation (it evaluates the string).
        module = vars(sys.modules.get(tp.__module__, types.ModuleType("_")))
        return eval(annotation, dict(module), dict(vars(tp)))
    return annotation


def field_problem(tp: Any, seen: set[int]) -> tuple[str, str] | None:
    """Find the first field whose type has no JSON schema: ``(field path, its type)``."""
    if id(tp) in seen:
        return None
    seen.add(id(tp))
    for name, annotation in _field_annotations(tp):
        shown = getattr(annotation, "__forward_arg__", annotation)
        try:
            resolved = _resolve(tp, annotation)
        except Exception:  # an unresolved name: this field is the culprit
            return name, str(shown)
        inner = field_problem(resolved, seen)
        if inner is not None:
            return f"{name}.{inner[0]}", inner[1]
        try:
            pydantic.TypeAdapter(portable_typeddicts(resolved, {})).json_schema()
        except (*BUILD_ERRORS, TypeError):  # TypeError: Outlines' for a CFG in metadata
            return name, type_name(resolved)
    for arg in typing.get_args(tp):
        found = field_problem(arg, seen)
        if found is not None:
            return found
    return None


def _unhashable(tp: Any, seen: frozenset[int] = frozenset()) -> str | None:
    """Say why values validated as ``tp`` can never be set items, or ``None`` if they can.

    ``Cat`` (not frozen), ``list[int]``, a tuple or frozenset holding one, and a frozen
    model or dataclass with such a field, whose generated ``__hash__`` hashes every field
    (a class that writes its own ``__hash__`` is taken at its word).
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _unhashable(args[0], seen)
    if origin in (list, dict, set):
        return f"a {type_name(tp)} cannot be hashed"
    if origin in (tuple, frozenset, typing.Union, types.UnionType):
        for arg in args:
            why = None if arg is Ellipsis else _unhashable(arg, seen)
            if why is not None:
                return why
        return None
    if not isinstance(tp, type):
        return None
    if getattr(tp, "__hash__", None) is None:
        return f"{type_name(tp)} cannot be hashed"
    if id(tp) in seen or not (is_model_like(tp) and _generated_hash(tp)):
        return None
    for name, annotation in _field_annotations(tp):
        try:
            why = _unhashable(_resolve(tp, annotation), seen | {id(tp)})
        except Exception:  # unresolvable names were reported when the schema was built
            continue
        if why is not None:
            return f"{type_name(tp)}'s field {name!r}: {why}"
    return None


def _generated_hash(tp: type) -> bool:
    """Tell whether a class's ``__hash__`` is the one a frozen model or dataclass is given.

    Pydantic's hashes the fields' values (``pydantic._internal``); a dataclass's is compiled
    from generated source (``<string>``). Either fails on a field that cannot be hashed.
    """
    function = tp.__hash__
    code = getattr(function, "__code__", None)
    module = getattr(function, "__module__", None) or ""
    return code is not None and (code.co_filename == "<string>" or module.startswith("pydantic."))


def type_problem(
    tp: Any,
    problem: Callable[[Any], str | None],
    seen: set[int],
    name_of: Callable[[Any], str] | None = None,
    *,
    past_validators: bool = False,
) -> tuple[str, str] | None:
    """Find a part of a type (fields and arguments, depth first) that ``problem`` names.

    ``past_validators``: skip the parts a validator of the user's reads first (a
    ``BeforeValidator``, a ``field_validator(mode="before")``...): it may turn the reply's
    value into one the part takes.

    Returns
    -------
    tuple or None
        ``(where, what problem said)``: where is the part's name (``name_of``, by
        default `output_type_name`), behind the fields that lead to it
        (``field 'pets' (set[Cat])``).
    """
    if id(tp) in seen:
        return None
    seen.add(id(tp))
    validated = _validated_first(tp) if past_validators else set()
    if "*" in validated:
        return None
    what = problem(tp)
    if what is not None:
        return (name_of or output_type_name)(tp), what
    for name, annotation in _field_annotations(tp):
        if name in validated:
            continue
        try:
            resolved = _resolve(tp, annotation)
        except Exception:  # unresolvable names were reported when the schema was built
            continue
        found = type_problem(resolved, problem, seen, name_of, past_validators=past_validators)
        if found is not None:
            return f"field {name!r} ({found[0]})", found[1]
    for arg in typing.get_args(tp):
        found = type_problem(arg, problem, seen, name_of, past_validators=past_validators)
        if found is not None:
            return found
    return None


_FIRST_VALIDATORS = (pydantic.BeforeValidator, pydantic.WrapValidator, pydantic.PlainValidator)
_FIRST_MODES = ("before", "wrap", "plain")


def _validated_first(tp: Any) -> set[str]:
    """Return the fields of ``tp`` a validator of the user's reads before Pydantic does.

    ``{"*"}`` when one reads the whole value first (an ``Annotated`` before, wrap or plain
    validator, a model validator in before or wrap mode, or a field validator on every
    field). Found by a review: an Enum of dates a ``mode="before"`` validator reads from
    its ISO text was refused as one no reply could validate.
    """
    if typing.get_origin(tp) is typing.Annotated and any(
        isinstance(meta, _FIRST_VALIDATORS) for meta in tp.__metadata__
    ):
        return {"*"}
    decorators = getattr(tp, "__pydantic_decorators__", None) if isinstance(tp, type) else None
    if decorators is None:
        return set()
    if any(d.info.mode in ("before", "wrap") for d in decorators.model_validators.values()):
        return {"*"}
    return {
        field
        for d in decorators.field_validators.values()
        if d.info.mode in _FIRST_MODES
        for field in d.info.fields
    }


def _unhashable_set_item(tp: Any) -> str | None:
    """Name the item type of a set whose items cannot be hashed, and why.

    Pydantic builds a schema for ``set[Cat]`` (an array with ``uniqueItems``) but refuses
    every reply with an item, since a (non-frozen) ``Cat`` cannot be put in a set.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in SETS and args:
        why, item = _unhashable(args[0]), type_name(args[0])
        if why is not None:
            return item if why == f"{item} cannot be hashed" else f"{item} ({why})"
    return None


def _unreadable_enum_literal(tp: Any) -> str | None:
    """Name an Enum member of a ``Literal`` that Pydantic cannot read back from JSON.

    Pydantic writes ``Literal[Color.RED]`` as ``{"const": "red"}`` but, for a plain
    ``Enum`` (not a ``str`` or ``int`` one), takes only the member itself, never
    ``"red"``: every reply would fail to validate. Pydantic is asked, not guessed.
    """
    if typing.get_origin(tp) is not Literal:
        return None
    for value in typing.get_args(tp):
        if not isinstance(value, enum.Enum):
            continue
        try:
            text = json.dumps(value.value)
        except (TypeError, ValueError):  # no JSON form: the schema build says so
            continue
        try:
            pydantic.TypeAdapter(Literal[value]).validate_json(text)
        except pydantic.ValidationError:
            return f"{type(value).__qualname__}.{value.name}"
    return None


def _unreadable_value(tp: Any) -> str | None:
    """Name a value of an Enum or Literal that Pydantic cannot read back from its JSON form.

    Pydantic writes an ``Enum`` of dates as ``{"enum": ["2024-01-01"]}`` (``Decimal``,
    ``bytes``... alike) but takes only the values themselves, never their JSON form: every
    reply would fail to validate. Each value is dumped to JSON and read back by Pydantic (a
    table of types would guess). Enum members in a ``Literal`` are
    `_unreadable_enum_literal`'s.
    """
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values: list[Any] = list(tp)
    elif typing.get_origin(tp) is Literal:
        values = [v for v in typing.get_args(tp) if not isinstance(v, enum.Enum)]
    else:
        return None
    if not values:
        return None
    try:
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(tp)
    except BUILD_ERRORS:  # no schema: the schema build says so
        return None
    for value in values:
        try:
            adapter.validate_json(adapter.dump_json(value))
        except (pydantic.ValidationError, pydantic_core.PydanticSerializationError):
            if isinstance(value, enum.Enum):
                return f"{value.value!r:.80} ({type(value).__qualname__}.{value.name})"
            return f"{value!r:.80}"
    return None


def _unreadable_value_message(name: str, value: str, at: str) -> str:
    return (
        f"The output type {name} has the value {value}{at}, which Pydantic writes in the "
        "schema as its JSON form but cannot read back from JSON, so every reply would fail "
        "to validate. Give the enum or Literal JSON values (str, int, float, bool or None: "
        "a date's isoformat(), a Decimal's str), or use the values' type itself (date, "
        "Decimal) for the field."
    )


def _unhashable_set_message(name: str, item: str, at: str) -> str:
    return (
        f"The output type {name} asks for a set of {item}{at}: its items cannot be hashed, "
        "so every reply with an item would fail to validate. Use a list instead, or make "
        "the items hashable (a frozen model: model_config = ConfigDict(frozen=True); a "
        "frozen dataclass; in a frozen one, tuples and frozensets for its lists and sets)."
    )


def _enum_literal_message(name: str, member: str, at: str) -> str:
    return (
        f"The output type {name} has {member} in a Literal{at}, which Pydantic writes in "
        "the schema as its value but cannot read back from JSON, so every reply would fail "
        f"to validate. Use Literal[{member}.value] (the value itself), the enum "
        f"{member.rsplit('.', 1)[0]} as the type, or an enum that subclasses str or int."
    )


def _refuse_lazy_items(output_type: object, core_schema: object) -> None:
    """Refuse a type holding an ``Iterable`` or ``Generator`` that Pydantic checks lazily.

    Its items are checked only when it is iterated, after ``parse`` returned (found by a
    probe: ``["not an int"]`` for ``Iterable[int]`` was taken, not re-asked, and the
    error came as a raw Pydantic one in the user's loop). One an after validator receives
    (``AfterValidator(list)``) may be consumed there, inside the validation: it is left to
    the validator (found by a review). A before validator cannot make it eager.
    """
    given: set[int] = set()
    generators: list[int] = []
    for node in core_nodes(core_schema):
        kind, inner = node.get("type"), node.get("schema")
        if kind == "function-after" and isinstance(inner, dict):
            given.add(id(inner))
        elif kind == "generator":
            generators.append(id(node))
    if any(generator not in given for generator in generators):
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} holds an Iterable or a "
            "Generator: Pydantic checks its items only when it is iterated, after the "
            "reply was taken, so a reply could not be checked or asked again. Use a list "
            "(list[int]) or a tuple (tuple[int, ...]) instead; to see the items as they "
            "come, model.parse_stream(prompt, list[Item]) yields the list as it grows."
        )


def _abstract_message(name: str, missing: str, at: str) -> str:
    """Say that ``name`` holds an abstract class (``at``: where), missing ``missing``."""
    return (
        f"The output type {name} holds an abstract class{at} (abstract: {missing}), which "
        "can never be made from a reply, so every reply with it would fail to validate. "
        "Use a subclass that implements them (or a union of such subclasses)."
    )


_UNREADABLE_PARTS = (
    (abstract_methods, _abstract_message),
    (_unhashable_set_item, _unhashable_set_message),
    (_unreadable_enum_literal, _enum_literal_message),
    (_unreadable_value, _unreadable_value_message),
)
"""Parts of a type Pydantic writes a schema for but never reads a reply of, and what to say."""


def refuse_unreadable_parts(output_type: object, core_schema: object) -> None:
    """Refuse a type whose schema Pydantic writes but whose replies it would never read.

    ``core_schema``: the type's, from the model or the adapter its schema was built with.
    """
    _refuse_lazy_items(output_type, core_schema)
    name = output_type_name(output_type)
    for problem, message in _UNREADABLE_PARTS:
        found = type_problem(output_type, problem, set(), past_validators=True)
        if found is not None:
            where, what = found
            at = "" if where == name else f" (at {where})"
            raise UnsupportedOutputTypeError(message(name, what, at))
