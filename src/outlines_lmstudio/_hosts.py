"""What is wrong with a ``HOST:PORT`` that is not one (the client check and the CLI's).

The SDK puts ``ws://`` and its own path around whatever host it is given, so a host it
cannot use fails only when it connects, and then as "not reachable ... Is LM Studio
running?" (an async client raised httpx's ``InvalidURL`` or an ``ExceptionGroup``): found
by a probe. Pure: no I/O.
"""

from __future__ import annotations

import re

import httpx

__all__ = ["host_problem"]

_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+(?:%[^\s/?#@\[\]]+)?\]|[^\s:/?#@\[\]]+):[0-9]+")
"""``HOST:PORT`` as LM Studio's server is addressed: a name or address, then ASCII digits.

An IPv6 address in brackets may carry a zone (``[fe80::1%eth0]:1234``, a link-local
address: the SDK connects to it; found by a review). Leading zeros are allowed (the SDK
reads ``:01234`` as port 1234); the range is checked.
"""


def host_problem(host: str, example: str) -> str | None:
    """Return what is wrong with ``host`` as the ``HOST:PORT`` of LM Studio's server.

    Hand-written because httpx, which parses it, takes more than ``HOST:PORT`` spells:
    ``127.0.0.1:`` has no port, ``+80`` and ``٩٩`` are read as numbers, a space passes in
    a host name.

    Parameters
    ----------
    host
        The host as given (a scheme or path already taken off or refused by the caller).
    example
        What the message offers instead (``e.g. 127.0.0.1:1234``).

    Returns
    -------
    str | None
        The words that follow the host as written (``" has no port: give HOST:PORT, e.g.
        ..."``), or ``None`` when it is a ``HOST:PORT``.
    """
    if host.isascii() and host.isdigit():
        return f" is a port alone: give HOST:PORT, {example}."
    if host.count(":") > 1 and re.fullmatch(r"[0-9A-Fa-f:.]+(%\S+)?", host.rpartition(":")[0]):
        return " is not HOST:PORT: an IPv6 address goes in brackets, e.g. [::1]:1234."
    try:
        url = httpx.URL(f"http://{host}")
        port = url.port
        name = url.host  # an A-label is decoded (IDNAError, a UnicodeError)
        # What the connection asks the resolver for, encoded as it will be (an empty or
        # too long label, "192.168..1", fails there as a UnicodeError, not a connect error).
        url.raw_host.decode("ascii").encode("idna")
    except (httpx.InvalidURL, UnicodeError) as exc:
        return f" is not HOST:PORT ({exc}): {example}."
    if not name:
        return f" has no host name: give HOST:PORT, {example}."
    if extra := re.search(r"[/?#].*", host):
        return (
            f" has more than HOST:PORT ({extra.group()!r}): give only the host and port of "
            f"LM Studio's server, {example}."
        )
    if port is not None and not 0 < port <= 65535:
        return f": {port} is not a port: use 1 to 65535, {example}."
    if not _HOST_PORT.fullmatch(host):
        written = host.rpartition(":")[2] if ":" in host else ""
        what = "is not a host name and a port in digits 0-9" if written else "has no port"
        return f" {what}: give HOST:PORT, {example}."
    return None
