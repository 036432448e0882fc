"""Finding LM Studio on its default local ports for a client made without a host.

``lms.Client()`` with no host looks for LM Studio on its default local ports
only when it is entered (``with lms.Client() as client:``); used without
``with``, each call fails with "Local API host port is not yet resolved".
``from_lmstudio(lms.Client(), key)`` works as the ``with`` block does: the
model runs the SDK's own discovery on first use. When nothing answers, the
error lists the ports tried and says how to start LM Studio or pass a host.

Every probe of a port (``GET /lmstudio-greeting``) has a deadline on the whole exchange
(`is_lm_studio`): the SDK's own probe, ``httpx.get(url, timeout=1)``, bounds each read
only, so a server that streams (one byte every half second) held it for good.

Callers that waited for a search that failed (threads of a batch, tasks on one
``AsyncClient``) get its error instead of repeating it one after another; a call made
after the failure was reported searches again, so LM Studio started since is found.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpcore
import httpx
import lmstudio as lms

from ._cache import PerClient, copied_error
from ._exhausted import at_file_limit, files_hint, out_of_files
from ._forks import in_child
from ._sdk_errors import client_host, mark_searched, proxy_note
from .errors import LMStudioConnectionError

__all__ = [
    "DEFAULT_PORTS",
    "NOT_LM_STUDIO",
    "PROBE_BYTES",
    "PROBE_SECONDS",
    "SDK_PROBE_SECONDS",
    "EndlessAnswerError",
    "OtherAnswerError",
    "StalledStatusError",
    "enter_async_client",
    "ensure_host",
    "is_lm_studio",
    "no_server_error",
    "not_lm_studio_error",
    "other_server_error",
    "other_servers",
    "search_default_ports",
    "search_for_async_client",
    "unresolved",
    "why_not_lm_studio",
]

_T = TypeVar("_T")

SDK_PROBE_SECONDS = 1.0
"""The SDK's own limit on its probe of each default port (``httpx.get(url, timeout=1)``)."""

DEFAULT_PORTS = (41343, 52993, 16141, 39414, 22931)
"""LM Studio's default local API ports, in the order ``lmstudio`` 1.5 probes them.

A unit test checks this against the SDK's own list, so a new SDK release that
changes it cannot make our message wrong silently.
"""

_DISCOVERY = threading.Lock()  # batch threads sharing one new client probe once


def _after_fork_in_child() -> None:
    """Make the lock afresh: a parent thread may have held it, searching (`_forks`)."""
    global _DISCOVERY
    _DISCOVERY = threading.Lock()


in_child(_after_fork_in_child)


class _Search:
    """The failed searches for one client's host: a count, and the last one's error."""

    def __init__(self) -> None:
        self.generation = 0
        self.error: LMStudioConnectionError | None = None


_SEARCHES: PerClient[_Search] = PerClient()


NOT_LM_STUDIO = (httpx.HTTPError, ValueError)
"""What the SDK's probe of a port raises when something other than LM Studio answers there.

It catches only a refused or timed-out connection: a server that answers HTML
(``json.JSONDecodeError``, a ``ValueError``), never answers (``httpx.ReadTimeout``) or
speaks no HTTP escaped as such (found by a probe), and ended the search of the other
ports too.
"""


PROBE_SECONDS = 2.0
"""Seconds a probe waits for the whole answer to ``GET /lmstudio-greeting`` (`is_lm_studio`)."""

PROBE_BYTES = 4096
"""The longest answer a probe reads: LM Studio's greeting is ``{"lmstudio":true}``."""


class EndlessAnswerError(httpx.ReadTimeout):
    """A server's answer to the probe went on past `PROBE_SECONDS` or `PROBE_BYTES`."""


class StalledStatusError(ValueError):
    """A server answered the probe with a status other than 200, and a body that did not end.

    The SDK's probe reads the body whole: its search would wait there (not pass the
    server, as for `OtherAnswerError`). The status is named all the same (found by a
    review: it was lost, and a host given got the SDK's "Is LM Studio running?").
    """


