"""Output types -> LM Studio structured settings (pure, no I/O).

`plan_output` turns an Outlines output type into an `OutputPlan`: the
``response_format`` sent to LM Studio (always the explicit
``{"type": "json", "jsonSchema": ...}`` form, so unions and ``$ref`` roots
survive the SDK) and how the returned text is turned into what Outlines'
own models return for that type.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import math
import re
import types
import typing
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal, cast

import msgspec
import pydantic
import pydantic_core
import typing_extensions
from outlines.types import CFG, JsonSchema, Regex
from outlines.types.dsl import Term
from typing_inspection import typing_objects

from ._config import describe
from ._foreign import foreign_class_problem
from ._json_keys import RepeatedKey, repeated_at, without_repeats
from ._late_names import LateName, kept, late_names
from ._later_grammar import later_requested
from ._schema_checks import (
    check_json_schema,
    lone_surrogate,
    too_deep,
)
from ._schema_walk import ref_target, schema_nodes
from ._simple import (
    FullMatchTerms,
    TermWithoutRegex,
    is_simple_type,
    is_str_key,
    literal_values,
    pydantic_schema,
    render_simple,
    simple_schema,
)
from ._type_checks import (
    BUILD_ERRORS,
    field_problem,
    portable_typeddicts,
    refuse_unreadable_parts,
    type_problem,
)
from ._type_names import SETS, is_model_like, output_type_name
from .errors import InvalidSchemaError, UnsupportedOutputTypeError

__all__ = [
    "OutputPlan",
    "argument_order",
    "identity",
    "plan_output",
    "unaliased",
]

Kind = Literal["text", "json", "simple", "grammar"]

_SUPPORTED = (
    "None (plain text); a Pydantic model, TypedDict, dataclass, JSON schema (dict or str), "
    "outlines.types.JsonSchema or genson SchemaBuilder; int, float, bool, str, Literal, Enum, "
    "outlines.types.Choice, datetime.date/time/datetime; list/tuple/dict/Optional/Union "
    "of these; Annotated of these with Pydantic constraints (Field(ge=1, le=5)); and other "
    "types Pydantic writes a JSON schema for (uuid.UUID, Decimal, a NamedTuple...)"
)


def identity(text: str) -> str:
    """Return the text as it came: the render of free text and JSON plans."""
    return text


class OutputPlan(msgspec.Struct, frozen=True):
    """How one output type is requested from LM Studio and rendered back.

    Attributes
    ----------
    kind
        ``"text"`` (unconstrained), ``"json"`` (a JSON document), ``"simple"``
        (a scalar constrained through JSON schema) or ``"grammar"`` (GBNF).
    response_format
        The structured setting for the SDK, or ``None`` for plain text.
    output_type
        The output type the plan was made for.
    render
        Turns the model's text into the text Outlines returns for the type.
    full_schema
        The user's whole JSON schema, which ``parse`` validates against (the schema
        sent is its normalised form, see `outlines_lmstudio._dialects`).
    """

    kind: Kind
    response_format: dict[str, Any] | None = None
    output_type: Any = None
    render: Callable[[str], str] = identity
    full_schema: dict[str, Any] | None = None

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema sent, if any."""
        if self.response_format and self.response_format.get("type") == "json":
            schema: dict[str, Any] = self.response_format["jsonSchema"]
            return schema
        return None


def _sendable(schema: dict[str, Any], strict: bool) -> dict[str, Any]:
    """Return the form of a checked schema both engines read (`outlines_lmstudio._dialects`)."""
    from ._dialects import dialect_schema  # with the first schema (import time)

    return dialect_schema(schema, None, strict=strict)


def _json_plan(
    schema: object, output_type: object, *, strict: bool, generated: bool = False
) -> OutputPlan:
    checked = check_json_schema(schema, meta=not generated)
    sent = _sendable(checked, strict)
    return OutputPlan(
        "json",
        {"type": "json", "jsonSchema": sent},
        output_type=output_type,
        full_schema=checked,
    )


def _schema_from_str(text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=without_repeats)
    except RepeatedKey as exc:
        # Found by a probe: `json.loads` kept the last one, so a schema whose `properties`
        # was written twice lost its first fields (the command line's --schema refused it).
        raise InvalidSchemaError(
            f"The JSON schema text has the key {exc.args[0]!r} twice in one object "
            f"(the object at {repeated_at(text, pointer=True)}): JSON readers keep only the "
            "last and drop the other silently. Write each key once."
        ) from None
    except RecursionError:  # Python's JSON decoder gives up around 1,000 levels
        raise too_deep("too deep for Python's JSON decoder") from None
    except json.JSONDecodeError as exc:
        raise InvalidSchemaError(
            f"The output type is a str but not a JSON schema ({exc}). Pass a JSON schema "
            "string, or use the str type (not an instance) for free text."
        ) from exc


