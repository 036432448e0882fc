"""Finding LM Studio on its default local ports for a client made without a host.

``lms.Client()`` with no host looks for LM Studio on its default local ports
only when it is entered (``with lms.Client() as client:``); used without
``with``, each call fails with "Local API host port is not yet resolved".
``from_lmstudio(lms.Client(), key)`` works as the ``with`` block does: the
model runs the SDK's own discovery on first use. When nothing answers, the
error lists the ports tried and says how to start LM Studio or pass a host.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import lmstudio as lms

from ._sdk_errors import client_host
from .errors import LMStudioConnectionError

__all__ = [
    "DEFAULT_PORTS",
    "NOT_LM_STUDIO",
    "enter_async_client",
    "ensure_host",
    "find_lm_studio",
    "no_server_error",
]

DEFAULT_PORTS = (41343, 52993, 16141, 39414, 22931)
"""LM Studio's default local API ports, in the order ``lmstudio`` 1.5 probes them.

A unit test checks this against the SDK's own list, so a new SDK release that
changes it cannot make our message wrong silently.
"""

_DISCOVERY = threading.Lock()  # batch threads sharing one new client probe once


NOT_LM_STUDIO = (httpx.HTTPError, ValueError)
"""What the SDK's probe of a port raises when something other than LM Studio answers there.

It catches only a refused or timed-out connection: a server that answers HTML
(``json.JSONDecodeError``, a ``ValueError``), never answers (``httpx.ReadTimeout``) or
speaks no HTTP escaped as such (found by a probe), and ended the search of the other
ports too.
"""


def find_lm_studio() -> tuple[str | None, BaseException | None]:
    """Probe LM Studio's default ports one by one, past any where another server answers.

    The SDK's own search stops at the first port where another server answers, though LM
    Studio takes a later default port when the first is taken (found by a review).

    Returns
    -------
    tuple
        The ``HOST:PORT`` LM Studio answers on (``None`` if none), and what the probe of
        a port raised where another server answered (``None`` if none did).
    """
    other: BaseException | None = None
    for port in DEFAULT_PORTS:
        try:
            if lms.Client.is_valid_api_host(f"127.0.0.1:{port}"):
                return f"127.0.0.1:{port}", other
        except NOT_LM_STUDIO as exc:
            other = other or exc
    return None, other


def _behind_another_server(
    found: str | None, answered: BaseException, model: str | None
) -> LMStudioConnectionError:
    """Return the error for a search the SDK gave up at another server's port."""
    if found is None:
        return no_server_error(model, answered)
    return LMStudioConnectionError(
        f"Cannot find LM Studio: the client has no host, and another server on an earlier "
        f"default port stops the lmstudio SDK's search ({type(answered).__name__}: "
        f"{answered}); LM Studio answers at {found}.",
        model=model,
        hint=f'Pass that host: lms.Client("{found}") (or lms.AsyncClient("{found}")).',
    )


def no_server_error(
    model: str | None = None, answered: BaseException | None = None
) -> LMStudioConnectionError:
    """Return the error for "no LM Studio on any default port".

    Parameters
    ----------
    model
        The model key the call was for, if any.
    answered
        What the probe of a port raised when another server answered there, if it did.

    Returns
    -------
    LMStudioConnectionError
        The message lists the ports tried; the hint says how to start LM Studio's
        server or pass a host.
    """
    ports = ", ".join(str(port) for port in DEFAULT_PORTS)
    other = (
        ""
        if answered is None
        else f"; a server on one of them answered, but not as LM Studio does "
        f"({type(answered).__name__}: {answered})"
    )
    return LMStudioConnectionError(
        f"Cannot find LM Studio: the client has no host, and nothing answered as LM Studio "
        f"on 127.0.0.1 ports {ports} (LM Studio's default local API ports){other}.",
        model=model,
        hint="Start LM Studio's server (Developer tab, or `lms server start`), or pass the "
        'host it listens on: lms.Client("localhost:1234"). Without LM Studio, use '
        "outlines_lmstudio.testing.LMStudioEmulator.",
    )


def ensure_host(client: lms.Client, model: str | None = None) -> None:
    """Find LM Studio on its default ports if ``client`` was made without a host.

    Parameters
    ----------
    client
        The caller's client; it is not closed (the caller owns it).
    model
        The model key, for the error message.

    Raises
    ------
    LMStudioConnectionError
        Nothing answered on any default port.
    """
    if client_host(client) is not None:
        return
    with _DISCOVERY:
        if client_host(client) is not None:
            return
        try:
            # The SDK's discovery for an existing client is its context-manager entry:
            # `Client.__enter__` only probes the default ports and records the host
            # (lmstudio/sync_api.py). No __exit__: that would close the caller's client.
            client.__enter__()
        except lms.LMStudioClientError as exc:
            raise no_server_error(model) from exc
        except NOT_LM_STUDIO as exc:
            raise _behind_another_server(find_lm_studio()[0], exc, model) from exc


async def enter_async_client(client: lms.AsyncClient) -> None:
    """Enter an ``AsyncClient`` (``async with`` does the same), explaining a failed discovery.

    Parameters
    ----------
    client
        A client that is not entered yet.

    Raises
    ------
    LMStudioConnectionError
        The client has no host and nothing answered on any default port.
    lmstudio.LMStudioError
        Any other failure, as the SDK raised it (the caller translates it).
    """
    discovering = client_host(client) is None
    try:
        await client.__aenter__()
    except lms.LMStudioClientError as exc:
        if discovering and client_host(client) is None:
            raise no_server_error() from exc
        raise
    except NOT_LM_STUDIO as exc:
        if discovering and client_host(client) is None:
            found = (await asyncio.to_thread(find_lm_studio))[0]
            raise _behind_another_server(found, exc, None) from exc
        raise