class OtherAnswerError(ValueError):
    """A server answered the probe in HTTP, but not with LM Studio's greeting.

    An HTTP status other than 200 (a web server's 404), or JSON that is not the greeting.
    The SDK's probe reads both as no server there: its search went on without a word, and
    a host given was said to be unreachable, which sends the user to start LM Studio
    rather than to check the port (found by a probe).
    """


def _left(deadline: float, timeout: float | None) -> float:
    """Return ``timeout`` cut to what is left before ``deadline``; raise if nothing is left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the probe's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by one deadline.

    httpx and httpcore bound each read, not an exchange: a server that sends its status
    line and then a header every half second kept a probe going for minutes (found by a
    review). Cutting each step's timeout to what is left makes the deadline total.
    """

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream, self._deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(self._deadline, timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(self._deadline, timeout))

    def close(self) -> None:
        self._stream.close()

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    """httpcore's own sockets, each wrapped in a `_DeadlineStream`."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        seconds = _left(self._deadline, timeout)
        stream = super().connect_tcp(host, port, seconds, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)


def is_lm_studio(host: str, seconds: float = PROBE_SECONDS) -> bool:
    """Say whether LM Studio answers at ``host``, with ``lms.Client.is_valid_api_host``'s request.

    The same request, with a deadline on the whole exchange: the SDK's probe bounds each
    read to 1 s only, so a server that streams, its body or its headers, held it for good
    (found by a probe and a review). Another server's answer raises, with what it was.

    Parameters
    ----------
    host
        ``HOST:PORT``.
    seconds
        The longest the whole probe may take, from the call: connecting, the request, the
        status line, the headers and the body (each step is also bounded to 1 s, as in the
        SDK's probe).

    Returns
    -------
    bool
        ``True`` if LM Studio's greeting came back; ``False`` if nothing listens there
        (the connection was refused or timed out).

    Raises
    ------
    OtherAnswerError
        Another server answered: a status other than 200, or JSON that is not the greeting.
    StalledStatusError
        Another server answered a status other than 200, with a body that did not end
        (within ``seconds``, 1 s a read) or was cut short.
    EndlessAnswerError
        The answer went on past ``seconds`` or `PROBE_BYTES`.
    httpx.HTTPError
        Another server took the connection and did not answer in 1 s, or not in HTTP.
    httpx.InvalidURL, UnicodeError
        ``host`` is no host name (``a..b:1``: IDNA cannot write it).
    ValueError
        Another server answered 200 with something other than JSON.
    """
    deadline = time.monotonic() + seconds
    endless = EndlessAnswerError(f"more than {PROBE_BYTES} bytes or {seconds:g} s")
    # The SDK's URL for the probe (private, but its probe's own: we stay in step), its host
    # IDNA-encoded as httpx does (httpcore takes ASCII only: "héllo:5999" failed as "a bug").
    given = httpx.URL(lms.Client._get_probe_url(host))
    url = httpcore.URL(
        scheme=given.raw_scheme, host=given.raw_host, port=given.port, target=given.raw_path
    )
    # The Host header as httpx writes it ("[::1]:1234"): httpcore's leaves out an IPv6
    # address's brackets (found by a review).
    headers = [(b"Host", given.netloc)]
    limits = {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0}
    try:
        # httpcore, which httpx runs on, for its network backend (the one way to bound
        # every read by one deadline); its errors are told as httpx's below.
        with (
            httpcore.ConnectionPool(network_backend=_DeadlineBackend(deadline)) as pool,
            pool.stream("GET", url, headers=headers, extensions={"timeout": limits}) as response,
        ):
            # Another status's body is read to its end too, not kept: the SDK's probe reads
            # it whole, so a 404 that streams held the SDK's search for good, where this
            # probe had said "another status: the SDK goes on" (found by a review).
            if response.status != httpx.codes.OK:
                status = f"it answers HTTP {response.status} to the greeting's URL"
                try:
                    for _ in response.iter_stream():
                        pass
                except (
                    httpcore.TimeoutException,
                    httpcore.NetworkError,
                    httpcore.ProtocolError,
                ) as exc:
                    raise StalledStatusError(f"{status}, with an answer that does not end") from exc
                raise OtherAnswerError(status)
            body = b""
            for chunk in response.iter_stream():
                body += chunk
                if len(body) > PROBE_BYTES:
                    raise endless
    except (httpcore.ConnectTimeout, httpcore.ConnectError):
        return False
    except httpcore.TimeoutException as exc:
        if time.monotonic() >= deadline:
            raise endless from exc
        raise httpx.ReadTimeout(str(exc)) from exc
    except httpcore.ProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except httpcore.NetworkError as exc:
        raise httpx.ReadError(str(exc)) from exc
    data = json.loads(body)
    if not (isinstance(data, dict) and data.get("lmstudio", False)):
        raise OtherAnswerError("it answers JSON, but not LM Studio's greeting")
    return True


def why_not_lm_studio(error: BaseException) -> str:
    """Say what a probe's ``error`` (one of `NOT_LM_STUDIO`) means about the server there.

    The words follow "not LM Studio: "; a server that took the connection and said nothing
    is not said to answer.
    """
    if isinstance(error, EndlessAnswerError):
        return f"it answers without end ({error}), not with LM Studio's greeting"
    if isinstance(error, httpx.TimeoutException):
        return "it takes connections but sent no answer within 1 s"
    if isinstance(error, OtherAnswerError | StalledStatusError):
        return str(error)
    if isinstance(error, ValueError):
        return "it answers, but not with LM Studio's greeting (its answer is not JSON)"
    return f"it takes connections but does not answer in HTTP ({type(error).__name__}: {error})"


def search_default_ports() -> tuple[str | None, list[tuple[str, BaseException]]]:
    """Probe LM Studio's default ports one by one, past any where another server is.

    The SDK's own search stops at the first port where another server answers, though LM
    Studio takes a later default port when the first is taken (found by a review).

    Returns
    -------
    tuple
        The ``HOST:PORT`` LM Studio answers on (``None`` if none), and the ``HOST:PORT``
        probed before it where another server is, each with what its probe raised
        (see `why_not_lm_studio`).
    """
    skipped: list[tuple[str, BaseException]] = []
    for port in DEFAULT_PORTS:
        host = f"127.0.0.1:{port}"
        try:
            if is_lm_studio(host):
                return host, skipped
        except NOT_LM_STUDIO as exc:
            skipped.append((host, exc))
    return None, skipped


def _other_server(skipped: tuple[str, BaseException]) -> str:
    """Say which default port another server holds, and what it does there."""
    host, error = skipped
    return f"the server on {host} is not LM Studio: {why_not_lm_studio(error)}"


def other_servers(skipped: Sequence[tuple[str, BaseException]]) -> str:
    """Say which default ports other servers hold, and what each does there.

    Each one: the first alone was named, though a later one (a server that says nothing)
    may be what stopped the SDK's own search (found by a probe).
    """
    if len(skipped) == 1:
        return _other_server(skipped[0])
    each = "; ".join(f"{host}: {why_not_lm_studio(error)}" for host, error in skipped)
    hosts = ", ".join(host for host, _ in skipped[:-1]) + f" and {skipped[-1][0]}"
    return f"the servers on {hosts} are not LM Studio ({each})"


def _behind_another_server(
    found: str, skipped: tuple[str, BaseException], model: str | None
) -> LMStudioConnectionError:
    """Return the error for LM Studio behind a server that stops the SDK's search."""
    return LMStudioConnectionError(
        f"Cannot find LM Studio: the client has no host; LM Studio answers at {found}, but "
        f"{_other_server(skipped)}, and it stops the lmstudio SDK's search of the default "
        "ports before LM Studio's.",
        model=model,
        hint=f'Pass that host: lms.Client("{found}") (or lms.AsyncClient("{found}")).',
    )


def no_server_error(
    model: str | None = None, skipped: Sequence[tuple[str, BaseException]] = ()
) -> LMStudioConnectionError:
    """Return the error for "no LM Studio on any default port".

    Parameters
    ----------
    model
        The model key the call was for, if any.
    skipped
        The default ports (``HOST:PORT``) where another server took the connection, each
        with what its probe raised.

    Returns
    -------
    LMStudioConnectionError
        The message lists the ports tried and names another server's port; the hint
        says how to start LM Studio's server or pass a host.
    """
    ports = ", ".join(str(port) for port in DEFAULT_PORTS)
    if at_file_limit():  # no connection could be opened to look (found by a review)
        return LMStudioConnectionError(
            f"Cannot find LM Studio: the client has no host, and the search of 127.0.0.1 "
            f"ports {ports} (LM Studio's default local API ports) could open no connection.",
            model=model,
            hint=files_hint(),
        )
    other = f"; {other_servers(skipped)}" if skipped else ""
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
    search = _SEARCHES.setdefault(client, _Search())
    seen = search.generation
    with _DISCOVERY:
        if client_host(client) is not None:
            return
        if search.generation != seen and search.error is not None:
            raise copied_error(search.error, model)  # the search this call waited for failed
        try:
            _search_and_enter(client, model)
        except LMStudioConnectionError as exc:
            search.error, search.generation = copied_error(exc), search.generation + 1
            raise


def _search_and_enter(client: lms.Client, model: str | None) -> None:
    """Search the default ports and enter ``client`` (under `_DISCOVERY`)."""
    # Our search first: the SDK's stops at another server's port, and waits for good
    # on one that streams (see `is_lm_studio`).
    found = _lm_studio_host(model)
    try:
        # The SDK's discovery for an existing client is its context-manager entry:
        # `Client.__enter__` only probes the default ports and records the host
        # (lmstudio/sync_api.py). No __exit__: that would close the caller's client.
        client.__enter__()
    except lms.LMStudioClientError as exc:
        raise _sdk_search_failed(found, model) from exc
    except NOT_LM_STUDIO as exc:
        raise _search_error(model) from exc
    mark_searched(client)


async def search_for_async_client(client: lms.AsyncClient, model: str | None = None) -> str | None:
    """Search the default ports for a client with no host, before it is entered.

    Our search first, as in `ensure_host`: the SDK's stops at another server's port, and
    waits for good on one that streams (see `is_lm_studio`). Nothing is entered: a caller
    may stop this at any point (`AsyncSessions.close` does, see there).

    Parameters
    ----------
    client
        A client that is not entered yet; nothing is done if it has a host.
    model
        The model key, for the error message.

    Returns
    -------
    str | None
        The ``HOST:PORT`` LM Studio answers on; ``None`` if the client has a host.

    Raises
    ------
    LMStudioConnectionError
        Nothing answered as LM Studio on a default port, or LM Studio answers only past
        another server's port (which would stop the SDK's own search).
    """
    if client_host(client) is not None:
        return None
    return await _off_the_loop(_lm_studio_host, model)


def _lm_studio_host(model: str | None) -> str:
    """Search the default ports: the ``HOST:PORT`` LM Studio answers on, past no other server.

    Raises
    ------
    LMStudioConnectionError
        As `search_for_async_client`.
    """
    found, skipped = search_default_ports()
    if found is None:
        raise no_server_error(model, skipped)
    if stopping := _stopping_the_sdk(skipped):
        raise _behind_another_server(found, stopping[0], model)
    return found


def _stopping_the_sdk(
    skipped: list[tuple[str, BaseException]],
) -> list[tuple[str, BaseException]]:
    """Return the servers of ``skipped`` at which the SDK's own search of the ports stops.

    Its probe reads a status other than 200, and JSON that is not the greeting, as nothing
    there, and goes on (``Client._check_probe_response``): LM Studio behind a web server's
    404 is found by it (refused here before; found by a probe). Other answers stop it: 200
    with a body that is not JSON raises, and a server that is silent or streams holds it.
    """
    return [(host, error) for host, error in skipped if not isinstance(error, OtherAnswerError)]


async def _off_the_loop(work: Callable[..., _T], *args: Any) -> _T:
    """Run blocking ``work`` in a daemon thread of its own, and await its result.

    Hand-written because ``asyncio.to_thread`` runs it in the loop's default executor,
    whose threads ``asyncio.run`` waits for as it ends, and anyio's worker threads are
    waited for at the interpreter's exit: a search left by a cancelled first call (up to
    `PROBE_SECONDS` a port) held the end of ``asyncio.run`` until it ended (found by a
    probe: 4.0 s behind two servers that stream). A caller that leaves lets it end in its
    thread, unread.
    """
    done: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        if not done.set_running_or_notify_cancel():  # the caller left before it started
            return
        try:
            done.set_result(work(*args))
        except BaseException as exc:  # handed to the caller
            done.set_exception(exc)

    threading.Thread(target=run, name="outlines-lmstudio-search", daemon=True).start()
    return await asyncio.wrap_future(done)


async def enter_async_client(
    client: lms.AsyncClient,
    model: str | None = None,
    connect_seconds: float | None = None,
    found: str | None = None,
) -> None:
    """Enter an ``AsyncClient`` (``async with`` does the same), explaining a failed discovery.

    For a client with no host, call `search_for_async_client` first: the SDK's own search,
    run here on entry, stops at another server's port and has no deadline.

    Parameters
    ----------
    client
        A client that is not entered yet.
    model
        The model key, for the error message.
    connect_seconds
        The longest the entering (connecting) may take, not counting our search of the
        default ports, which has bounds of its own and is not a connection: it counted
        against ``connect_timeout`` and was reported as a websocket handshake timeout
        (found by a review).
    found
        Where our search found LM Studio, for a client with no host: the SDK searches
        again on entry, and each default port before that one may take its probe's whole
        `SDK_PROBE_SECONDS` (a port that drops connections), which is given on top of
        ``connect_seconds`` (found by a probe: it spent ``connect_timeout=1``, and the
        client was closed as if the handshake had timed out).

    Raises
    ------
    LMStudioConnectionError
        The client has no host and nothing answered on any default port, or the process
        has no file descriptor to spare.
    lmstudio.LMStudioError
        Any other failure, as the SDK raised it (the caller translates it).
    TimeoutError
        The entering took longer than ``connect_seconds``.
    """
    discovering = client_host(client) is None
    if connect_seconds is not None and discovering and found is not None:
        before = DEFAULT_PORTS.index(int(found.rsplit(":", 1)[1]))
        connect_seconds += SDK_PROBE_SECONDS * before
    try:
        async with asyncio.timeout(connect_seconds):
            await client.__aenter__()
    except lms.LMStudioClientError as exc:
        if discovering and client_host(client) is None:
            raise (
                no_server_error(model) if found is None else _sdk_search_failed(found, model)
            ) from exc
        host = client_host(client)
        if not discovering and host is not None:
            other = await _off_the_loop(other_server_error, host, model)
            if other is not None:
                raise other from exc
        raise
    except NOT_LM_STUDIO as exc:
        if discovering and client_host(client) is None:
            raise await _off_the_loop(_search_error, model) from exc
        host = client_host(client)
        # An answer that is not JSON (a web page) escaped as json's own error (a probe).
        if not discovering and host is not None and not isinstance(exc, httpx.TimeoutException):
            raise not_lm_studio_error(host, model, exc) from exc
        raise
    except OSError as exc:
        if not out_of_files(exc):
            raise
        # Out of descriptors before any request (httpx's TLS context reads its certificate
        # file): the SDK lets the OSError out as it is (found by a test of the async front).
        where = client_host(client) or "its default ports"
        raise LMStudioConnectionError(
            f"Cannot connect to LM Studio at {where}: {type(exc).__name__}: {exc}",
            model=model,
            hint=files_hint(exc),
        ) from exc
    finally:  # found, even if what listens there then failed (errors say it was searched)
        if discovering and client_host(client) is not None:
            mark_searched(client)


def other_server_error(host: str, model: str | None) -> LMStudioConnectionError | None:
    """Probe a host given whose connection failed: the error if another server holds it.

    The SDK says "not reachable ... Is LM Studio running?" for a port where a web server
    answers 404 or HTML, which sends the user to start LM Studio rather than to check the
    port (found by a probe; the CLI said it right). Run after a connection failed only.

    A host name that does not resolve was also told to start LM Studio (the async SDK's
    error does not even keep the resolver's words): found by a probe.

    Returns
    -------
    LMStudioConnectionError | None
        `not_lm_studio_error`; an error naming a host name that does not resolve; or
        ``None`` when LM Studio or nothing answers there, or a server that takes the
        connection and says nothing (LM Studio frozen?): the SDK's words stand.
    """
    # The name first: a misspelt one needs no probe, and a resolver that cannot be asked
    # (a slow one's 2 s a lookup, found by a review) is not asked again by the probe.
    known, why = _lookup(host)
    if why is not None:
        return LMStudioConnectionError(
            f"Cannot connect to LM Studio: {why}.",
            host=host,
            model=model,
            hint="Check the spelling of the host name given to lms.Client(...) (or "
            "lms.AsyncClient), e.g. localhost:1234 for LM Studio on this machine.",
        )
    if not known:
        return None  # the resolver could not be asked: nothing to probe, the SDK's words stand
    try:
        is_lm_studio(host)
    except (httpx.TimeoutException, httpx.InvalidURL, UnicodeError):
        # UnicodeError: a name IDNA cannot write (a..b), read as another server's answer
        # (a ValueError; found by a review): nothing answers there, the SDK's words stand
        return None
    except NOT_LM_STUDIO as exc:
        return not_lm_studio_error(host, model, exc)
    return None


def unresolved(host: str) -> str | None:
    """Say that ``host``'s name does not resolve, with the resolver's words; ``None`` if it does.

    Asked after a connection to ``host`` failed (nothing answered), to tell a misspelt host
    name from a server that is not running. The resolver's answer for a name that does
    not exist comes at once; one that cannot be reached is bounded by the system's own
    resolver settings.
    """
    return _lookup(host)[1]


def _lookup(host: str) -> tuple[bool, str | None]:
    """Look ``host``'s name up as the connection does.

    Returns whether it resolved, and, if the resolver said it has no address, that (with
    its words). The name as httpx sends it to the resolver (IDNA 2008, as ``raw_host``):
    Python's own encoding of ``faß.de`` is another name (found by a review).
    """
    try:
        url = httpx.URL(f"http://{host}")
        name = url.raw_host.decode("ascii")
        socket.getaddrinfo(name, url.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in _NO_SUCH_NAME:
            shown = url.host or name
            return False, f"the host name {shown!r} does not resolve ({exc.strerror})"
        return False, None
    except (OSError, UnicodeError, ValueError, httpx.InvalidURL):
        return False, None  # not a resolver's answer about the name
    return True, None


_NO_SUCH_NAME = {
    getattr(socket, code)
    for code in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY")
    if hasattr(socket, code)
}
"""The resolver's answers that the name has no address (not EAI_AGAIN or EAI_FAIL, a
resolver that could not be asked or failed: the name may well exist)."""


def not_lm_studio_error(
    host: str, model: str | None, seen: BaseException
) -> LMStudioConnectionError:
    """Return the error for a host given where another server answered ``seen`` (a probe's)."""
    return LMStudioConnectionError(
        f"The server at {host} is not LM Studio: {why_not_lm_studio(seen)}.",
        host=host,
        model=model,
        hint="Check the host and port: LM Studio's server listens on the port its Developer "
        "tab shows (1234 unless changed), as HOST:PORT with no scheme or path.",
    )


def _sdk_search_failed(found: str, model: str | None) -> LMStudioConnectionError:
    """Return the error for the SDK's search failing after ours found LM Studio at ``found``.

    "Nothing answered" was said though LM Studio had just answered our probe: the SDK's
    probe goes through the environment's proxy settings, ours does not (found by a probe).
    """
    return LMStudioConnectionError(
        f"Cannot connect to LM Studio: the client has no host; LM Studio answers at {found}, "
        "but the lmstudio SDK's own search of the default ports did not reach it.",
        model=model,
        hint=f'Pass that host: lms.Client("{found}") (or lms.AsyncClient("{found}")).'
        + proxy_note(),
    )


def _search_error(model: str | None) -> LMStudioConnectionError:
    """Search again, and explain why the SDK's discovery failed after ours found LM Studio.

    The servers on the default ports changed in between: the new search names another
    server's port if there is one (the search's own error, as `_lm_studio_host` makes it).
    """
    try:
        found = _lm_studio_host(model)
    except LMStudioConnectionError as exc:
        return exc
    return _sdk_search_failed(found, model)