def _schema_error(output_type: object, exc: BaseException) -> UnsupportedOutputTypeError:
    """Name the type and, when it can be found, the field whose schema cannot be built."""
    reason = str(exc).split("\n")[0].rstrip(".")
    found = field_problem(output_type, set())
    where = f" (field {found[0]!r} of type {found[1]})" if found else ""
    return UnsupportedOutputTypeError(
        f"Cannot build a JSON schema for {output_type_name(output_type)}{where}: {reason}. "
        "Give the field a type JSON can represent (define every type it names before using the "
        "model), or exclude it from the output type."
    )


def _term_without_regex(output_type: object, exc: TermWithoutRegex) -> UnsupportedOutputTypeError:
    """Name the field that holds a CFG, which no JSON-schema ``pattern`` can write."""

    def holds_it(tp: Any) -> str | None:
        # Pydantic copies Annotated metadata: the same term, not the same object.
        return "it" if isinstance(tp, Term) and tp == exc.term else None

    name = output_type_name(output_type)
    found = type_problem(output_type, holds_it, set(), lambda term: type(term).__name__)
    at = f" (at {found[0]:.300})" if found is not None else f" (in {exc.term!r:.200})"
    return UnsupportedOutputTypeError(
        f"The output type {name} holds an Outlines CFG{at}: a context-free grammar has no "
        "regular expression, so no JSON-schema pattern can ask for it. Use a Regex (or "
        "another regular term) for the field, or "
        "make the whole reply one CFG in grammar mode: from_lmstudio(client, model, "
        "grammar=True)."
    )


def _generated(
    output_type: object, build: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """`pydantic_schema`, refusing a type Pydantic leaves out of its own schema.

    A ``SkipJsonSchema`` where a reply needs a value: Pydantic's bare ``PydanticOmit()``
    came out of ``plan_output`` (found by a review).

    Raises
    ------
    UnsupportedOutputTypeError
        Saying so.
    """
    try:
        return pydantic_schema(build)
    except pydantic_core.PydanticOmit:
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} has a part Pydantic leaves out "
            "of its JSON schema (SkipJsonSchema, or a type with no JSON schema), where a reply "
            "needs it: no engine could be asked for it. Ask for a type the schema shows."
        ) from None


def _model_schema(model: type[pydantic.BaseModel]) -> tuple[dict[str, Any], bool]:
    """Pydantic's schema of a model, and whether its user wrote parts of it."""
    try:
        schema, written = _generated(
            model, lambda: model.model_json_schema(schema_generator=FullMatchTerms)
        )
    except TermWithoutRegex as exc:
        raise _term_without_regex(model, exc) from exc
    except BUILD_ERRORS as exc:
        raise _schema_error(model, exc) from exc
    return _unique_required(_require_tags(schema)), written


def _type_adapter_schema(output_type: object) -> tuple[dict[str, Any], bool, object]:
    """Pydantic's schema of a type, whether its user wrote parts of it, and its core schema."""
    try:
        portable = portable_typeddicts(output_type, {})
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(cast(Any, portable))
        schema, written = _generated(
            output_type, lambda: adapter.json_schema(schema_generator=FullMatchTerms)
        )
    except TermWithoutRegex as exc:
        raise _term_without_regex(output_type, exc) from exc
    except BUILD_ERRORS as exc:
        raise _schema_error(output_type, exc) from exc
    return _unique_required(_require_tags(schema)), written, adapter.core_schema


def _unique_required(schema: dict[str, Any]) -> dict[str, Any]:
    """Name each ``required`` property once (Pydantic's fresh output, changed in place).

    Pydantic repeats a name two fields are read from (``b: int = Field(alias="a")`` beside
    ``a: int``), which JSON Schema's meta-schema refuses; the set of names is the same.
    """
    for _, node in schema_nodes(schema):
        required = node.get("required") if isinstance(node, dict) else None
        if isinstance(required, list) and all(isinstance(n, str) for n in required):
            node["required"] = list(dict.fromkeys(required))
    return schema


