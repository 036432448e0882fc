"""Typed results: validate replies, build re-ask prompts, parse partial JSON (pure).

LM Studio's engines constrain the *shape* of JSON but do not enforce every
keyword (``multipleOf``, ``uniqueItems``, Pydantic validators...), and the SDK
validates nothing, so replies are validated here: with Pydantic for Python
types and with ``jsonschema`` for dict/str schemas.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import re
import threading
import typing
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import jsonschema
import msgspec
import pydantic
import pydantic_core
import referencing
import referencing.exceptions
from outlines.types import CFG, Choice, JsonSchema
from outlines.types.dsl import python_types_to_terms

from ._forks import in_child
from ._formats import format_checker
from ._inputs import ChatPrompt, Message, followed_by_answer
from ._json_keys import RepeatedKey, repeated_at, without_repeats
from ._late_names import LateName, kept, late_names
from ._later_grammar import later_gbnf
from ._output import OutputPlan, argument_order, unaliased
from ._partial import LONE_SURROGATE
from ._reasoning import unparsed_tags_hint
from ._schema_walk import core_nodes
from ._sdk_errors import clipped
from ._search import UnsearchablePatternError, linear_time
from ._type_names import output_type_name
from .errors import (
    InvalidInferenceArgumentError,
    InvalidSchemaError,
    ParseError,
    TruncatedOutputError,
    UnsupportedOutputTypeError,
)

__all__ = [
    "check_reply",
    "NO_RETRIEVAL",
    "TRUNCATED_STOP_REASONS",
    "Validator",
    "invalid_reply",
    "json_validator",
    "reask_feedback",
    "reask_prompt",
    "validator_for",
    "with_context",
]

TRUNCATED_STOP_REASONS = frozenset({"maxPredictedTokensReached", "contextLengthReached"})


def _refuse_retrieval(uri: str) -> referencing.Resource[Any]:
    """Refuse to retrieve any schema: references resolve inside the schema or not at all."""
    # referencing's attrs classes are built by its own decorator, which mypy cannot see.
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(
    retrieve=_refuse_retrieval  # type: ignore[call-arg]
)
"""A registry that never reads a file or the network, whatever the reference keyword
(``$ref``, ``$dynamicRef``, ``$recursiveRef``...) or the base URI (``$id``)."""


def json_validator(
    schema: dict[str, Any], *, formats: bool = False
) -> jsonschema.protocols.Validator:
    """Return a jsonschema validator for ``schema`` that can retrieve nothing.

    Parameters
    ----------
    schema
        The user's full JSON schema.
    formats
        Also assert ``format`` (every format jsonschema checks: date, date-time, time,
        email, uri, iri, uuid...; the package depends on the checkers' packages, see
        `_formats`). JSON Schema makes
        ``format`` an annotation by default; replies are checked with it, because the
        engines constrain a format's shape at most (day 31 in every month) or not at all.

    Returns
    -------
    jsonschema.protocols.Validator
        The validator of the schema's own draft (2020-12 when it names none), whose
        references resolve only within the schema and jsonschema's bundled meta-schemas,
        and whose pattern keywords search in linear time (`_search`).
    """
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    checker = format_checker(cls) if formats else None
    validator: jsonschema.protocols.Validator = linear_time(cls)(
        schema, registry=NO_RETRIEVAL, format_checker=checker
    )
    return validator


_ERROR_CHARS = 300
"""The longest a validation error line is kept (its middle is cut)."""


def _clipped(error: str) -> str:
    """Cut the middle of a long error line: the messages quote the reply's values.

    Found by a probe: a 20,000-character string value made a 20 kB `ParseError` message
    and re-ask (jsonschema and Pydantic quote the whole value).
    """
    return clipped(error, _ERROR_CHARS)


_LINE_BREAKS = re.compile("[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
"""What ``str.splitlines`` breaks a line at."""


def _one_line(error: str) -> str:
    r"""Write the line breaks in an error as escapes (a backslash and ``n``): one line each.

    A validator's message quotes the model's value, which may hold line breaks: the re-ask
    listed text the model wrote as a line of its own, outside the list (found by a probe).
    """
    return _LINE_BREAKS.sub(lambda m: repr(m.group())[1:-1], error)


class _Invalid(Exception):
    def __init__(self, errors: list[str]) -> None:
        self.errors = [_clipped(_one_line(e)) for e in errors]
        super().__init__("; ".join(self.errors))


class _NotJson(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity`` in a reply: Python's ``json`` reads them."""


