"""JSON-schema pattern keywords checked in linear time (pure, no I/O).

jsonschema checks ``pattern``, ``patternProperties`` and ``additionalProperties`` (which
reads ``patternProperties``) with Python's ``re``, a backtracking engine: a reply that
almost matches a pattern such as ``^([A-Za-z]+ ?)+$`` takes exponential time (20 s at 28
letters), in the caller's thread, where no ``timeout=`` can stop it. A model may write such
a reply wherever an engine leaves a pattern loose. `linear_time` gives a validator class
whose three keywords search with the Rust ``regex`` crate instead, the engine Pydantic
validates patterns with (through ``pydantic_core``), which runs in time linear in the text.
A pattern that engine cannot read (syntax only Python's ``re`` has) is searched with ``re``.

Why hand-written: jsonschema has no hook for the regex engine of its keywords; these three
follow its own implementations (``jsonschema._keywords``), with the search replaced.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError
from pydantic_core import SchemaError, SchemaValidator, core_schema
from pydantic_core import ValidationError as CoreValidationError

__all__ = ["linear_time", "search"]


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
        The search, in linear time unless the pattern needs Python's ``re``.
    """
    try:
        if _rust_reads_otherwise(pattern):
            raise SchemaError("read otherwise by Rust's regex")
        checker = SchemaValidator(
            core_schema.str_schema(pattern=pattern, regex_engine="rust-regex")
        )
    except SchemaError:  # syntax only Python's re reads (alike): its search, as jsonschema's
        with warnings.catch_warnings():  # "Possible nested set": read as ECMA-262 reads it
            warnings.simplefilter("ignore", FutureWarning)
            compiled = re.compile(pattern)
        return lambda text: compiled.search(text) is not None

    def found(text: str) -> bool:
        try:
            checker.validate_python(text)
        except CoreValidationError:
            return False
        return True

    return found


_RUST_ONLY_IN_CLASS = ("[", "&&", "--", "~~")
"""In a character class, Rust's regex reads these as a nested class, a POSIX class
(``[[:alpha:]]``), an intersection, a difference and a symmetric difference; ECMA-262 and
Python's ``re`` read their characters as members."""


def _rust_reads_otherwise(pattern: str) -> bool:
    r"""Whether Rust's regex would read ``pattern`` otherwise than Python's ``re`` does.

    Besides the class syntax above, ``\<`` and ``\>`` are word boundaries to Rust and the
    characters ``<`` and ``>`` to Python.
    """
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if pattern[i + 1 : i + 2] in ("<", ">"):
                return True
            i += 2
            continue
        if in_class:
            if char == "]" and pattern[i - 1] != "[" and pattern[i - 2 : i] != "[^":
                in_class = False
            elif pattern.startswith(_RUST_ONLY_IN_CLASS, i):
                return True
        elif char == "[":
            in_class = True
        i += 1
    return False


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


@functools.cache
def linear_time(cls: type[jsonschema.protocols.Validator]) -> Any:
    """Return ``cls`` with its pattern keywords searching in linear time (see the module)."""
    return jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        cls,
        {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
    )