def _require_tags(schema: dict[str, Any]) -> dict[str, Any]:
    """Make the tag of each Pydantic discriminated union required in its branches.

    Pydantic writes such a union as a ``oneOf`` beside an OpenAPI ``discriminator``, and
    leaves a tag field that has a default (``kind: Literal["a"] = "a"``) out of
    ``required``. Its validator still needs the tag ("Unable to extract tag"), and no
    engine reads ``discriminator``: a model could write a branch without the tag, which
    ``parse`` then refuses. ``schema`` is Pydantic's fresh output: it is changed in place.
    """
    for _, node in list(schema_nodes(schema)):
        tag = node.get("discriminator") if isinstance(node, dict) else None
        if not isinstance(tag, dict) or not isinstance(tag.get("propertyName"), str):
            continue
        for branch in node.get("oneOf", []):
            ref = branch.get("$ref") if isinstance(branch, dict) else None
            target = ref_target(schema, ref) if isinstance(ref, str) else branch
            properties = target.get("properties") if isinstance(target, dict) else None
            if isinstance(properties, dict) and tag["propertyName"] in properties:
                required = target.setdefault("required", [])
                if tag["propertyName"] not in required:
                    required.append(tag["propertyName"])
    return schema


def _is_json_family(tp: object) -> bool:
    """Tell whether a type is a Pydantic/TypedDict/dataclass type or a container of them."""
    if is_model_like(tp):
        return True
    origin = typing.get_origin(tp)
    if origin is None:
        return False
    args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
    if origin in (typing.Union, types.UnionType):
        return any(_is_json_family(a) for a in args)
    if origin in (list, tuple, dict) or origin in SETS or origin is typing.Annotated:
        return any(_is_json_family(a) for a in args)
    return False


def _render_simple_text(text: str, *, output_type: object) -> str:
    return render_simple(text, output_type)


_GRAMMAR_HINT = (
    "Turn on grammar mode, from_lmstudio(client, model, grammar=True), to send it as a "
    "llama.cpp GBNF grammar (GGUF models only), or express the constraint as a JSON schema "
    "(a Pydantic model, or a dict with a 'pattern' for strings)"
)


def _grammar_plan(output_type: object, later: bool) -> OutputPlan:
    """Plan a grammar-mode term: its GBNF now, or converted later (`_later_grammar`)."""
    if later:
        from ._later_grammar import LaterGbnf

        gbnf: object = LaterGbnf(output_type)
    else:
        from ._grammar._api import sendable_gbnf

        gbnf = sendable_gbnf(output_type)
    return OutputPlan("grammar", {"type": "gbnf", "gbnfGrammar": gbnf}, output_type=output_type)


def _plannable(output_type: object) -> bool:
    """Whether an output type is taken: advice names only such a type.

    A review found ``frozenset`` offered, which is refused.
    """
    try:
        _plan(output_type)
    except Exception:  # refused, or no schema can be built: not one to offer
        return False
    return True


def _unwritable_literal(output_type: object) -> None:
    """Refuse Literal/Enum/Choice values no schema can hold (none, non-scalars, NaN...)."""
    values = literal_values(output_type)
    if values is not None and not values:
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} has no values, so there is "
            "nothing to choose from. Give it at least one."
        )
    odd = [v for v in values or () if not isinstance(v, str | int | float | bool | None)]
    if odd:
        value, name = odd[0], output_type_name(output_type)
        if isinstance(value, enum.Enum):  # found by a probe: "must be str" for a str value
            kind = type(value).__name__
            fix = (
                f"the enum member {kind}.{value.name}, which Pydantic takes only as the member "
                f"itself, not as the JSON value sent for it. Use Literal[{kind}.{value.name}"
                f".value], the enum {kind} itself as the type, or a str or int enum "
                f"(class {kind}(str, Enum)), whose members read back."
            )
        elif isinstance(value, Term):  # found by a probe: advised "the values' type (Regex)"
            fix = (
                f"the Outlines term {value!r:.80} among its values, which compiles to a "
                "regular expression that LM Studio's JSON-schema structured output cannot "
                f"express. {_GRAMMAR_HINT}."
            )
        elif isinstance(value, dict | list | tuple):  # JSON values, but not choices
            fix = (
                f"the value {value!r:.80} ({type(value).__name__}), "
                f"{'an object' if isinstance(value, dict) else 'an array'}: LM Studio's "
                "outlines-core engine takes only scalar choices (str, int, float, bool or "
                "None), and the engine is not known before the request. Give it scalar "
                "values, or make the output type a union of Pydantic models, one for each "
                "shape of value."
            )
        else:
            typed = _plannable(type(value))
            fix = (
                f"the value {value!r:.80} ({type(value).__name__}), which is no JSON value. "
                "Give it JSON values (str, int, float, bool or None)"
                + (
                    f", or make the output type the values' type ({type(value).__name__})."
                    if typed
                    else "."
                )
            )
        raise UnsupportedOutputTypeError(f"The output type {name} has {fix}")
    bad = [v for v in values or () if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} has the value {bad[0]!r}, which "
            "JSON cannot represent, so no schema can ask for it. Use finite numbers or strings."
        )
    for value in values or ():
        if isinstance(value, str) and not value.isascii() and lone_surrogate(value):
            raise UnsupportedOutputTypeError(
                f"The output type {output_type_name(output_type)} has the value "
                f"{describe(value, 80)}, "
                "which holds a lone surrogate: not valid Unicode, so no engine can write it. "
                "Use valid Unicode text."
            )


