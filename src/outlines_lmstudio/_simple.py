"""Simple output types through JSON schema, rendered as Outlines renders them (pure).

LM Studio constrains output with JSON schema only, so ``Literal["pos", "neg"]``
is requested as ``{"enum": ["pos", "neg"]}`` and the JSON reply ``"pos"`` is
rendered back as ``pos``: the text Outlines' local models return for the same
type (see ``outlines.types.dsl.python_types_to_terms``). The rendering rules
mirror the regexes Outlines builds: scalars at the top level bare (``42``,
``True``, ``None``, ``pos``, ``2024-01-31``), ``str`` quoted, lists ``[a, b]``,
tuples ``(a, b)``, dicts ``{"k":v, "k2":v2}`` with quoted strings inside.
"""

from __future__ import annotations

import contextvars
import datetime
import enum
import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, cast

import msgspec
import pydantic
from outlines.types import Choice
from outlines.types.dsl import Term, to_regex
from pydantic.json_schema import (
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
    WithJsonSchema,
)
from pydantic_core import CoreSchema, PydanticOmit

from ._text_patterns import DURATION_PATTERN, url_pattern
from .errors import UnsupportedOutputTypeError

__all__ = [
    "FullMatchTerms",
    "TermWithoutRegex",
    "is_simple_type",
    "is_str_key",
    "literal_values",
    "pydantic_schema",
    "render_simple",
    "simple_schema",
]

# The patterns Outlines uses for these types (outlines.types.date / time / datetime).
_DATE = r"(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"([0-1][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])"
_PATTERNS = {"date": _DATE, "time": _TIME, "date-time": rf"{_DATE} {_TIME}"}
_SCALARS: tuple[type, ...] = (
    int,
    float,
    bool,
    str,
    datetime.date,
    datetime.time,
    datetime.datetime,
    type(None),
)
_FORMATS: dict[Any, str] = {
    datetime.date: "date",
    datetime.time: "time",
    datetime.datetime: "date-time",
}
"""The JSON-schema format (a key of `_PATTERNS`) of each date and time type."""
_UNIONS = (typing.Union, types.UnionType)
_CONTAINERS = (list, tuple, dict)


def literal_values(tp: Any) -> list[Any] | None:
    """Return the values of a Literal, Enum or Choice; ``None`` for other types.

    Parameters
    ----------
    tp
        The output type.

    Returns
    -------
    list | None
        The values, in declaration order.
    """
    if isinstance(tp, Choice):
        return list(tp.items)
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return [member.value for member in tp]
    return None


def is_str_key(tp: Any) -> bool:
    """Tell whether a dict key type is one JSON can write.

    ``str``, or a Literal, Enum or Choice of strings (``dict[Literal["lo", "hi"], float]``).
    """
    values = literal_values(tp)
    return tp is str or (bool(values) and all(isinstance(v, str) for v in values or ()))


def is_simple_type(tp: Any) -> bool:
    """Tell whether a type is a scalar, literal, enum or choice, or a container/union of them.

    Parameters
    ----------
    tp
        The output type.

    Returns
    -------
    bool
        ``True`` if `simple_schema` and `render_simple` handle it.
    """
    values = literal_values(tp)
    if values is not None:
        return bool(values) and all(
            isinstance(v, str | int | float | bool) or v is None for v in values
        )
    if tp in _SCALARS:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:  # Field(ge=1, le=5) and the like: Pydantic's schema has them
        return is_simple_type(args[0])
    if origin in _UNIONS:
        return all(is_simple_type(a) for a in args)
    if origin in _CONTAINERS:
        inner = [a for a in args if a is not Ellipsis]
        if origin is dict and inner and not is_str_key(inner[0]):
            return False  # JSON object keys are strings
        if not inner:  # ``tuple[()]``, the empty tuple (its own args are empty too)
            return origin is tuple and tp is not typing.Tuple  # noqa: UP006  # the bare alias
        return all(is_simple_type(a) for a in inner)
    return False


