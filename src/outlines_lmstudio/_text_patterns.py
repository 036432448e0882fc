r"""Patterns that ask the engines for a duration or a URL Pydantic reads (pure).

Pydantic writes a ``timedelta`` as ``{"type": "string", "format": "duration"}`` and a URL
type as ``{"type": "string", "format": "uri", ...}``. Neither engine constrains those
formats (llama.cpp knows neither; ``uri`` is dropped from what is sent, see
`_rewrites.drop_unsupported_formats`), so the engines wrote any string, and ``parse``
failed on almost every reply (found by a probe). These patterns name a part of what the
types read, in the regex subset both engines take (classes such as ``[0-9]``, no ``\d``):
every string a pattern allows validates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["DURATION_PATTERN", "URL_LENGTH", "URL_SCHEMES", "url_pattern"]

_AMOUNT = "[0-9]{1,6}"
_SECONDS = rf"{_AMOUNT}(\.[0-9]{{1,6}})?S"
_DATE_PART = (
    f"({_AMOUNT}Y({_AMOUNT}M)?({_AMOUNT}W)?({_AMOUNT}D)?"
    f"|{_AMOUNT}M({_AMOUNT}W)?({_AMOUNT}D)?"
    f"|{_AMOUNT}W({_AMOUNT}D)?"
    f"|{_AMOUNT}D)"
)
_TIME_PART = f"T({_AMOUNT}H({_AMOUNT}M)?({_SECONDS})?|{_AMOUNT}M({_SECONDS})?|{_SECONDS})"
DURATION_PATTERN = f"^-?P({_DATE_PART}({_TIME_PART})?|{_TIME_PART})$"
"""An ISO 8601 duration as Pydantic's ``timedelta`` reads it in JSON (``P1DT2H30M``,
``PT45S``, ``-P3D``, ``P2W``): at least one amount, of at most 6 digits (the largest,
``P999999Y...``, is still within ``timedelta``'s range), a fraction on the seconds only
(Pydantic refuses one on an amount before the last), no sign but ``-``."""

_LABEL = "[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_HOST = rf"(({_LABEL}\.)*[a-zA-Z]+|({_OCTET}\.){{3}}{_OCTET})"
"""A domain name or an IPv4 address. A domain's last label is letters: one with a digit is
read as an IPv4 address (``a.123`` fails); no ``--``, which may be read as punycode
(``xn--abc`` fails)."""
_PORT = "(0|[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_CHARACTER = "-A-Za-z0-9._~!$&()*+,;=:@"
"""RFC 3986's unreserved characters and sub-delimiters less ``'``, with ``:`` and ``@``:
no ``%`` (an escape), space, quote or backslash."""
_TAIL = rf"(/[{_CHARACTER}/]*)?(\?[{_CHARACTER}/?]*)?(#[{_CHARACTER}/?]*)?"
URL_LENGTH = 2083
"""The longest URL ``HttpUrl`` reads (Pydantic's ``max_length``, from Internet Explorer)."""

URL_SCHEMES = ("http", "https", "ftp", "ws", "wss")
"""The schemes asked for where a URL type allows any (``AnyUrl``)."""


def url_pattern(schemes: Sequence[str] | None, max_length: int | None) -> str | None:
    """Return a pattern of URLs of ``schemes``, or ``None`` where the type reads fewer.

    ``scheme://host[:port][/path][?query][#fragment]``, the host a domain name or an IPv4
    address; a ``file`` URL has no host or port (``file:///C:/notes.txt``: Pydantic refuses a
    port there, and a drive letter after a host). The length is not bounded: a pattern that
    counts to 2083 made outlines-core (LM Studio's MLX engine) take 40 s to build its index
    for Gemma's vocabulary, where this one takes under 1 s; a reply is longer only if the model
    writes a path of 2000 characters, which ``parse`` then refuses.

    Parameters
    ----------
    schemes
        The schemes the type allows (Pydantic's ``allowed_schemes``); ``None`` for any, then
        `URL_SCHEMES`.
    max_length
        The longest URL the type reads, if it says (``HttpUrl``: 2083).

    Returns
    -------
    str | None
        The pattern; ``None`` for a type bounded shorter than `URL_LENGTH`
        (``UrlConstraints(max_length=100)``), whose length the engines are asked to keep, or
        whose schemes are not all names a pattern can spell.
    """
    names = sorted(schemes or URL_SCHEMES)
    if max_length is not None and max_length < URL_LENGTH:
        return None
    if not names or not all(re.fullmatch("[a-zA-Z][a-zA-Z0-9+.-]*", name) for name in names):
        return None
    networked = [re.escape(name) for name in names if name.lower() != "file"]
    branches = [f"({'|'.join(networked)})://{_HOST}(:{_PORT})?"] if networked else []
    if len(networked) < len(names):
        branches.append("file://")
    return f"^({'|'.join(branches)}){_TAIL}$"