def _plan(
    output_type: object, grammar: bool = False, strict: bool = False, later: bool = False
) -> OutputPlan:
    """Plan an output type (`plan_output`); ``later``: a term's GBNF left for later."""
    if output_type is None:
        return OutputPlan("text", output_type=None)
    inner = _unaliased(output_type)
    if inner is not output_type:  # planned as what it stands for, named as written
        try:
            plan = _plan(inner, grammar, strict, later)
        except UnsupportedOutputTypeError:
            # A recursive alias (type Json = dict[str, Json] | ...) names itself in its
            # value, which only Pydantic resolves from the alias: plan the alias as is.
            if not _names_inside(inner) or not _other_json_type(output_type):
                raise
            schema, written, _ = _type_adapter_schema(output_type)
            plan = _json_plan(schema, output_type, strict=strict, generated=not written)
        return msgspec.structs.replace(plan, output_type=output_type)
    if grammar and isinstance(output_type, Term) and not isinstance(output_type, JsonSchema):
        if literal_values(output_type) == []:  # an empty Choice: its grammar takes only ""
            _unwritable_literal(output_type)
        return _grammar_plan(output_type, later)  # a JsonSchema stays a JSON schema (below)
    if isinstance(output_type, Regex | CFG):
        kind = "Regex" if isinstance(output_type, Regex) else "CFG"
        raise UnsupportedOutputTypeError(
            f"{kind} output types cannot be expressed by LM Studio's JSON-schema structured "
            f"output. {_GRAMMAR_HINT}."
        )
    if isinstance(output_type, type) and issubclass(output_type, Term):
        name = output_type.__name__
        raise UnsupportedOutputTypeError(
            f"The output type is the Outlines class {name} itself, not an instance of it: "
            f"build one, e.g. {_TERM_EXAMPLES.get(name, name + '(...)')}."
        )
    if isinstance(output_type, JsonSchema):
        if output_type.whitespace_pattern is not None:
            raise UnsupportedOutputTypeError(
                "JsonSchema(whitespace_pattern=...) cannot be honoured: LM Studio chooses the "
                "JSON whitespace itself. Drop the whitespace_pattern argument."
            )
        return _json_plan(_schema_from_str(output_type.schema), output_type, strict=strict)
    if isinstance(output_type, dict):
        return _json_plan(output_type, output_type, strict=strict)
    if isinstance(output_type, str):
        return _json_plan(_schema_from_str(output_type), output_type, strict=strict)
    if type(output_type).__name__ == "SchemaBuilder" and hasattr(output_type, "to_schema"):
        return _json_plan(output_type.to_schema(), output_type, strict=strict)
    problem = foreign_class_problem(output_type)
    if problem is not None:
        raise UnsupportedOutputTypeError(problem)
    if isinstance(output_type, type) and issubclass(output_type, pydantic.BaseModel):
        schema, written = _model_schema(output_type)
        refuse_unreadable_parts(output_type, output_type.__pydantic_core_schema__)
        return _json_plan(schema, output_type, strict=strict, generated=not written)
    if _is_json_family(output_type):
        schema, written, core_schema = _type_adapter_schema(output_type)
        refuse_unreadable_parts(output_type, core_schema)
        return _json_plan(schema, output_type, strict=strict, generated=not written)
    _unwritable_literal(output_type)
    plain = _deeply_unaliased(output_type)
    if plain is not output_type and is_simple_type(plain):
        # tuple[UserId, str] is tuple[int, str] (found by a probe: an alias inside a
        # container made the reply a JSON document, '[5, "a"]', not Outlines' '(5, "a")')
        plan = _plan(plain, grammar, strict, later)
        return msgspec.structs.replace(plan, output_type=output_type)
    if is_simple_type(output_type):
        try:
            schema, written = _generated(output_type, lambda: simple_schema(output_type))
        except BUILD_ERRORS as exc:  # e.g. Annotated[int, Field(ge="x")]
            # pydantic-core's own words, without its "Error building "int" validator:
            # ValueError:" and the reprs of Pydantic's FieldInfo (found by a probe)
            reason = re.sub(r"^.*validator:\s*(\w+Error:\s*)?", "", " ".join(str(exc).split()))
            annotated = typing.get_origin(output_type) is typing.Annotated
            name = output_type_name(typing.get_args(output_type)[0] if annotated else output_type)
            raise UnsupportedOutputTypeError(
                f"Cannot build a JSON schema for {name}"
                f"{' with its Annotated constraints' if annotated else ''}: "
                f"{reason.rstrip('.')}. Fix the constraint in its Annotated metadata."
            ) from exc
        full = check_json_schema(schema, meta=written)
        return OutputPlan(
            "simple",
            {"type": "json", "jsonSchema": _sendable(full, strict)},
            output_type=output_type,
            render=functools.partial(_render_simple_text, output_type=output_type),
            full_schema=full,
        )
    if isinstance(output_type, Term):
        raise UnsupportedOutputTypeError(
            f"The Outlines DSL term {output_type!r:.80} compiles to a regular expression, which "
            f"LM Studio's JSON-schema structured output cannot express. {_GRAMMAR_HINT}."
        )
    term = _term_inside(output_type)
    if term is not None and grammar:  # list[integer]: a regular type, as Outlines reads it
        return _grammar_plan(output_type, later)
    if term is not None:
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} holds the Outlines DSL term "
            f"{term!r:.80}, which compiles to a regular expression that LM Studio's "
            f"JSON-schema structured output cannot express. {_GRAMMAR_HINT}."
        )
    key = _non_str_key(output_type)
    set_like = _set_inside(output_type)
    if key is None and set_like is None and _other_json_type(output_type):
        # Types Outlines has no regex for, which work as fields (uuid.UUID, Decimal, a
        # NamedTuple, dict[str, Any]...): the reply is their JSON document, as for a model.
        schema, written, core_schema = _type_adapter_schema(output_type)
        refuse_unreadable_parts(output_type, core_schema)
        return _json_plan(schema, output_type, strict=strict, generated=not written)
    why = (
        f" Its dict keys are {output_type_name(key)}; only str keys (or a Literal or Enum of "
        "strings) are supported (JSON object keys are strings): use dict[str, ...]."
        if key is not None
        else _set_hint(set_like, whole=set_like is output_type)
        if set_like is not None
        else _BARE_CONTAINERS.get(output_type, "")
        if isinstance(output_type, type)  # a value ([1, 2]) may be unhashable
        else _FUNCTION_HINT
        if inspect.isfunction(output_type) or inspect.ismethod(output_type)
        else _listed_types_hint(output_type)
    )
    raise UnsupportedOutputTypeError(
        f"The output type {output_type_name(output_type)} is not supported by outlines-lmstudio."
        f"{why} Supported: {_SUPPORTED}."
    )


