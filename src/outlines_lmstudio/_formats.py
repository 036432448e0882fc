"""The ``format`` checkers replies are validated with (pure).

jsonschema checks each format with an optional package. The package depends on those of
jsonschema's ``format-nongpl`` extra but one: ``rfc3987-syntax``, which jsonschema imports
when it is itself imported, and which then builds its parser (1.2 s added to the start of
every program that imports jsonschema, Outlines included). ``iri`` and ``iri-reference``
are checked instead with ``rfc3987-syntax2``, its maintained fork, which builds its parser
on first use. Where jsonschema already checks them (``rfc3987`` or ``rfc3987-syntax``
installed by something else), its own checkers are kept.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import jsonschema

__all__ = ["check_schema", "format_checker"]

# The drafts that define iri and iri-reference (as jsonschema's own checkers do).
_IRI_DRAFTS: tuple[type[jsonschema.protocols.Validator], ...] = (
    jsonschema.Draft7Validator,
    jsonschema.Draft201909Validator,
    jsonschema.Draft202012Validator,
)


def _is_iri(instance: object) -> bool:
    from rfc3987_syntax2 import is_valid_syntax  # it imports lark: on first use only

    return not isinstance(instance, str) or is_valid_syntax("iri", instance)


def _is_iri_reference(instance: object) -> bool:
    from rfc3987_syntax2 import is_valid_syntax

    return not isinstance(instance, str) or is_valid_syntax("iri_reference", instance)


@cache
def format_checker(cls: type[jsonschema.protocols.Validator]) -> jsonschema.FormatChecker:
    """Return the format checker of validator class ``cls``, with ``iri`` checked.

    Parameters
    ----------
    cls
        A jsonschema validator class (one draft).

    Returns
    -------
    jsonschema.FormatChecker
        The draft's own checker, with ``iri`` and ``iri-reference`` added for the drafts
        that define them when jsonschema has no checker for them, and ``regex`` read
        without Python's FutureWarnings (`is_ecma_regex`).
    """
    checker = _with_ecma_regex(cls.FORMAT_CHECKER)
    if "iri" not in checker.checkers and issubclass(cls, _IRI_DRAFTS):
        checker.checks("iri")(_is_iri)
        checker.checks("iri-reference")(_is_iri_reference)
    return checker


def check_schema(cls: type[jsonschema.protocols.Validator], schema: dict[str, Any]) -> None:
    """Check ``schema`` against the meta-schema of ``cls`` (``cls.check_schema``), quietly.

    jsonschema's own format checker reads each ``pattern`` of the schema with
    ``re.compile``, whose FutureWarnings (``[[`` in a class) are not the schema's: see
    `is_ecma_regex`.

    Raises
    ------
    jsonschema.SchemaError
        The first error, as ``cls.check_schema`` raises it.
    """
    # jsonschema >= 4.20 (our floor) takes format_checker=; types-jsonschema's protocol
    # does not list it.
    cls.check_schema(schema, format_checker=_meta_format_checker(cls))  # type: ignore[call-arg]


@cache
def _meta_format_checker(cls: type[jsonschema.protocols.Validator]) -> jsonschema.FormatChecker:
    """Return the format checker ``cls.check_schema`` uses, its ``regex`` check quiet."""
    own = jsonschema.validators.validator_for(cls.META_SCHEMA, default=cls).FORMAT_CHECKER
    return _with_ecma_regex(own)


def _with_ecma_regex(own: jsonschema.FormatChecker) -> jsonschema.FormatChecker:
    """Return a copy of ``own`` whose ``regex`` check is `is_ecma_regex` (if it has one)."""
    from ._patterns import is_ecma_regex

    checker = jsonschema.FormatChecker(())
    checker.checkers = dict(own.checkers)
    if "regex" in checker.checkers:
        checker.checks("regex", raises=re.error)(is_ecma_regex)
    return checker
