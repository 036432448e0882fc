"""Output types -> LM Studio structured settings (pure, no I/O).

`plan_output` turns an Outlines output type into an `OutputPlan`: the
``response_format`` sent to LM Studio (always the explicit
``{"type": "json", "jsonSchema": ...}`` form, so unions and ``$ref`` roots
survive the SDK) and how the returned text is turned into what Outlines'
own models return for that type.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, cast

import jsonschema
import pydantic
import typing_extensions
from outlines.types import CFG, JsonSchema, Regex
from outlines.types.dsl import Term

from ._simple import is_simple_type, render_simple, simple_schema
from .errors import InvalidSchemaError, UnsupportedOutputTypeError

__all__ = ["OutputPlan", "check_json_schema", "plan_output"]

Kind = Literal["text", "json", "simple", "grammar"]
MAX_SCHEMA_DEPTH = 64
"""Deepest nesting of a JSON schema we accept (deeper ones are refused, not sent)."""

_SUPPORTED = (
    "None (plain text); a Pydantic model, TypedDict, dataclass, JSON schema (dict or str), "
    "outlines.types.JsonSchema or genson SchemaBuilder; int, float, bool, str, Literal, Enum, "
    "outlines.types.Choice, datetime.date/time/datetime; and list/tuple/dict/Optional/Union "
    "of these"
)


def _identity(text: str) -> str:
    return text


@dataclass(frozen=True)
class OutputPlan:
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
    """

    kind: Kind
    response_format: dict[str, Any] | None = None
    output_type: Any = None
    render: Callable[[str], str] = field(default=_identity, compare=False)

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema sent, if any."""
        if self.response_format and self.response_format.get("type") == "json":
            schema: dict[str, Any] = self.response_format["jsonSchema"]
            return schema
        return None


def _walk(node: object, depth: int, path: str) -> None:
    """Refuse remote references and absurd nesting before anything is sent."""
    if depth > MAX_SCHEMA_DEPTH:
        raise InvalidSchemaError(
            f"JSON schema is nested more than {MAX_SCHEMA_DEPTH} levels deep (at {path}). "
            "Flatten it or use $defs/$ref for recursive structures."
        )
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            raise InvalidSchemaError(
                f"JSON schema has a remote $ref {ref!r} at {path}. References are never "
                "fetched: inline the referenced schema under $defs and use '#/$defs/...'."
            )
        for key, value in node.items():
            _walk(value, depth + 1, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _walk(value, depth + 1, f"{path}/{index}")


def check_json_schema(schema: object) -> dict[str, Any]:
    """Check a JSON schema against its meta-schema and our safety rules.

    Parameters
    ----------
    schema
        The schema (a dict).

    Returns
    -------
    dict
        The same schema.

    Raises
    ------
    InvalidSchemaError
        If it is not an object, breaks its meta-schema, has a remote ``$ref``
        or is nested too deeply.
    """
    if not isinstance(schema, dict):
        raise InvalidSchemaError(
            f"A JSON schema must be a JSON object, got {type(schema).__name__}: {schema!r:.80}."
        )
    _walk(schema, 0, "#")
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InvalidSchemaError(
            f"Invalid JSON schema at {where}: {exc.message}. Fix the schema so it validates "
            f"against the {validator.__name__.removesuffix('Validator')} meta-schema."
        ) from exc
    return schema


def _json_plan(schema: object, output_type: object) -> OutputPlan:
    checked = check_json_schema(schema)
    return OutputPlan("json", {"type": "json", "jsonSchema": checked}, output_type=output_type)


def _schema_from_str(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSchemaError(
            f"The output type is a str but not a JSON schema ({exc}). Pass a JSON schema "
            "string, or use the str type (not an instance) for free text."
        ) from exc


def _portable_typeddicts(tp: Any, memo: dict[int, Any]) -> Any:
    """Rebuild ``typing.TypedDict`` classes as ``typing_extensions`` ones, recursively.

    Pydantic refuses ``typing.TypedDict`` before Python 3.12 (and so does
    Outlines); the rebuilt class has the same fields and required keys.
    """
    if typing.is_typeddict(tp) and type(tp).__module__ == "typing":
        if id(tp) in memo:
            return memo[id(tp)]
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = {
            key: _portable_typeddicts(value, memo)
            if key in tp.__required_keys__
            else typing_extensions.NotRequired[_portable_typeddicts(value, memo)]
            for key, value in hints.items()
        }
        make_typeddict: Any = typing_extensions.TypedDict  # functional form, dynamic name
        rebuilt = make_typeddict(tp.__name__, fields)
        rebuilt.__doc__ = tp.__doc__
        memo[id(tp)] = rebuilt
        return rebuilt
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None or not args:
        return tp
    new_args = tuple(_portable_typeddicts(a, memo) for a in args)
    if new_args == args:
        return tp
    if origin is typing.Annotated:
        return typing.Annotated[new_args[0], *tp.__metadata__]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[new_args]  # noqa: UP007 - built from a runtime tuple
    return origin[new_args]


def _type_adapter_schema(output_type: object) -> dict[str, Any]:
    try:
        portable = _portable_typeddicts(output_type, {})
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(cast(Any, portable))
        schema: dict[str, Any] = adapter.json_schema()
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError) as exc:
        raise UnsupportedOutputTypeError(
            f"Cannot build a JSON schema for {_name(output_type)}: {exc}"
        ) from exc
    return schema


def _name(output_type: object) -> str:
    return getattr(output_type, "__name__", None) or repr(output_type)


def _is_model_like(tp: object) -> bool:
    return isinstance(tp, type) and (
        issubclass(tp, pydantic.BaseModel)
        or dataclasses.is_dataclass(tp)
        or typing.is_typeddict(tp)
    )


def _is_json_family(tp: object) -> bool:
    """Tell whether a type is a Pydantic/TypedDict/dataclass type or a container of them."""
    if _is_model_like(tp):
        return True
    origin = typing.get_origin(tp)
    if origin is None:
        return False
    args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
    if origin in (typing.Union, types.UnionType):
        return any(_is_json_family(a) for a in args)
    if origin in (list, tuple, dict, set, frozenset) or origin is typing.Annotated:
        return any(_is_json_family(a) for a in args)
    return False


def _render_simple_text(text: str, *, output_type: object) -> str:
    return render_simple(text, output_type)


_GRAMMAR_HINT = (
    "Turn on grammar mode, from_lmstudio(client, model, grammar=True), to send it as a "
    "llama.cpp GBNF grammar (GGUF models only), or express the constraint as a JSON schema "
    "(a Pydantic model, or a dict with a 'pattern' for strings)"
)


def _grammar_plan(output_type: object) -> OutputPlan:
    from ._grammar import term_to_gbnf

    return OutputPlan(
        "grammar",
        {"type": "gbnf", "gbnfGrammar": term_to_gbnf(output_type)},
        output_type=output_type,
    )


def _plan(output_type: object, grammar: bool = False) -> OutputPlan:
    if output_type is None:
        return OutputPlan("text", output_type=None)
    if grammar and isinstance(output_type, Term):
        return _grammar_plan(output_type)
    if isinstance(output_type, Regex | CFG):
        kind = "Regex" if isinstance(output_type, Regex) else "CFG"
        raise UnsupportedOutputTypeError(
            f"{kind} output types cannot be expressed by LM Studio's JSON-schema structured "
            f"output. {_GRAMMAR_HINT}."
        )
    if isinstance(output_type, JsonSchema):
        if output_type.whitespace_pattern is not None:
            raise UnsupportedOutputTypeError(
                "JsonSchema(whitespace_pattern=...) cannot be honoured: LM Studio chooses the "
                "JSON whitespace itself. Drop the whitespace_pattern argument."
            )
        return _json_plan(_schema_from_str(output_type.schema), output_type)
    if isinstance(output_type, dict):
        return _json_plan(output_type, output_type)
    if isinstance(output_type, str):
        return _json_plan(_schema_from_str(output_type), output_type)
    if type(output_type).__name__ == "SchemaBuilder" and hasattr(output_type, "to_schema"):
        return _json_plan(output_type.to_schema(), output_type)
    if isinstance(output_type, type) and issubclass(output_type, pydantic.BaseModel):
        return _json_plan(output_type.model_json_schema(), output_type)
    if _is_json_family(output_type):
        return _json_plan(_type_adapter_schema(output_type), output_type)
    if is_simple_type(output_type):
        schema = check_json_schema(simple_schema(output_type))
        return OutputPlan(
            "simple",
            {"type": "json", "jsonSchema": schema},
            output_type=output_type,
            render=functools.partial(_render_simple_text, output_type=output_type),
        )
    if isinstance(output_type, Term):
        raise UnsupportedOutputTypeError(
            f"The Outlines DSL term {output_type!r:.80} compiles to a regular expression, which "
            f"LM Studio's JSON-schema structured output cannot express. {_GRAMMAR_HINT}."
        )
    raise UnsupportedOutputTypeError(
        f"The output type {_name(output_type)} is not supported by outlines-lmstudio. "
        f"Supported: {_SUPPORTED}."
    )


@lru_cache(maxsize=512)
def _plan_cached(output_type: object, grammar: bool) -> OutputPlan:
    return _plan(output_type, grammar)


@lru_cache(maxsize=256)
def _plan_schema_text(key: str) -> OutputPlan:
    return _json_plan(json.loads(key), None)


def plan_output(output_type: object, *, grammar: bool = False) -> OutputPlan:
    """Return the `OutputPlan` for an output type (cached per type).

    Parameters
    ----------
    output_type
        The output type given to the model or ``outlines.Generator``.
    grammar
        Grammar mode: send Outlines DSL terms (``Regex``, ``CFG``, ``either``...) as
        llama.cpp GBNF grammars instead of refusing them.

    Returns
    -------
    OutputPlan
        What to send and how to render the reply.

    Raises
    ------
    UnsupportedOutputTypeError
        For types LM Studio cannot be asked for.
    InvalidSchemaError
        For malformed or unsafe JSON schemas.
    """
    if isinstance(output_type, dict):
        # dicts are unhashable: key the cache on their canonical JSON text.
        try:
            key = json.dumps(output_type, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InvalidSchemaError(f"JSON schema dict is not JSON-serialisable: {exc}") from exc
        plan = _plan_schema_text(key)
        return dataclasses.replace(plan, output_type=output_type)
    try:
        hash(output_type)
    except TypeError:
        return _plan(output_type, grammar)
    return _plan_cached(output_type, grammar)