# Outlines' local models read a function's signature as an object of its parameters; its
# LM Studio adapter refuses a function, and so does this one (found by a probe: the message
# did not say what to write instead).
_FUNCTION_HINT = (
    " A function is not an output type here (Outlines' local models read its signature as "
    "an object of its parameters): write the parameters as a Pydantic model or a TypedDict, "
    "and call the function with the parsed value."
)


def _listed_types_hint(output_type: object) -> str:
    """Return what to write for a list or tuple value of types, ``[Cat, Dog]`` or ``[Cat]`` ("").

    pydantic-ai's ``output_type=[Cat, Dog]`` means one of them (found by a probe of what its
    users write), and ``[Cat]`` reads as a list of them: here a type says either.
    """
    if not isinstance(output_type, list | tuple) or not output_type:
        return ""
    if not all(isinstance(item, type) or typing.get_origin(item) for item in output_type):
        return ""
    names = [output_type_name(item) for item in output_type]
    if len(names) == 1:
        return f" For a list of {names[0]}, write list[{names[0]}]."
    return (
        f" For a reply that is one of these types, write their union, "
        f"Union[{', '.join(names)}] (or {' | '.join(names)})."
    )


# The deprecated typing aliases (typing.List: list...) by identity, as Pydantic reads them.
# Built here from typing-inspection's ``DEPRECATED_ALIASES`` (there since 0.4.0, which
# pydantic 2.11 allows): its own ``DEPRECATED_ALIASES_IDS`` came only in 0.4.4.
_DEPRECATED_ALIASES_IDS: dict[int, type[Any]] = {
    id(alias): bare for alias, bare in typing_objects.DEPRECATED_ALIASES.items()
}
# ``typing_objects.is_forwardref`` came in typing-inspection 0.4.1: the same check.
_FORWARD_REFS = (typing.ForwardRef, typing_extensions.ForwardRef)


