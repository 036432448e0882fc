r"""JSON-schema pattern keywords checked in linear time (pure, no I/O).

jsonschema checks ``pattern``, ``patternProperties`` and ``additionalProperties`` (which
reads ``patternProperties``) with Python's ``re``, a backtracking engine: a reply that
almost matches a pattern such as ``^([A-Za-z]+ ?)+$`` takes exponential time (20 s at 28
letters), in the caller's thread, where no ``timeout=`` can stop it. A model may write such
a reply wherever an engine leaves a pattern loose. `linear_time` gives a validator class
whose three keywords search with the Rust ``regex`` crate instead, the engine Pydantic
validates patterns with (through ``pydantic_core``), which runs in time linear in the text.
Syntax Rust reads otherwise than Python (``[[:alpha:]]``, ``&&``, ``\<``) is escaped so
both read it alike, and the escapes only ECMA-262 and Python read (``\0``, a class's
``\b``) are written as ``\x`` escapes. A pattern Rust's engine cannot compile (a
lookaround, a backreference, or a program over its size limit: ``\w{1,300}`` is wide,
``\w`` being Unicode) is refused (`UnsearchablePatternError`): `check_patterns` finds it
before anything is sent, since a fallback to ``re`` would bring the exponential time back.
A subschema naming a draft of its own (``$schema``) is validated with that draft's class,
made linear too.

jsonschema's ``uniqueItems`` compares every pair of items when they do not sort (objects):
45 s for 8,000 of them. `_unique_items` compares a hashable canonical form of each item
(`canonical`) in one pass, with JSON's equality as jsonschema's (``1 == 1.0``, ``true !=
1``, object keys in any order).

jsonschema's ``multipleOf`` divides floats: ``0.3`` is no multiple of ``0.1`` to it
(``0.3 / 0.1`` is ``2.9999999999999996``), so a schema the library checks for a multiple
within its bounds exactly (``_output``, as Pydantic reads ``multiple_of``) failed every
reply. `_multiple_of` reads both numbers as JSON writes them (`exact`), as the check does.

Why hand-written: jsonschema has no hook for the regex engine of its keywords or for its
arithmetic; these follow its own implementations (``jsonschema._keywords``), with the
search (or the division) replaced.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

import attrs
import jsonschema
from jsonschema.exceptions import ValidationError
from pydantic_core import SchemaError, SchemaValidator, core_schema
from pydantic_core import ValidationError as CoreValidationError

__all__ = [
    "UnsearchablePatternError",
    "canonical",
    "check_patterns",
    "exact",
    "linear_time",
    "rust_reads_otherwise",
    "search",
]


class UnsearchablePatternError(ValueError):
    """A pattern the linear-time engine cannot compile: it is not searched with ``re``."""

    def __init__(self, pattern: str, reason: str) -> None:
        self.pattern = pattern
        self.reason = reason
        self.pointer: str | None = None  # where `check_patterns` found it: ".../pattern"
        super().__init__(f"{pattern!r:.200}: {reason}")


@functools.lru_cache(maxsize=512)
def search(pattern: str) -> Callable[[str], bool]:
    """Return a test of whether ``pattern`` is found in a text (a search, as JSON Schema's).

    Parameters
    ----------
    pattern
        The regular expression.

    Returns
    -------
    Callable[[str], bool]
        The search, in time linear in the text.

    Raises
    ------
    UnsearchablePatternError
        If Rust's regex cannot compile the pattern (a lookaround, a backreference, or a
        program over its size limit).
    """
    try:
        checker = SchemaValidator(
            core_schema.str_schema(pattern=_for_rust(pattern), regex_engine="rust-regex")
        )
    except SchemaError as exc:
        message = str(exc).splitlines()[-1].strip().removeprefix("SchemaError: ")
        if "size limit" in message:
            reason = (
                f"{message}: the compiled program of the linear-time regex engine outgrows "
                "its size limit (a bounded repeat of a wide class such as \\w{1,300} is "
                "big; \\w, \\d and \\s are Unicode-wide). Write a smaller bound, a narrower "
                "class ([A-Za-z0-9_]), or a repeat without bound"
            )
        else:
            reason = (
                f"the linear-time regex engine cannot read it ({message.removeprefix('error: ')}"
                "), and Python's backtracking re is not used instead: it could take "
                "exponential time on a reply"
            )
            instead = [how for spelling, how in _PYTHON_ONLY if spelling.search(pattern)]
            if instead:  # the real reason: ECMA-262 (JSON Schema's dialect) reads it otherwise
                reason = (
                    "it uses syntax only Python's re reads (JSON Schema's patterns are "
                    f"JavaScript regexes): write {'; '.join(instead)}"
                )
        raise UnsearchablePatternError(pattern, reason) from None

    def found(text: str) -> bool:
        try:
            checker.validate_python(text)
        except CoreValidationError:
            return False
        return True

    return found


_UNESCAPED = r"(?<!\\)(?:\\\\)*"
"""Before a pattern's backslash: an even number of backslashes (none escapes it)."""
_PYTHON_ONLY = (
    (re.compile(_UNESCAPED + r"\\Z"), "$ instead of \\Z"),
    (re.compile(_UNESCAPED + r"\{,\d+\}"), "{0,N} instead of {,N} (JavaScript reads {,3} as text)"),
    (re.compile(r"\(\?#"), "the pattern without its (?#...) comment"),
)
"""Python-only regex syntax Rust's engine cannot read, and the spelling both read."""