def _with_outlines_patterns(node: Any) -> Any:
    """Match Outlines' regexes: its date/time patterns, and lists of at least one item.

    A list whose length the user bounded (``Field(min_length=0)``, ``max_length=0``) keeps
    the user's bounds.
    """
    if isinstance(node, dict):
        fmt = node.get("format")
        if node.get("type") == "string" and fmt in _PATTERNS:
            rest = {k: v for k, v in node.items() if k != "format"}
            return {**rest, "pattern": f"^{_PATTERNS[fmt]}$"}
        result = {k: _with_outlines_patterns(v) for k, v in node.items()}
        if (
            node.get("type") == "array"
            and "prefixItems" not in node
            and "minItems" not in node
            and node.get("maxItems") != 0
        ):
            result["minItems"] = 1
        return result
    if isinstance(node, list):
        return [_with_outlines_patterns(v) for v in node]
    return node


class TermWithoutRegex(TypeError):
    """An Outlines term in a Pydantic type that no regular expression can write (a ``CFG``).

    Raised while a schema is built (by `FullMatchTerms`); ``plan_output`` turns it into an
    ``UnsupportedOutputTypeError`` that names the field.
    """

    def __init__(self, term: Term) -> None:
        super().__init__(f"{term!r:.80} has no regular expression")
        self.term = term


_DECIMAL_TEXT = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$"
"""A decimal written as a string, in the form every reader takes (``Decimal`` reads more)."""
_NUMBER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_PYDANTIC_DECIMAL_START = r"^(?!^[-+.]*$)[+-]?0*"
"""How Pydantic 2.12 and 2.13 begin a ``Decimal``'s string pattern (2.11 and 2.14 write none)."""


def _pydantic_decimal_text(branch: object) -> bool:
    """Tell whether ``branch`` is the string branch Pydantic writes for a ``Decimal``.

    Pydantic 2.12 and 2.13 give it a pattern with lookaheads, which no engine can
    constrain: every model with a ``Decimal`` field was refused under them (found by a
    probe of the dependency floors). It is replaced as the plain string of 2.11 and 2.14
    is; the digits limits it spells are the type's to check, as on those versions.
    """
    if branch == {"type": "string"}:
        return True
    return (
        isinstance(branch, dict)
        and branch.keys() == {"type", "pattern"}
        and branch["type"] == "string"
        and isinstance(pattern := branch["pattern"], str)
        and pattern.startswith(_PYDANTIC_DECIMAL_START)
    )


_UUID_VERSION = re.compile(r"uuid([1-8])")
_UUID_PATTERN = (
    "^[0-9a-fA-F]{{8}}-[0-9a-fA-F]{{4}}-{version}[0-9a-fA-F]{{3}}-[89abAB][0-9a-fA-F]{{3}}"
    "-[0-9a-fA-F]{{12}}$"
)
"""A UUID of one version, written as Pydantic's ``UUID1``..``UUID8`` take it (RFC 9562's
variant, the version digit at its place)."""