def _not_json(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON (JSON has no NaN or infinity)")


def _repeated(exc: RepeatedKey, raw: str) -> _Invalid:
    """Return the error of a reply whose object writes a key twice (the first value unchecked).

    llama.cpp's grammar for ``additionalProperties`` lets a model do it: Gemma 3 270M wrote
    ``"type"`` five times for ``dict[str, int]``. Named at the object's path, as other
    errors are (found by a probe: always "(root)").
    """
    return _Invalid(
        [
            f"{repeated_at(raw)}: the object writes the key {exc.args[0]!r} twice "
            "(a key has one value in JSON, and only the last would have been checked)"
        ]
    )


def _read_strictly(raw: str) -> Any:
    """Read a reply with Python's ``json``: one value a key, and no ``NaN``/``Infinity``.

    The one read both paths make: a schema's replies are validated from it, and a Python
    type's (which Pydantic read) are checked with it for what Pydantic lets through.

    Raises
    ------
    _Invalid
        For an object that writes a key twice (`_repeated`), or a ``NaN``/``Infinity``
        literal, which the schema sent cannot have asked for. ``json``'s own errors pass.
    """
    try:
        return json.loads(raw, parse_constant=_not_json, object_pairs_hook=without_repeats)
    except RepeatedKey as exc:
        raise _repeated(exc, raw) from None
    except _NotJson as exc:
        raise _Invalid([f"(root): invalid JSON: {exc}"]) from exc


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

_NUMBER_MARKS = bytes.maketrans(b"0123456789E", b"0000000000e")


def _may_overflow(raw: str) -> bool:
    """Return whether a reply may hold a number too large for a float (``1e400``, ``10**400``).

    Such a number has an exponent of three digits or more, or 210 digits in a row (with a
    two-digit exponent, ``1`` and 250 zeros ``e60`` is past 1.8e308: it was taken as
    infinity; found by a probe, where 309 were looked for); a hit (``e+400``, or
    ``abe1234`` in a string) is confirmed on the value (`_non_finite_at`).
    ``bytes.translate`` and two substring searches cost about a nanosecond per character,
    where a regular expression for the same cost forty (measured); most replies are ASCII,
    whose UTF-8 form is a copy.
    """
    marks = raw.encode("utf-8", "surrogatepass").translate(_NUMBER_MARKS, b"+")
    return b"e000" in marks or b"0" * 210 in marks


def _non_finite_at(value: Any) -> str | None:
    """Return where a validated value holds a float that is NaN or infinite, else ``None``.

    The walk looks into what a reply validates to (dicts, lists, tuples, sets, Pydantic
    models and dataclasses); a float inside another object is its own class's business.
    """
    stack: list[tuple[str, Any]] = [("(root)", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                return path
            continue
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list | tuple | set | frozenset | collections.deque):
            items = enumerate(node)
        elif isinstance(node, pydantic.BaseModel):
            items = [*vars(node).items(), *(node.__pydantic_extra__ or {}).items()]
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            items = [(f.name, getattr(node, f.name)) for f in dataclasses.fields(node)]
        else:
            continue
        at = "" if path == "(root)" else f"{path}."
        stack.extend((f"{at}{key}", item) for key, item in items)
    return None


def _refuse_non_finite(value: Any) -> None:
    """Refuse a value holding NaN or infinity: JSON numbers are finite.

    Found by a probe: ``1e400`` (and a 400-digit integer for a ``float`` field) overflow to
    ``inf``, and Pydantic's lax mode read ``"NaN"`` as a float; the docs promise
    ``ParseError``. Pydantic's ``allow_inf_nan=False`` cannot be set on a user's model.
    """
    path = _non_finite_at(value)
    if path is not None:
        raise _Invalid(
            [
                f"{path}: the number is not finite (NaN, or too large for a float); "
                "JSON numbers are finite"
            ]
        )


def _refuse_lone_surrogates(value: Any) -> None:
    r"""Refuse a value holding a lone surrogate (``"\ud800"`` in the reply), as Pydantic does.

    Python's ``json`` reads the escape into a string that is not Unicode text: it failed
    later, where the value was encoded (found by a probe). A pair is one character.
    """
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Invalid([f"(root): {_LONE_SURROGATE_CAUSE}"]) from exc


_JSON_CAUSES = {
    # pydantic-core's words for what the schema path says otherwise: one cause is named one
    # way whatever the type (found by a probe: "unexpected end of hex escape" for a whole
    # escape of a lone surrogate).
    "unexpected end of hex escape": "the reply holds a lone surrogate (half of a UTF-16 "
    "pair), which is not Unicode text",
    "lone leading surrogate in hex escape": "the reply holds a lone surrogate (half of a "
    "UTF-16 pair), which is not Unicode text",
    "recursion limit exceeded": "the reply is nested too deeply to be read",
    "number out of range": "the reply holds a number too long to read",
}


_LONE_SURROGATE_CAUSE = _JSON_CAUSES["lone leading surrogate in hex escape"]

_BOM_CAUSE = (
    "invalid JSON: the reply begins with a byte order mark (U+FEFF), which JSON text must not"
)
"""Both paths' words for a reply after a byte order mark (found by a probe: the Pydantic
path said "expected value at line 1 column 1", the schema path Python's "decode using
utf-8-sig", advice for a file)."""


def _json_cause(error: Any) -> str:
    """Return pydantic-core's reason a reply is not JSON, without its position ("" if none)."""
    if error.get("type") != "json_invalid":
        return ""
    reason = str((error.get("ctx") or {}).get("error", ""))
    return reason.split(" at line ")[0]


def _pydantic_error(error: Any, raw: str) -> str:
    """Return one line of a Pydantic error of a reply, in the words the schema path uses."""
    where = ".".join(str(p) for p in error["loc"]) or "(root)"
    if not error["loc"]:
        if error.get("type") == "string_unicode":  # the reply as a whole is not UTF-8
            return f"(root): {_LONE_SURROGATE_CAUSE}"
        if raw.startswith("\ufeff") and error.get("type") == "json_invalid":
            return f"(root): {_BOM_CAUSE}"
    return f"{where}: {_JSON_CAUSES.get(_json_cause(error), error['msg'])}"


class Validator(msgspec.Struct, frozen=True):
    """Validates a reply's raw text as one output type.

    Attributes
    ----------
    output_type
        The requested type (``None`` for text).
    schema
        A JSON schema to validate with ``jsonschema`` (dict/str schemas), else ``None``.
    adapter
        A Pydantic ``TypeAdapter`` for Python types, else ``None``.
    grammar
        For grammar-mode types: returns the reasons a text is not in the language.
    goes_on
        For a regular grammar-mode type: whether a text can go on in its language.
    unfinished
        For a CFG: whether Lark's parser reaches the end of a text wanting more (``1+``
        for ``NUMBER ("+" NUMBER)*``). Unlike `goes_on`, it cannot tell whether a
        sentence of the language (``1+2``) goes on.
    decode
        For a grammar-mode ``Choice``: the item a valid text stands for (``"2"`` is the
        item ``2``), so ``parse`` returns what it returns without grammar mode.
    by_name
        Pydantic's ``by_name`` for the adapter (`_named_by_path`).
    strict
        Pydantic's ``strict`` for the adapter: ``True`` unless the type asks for lax
        mode itself (`_lax_by_choice`).
    floats
        Whether the adapter's values may hold a float (`_holds_floats`), so NaN and
        infinity are looked for.
    context
        The call's ``context=``, passed to Pydantic's validators (`with_context`).
    """

    output_type: Any
    schema: dict[str, Any] | None = None
    adapter: pydantic.TypeAdapter[Any] | None = None
    grammar: Callable[[str], list[str]] | None = None
    goes_on: Callable[[str], bool] | None = None
    unfinished: Callable[[str], bool] | None = None
    decode: Callable[[str], Any] | None = None
    by_name: bool | None = None
    strict: bool | None = None
    floats: bool = True
    context: Any = None

    def _schema_errors(self, schema: dict[str, Any], value: Any) -> list[str]:
        try:
            errors = sorted(
                json_validator(schema, formats=True).iter_errors(value),
                key=lambda e: list(e.absolute_path),
            )
        except referencing.exceptions.Unresolvable as exc:
            raise InvalidSchemaError(
                f"The JSON schema has a reference that does not resolve inside it ({exc}); "
                "references are never fetched."
            ) from exc
        except UnsearchablePatternError as exc:  # a schema no plan checked (see `_search`)
            raise InvalidSchemaError(
                f"The JSON schema's pattern {exc.pattern!r:.200} is refused: {exc.reason}."
            ) from exc
        except RecursionError:
            return ["(root): the reply is nested too deeply to be checked"]
        return [
            f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors
        ]

    def validate(self, raw: str) -> Any:
        """Return the typed value of a raw reply.

        Parameters
        ----------
        raw
            The model's text (JSON for structured types).

        Returns
        -------
        Any
            The value: a model instance, dataclass, dict, int, Enum member, ...

        Raises
        ------
        _Invalid
            With the validation errors.
        UnsupportedOutputTypeError
            If a validator of the user's passed the value on to an abstract class.
        """
        if self.adapter is not None:
            try:
                # The core validator itself: `TypeAdapter.validate_json` only checks the
                # by_alias / by_name pair, one Python call more on each reply.
                value = self.adapter.validator.validate_json(
                    raw,
                    strict=self.strict,
                    context=self.context,
                    by_alias=True,
                    by_name=self.by_name,
                )
            except pydantic.ValidationError as exc:
                raise _Invalid([_pydantic_error(e, raw) for e in exc.errors()]) from exc
            except TypeError as exc:
                if not str(exc).startswith("Can't instantiate abstract class"):
                    raise  # a validator of the user's own: theirs to see
                # Found by a review: a validator of the user's that reads a field first (so
                # the check before sending left it) passed the value on to an abstract class.
                raise UnsupportedOutputTypeError(
                    f"The output type {output_type_name(self.output_type)} could not be made "
                    f"from the reply: {exc}. A validator of yours that reads the value first "
                    "passed it on to an abstract class; make it return an instance of a "
                    "subclass that implements the abstract methods."
                ) from exc
            # Read again only for what Pydantic lets through: a repeated key's first value
            # (never validated), NaN and Infinity literals (not JSON), and 1e400; wherever
            # they are, in a key the type ignores too (found by a probe: accepted).
            overflow = _may_overflow(raw)
            document = None
            if "{" in raw or "NaN" in raw or "Infinity" in raw or overflow:
                # Pydantic read what Python's json cannot (a very long number): no object.
                with contextlib.suppress(ValueError, RecursionError):
                    document = _read_strictly(raw)
            if self.floats and (self.strict is None or overflow):  # lax: "nan" is a float
                _refuse_non_finite(value)
            if overflow:  # 1e400 in a key the type ignores
                _refuse_non_finite(document)
            return value
        if self.grammar is not None:
            if not raw.isascii() and LONE_SURROGATE.search(raw):
                # Not text, as for the other types, whatever the grammar (found by a probe:
                # "does not match the regular expression '.'"; a CFG's /./s let it through).
                raise _Invalid([f"(root): {_LONE_SURROGATE_CAUSE}"])
            problems = self.grammar(raw)
            if problems:
                raise _Invalid(problems)
            return raw if self.decode is None else self.decode(raw)
        if self.schema is not None:
            try:
                value = _read_strictly(raw)
            except json.JSONDecodeError as exc:
                cause = _BOM_CAUSE if raw.startswith("\ufeff") else f"invalid JSON: {exc}"
                raise _Invalid([f"(root): {cause}"]) from exc
            except ValueError as exc:  # an integer longer than Python reads (4,300 digits)
                # Python's advice (sys.set_int_max_str_digits) is not the reader's to follow.
                said = str(exc).split("; use sys.set_int_max_str_digits", 1)[0]
                too_long = f"(root): the reply holds a number too long to read: {said}"
                raise _Invalid([too_long]) from exc
            except RecursionError as exc:
                raise _Invalid(["(root): the reply is nested too deeply to be read"]) from exc
            if ("\\u" in raw and _SURROGATE_ESCAPE.search(raw)) or (
                not raw.isascii() and LONE_SURROGATE.search(raw)  # isascii is a flag: free
            ):
                _refuse_lone_surrogates(value)
            if _may_overflow(raw):
                _refuse_non_finite(value)
            errors = self._schema_errors(self.schema, value)
            if errors:
                raise _Invalid(errors)
            return value
        return raw


def with_context(validator: Validator, context: Any) -> Validator:
    """Return ``validator`` passing a call's ``context=`` to Pydantic's validators.

    Validators that read ``info.context`` (a source text to quote from, allowed values
    known only at the call) fail without it, and a re-ask could not fix that: found by a
    probe of what instructor users write (its ``context=``).

    Parameters
    ----------
    validator
        The output type's validator.
    context
        What Pydantic passes to validators as ``info.context``; ``None`` for none.

    Returns
    -------
    Validator
        ``validator`` itself when ``context`` is ``None``.

    Raises
    ------
    InvalidInferenceArgumentError
        When the output type is not checked by Pydantic (a JSON schema given as data, a
        grammar-mode type, text), so nothing would read the context. Before sending.
    """
    if context is None:
        return validator
    if validator.adapter is None:
        checked = (
            "is checked by jsonschema, which takes no context"
            if validator.schema is not None
            else "is checked against its grammar"
            if validator.grammar is not None
            else "is text, not checked"
        )
        raise InvalidInferenceArgumentError(
            "context= is passed to Pydantic's validators, and "
            f"{output_type_name(validator.output_type)} {checked}: drop context=, or ask "
            "for a Pydantic model, dataclass or TypedDict whose validators read it."
        )
    return msgspec.structs.replace(validator, context=context)


def _choice_items(choice: Choice) -> Callable[[str], Any]:
    """Map a grammar-mode ``Choice`` reply back to its item (``"2"`` to ``2``).

    Outlines writes a scalar item as ``str(item)`` (``True`` as ``True``, ``1.5`` as
    ``1.5``), so that text stands for the item. The first item wins when two are written
    alike (``Choice(["1", 1])``), as the grammar cannot tell them apart. A text that is
    no scalar item (an item that is itself a term, such as a ``Regex``) stays text.
    """
    items: dict[str, Any] = {}
    for item in choice.items:
        if isinstance(item, str | int | float):  # bool is an int
            items.setdefault(item if isinstance(item, str) else str(item), item)

    def decode(raw: str) -> Any:
        return items.get(raw, raw)

    return decode


def _python_type(output_type: Any) -> Any:
    if isinstance(output_type, Choice):
        return typing.Literal[tuple(output_type.items)]
    return output_type


class _Adapted(typing.NamedTuple):
    """A Pydantic adapter and what its core schema says, the `Validator` fields they give."""

    adapter: pydantic.TypeAdapter[Any]
    by_name: bool | None
    strict: bool | None
    floats: bool


def _adapted(adapter: pydantic.TypeAdapter[Any]) -> _Adapted:
    """Read an adapter's core schema for its `Validator` (three walks of the schema)."""
    core_schema = adapter.core_schema
    return _Adapted(
        adapter,
        by_name=_named_by_path(core_schema),
        strict=None if _lax_by_choice(core_schema) else True,
        floats=_holds_floats(core_schema),
    )


@lru_cache(maxsize=256)
def _adapter(output_type: Any, order: object) -> tuple[_Adapted, tuple[LateName, ...]]:
    """Build and read the Pydantic adapter of a type, once per type written alike.

    Types written alike: `argument_order`. Cached with the adapter, its reading
    (`_adapted`): `validator_for` runs on every call, and the walks of a 500-field
    model's core schema took 1.6 ms a call (22 µs for a two-field one). With them, the
    names the type's string annotations resolved (`outlines_lmstudio._late_names`).
    """
    return _built(output_type), late_names(output_type)


def _built(output_type: Any) -> _Adapted:
    """Build and read the Pydantic adapter of a type (`_adapter` keeps it)."""
    from ._type_checks import portable_typeddicts

    return _adapted(pydantic.TypeAdapter(portable_typeddicts(_python_type(output_type), {})))


def validator_for(plan: OutputPlan) -> Validator:
    """Return the `Validator` for an output plan.

    Parameters
    ----------
    plan
        The plan from ``plan_output``.

    Returns
    -------
    Validator
        Pydantic for Python types, ``jsonschema`` for schemas given as data: the user's
        full schema, not the engine's form that was sent.
    """
    output_type = plan.output_type
    if plan.kind == "grammar" and output_type is None:
        # A GBNF grammar given in config['structured'] (found by a probe: Outlines' own
        # TypeError, "Type None ... Please open an issue").
        raise UnsupportedOutputTypeError(
            "parse checks a reply against its output type, and a GBNF grammar given in "
            "config['structured'] has none. Pass an outlines Regex or CFG as the output type "
            "with grammar=True on from_lmstudio (the GBNF is written for you, and parse checks "
            "the reply), or call model(prompt, config=...) for the text."
        )
    if plan.kind == "grammar":
        # An alias of a term is checked as the term (found by a review: its reply was
        # checked against the regex Outlines makes of the alias object, and failed)
        term = unaliased(output_type)
        decode = _choice_items(term) if isinstance(term, Choice) else None
        later = later_gbnf(plan)
        if later is not None and not later.converted:
            # Built in the async front's worker thread, with the GBNF (`_later_grammar`):
            # its errors still come before anything is sent.
            built = _LaterCheck(term)
            later.then(built.build)
            cfg = isinstance(term, CFG)
            return Validator(
                output_type,
                grammar=built.check,
                goes_on=None if cfg else built.goes_on,
                unfinished=built.unfinished if cfg else None,
                decode=decode,
            )
        check, goes_on, unfinished = _grammar_checks(term)
        return Validator(
            output_type, grammar=check, goes_on=goes_on, unfinished=unfinished, decode=decode
        )
    if plan.kind == "text":
        return Validator(output_type)
    if isinstance(output_type, dict | str | JsonSchema) or type(output_type).__name__ == (
        "SchemaBuilder"
    ):
        return Validator(output_type, schema=plan.full_schema or plan.schema)
    try:
        # A class or None has no arguments to order (skipping the walk keeps calls cheap).
        plain = output_type is None or isinstance(output_type, type)
        order = None if plain else argument_order(output_type)
        # made again once a name it resolved changed, as the plan is, even when the plan
        # is new for another setting (found by a review: an old adapter met a new plan)
        adapted = kept(_adapter, output_type, order)
    except TypeError:  # unhashable type object: build it uncached (as `_adapter` does)
        adapted = _built(output_type)
    return Validator(
        output_type,
        adapter=adapted.adapter,
        by_name=adapted.by_name,
        strict=adapted.strict,
        floats=adapted.floats,
    )


def _lax_by_choice(core_schema: object) -> bool:
    """Return whether a type asks for lax validation itself.

    Replies are validated in Pydantic's strict mode, as the JSON schema sent allows no
    coercion (``"3"`` or ``true`` for an integer). Pydantic's ``strict=True`` at
    validation time overrides a model's or a field's own ``strict=False``, so a type
    that says ``strict=False`` (in its config or on a field) is validated in lax mode
    as a whole: the user's explicit choice wins. So is a type that takes what strict mode
    refuses by its own choice (found by a probe): ``coerce_numbers_to_str``, or a
    ``WithJsonSchema`` asking the engines for another form (a ``datetime`` as epoch
    seconds, an ``int`` as a digit string), which every reply then failed.
    """
    for node in core_nodes(core_schema, strict=True):  # SecretStr's lax branch: Pydantic's
        # A dict node's own strict=False is Pydantic's for every Mapping field (it takes any
        # mapping in Python): a JSON object is a dict either way, and it made the whole reply
        # lax, every other field coerced (found by a probe: "3" for an int was taken).
        lax = node.get("strict") is False and node.get("type") != "dict"
        if lax or node.get("coerce_numbers_to_str") is True:
            return True
        metadata = node.get("metadata")
        if isinstance(metadata, dict):
            for function in metadata.get("pydantic_js_annotation_functions", ()):
                written = getattr(function, "__self__", None)
                if isinstance(written, pydantic.WithJsonSchema) and _another_form(node, written):
                    return True
    return False


_STRING_FORMS = ("datetime", "date", "time", "timedelta", "uuid", "url")
_JSON_TYPES: dict[str, frozenset[str]] = {
    "int": frozenset({"integer"}),
    "bool": frozenset({"boolean"}),
    "float": frozenset({"number", "integer"}),
    "str": frozenset({"string"}),
    "none": frozenset({"null"}),
    "list": frozenset({"array"}),
    "tuple": frozenset({"array"}),
    "set": frozenset({"array"}),
    "frozenset": frozenset({"array"}),
    "dict": frozenset({"object"}),
    "model": frozenset({"object"}),
    "typed-dict": frozenset({"object"}),
    "dataclass": frozenset({"object"}),
    **dict.fromkeys(_STRING_FORMS, frozenset({"string"})),
}
"""The JSON types strict mode reads for a core schema type; others are not known here."""
_PYTHON_JSON = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


def _read_as(node: Any) -> frozenset[str] | None:
    """Return the JSON types strict mode reads for a core schema node (None: not known).

    Wrappers are looked through (a default, an after validator, ``nullable``); a before,
    wrap or plain validator, a reference and the like are not known.
    """
    kind = node.get("type") if isinstance(node, dict) else None
    if kind in ("default", "function-after"):
        return _read_as(node.get("schema"))
    if kind == "nullable":
        inner = _read_as(node.get("schema"))
        return None if inner is None else inner | {"null"}
    if kind == "literal":
        kinds = {_PYTHON_JSON.get(type(v)) for v in node.get("expected", ())}
        return None if None in kinds else frozenset(str(k) for k in kinds)
    if kind == "enum":
        return _JSON_TYPES.get(str(node.get("sub_type")))
    return _JSON_TYPES.get(str(kind))


def _asked_for(schema: Any) -> frozenset[str] | None:
    """Return the JSON types a written schema asks for (empty: none named; None: unknown)."""
    if not isinstance(schema, dict):
        return None
    asked = schema.get("type")
    if isinstance(asked, str):
        return frozenset({asked})
    if isinstance(asked, list):
        return frozenset(str(a) for a in asked)
    kinds: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for branch in schema.get(key) or ():
            branch_kinds = _asked_for(branch)
            if not branch_kinds:
                return None  # a branch of any type (or unknown): another form may be asked
            kinds |= branch_kinds
    return frozenset(kinds)


def _another_form(node: dict[str, Any], written: pydantic.WithJsonSchema) -> bool:
    """Whether a ``WithJsonSchema`` may ask for a JSON type the value's strict form is not.

    One that only describes the value (``{"type": "integer", "description": ...}`` on an
    ``int``; no type named; or for serialization only) leaves the type strict (found by a
    review: any ``WithJsonSchema`` made the whole type lax). Where either side is not
    known (a validator that reads the value first, a reference), it counts as another
    form: lax refuses no reply strict takes.
    """
    if written.mode == "serialization":
        return False  # not the schema sent
    asked = _asked_for(written.json_schema)
    if asked is not None and not asked:
        return False
    natural = _read_as(node)
    return asked is None or natural is None or not asked <= natural


def _holds_floats(core_schema: object) -> bool:
    """Return whether a type's values may hold a float read from the reply.

    Only a ``float`` (or ``Any``: a bare ``list``, ``dict[str, Any]``, a model's extra
    fields) can hold NaN or infinity; a type without one (``Person`` of a ``str`` and an
    ``int``) needs no check of non-finite numbers. A ``Decimal`` refuses them itself.
    """
    return any(
        node.get("type") in ("float", "any")
        or "allow" in (node.get("extra_fields_behavior"), node.get("extra_behavior"))
        for node in core_nodes(core_schema)
    )


def _named_by_path(core_schema: object) -> bool | None:
    """Return ``True`` if a field's validation aliases are all paths, else ``None`` (config).

    Pydantic's JSON schema names such a field (``AliasPath("a", 0)``) by its name, a path
    being no property name, which validation by alias rejects: validating by name too
    takes it. Only then: by name for every type let a reply name an aliased field by its
    Python name, which the model itself refuses (found by a probe). The walk reads the
    core schema's ``validation_alias`` entries: a path is a list of keys and indexes, and
    choices a list of such lists; a one-key entry is a property name.
    """
    for node in core_nodes(core_schema):
        alias = node.get("validation_alias")
        if isinstance(alias, list) and alias:
            choices = alias if isinstance(alias[0], list) else [alias]
            if not any(len(c) == 1 and isinstance(c[0], str) for c in choices):
                return True
    return None


_COMPLETE_LEXER_UP_TO = 4000
"""The longest reply (in characters) re-checked with Lark's complete lexer (about 0.5 s)."""
_GBNF_CHECK_UP_TO = 200
"""The longest reply (in characters) then checked against the GBNF's language: 0.04 s for
an unambiguous grammar, 1.3 s for one whose terminals split a text many ways (``ID ID``)."""


@lru_cache(maxsize=64)
def _grammar_check(
    definition: str,
) -> tuple[Callable[[str], list[str]], Callable[[str], bool]]:
    """Build a check that a text is in a Lark grammar's language, once per grammar.

    Also returns `Validator.unfinished` for the grammar: whether the parser reaches the
    end of a text wanting more (Lark's ``UnexpectedEOF``).

    Building the Earley parser takes milliseconds (parsing takes microseconds), and
    every ``parse`` call asks for its check. Lark does not promise that one parser
    may parse in several threads at once (a sync batch validates in its threads), so
    parses take turns.
    """
    import lark  # only grammar mode needs it (half of our import time otherwise)

    from ._grammar._lark import load_lark

    # The parser the GBNF was translated from (cached there): the same language, with the
    # imports of Outlines' common.lark, where terminals such as UNESCAPED_STRING are defined.
    parser = load_lark(definition)
    turn = threading.Lock()

    def parsers(text: str) -> Iterator[Any]:
        """Yield the parsers to try in turn, each while the ones before refused the text."""
        yield parser
        # Lark's dynamic lexer takes each terminal's longest match only, so it rejects
        # "1.2.3" for NUMBER "." NUMBER "." NUMBER (NUMBER takes "1.2"), which GBNF allows.
        # The complete lexer tries every length, in time quadratic in a token's length:
        # only for replies short enough for that to stay well under a second.
        if len(text) <= _COMPLETE_LEXER_UP_TO:
            yield load_lark(definition, complete=True)
        # Both still take a terminal's Python first match (/<|<=/ reads "<" of "<="), a lazy
        # one's shortest: for a grammar with such a terminal, the GBNF's own language decides
        # (`_recognize`), char by char, in time up to cubic in the reply's length (an
        # ambiguous split): only for short replies (found by a review: 62 s at 400 chars).
        if len(text) <= _GBNF_CHECK_UP_TO and (sent := _sent_language(definition)) is not None:
            yield sent

    def parses(text: str) -> list[str]:
        error: Exception | None = None
        for tried in parsers(text):
            try:
                with turn:
                    tried.parse(text)
                return []
            except lark.exceptions.LarkError as exc:
                error = exc if error is None else error  # the grammar's own parser's words
        return [f"(root): not in the grammar: {' '.join(str(error).split())[:200]}"]

    def unfinished(text: str) -> bool:
        try:
            with turn:
                parser.parse(text)
        except lark.exceptions.UnexpectedEOF:
            return True
        except lark.exceptions.LarkError:
            return False
        return False

    return parses, unfinished


def _sent_language(definition: str) -> Any:
    """Return the parser of the GBNF's language (`gbnf_language`) where it is needed.

    ``None`` for a grammar without a terminal Lark reads differently from GBNF (Lark's
    verdict stands), with a wide counted repeat (`gbnf_language` refuses it: slow), or
    were it not to load (Lark's verdict stands: stricter, as before it existed).
    """
    from ._grammar._recognize import gbnf_language, read_otherwise_by_lark

    try:
        return gbnf_language(definition) if read_otherwise_by_lark(definition) else None
    except Exception:  # a bug of ours must not fail the check: Lark's verdict stands
        return None


# A parent thread parsing at the fork holds its grammar's `turn` for good in the child
# (found by a review): the child builds its checks afresh.
in_child(_grammar_check.cache_clear)


_Checks = tuple[
    Callable[[str], list[str]], Callable[[str], bool] | None, Callable[[str], bool] | None
]


def _grammar_checks(term: Any) -> _Checks:
    """Build a grammar-mode term's checks: the language, reading on, a CFG's unfinished."""
    check, goes_on = _language_check(term)
    unfinished = _grammar_check(term.definition)[1] if isinstance(term, CFG) else None
    return check, goes_on, unfinished


class _LaterCheck:
    """`_grammar_checks` of a term whose GBNF is converted later: built with it (`build`)."""

    def __init__(self, term: Any) -> None:
        self.term = term
        self._checks: _Checks | None = None

    def build(self) -> _Checks:
        if self._checks is None:
            self._checks = _grammar_checks(self.term)
        return self._checks

    def check(self, text: str) -> list[str]:
        return self.build()[0](text)

    def goes_on(self, text: str) -> bool:
        goes_on = self.build()[1]
        return goes_on is not None and goes_on(text)

    def unfinished(self, text: str) -> bool:
        unfinished = self.build()[2]
        return unfinished is not None and unfinished(text)


def _language_check(
    term: Any,
) -> tuple[Callable[[str], list[str]], Callable[[str], bool] | None]:
    """Build a check that a text is in a DSL term's language (regex, or Lark for a CFG).

    Returns
    -------
    tuple
        The check (the reasons a text is not in the language), and for a regular term
        whether a text can go on in it (``None`` for a CFG: Lark's Earley parser cannot
        tell).
    """
    if isinstance(term, CFG):
        return _grammar_check(term.definition)[0], None
    from ._grammar._api import has_cfg, term_regex

    term = python_types_to_terms(term)
    if has_cfg(term):  # a CFG inside a regular term: neither check reads the whole
        raise UnsupportedOutputTypeError(
            f"parse cannot check a reply against an Outlines {type(term).__name__} with a CFG "
            "inside; it checks a CFG on its own, or a term without one. Use generate (which "
            "constrains the reply) and check the text yourself, or write the whole as one CFG."
        )
    return _regex_check(term_regex(term))


@lru_cache(maxsize=256)
def _regex_check(pattern: str) -> tuple[Callable[[str], list[str]], Callable[[str], bool]]:
    """Build a regular expression's check and its `Matcher.goes_on`, once per pattern."""
    from ._grammar._match import Matcher, MatcherTooLarge  # grammar mode only (see lark)
    from ._grammar._regex import regex_to_node

    # Not re.fullmatch: it can take exponential time on a reply cut off by max_tokens.
    try:
        matcher = Matcher(regex_to_node(pattern))
    except MatcherTooLarge as exc:
        raise UnsupportedOutputTypeError(
            f"parse cannot check a reply against the regular expression {pattern[:120]!r}: "
            f"its automaton is too large ({exc}; nested counted repeats multiply). Use "
            "generate (which constrains the reply) and check the text yourself, or use "
            "smaller counts or * / +."
        ) from exc

    def matches(text: str) -> list[str]:
        if matcher.matches(text):
            return []
        return [f"(root): does not match the regular expression {pattern[:120]!r}"]

    return matches, matcher.goes_on


def _may_go_on(validator: Validator, raw: str) -> bool:
    r"""Whether more tokens could have extended a valid reply that was cut off.

    A JSON reply could only if it ends in a number. A regular grammar-mode reply could if
    its automaton can read on (``\d+`` matches ``12`` of ``12345``; ``\d{2}`` ends
    there). A CFG reply is taken as one that could: Lark's Earley parser cannot tell.
    """
    if validator.grammar is not None:
        return validator.goes_on is None or validator.goes_on(raw)
    is_json = validator.adapter is not None or validator.schema is not None
    return is_json and raw[-1:].isdigit()


_GOES_ON_A_NUMBER = re.compile(r"[0-9]|\.(?:[0-9]|$)|[eE](?:[0-9+-]|$)")
"""The start of a stop string that can continue a JSON number ending in a digit (``2``,
``.``, ``.5``, ``e``, ``e-3``; not ``END`` or ``. ``)."""


def _stop_inside(validator: Validator, raw: str, stops: Sequence[str]) -> str | None:
    r"""Return a stop string that may have ended a valid reply inside its value, if any.

    LM Studio leaves the stop string out of the reply: ``3.14`` with ``stop=["."]`` comes
    back as ``3``, valid and wrong. A JSON reply is at risk when it ends in a number and
    a stop string starts with what goes on with one; a grammar-mode reply when the reply
    and the stop string are still in (or on the way into) its language.
    """
    for stop in stops:
        if validator.grammar is not None:
            longer = raw + stop
            goes_on = validator.goes_on is not None and validator.goes_on(longer)
            # A CFG's parser cannot tell whether a sentence goes on, but it tells a text
            # that ends wanting more: "1+" of "1+2+3" cut at stop="+" (found by a probe).
            unfinished = validator.unfinished is not None and validator.unfinished(longer)
            if goes_on or unfinished or not validator.grammar(longer):
                return stop
        elif _may_go_on(validator, raw) and _GOES_ON_A_NUMBER.match(stop):
            return stop
    return None


def check_reply(
    validator: Validator,
    raw: str,
    stop_reason: str | None,
    attempts: int,
    final: bool,
    stops: Sequence[str] = (),
) -> tuple[bool, Any, list[str]]:
    """Validate one reply; raise when it is truncated, or invalid on the last attempt.

    Parameters
    ----------
    validator
        The validator of the output type.
    raw
        The reply text.
    stop_reason
        LM Studio's stop reason for the reply.
    attempts
        How many replies have been asked for so far.
    final
        Whether no retry is left.
    stops
        The call's stop strings: a valid reply one of them may have cut inside its value
        (``3`` of ``3.14`` with ``stop=["."]``) is not taken.

    Returns
    -------
    tuple
        ``(ok, value, errors)``.

    Raises
    ------
    TruncatedOutputError
        If the reply was cut off and does not validate, or could have gone on (it ends
        in a JSON number, or it is a grammar-mode reply).
    ParseError
        If the reply does not validate and ``final`` is true, or if it validates but a
        stop string may have ended it inside its value (asking again would not help).
    """
    cut_by_stop = cut_whole = False
    try:
        value = validator.validate(raw)
    except _Invalid as invalid:
        errors = invalid.errors
        # A whole JSON document at the cut that is only wrong ({"age": -1}) is re-asked as
        # any invalid one: raising max_tokens would not mend it (found by a probe: a reply
        # of exactly max_tokens tokens ends maxPredictedTokensReached).
        cut_whole = (
            stop_reason in TRUNCATED_STOP_REASONS
            and validator.grammar is None
            and _json_whole(raw) is True
            and not _may_go_on(validator, raw)
        )
        # Cut by a stop string inside its JSON: not re-asked either, the model writes the
        # same cut answer again (found by a probe: stop=[","] under a schema, 4 requests).
        # A complete reply that is only wrong ("three" for an int) is re-asked as before.
        cut_by_stop = (
            stop_reason == "stopStringFound"
            and bool(stops)
            and validator.grammar is None
            and _json_whole(raw) is False
        )
    else:
        if stop_reason == "stopStringFound" and (cut := _stop_inside(validator, raw, stops)):
            errors = [f"(root): the stop string {cut!r} may have ended the reply inside its value"]
            # Not re-asked, as a truncated reply is not: the model is not told of stop=, so
            # it wrote the same cut answer each time (found by a probe: 4 requests).
            cut_by_stop = True
        elif stop_reason not in TRUNCATED_STOP_REASONS or not _may_go_on(validator, raw):
            return True, value, []
        else:  # "10" cut off from "1000": valid, but not the answer.
            errors = [
                "(root): the reply matches, but the model may not have finished it"
                if validator.grammar is not None
                else "(root): the reply ends in a number that the next tokens could have continued"
            ]
    name = output_type_name(validator.output_type)
    if stop_reason in TRUNCATED_STOP_REASONS and not cut_whole:
        fix = (
            # Nothing was written: the prompt filled the context (found by a probe: a 500 kB
            # prompt was told to raise max_tokens).
            "the prompt alone filled the model's context: shorten it, or load the model "
            "with a larger context length (contextLength)"
            if stop_reason == "contextLengthReached" and not raw.strip()
            else "raise max_tokens (or the model's context length)"
        )
        raise TruncatedOutputError(
            # A schema given as data is named "JSON schema 'T'": the reply is a value for it,
            # not a schema (found by a probe: "before it was a complete JSON schema").
            f"The reply was cut off ({stop_reason}) before it was a complete "
            f"{'value for the ' + name if name.startswith('JSON schema') else name}; {fix}",
            raw=raw,
            errors=errors,
            stop_reason=stop_reason,
            attempts=attempts,
        )
    if final or cut_by_stop:
        raise invalid_reply(validator, raw, stop_reason, errors, attempts)
    return False, None, errors


def _json_whole(raw: str) -> bool | None:
    """Tell whether a text is whole JSON (``True``), JSON cut short (``False``), or neither.

    Cut short: its only fault is that it ends too early. pydantic-core says "EOF while
    parsing" exactly then, also inside a string or a literal (``"Smith``, ``tr``), where
    the standard library's error points at where the cut token began (found by a
    review), as `_partial` reads it.
    """
    try:
        pydantic_core.from_json(raw)
    except ValueError as error:
        return False if str(error).startswith("EOF") else None
    return True


def invalid_reply(
    validator: Validator, raw: str, stop_reason: str | None, errors: list[str], attempts: int
) -> ParseError:
    """Return the `ParseError` of a reply that does not validate, after ``attempts`` replies.

    Parameters
    ----------
    validator
        The output type's validator.
    raw
        The reply text.
    stop_reason
        LM Studio's stop reason for it.
    errors
        What `check_reply` found.
    attempts
        How many replies have been asked for.

    Returns
    -------
    ParseError
        Saying what ended the reply when that may be why (a stop string, unparsed tags).
    """
    cut = (
        " (a stop string ended it: drop it from stop=, or pick one the answer cannot hold)"
        if stop_reason == "stopStringFound"
        else unparsed_tags_hint(raw)
    )
    name = output_type_name(validator.output_type)
    return ParseError(
        f"The reply does not validate as {name} after {attempts} attempt(s){cut}",
        raw=raw,
        errors=errors,
        stop_reason=stop_reason,
        attempts=attempts,
    )


_REASKED_ERRORS = 20
"""The most validation errors a re-ask lists (a probe's reply had 3,000: a 233 kB message)."""


def reask_feedback(errors: list[str]) -> str:
    """Return the user message that asks again, listing the validation errors.

    At most `_REASKED_ERRORS` of them, each clipped, and how many more there are: the
    message goes into the model's context.
    """
    listed = [f"- {_clipped(e)}" for e in errors[:_REASKED_ERRORS]]
    if len(errors) > _REASKED_ERRORS:
        listed.append(f"- ... and {len(errors) - _REASKED_ERRORS} more errors")
    return (
        "Your previous answer is invalid:\n"
        + "\n".join(listed)
        + "\nReply again with a corrected, complete answer only."
    )


def reask_prompt(prompt: ChatPrompt, raw: str, errors: list[str]) -> ChatPrompt:
    """Append the invalid reply and the validation errors, asking for a corrected reply.

    Parameters
    ----------
    prompt
        The prompt that produced the invalid reply.
    raw
        The invalid reply.
    errors
        Its validation errors.

    Returns
    -------
    ChatPrompt
        The prompt for the next attempt.
    """
    feedback = reask_feedback(errors)
    if prompt.passthrough is not None:
        chat = followed_by_answer(prompt.passthrough, raw)  # a copy: the caller's is kept
        chat.add_user_message(feedback)
        return ChatPrompt(passthrough=chat)
    return ChatPrompt(
        (*prompt.messages, Message("assistant", (raw,)), Message("user", (feedback,)))
    )
