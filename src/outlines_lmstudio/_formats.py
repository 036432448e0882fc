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

from functools import cache

import jsonschema

__all__ = ["format_checker"]

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
        that define them when jsonschema has no checker for them.
    """
    own = cls.FORMAT_CHECKER
    if "iri" in own.checkers or not issubclass(cls, _IRI_DRAFTS):
        return own
    checker = jsonschema.FormatChecker(())
    checker.checkers = dict(own.checkers)
    checker.checks("iri")(_is_iri)
    checker.checks("iri-reference")(_is_iri_reference)
    return checker