_NAIVE_DATETIME = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?$"
)
"""A date-time with no offset, which ``NaiveDatetime`` takes (RFC 3339 with its offset left
out: ``format: date-time`` asks for one, and the engines write it)."""
_AWARE_DATETIME = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""RFC 3339's ``date-time``, which ``AwareDatetime`` takes: outlines-core's regex for the
format (LM Studio's MLX engine) leaves the offset optional."""


class FullMatchTerms(GenerateJsonSchema):
    """Pydantic's JSON schema, written to ask the engines for what the type reads.

    An Outlines term in a Pydantic type (``email: outlines.types.email``, or
    ``Annotated[str, Regex("[a-z]+")]``) writes ``{"type": "string", "pattern": regex}`` but
    validates with a full match. JSON Schema reads a ``pattern`` as a search, so the
    engines wrote any string that holds a match (``" x a@b.co y"``), which the type then
    refused. Anchored, the schema asks for what the type accepts, as Outlines' own models do
    (outlines-core reads every pattern as a full match). Likewise, each found by a probe:
    the schema is always the validation mode's (`mode`); a pattern Rust's regex reads
    otherwise is refused (`str_schema`); a ``Decimal``'s string and a ``UUID4``'s version
    are written as patterns (`decimal_schema`, `generate_inner`); a required field the
    schema leaves out is refused; naive and aware datetimes get their patterns, and so do
    a ``timedelta`` and the URL types (`timedelta_schema`, `url_schema`).
    """

    _read_first = 0  # how many validators that read the value first enclose this node

    @property
    def mode(self) -> JsonSchemaMode:
        """The mode the schema was asked in (validation), whatever the type's config says.

        ``json_schema_mode_override="serialization"`` made Pydantic write the schema of
        what the type writes (serialization aliases, computed fields as required, a
        ``Json[int]`` as an integer) instead of what it reads, and every reply failed the
        type (found by a probe): a reply is read, so it is asked for in validation mode.
        """
        return self._mode

    def generate_inner(self, schema: Any) -> JsonSchemaValue:
        """Write a term's schema with its anchored pattern; anything else as Pydantic does."""
        metadata = schema.get("metadata", {})
        functions = (
            *metadata.get("pydantic_js_functions", ()),
            *metadata.get("pydantic_js_annotation_functions", ()),
        )
        for function in functions:
            term = getattr(function, "__self__", None)  # Term.__get_pydantic_json_schema__
            if isinstance(term, Term):
                try:
                    regex = to_regex(term)
                except TypeError as exc:  # a CFG, alone or inside the term
                    raise TermWithoutRegex(term) from exc
                return {"type": "string", "pattern": f"^(?:{regex})$"}
        written = _WRITTEN.get()
        if written is not None and not written:
            part = _user_written_part(schema, metadata, functions)
            if part:
                written.append(part)
        validator = schema.get("type") in _READS_FIRST
        self._read_first += validator
        try:
            result = super().generate_inner(cast(CoreSchema, schema))
        except PydanticOmit:
            # Under a validator that reads the value first (a before model validator), the
            # field may be filled by it (found by a review): left to it.
            if _required_field(schema) and not self._read_first:
                # `SkipJsonSchema[int]` on a field without a default: left out of the schema,
                # so no reply could hold it, and every reply failed (found by a probe).
                raise UnsupportedOutputTypeError(
                    "A required field is left out of the JSON schema (SkipJsonSchema, or a "
                    "type with no JSON schema): no reply can hold it, so every reply would "
                    "fail the type. Give the field a default, or let the schema show it."
                ) from None
            raise
        finally:
            self._read_first -= validator
        version = _UUID_VERSION.fullmatch(str(result.get("format", "")))
        if version is not None and result.get("type") == "string":
            # `UUID4` and the other versions: no engine knows `format: uuid4`, so the string
            # was any string (found by a probe: 3 of 4 replies failed the type).
            result = {k: v for k, v in result.items() if k != "format"}
            result["pattern"] = _UUID_PATTERN.format(version=version.group(1))
        return result

    def str_schema(self, schema: Any) -> JsonSchemaValue:
        r"""Write a string's schema as Pydantic does; refuse a pattern read two ways.

        Pydantic validates a ``pattern`` with Rust's regex (unless the type's config says
        ``regex_engine="python-re"``, or the pattern is a compiled ``re.Pattern``); the
        engines read the schema's ``pattern`` as ECMA-262. Where the two differ
        (``[[:alpha:]]``, ``[a-z&&[^b]]``, ``\<``), every reply the engine was held to
        failed the type (found by a probe), so such a type is refused before sending.
        """
        written = super().str_schema(schema)
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and self._config.regex_engine != "python-re":
            from ._search import rust_reads_otherwise  # with the first pattern (import time)

            syntax = rust_reads_otherwise(pattern)
            if syntax is not None:
                way = (  # found by a review: one tail for both said too little of either
                    "Write < or > for the character; the engines cannot be asked for a "
                    "word's start or end"
                    if syntax.startswith("the ")
                    else "Spell the class out (for example [A-Za-z] for [[:alpha:]], [ac] for "
                    "[a-c--b]), or escape the character you mean (\\[, \\&, \\-, \\~)"
                )
                raise UnsupportedOutputTypeError(
                    f"The pattern {pattern!r:.200} has {syntax}: Pydantic checks it with "
                    "Rust's regex, which reads it so, while JSON Schema and the engines read "
                    f"those characters as themselves, so every reply would fail the type. {way}."
                )
        return written

    def decimal_schema(self, schema: Any) -> JsonSchemaValue:
        """Ask for a ``Decimal`` as a number, or as a string that writes one.

        Pydantic writes ``anyOf: [number, string]`` with any string (found by a probe: the
        engines wrote ``"60K,"``, which the type refused) and its bounds on the number
        alone, so a string such as ``"-5"`` escaped ``gt=0``. The string now has a
        decimal's pattern (it keeps what a JSON number would round: Pydantic reads a
        number through a float); a bounded ``Decimal`` is asked for as a number only.
        """
        written = super().decimal_schema(schema)
        branches = written.get("anyOf")
        if not (isinstance(branches, list) and len(branches) == 2):
            return written
        number: dict[str, Any] = branches[0]
        text = branches[1]
        if not _pydantic_decimal_text(text) or number.get("type") != "number":
            return written
        rest = {key: value for key, value in written.items() if key != "anyOf"}
        if any(key in number for key in _NUMBER_BOUNDS):
            return rest | number
        return rest | {"anyOf": [number, {"type": "string", "pattern": _DECIMAL_TEXT}]}

    def datetime_schema(self, schema: Any) -> JsonSchemaValue:
        """Write ``NaiveDatetime`` and ``AwareDatetime`` as the strings they take.

        ``format: date-time`` asks for an offset (llama.cpp writes one, outlines-core may
        not): a naive one is asked for by a ``pattern`` with none, an aware one by a
        ``pattern`` with one (both engines take a pattern before a format).
        """
        written = super().datetime_schema(schema)
        constraint = schema.get("tz_constraint")
        if constraint == "naive":
            return {k: v for k, v in written.items() if k != "format"} | {
                "pattern": _NAIVE_DATETIME
            }
        if constraint is not None:  # "aware", or a fixed offset in seconds
            return written | {"pattern": _AWARE_DATETIME}
        return written

    def timedelta_schema(self, schema: Any) -> JsonSchemaValue:
        """Ask for a ``timedelta`` by the pattern of the ISO 8601 durations it reads.

        No engine constrains ``format: duration`` (found by a probe: the engines wrote any
        string, and ``parse`` failed on almost every reply). A ``timedelta`` written as
        seconds (``ser_json_temporal="seconds"``) is a number, and kept.
        """
        written = super().timedelta_schema(schema)
        if written.get("type") != "string" or written.get("format") != "duration":
            return written
        rest = {k: v for k, v in written.items() if k != "format"}
        return rest | {"pattern": DURATION_PATTERN}

    def url_schema(self, schema: Any) -> JsonSchemaValue:
        """Ask for a URL type (``HttpUrl``, ``AnyUrl``...) by a pattern of URLs it reads.

        Neither engine constrains ``format: uri`` (it is dropped from what is sent), so the
        engines wrote any string (found by a probe). Pydantic's lengths are not sent beside
        it (outlines-core ignores a pattern beside a length, llama.cpp a length beside a
        pattern), and the pattern does not count to 2083 (see `url_pattern`): ``parse``
        checks the length. Where the type allows less than the pattern, Pydantic's schema
        is kept.
        """
        return self._as_url_pattern(schema, super().url_schema(schema))

    def multi_host_url_schema(self, schema: Any) -> JsonSchemaValue:
        """Ask for a DSN (``PostgresDsn``...) by the pattern of its URLs with one host."""
        return self._as_url_pattern(schema, super().multi_host_url_schema(schema))

    @staticmethod
    def _as_url_pattern(schema: Any, written: JsonSchemaValue) -> JsonSchemaValue:
        pattern = url_pattern(schema.get("allowed_schemes"), schema.get("max_length"))
        if pattern is None or written.get("type") != "string" or "pattern" in written:
            return written
        dropped = ("format", "minLength", "maxLength")
        return {k: v for k, v in written.items() if k not in dropped} | {"pattern": pattern}


_READS_FIRST = ("function-before", "function-wrap", "function-plain")
"""Core schema nodes of a validator that reads the value before its schema does."""


def _required_field(schema: Any) -> bool:
    """Whether a core schema node is a field that a value must hold (it has no default)."""
    kind = schema.get("type")
    if kind == "typed-dict-field":
        return bool(schema.get("required", True))
    if kind in ("model-field", "dataclass-field"):
        inner: dict[str, Any] = schema.get("schema", {})
        return inner.get("type") != "default"
    return False


_WRITTEN: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "outlines_lmstudio_user_written", default=None
)
"""Where `FullMatchTerms` notes a part of the schema its user wrote (see `pydantic_schema`)."""