def _unaliased(output_type: object) -> object:
    """Return the type an alias stands for, or the type itself when it is none.

    A bare ``typing.List`` (``Dict``, ``Tuple``, ``Set``...) is its builtin (``list``),
    as Pydantic reads it, so it is refused alike; a ``TypeAliasType`` (Python 3.12's
    ``type IntList = list[int]``), given with its parameters or not, is its value, which
    Pydantic also reads in a field. Pydantic's own tables (typing-inspection) tell both. A
    ``typing.NewType`` is its supertype, as Pydantic reads it (found by a probe: it was
    refused as the output type itself, though its value is the supertype's at run time).
    """
    bare = _DEPRECATED_ALIASES_IDS.get(id(output_type))
    if bare is not None:
        return bare
    if typing_objects.is_newtype(output_type):
        supertype: object = output_type.__supertype__
        return supertype
    if typing_objects.is_typealiastype(output_type):
        value = output_type.__value__
        # A value written as a string ("int") is a forward reference that only Pydantic
        # resolves from the alias (found by a review: it was read as JSON-schema text).
        return output_type if isinstance(value, str) else value
    origin = typing.get_origin(output_type)
    if typing_objects.is_typealiastype(origin):
        try:  # Pair[int] for type Pair[T] = tuple[T, T]: tuple[int, int]
            return origin.__value__[typing.get_args(output_type)]
        except TypeError:  # a value with no parameters to fill: Pydantic reads it as given
            return output_type
    return output_type