def check_patterns(schema: object) -> None:
    """Compile every ``pattern`` and ``patternProperties`` key of a schema (see `search`).

    Parameters
    ----------
    schema
        A JSON schema.

    Raises
    ------
    UnsearchablePatternError
        For the first pattern `search` cannot compile, with its ``pointer``
        (``/properties/code/pattern``, or ``.../patternProperties`` for a key).
    """
    from ._schema_walk import schema_nodes

    for pointer, node in schema_nodes(schema):
        if not isinstance(node, dict):
            continue
        found = (
            [(f"{pointer}/pattern", node["pattern"])]
            if isinstance(node.get("pattern"), str)
            else []
        )
        if isinstance(node.get("patternProperties"), dict):
            found += [(f"{pointer}/patternProperties", key) for key in node["patternProperties"]]
        for where, pattern in found:
            try:
                search(pattern)
            except UnsearchablePatternError as exc:
                exc.pointer = where
                raise


_RUST_ONLY_IN_CLASS = ("[", "&&", "--", "~~")
"""In a character class, Rust's regex reads these as a nested class, a POSIX class
(``[[:alpha:]]``), an intersection, a difference and a symmetric difference; ECMA-262 and
Python's ``re`` read their characters as members."""
_RUST_MEANING = {
    "&&": "a class intersection",
    "--": "a class difference",
    "~~": "a class symmetric difference",
    "\\<": "the start of a word",
    "\\>": "the end of a word",
}
_POSIX_CLASS = re.compile(r"\[:\^?[a-z]+:\]")
_RUST_CANNOT_READ = ("an octal escape", "a backspace escape")
"""``\\0`` (NUL) and ``[\\b]`` (backspace) to ECMA-262 and ``re``; errors to Rust's regex."""
_OCTAL = re.compile("0[0-7]{0,2}")
"""The digits of an octal escape (``\\0`` to ``\\077``), as Python's ``re`` reads them."""


def _rust_only(pattern: str) -> Iterator[tuple[int, str]]:
    r"""Yield where Rust's regex reads ``pattern`` otherwise than ``re`` and ECMA-262, and as what.

    Each place is the index of the first character of the syntax: the class syntax above,
    ``\<`` and ``\>`` (word boundaries to Rust, the characters ``<`` and ``>`` to the
    others), or ``\0`` and a class's ``\b`` (`_RUST_CANNOT_READ`). Hand-written: no
    library compares two regex dialects.
    """
    in_class = False
    first = 0  # where the members of the open class begin
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if pattern[i + 1 : i + 2] in ("<", ">"):
                yield i, _RUST_MEANING[pattern[i : i + 2]]
            elif pattern[i + 1 : i + 2] == "0":  # found by a probe: Rust's "backreference"
                yield i, "an octal escape"
            elif in_class and pattern[i + 1 : i + 2] == "b":
                yield i, "a backspace escape"
            i += 2
            continue
        if in_class:
            if char == "]" and pattern[i - 1] != "[" and pattern[i - 2 : i] != "[^":
                in_class = False
            elif i == first and pattern.startswith("--]", i):
                i += 2  # `[--]`: the character - to every reader (found by a review)
                continue
            elif pattern.startswith(_RUST_ONLY_IN_CLASS, i):
                if char != "[":
                    yield i, _RUST_MEANING[pattern[i : i + 2]]
                elif _POSIX_CLASS.match(pattern, i):
                    yield i, "a POSIX class"
                else:
                    yield i, "a nested class"
        elif char == "[":
            in_class = True
            first = i + 2 if pattern.startswith("^", i + 1) else i + 1
        i += 1


def rust_reads_otherwise(pattern: str) -> str | None:
    r"""Name the first syntax of ``pattern`` Rust's regex reads otherwise than ECMA-262.

    Pydantic checks a ``Field(pattern=...)`` with Rust's regex, the engines and JSON Schema
    read it as ECMA-262: ``[[:alpha:]]`` is a POSIX class to the first and the characters
    ``[:alph`` followed by ``]`` to the others, so a reply the engine is held to would fail
    the type.

    Parameters
    ----------
    pattern
        The regular expression.

    Returns
    -------
    str or None
        ``"a POSIX class ([:alpha:]) at position 1"``, or None when both read it alike.
    """
    for index, meaning in _rust_only(pattern):
        if meaning in _RUST_CANNOT_READ:
            continue  # not read otherwise: Pydantic's Rust regex refuses the pattern itself
        if meaning == "a POSIX class":
            end = pattern.find(":]", index) + 2
        elif meaning == "a nested class":
            end = _class_end(pattern, index)
        else:
            end = index + 2
        return f"{meaning} ({pattern[index:end]}) at position {index}"
    return None