def _user_written_part(schema: Any, metadata: Any, functions: tuple[Any, ...]) -> str:
    """Name the JSON schema a user wrote that Pydantic applies at this node ("" if none)."""
    if metadata.get("pydantic_js_extra") is not None:
        return "json_schema_extra"
    for function in functions:
        if isinstance(getattr(function, "__self__", None), WithJsonSchema):
            return "WithJsonSchema"
        module = getattr(getattr(function, "func", function), "__module__", None) or ""
        if module != "pydantic" and not module.startswith("pydantic."):
            return "__get_pydantic_json_schema__"  # a user class's own hook
    cls = schema.get("cls")
    config = getattr(cls, "__pydantic_config__", None) or getattr(cls, "model_config", None)
    if isinstance(config, Mapping) and config.get("json_schema_extra") is not None:
        return "json_schema_extra"
    return ""


def pydantic_schema(build: typing.Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """Run ``build``, which generates with `FullMatchTerms`; tell whether its user wrote parts.

    Pydantic builds a schema that is valid by construction, except where it copies what
    the user wrote (``json_schema_extra``, ``WithJsonSchema``, a class's own
    ``__get_pydantic_json_schema__``): such a schema needs the meta-schema check.

    Returns
    -------
    tuple
        The schema, and whether a user-written part was applied.
    """
    written: list[str] = []
    token = _WRITTEN.set(written)
    try:
        schema = build()
    finally:
        _WRITTEN.reset(token)
    return schema, bool(written)


def _pydantic_type(tp: Any) -> Any:
    values = literal_values(tp)
    if isinstance(tp, Choice) and values is not None:
        return typing.Literal[tuple(values)]
    return tp


def simple_schema(tp: Any) -> dict[str, Any]:
    """Return the JSON schema that constrains a simple type.

    Parameters
    ----------
    tp
        A type for which `is_simple_type` is true.

    Returns
    -------
    dict
        The JSON schema (dates and times carry Outlines' patterns).
    """
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(_pydantic_type(tp))
    schema = adapter.json_schema(schema_generator=FullMatchTerms)
    return cast(dict[str, Any], _with_outlines_patterns(schema))


class _Number(str):
    """A JSON number kept as its original text (``1e999`` must not become ``Infinity``)."""

    @property
    def is_int(self) -> bool:
        return self.lstrip("+-").isdigit()

    def value(self) -> int | float | None:
        """Return the number, or ``None`` for an integer longer than Python reads (4,300 digits).

        No member is such a number (found by a probe: a reply of 5,000 digits for an
        ``Enum`` of ints raised Python's bare ``ValueError``).
        """
        try:
            return int(self) if self.is_int else float(self)
        except ValueError:
            return None


class _Object(msgspec.Struct, frozen=True):
    """A JSON object's pairs as written: in order, a repeated key kept (``{"a":1, "a":2}``).

    Rendered back as written, so the text shows what the model wrote; a dict would keep
    the last value only, and drop the first from the text without a word.
    """

    pairs: list[tuple[str, Any]]


def _bare(tp: Any) -> Any:
    """Return the type an ``Annotated`` type annotates (its metadata constrains, not renders)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _matches(value: Any, tp: Any) -> bool:
    tp = _bare(tp)
    values = literal_values(tp)
    if values is not None:
        if isinstance(value, _Number):
            return any(
                isinstance(v, int | float) and not isinstance(v, bool) and v == value.value()
                for v in values
            )
        return any(value == v and type(value) is type(v) for v in values)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, _Number) and value.is_int
    if tp is float:
        return isinstance(value, _Number)
    if tp is str:
        return isinstance(value, str) and not isinstance(value, _Number)
    if tp in _FORMATS:  # a date only if it has the date's shape: "hi" in date | str is the str
        return (
            isinstance(value, str)
            and not isinstance(value, _Number)
            and re.fullmatch(_PATTERNS[_FORMATS[tp]], value) is not None
        )
    origin = typing.get_origin(tp)
    if origin in _UNIONS:
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict:
        return isinstance(value, _Object)
    return False


def _listed_number(value: _Number, values: list[Any] | None) -> str | None:
    """Return Outlines' text of the listed number a JSON number equals, if any.

    An engine writes a ``Literal``/``Enum``/``Choice`` number in its own JSON form
    (``1e20``, ``1``); Outlines writes ``str`` of the value (``1e+20``, ``1.0``). A value of
    the number's own kind (int or float) is preferred when several are equal.
    """
    if values is None:
        return None
    equal = [
        v
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and v == value.value()
    ]
    same_kind = [v for v in equal if isinstance(v, int) == value.is_int]
    chosen = same_kind or equal
    return str(chosen[0]) if chosen else None


def _render(value: Any, tp: Any, top: bool) -> str:
    tp = _bare(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNIONS:
        member = next((a for a in args if _matches(value, a)), args[0])
        return _render(value, member, top)
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, _Number):
        listed = _listed_number(value, literal_values(tp))
        return str.__str__(value) if listed is None else listed
    if isinstance(value, str):
        bare = literal_values(tp) is not None or tp in (
            datetime.date,
            datetime.time,
            datetime.datetime,
        )
        return value if bare and top else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        if origin is tuple:
            fixed = [a for a in args if a is not Ellipsis]
            items = args[:-1] if Ellipsis in args else fixed
            kinds = [items[min(i, len(items) - 1)] for i in range(len(value))] if items else []
            inner = ", ".join(_render(v, k, False) for v, k in zip(value, kinds, strict=False))
            return f"({inner})"
        item = args[0] if args else Any
        return "[" + ", ".join(_render(v, item, False) for v in value) + "]"
    if isinstance(value, _Object):
        item = args[1] if len(args) == 2 else Any
        pairs = (
            f"{json.dumps(k, ensure_ascii=False)}:{_render(v, item, False)}" for k, v in value.pairs
        )
        return "{" + ", ".join(pairs) + "}"
    return json.dumps(value, ensure_ascii=False)


def render_simple(text: str, tp: Any) -> str:
    """Render a JSON reply for a simple type as Outlines' local models would return it.

    Parameters
    ----------
    text
        The JSON text the model produced.
    tp
        The simple output type.

    Returns
    -------
    str
        E.g. ``pos`` for ``Literal["pos", "neg"]``, ``True`` for ``bool``, ``[1, 2]`` for
        ``list[int]``. Text that is not valid JSON (a truncated reply) is returned as is.
    """
    try:
        value = json.loads(
            text,
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_Number,
            object_pairs_hook=_Object,
        )
        rendered = _render(value, tp, True)
        # A lone surrogate escape ("\ud800") decodes to a character no UTF-8 text holds:
        # rendered, printing or writing the text failed (found by a probe).
        rendered.encode("utf-8")
    except (json.JSONDecodeError, RecursionError, UnicodeEncodeError):
        # Not JSON (a truncated reply), nested deeper than Python reads (found by a probe:
        # a raw RecursionError from the call), or not text: the reply as it was written.
        return text
    return rendered