def _names_inside(tp: Any) -> bool:
    """Tell whether a type names another by a string (``list["Json"]``), not a Literal's."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return False
    return any(
        isinstance(arg, (str, *_FORWARD_REFS)) or _names_inside(arg)
        for arg in (args[:1] if origin is typing.Annotated else args)
    )


def _other_json_type(output_type: object) -> bool:
    """Tell whether Pydantic writes a JSON schema for a type no other branch takes.

    Not for a bare ``list``/``dict``... (they say nothing of their items) or a type whose
    schema is ``{}`` (``Any``, ``object``: any JSON value, which asks for nothing).
    """
    if (
        not isinstance(output_type, type)
        and typing.get_origin(output_type) is None
        and not typing_objects.is_typealiastype(output_type)
    ):
        return False  # a value, not a type
    if isinstance(output_type, type) and output_type in _BARE_CONTAINERS:
        return False
    try:
        portable = portable_typeddicts(output_type, {})
        schema = pydantic.TypeAdapter(cast(Any, portable)).json_schema()
    except pydantic_core.PydanticOmit:
        return True  # a part left out of its schema: refused by name when it is planned
    except (*BUILD_ERRORS, TypeError):
        return False
    return schema != {}


_TERM_EXAMPLES = {
    "Regex": 'Regex(r"[0-9]+")',
    "CFG": "CFG(lark_grammar_text)",
    "Choice": 'Choice(["yes", "no"])',
    "JsonSchema": "JsonSchema(Person)",
}
"""How to build the Outlines DSL classes people pass uninstantiated."""


_BARE_CONTAINERS: dict[object, str] = {
    container: f" A bare {container.__name__} does not say what it holds, so no schema can "
    f"be built: give its item types, e.g. {example}."
    for container, example in (
        (list, "list[int]"),
        (tuple, "tuple[int, str] or tuple[int, ...]"),
        (dict, "dict[str, int] (or a Pydantic model)"),
    )
}
"""The hint for ``list``, ``tuple`` and ``dict`` without item types (Outlines' ``dict``
means any JSON, a CFG, which LM Studio's JSON-schema output has no form for)."""


def _set_hint(set_type: Any, *, whole: bool) -> str:
    """Say what to ask for instead of a set of simple values (``set[int]``).

    ``whole``: the set is the output type itself, not a part of it (``Optional[set[int]]``).
    """
    container = SETS[typing.get_origin(set_type) or set_type]
    args = typing.get_args(set_type)
    item = output_type_name(args[0]) if args else "int" if whole else "..."
    why = (
        "JSON has no set type, and LM Studio does not make array items unique (it does not "
        "enforce uniqueItems)"
    )
    if not whole:
        return (
            f" It holds {output_type_name(set_type)}: {why}. Write list[{item}] in its place "
            f"and build the {container} from the parsed value."
        )
    return (
        f" {why}: ask for list[{item}] and build the {container} from "
        f"the result, e.g. {container}(model.parse(prompt, list[{item}]))."
    )


def _set_inside(output_type: Any) -> Any:
    """Return a set type that is, or is inside, a type of simple values, if any.

    ``Optional[set[int]]`` and ``list[set[int]]`` are refused as ``set[int]`` is (found by
    a probe: only the bare set was); a set of frozen models is a JSON type, planned before.
    """
    origin = typing.get_origin(output_type)
    if origin in SETS or (isinstance(output_type, type) and output_type in SETS):
        return output_type
    if origin not in _HOLDING:  # not type[set[int]], Literal values... (a review)
        return None
    args = typing.get_args(output_type)
    for arg in args[:1] if origin is typing.Annotated else args:
        inner = _set_inside(arg)
        if inner is not None:
            return inner
    return None


_HOLDING = (typing.Union, types.UnionType, list, tuple, dict, typing.Annotated)
"""The types whose values hold their arguments' values, as JSON writes them."""


def unaliased(output_type: object) -> object:
    """Return what an alias, or an alias of an alias, stands for (the type if none)."""
    while (inner := _unaliased(output_type)) is not output_type:
        output_type = inner
    return output_type


def _deeply_unaliased(output_type: object, expanding: frozenset[int] = frozenset()) -> object:
    """Return a type with the aliases inside it replaced too: ``list[UserId]``, ``list[int]``.

    Only inside the types whose values hold their arguments' (`_HOLDING`); the type itself
    when it holds no alias. A recursive alias (``type Json = list[Json] | int``) is left as
    written where it names itself, as Pydantic reads it.
    """
    if id(output_type) in expanding:
        return output_type
    inner = unaliased(output_type)
    if inner is not output_type:
        expanding |= {id(output_type)}
    origin = typing.get_origin(inner)
    if origin not in _HOLDING:
        return inner
    args = typing.get_args(inner)
    if origin is typing.Annotated:
        bare = _deeply_unaliased(args[0], expanding)
        return inner if bare is args[0] else typing.Annotated[(bare, *args[1:])]
    plain = tuple(a if a is Ellipsis else _deeply_unaliased(a, expanding) for a in args)
    if all(p is a for p, a in zip(plain, args, strict=True)):
        return inner
    if origin in (typing.Union, types.UnionType):
        return typing.Union[plain]  # noqa: UP007  # built from a tuple, as | cannot
    return origin[plain]


def _grammar_term_type(output_type: object) -> bool:
    """Whether grammar mode sends a type as GBNF: an Outlines term, or a type holding one."""
    inner = unaliased(output_type)
    if isinstance(inner, Term):
        return not isinstance(inner, JsonSchema)
    return _term_inside(inner) is not None


def _term_inside(output_type: Any) -> Term | None:
    """Return an Outlines DSL term written inside a type (``list[integer]``), if any.

    Not in ``Annotated`` metadata (``Annotated[str, Regex(...)]`` is Pydantic's, sent as
    a JSON schema) nor among ``Literal`` values.
    """
    origin = typing.get_origin(output_type)
    if origin is Literal:
        return None
    args = typing.get_args(output_type)
    for arg in args[:1] if origin is typing.Annotated else args:
        if isinstance(arg, Term):
            return arg
        term = _term_inside(arg)
        if term is not None:
            return term
    return None


def _non_str_key(output_type: Any) -> Any:
    """Return the key type of a ``dict[K, ...]`` with ``K`` not of strings inside a type, if any."""
    args = typing.get_args(output_type)
    if typing.get_origin(output_type) is dict and args and not is_str_key(args[0]):
        return args[0]
    for arg in args:
        key = _non_str_key(arg)
        if key is not None:
            return key
    return None


def argument_order(output_type: object) -> object:
    """Return a type's arguments, nested, in the order they were written.

    ``Union[date, str] == Union[str, date]`` (and the same for ``Literal``), but the order
    decides what Pydantic's union validation returns and which member renders a reply, so
    a cache keyed on the type alone would serve one order's result for the other. Key it
    on the type and this too.

    Parameters
    ----------
    output_type
        A hashable output type.

    Returns
    -------
    object
        A hashable value, equal for two types only when their arguments are written alike.
    """
    args = typing.get_args(output_type)
    if isinstance(output_type, list):  # the parameters of Callable[[int], str]
        args = tuple(output_type)
    if args:
        return tuple(argument_order(arg) for arg in args)
    return type(output_type), output_type  # Literal[1, True]: 1 == True, but not alike


def _not_json_error(schema: dict[str, Any]) -> InvalidSchemaError:
    """Name where a schema dict holds what JSON cannot (NaN, a set...), and what it is.

    Found by a probe: json's own message named neither the place nor the value.
    """
    from ._schema_walk import pointer_token

    stack: list[tuple[str, object]] = [("", schema)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str | int | float | bool) and key is not None:
                    return InvalidSchemaError(
                        f"Invalid JSON schema at {where or '/'}: the key {key!r:.80} "
                        f"({type(key).__name__}) cannot be a JSON object's key: use a string."
                    )
                stack.append((f"{where}/{pointer_token(str(key))}", value))
        elif isinstance(node, list | tuple):
            stack.extend((f"{where}/{i}", v) for i, v in enumerate(node))
        elif (isinstance(node, float) and not math.isfinite(node)) or not isinstance(
            node, str | int | float | bool | None
        ):
            return InvalidSchemaError(
                f"Invalid JSON schema at {where or '/'}: {node!r:.80} ({type(node).__name__}) "
                "is no JSON value (JSON has no NaN or infinity, nor sets, bytes or other "
                "objects): write a number, string, list or object there."
            )
    return InvalidSchemaError("Invalid JSON schema: it cannot be written as JSON.")


@lru_cache(maxsize=512)
def _plan_cached(
    output_type: object, grammar: bool, strict: bool, order: object
) -> tuple[OutputPlan, tuple[LateName, ...]]:
    return _plan(output_type, grammar, strict), late_names(output_type)


@lru_cache(maxsize=256)
def _plan_schema_text(key: str, strict: bool) -> OutputPlan:
    return _json_plan(json.loads(key), None, strict=strict)


@lru_cache(maxsize=256)
def _plan_json_schema(text: str, whitespace: str | None, grammar: bool, strict: bool) -> OutputPlan:
    # The term as the caller's holds it, not through JsonSchema(), which checks the text
    # again with Outlines' own checker and its errors (found by a review).
    term = JsonSchema.__new__(JsonSchema)
    term.schema, term.whitespace_pattern = text, whitespace
    return _plan(term, grammar, strict)


def plan_output(
    output_type: object, *, grammar: bool = False, strict_schema: bool = False
) -> OutputPlan:
    """Return the `OutputPlan` for an output type (cached per type).

    Parameters
    ----------
    output_type
        The output type given to the model or ``outlines.Generator``.
    grammar
        Grammar mode: send Outlines DSL terms (``Regex``, ``CFG``, ``either``...) as
        llama.cpp GBNF grammars instead of refusing them.
    strict_schema
        Also refuse JSON-schema keywords that an engine accepts but does not enforce
        (``multipleOf``, ``uniqueItems``...; see ``docs/output-types.md``). Without it they
        are sent, and ``parse`` still validates every reply against the full schema.

    Returns
    -------
    OutputPlan
        What to send and how to render the reply.

    Raises
    ------
    UnsupportedOutputTypeError
        For types LM Studio cannot be asked for, and schemas using a keyword LM Studio's
        engines cannot constrain (the message names it, its JSON pointer and the ways out).
    InvalidSchemaError
        For malformed or unsafe JSON schemas.
    """
    if isinstance(output_type, dict):
        # dicts are unhashable: key the cache on their JSON text. Key order is kept: it is
        # the order the fields are written in where the engine sees it.
        try:
            key = json.dumps(output_type, allow_nan=False)
        except RecursionError:  # Python's JSON encoder gives up around 1,000 levels
            raise too_deep("too deep for Python's JSON encoder") from None
        except (TypeError, ValueError) as exc:
            raise _not_json_error(output_type) from exc
        plan = _plan_schema_text(key, strict_schema)
        return msgspec.structs.replace(plan, output_type=output_type)
    if isinstance(output_type, JsonSchema) and isinstance(output_type.schema, str):
        # Unhashable too: keyed on its text (found by a probe: planned anew on every call,
        # 140 ms a call for a 300-field schema, where a dict's plan was kept).
        wanted = (output_type.schema, output_type.whitespace_pattern, grammar, strict_schema)
        try:
            plan = _plan_json_schema(*wanted)
        except RecursionError:
            raise too_deep("too deep for Python's JSON decoder") from None
        return msgspec.structs.replace(plan, output_type=output_type)
    # A class or None has no arguments to order (skipping the walk keeps calls cheap).
    plain = output_type is None or isinstance(output_type, type)
    order = None if plain else argument_order(output_type)
    try:
        hash((output_type, order))
    except TypeError:
        hashable = False
    else:
        hashable = True
    try:
        if not hashable:  # planned outside the handler: its errors carry no hash TypeError
            # Never kept, so its GBNF may be converted later (the async front asks that)
            return _plan(output_type, grammar, strict_schema, later_requested())
        if grammar and later_requested() and _grammar_term_type(output_type):
            # An alias of a term is hashable: not kept either, so that the async front
            # converts it off the event loop too (found by a review: 0.4 s on the loop)
            return _plan(output_type, grammar, strict_schema, True)
        # made again once a name it resolved changed (`outlines_lmstudio._late_names`)
        return kept(_plan_cached, output_type, grammar, strict_schema, order)
    except RecursionError:
        # Pydantic's own schema generation recurses once a level: 50 nested models raised
        # a bare RecursionError with a 1,000-line traceback (found by a probe).
        raise UnsupportedOutputTypeError(
            f"The output type {output_type_name(output_type)} nests too deeply for its JSON "
            "schema to be written (Python's recursion limit, reached in Pydantic's schema "
            "generator and this library's, which runs inside it): nest fewer models."
        ) from None