def _class_end(pattern: str, start: int) -> int:
    """Return the index after the ``]`` that closes the class opening at ``start``."""
    i = start + 1
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "]" and i > start + 1:
            return i + 1
        i += 1
    return len(pattern)


def _for_rust(pattern: str) -> str:
    r"""Return ``pattern`` with the syntax Rust reads otherwise than ``re`` escaped (`_rust_only`).

    ``\<`` becomes ``<``; escaping the first character of a class pair keeps the second as
    Python reads it (``--b``: ``\-`` then a range ending at ``b``).
    """
    out: list[str] = []
    last = 0
    for index, meaning in _rust_only(pattern):
        out.append(pattern[last:index])
        if meaning in ("the start of a word", "the end of a word"):
            out.append(pattern[index + 1])
            last = index + 2
        elif meaning == "an octal escape":  # \0, \012: the character, as re and ECMA-262
            digits = _OCTAL.match(pattern, index + 1)
            assert digits is not None  # _rust_only saw a 0 there
            out.append(f"\\x{{{int(digits[0], 8):X}}}")
            last = digits.end()
        elif meaning == "a backspace escape":  # [\b]: U+0008 to re and ECMA-262
            out.append("\\x08")
            last = index + 2
        else:
            out.append("\\")
            last = index
    out.append(pattern[last:])
    return "".join(out)


def _pattern(
    validator: Any, pattern: str, instance: object, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, str) and not search(pattern)(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: object, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    assert isinstance(instance, Mapping)
    for pattern, subschema in patterns.items():
        found = search(pattern)
        for key, value in instance.items():
            if found(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: object, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    assert isinstance(instance, Mapping)
    properties = schema.get("properties", {})
    patterns = [search(p) for p in schema.get("patternProperties", {})]
    extras = [
        key
        for key in instance
        if key not in properties and not any(found(key) for found in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = ", ".join(repr(each) for each in sorted(extras, key=str))
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{names} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            error = f"Additional properties are not allowed ({names} {verb} unexpected)"
            yield ValidationError(error)


def canonical(value: object) -> Hashable:
    """Return a hashable form of a JSON value, equal for values JSON Schema calls equal.

    Parameters
    ----------
    value
        A JSON value as Python reads it.

    Returns
    -------
    Hashable
        Booleans apart from numbers, numbers by value (``1`` and ``1.0`` alike), arrays in
        order, objects as sets of pairs.
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, Mapping):
        return ("object", frozenset((key, canonical(item)) for key, item in value.items()))
    if isinstance(value, Sequence):
        return ("array", tuple(canonical(item) for item in value))
    if isinstance(value, int | float) or value is None:
        return ("value", value)
    return ("other", id(value))  # not JSON: equal only to itself, as jsonschema's ``is``


def _unique_items(
    validator: Any, unique: object, instance: object, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    assert isinstance(instance, Sequence)
    if len({canonical(item) for item in instance}) < len(instance):
        yield ValidationError(f"{instance!r} has non-unique elements")


def exact(number: float) -> Fraction:
    """Return a JSON number's value as written (a float: its shortest repr, ``0.1`` a tenth)."""
    return Fraction(repr(number)) if isinstance(number, float) else Fraction(number)


def _multiple_of(
    validator: jsonschema.protocols.Validator, step: Any, instance: Any, _: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "number") or not validator.is_type(step, "number"):
        return
    if (exact(instance) / exact(step)).denominator != 1:
        yield ValidationError(f"{instance!r} is not a multiple of {step}")


@functools.cache
def linear_time(cls: type[jsonschema.protocols.Validator]) -> Any:
    """Return ``cls`` with its pattern and ``uniqueItems`` keywords in linear time (the module).

    jsonschema validates a subschema naming a draft (``$schema``) with that draft's stock
    class (``evolve`` looks it up): the class returned turns it into its linear form.
    """
    linear = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        cls,
        {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
            "uniqueItems": _unique_items,
            # exact, under the name the draft's class checks it by (draft 3: divisibleBy)
            **{key: _multiple_of for key in ("multipleOf", "divisibleBy") if key in cls.VALIDATORS},
        },
    )
    stock_evolve = linear.evolve
    fields = [(f.name, f.alias) for f in attrs.fields(linear) if f.init]

    def evolve(self: Any, **changes: Any) -> Any:
        evolved = stock_evolve(self, **changes)
        if type(evolved) in _LINEAR:
            return evolved
        stock: type[jsonschema.protocols.Validator] = type(evolved)
        return linear_time(stock)(**{a: getattr(evolved, n) for n, a in fields})

    linear.evolve = evolve
    _LINEAR.add(linear)
    return linear


_LINEAR: set[type] = set()
"""The classes `linear_time` made."""
