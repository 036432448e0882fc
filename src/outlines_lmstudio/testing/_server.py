"""`LMStudioEmulator`: the server, its background thread and its public controls."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import math
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, SupportsIndex

from outlines_lmstudio._install import install_command
from outlines_lmstudio.testing._catalogue import EmulatedModel
from outlines_lmstudio.testing._endpoints import CHANNEL_HANDLERS, RPC_HANDLERS
from outlines_lmstudio.testing._faults import Fault
from outlines_lmstudio.testing._protocol import Connection
from outlines_lmstudio.testing._records import Frame, Prediction, RecordedRequest, Upload
from outlines_lmstudio.testing._state import EmulatorState
from outlines_lmstudio.testing._surface import NAMESPACES

if TYPE_CHECKING:
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.http11 import Request, Response

__all__ = [
    "NAMESPACES",
    "REMOTE_HINT",
    "EmulatorExposedWarning",
    "LMStudioEmulator",
    "exposed_notice",
    "is_loopback",
    "require_extra",
]

_MAX_FRAME = 1 << 30  # an image upload is a single base64 frame
_CLOSE_GRACE = 3.0
"""How long stop() lets clients take their close frame (websockets' close_timeout is 2 s)."""
_GREETING = '{"lmstudio": true}'
_PORT_ATTEMPTS = 20  # to find one free port on every address of the host (port 0)


class EmulatorExposedWarning(UserWarning):
    """The emulator listens outside loopback (``allow_remote=True``)."""


REMOTE_HINT = "Pass allow_remote=True (CLI: --allow-remote) to bind it anyway."
"""The end of the refusal of a host outside loopback (the command line says it its own way)."""


def exposed_notice(host: str) -> str:
    """Say that the emulator binds ``host``, outside loopback, with no access control.

    The text of `EmulatorExposedWarning`, which the emulator command prints itself.
    """
    return (
        f"The LM Studio emulator binds {host!r}: any machine that can reach it "
        "can use it (it has no access control)."
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only the loopback interface (``127.0.0.0/8``, ``::1``, localhost)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a host name or "": it may resolve to any interface
    # ::ffff:127.0.0.1 is 127.0.0.1 (Python 3.11's is_loopback says no: found by a probe).
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


# HOST:PORT, as LM Studio's address and the CLI's other --host options are written.
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:\[\]/]*):([0-9]+)")


def _check_address(host: str) -> None:
    """Refuse a ``host`` written with a port or as a URL (it was "not a loopback address").

    Raises
    ------
    ValueError
        Naming the address and the port to give instead.
    """
    if not host.strip():  # found by a probe: it served, and printed ":PORT" as its host
        raise ValueError(
            f"host={host!r} is empty: give an address, e.g. host='127.0.0.1' "
            "(CLI: --host 127.0.0.1), or '0.0.0.0' with allow_remote=True for every interface"
        )
    if host != host.strip():  # found by a probe: "not a loopback address"
        raise ValueError(
            f"host={host!r} has spaces or a line end around it: give host={host.strip()!r}"
        )
    if "://" in host:
        raise ValueError(
            f"host={host!r} is a URL: give the address alone, and the port as port= "
            "(e.g. host='127.0.0.1', port=1234; CLI: --host 127.0.0.1 --port 1234)"
        )
    try:
        mapped = getattr(ipaddress.ip_address(host.strip("[]")), "ipv4_mapped", None)
    except ValueError:
        mapped = None
        if re.fullmatch(r"[0-9]+(\.[0-9]+){3}", host):  # found by a probe: "not loopback"
            raise ValueError(
                f"host={host!r} is not an IPv4 address: write four numbers from 0 to 255, "
                "without leading zeros (e.g. host='127.0.0.1')"
            ) from None
    if mapped is not None:  # found by a probe: a raw "[Errno 22] Invalid argument" at bind
        raise ValueError(
            f"host={host!r} is an IPv4 address written as IPv6 (IPv4-mapped), which the "
            f"emulator cannot listen on: give host={str(mapped)!r}"
        )
    written = _HOST_PORT.fullmatch(host)
    if written is not None:
        address, port = written.group(1), written.group(2)
        raise ValueError(
            f"host={host!r} holds a port: give host={address!r}, port={port} "
            f"(CLI: --host {address} --port {port})"
        )


def require_extra() -> None:
    """Raise an `ImportError` with the install line if the emulator's extra is missing."""
    import importlib.util

    for module in ("websockets", "outlines_core"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(
                f"The LM Studio emulator needs {module!r}, which is not installed. "
                f"Install it with: {install_command('testing')}",
                name=module,
            )


class LMStudioEmulator(EmulatorState):
    """A local server that speaks LM Studio's websocket protocol.

    The unmodified ``lmstudio`` SDK (``lms.Client``, ``lms.AsyncClient`` and
    the module-level API) works against it over loopback. It runs its own
    event loop in a background thread, so sync and async code can use it.
    ``with`` blocks nest: only the outermost one stops it (a ``with`` on the
    pytest fixture's emulator leaves it running for the next test).

    Parameters
    ----------
    models
        The catalogue (`default_models` when None).
    host
        The address to listen on (a loopback address unless ``allow_remote``).
    port
        The port to listen on; 0 picks a free port (the same one on every address of a
        name such as ``localhost``, which may be ``::1`` and ``127.0.0.1``).
    seed
        Seed of the deterministic text and the JSON sampler.
    slots
        Parallel prediction slots per loaded instance (LM Studio's default is 4);
        further predictions wait for a free slot.
    token_latency
        Seconds per fragment: the engine's pace. Fragment ``k`` is due ``k`` times this
        after generation starts; one sent late does not delay the later ones.
    prompt_latency
        Seconds of prompt processing before the first fragment, with progress reports
        (``promptProcessingProgress``) at least every 0.25 s, as LM Studio sends them.
        Synthetic models only: a GGUF model's prompt takes its real time, reported
        after each batch of tokens llama.cpp evaluates.
    unknown_endpoint
        What an endpoint LM Studio does not have, or a parameter that breaks
        LM Studio's schema for its endpoint (as the SDK's structs state it), gets:
        ``"warning"`` (the default, as LM Studio) only sends a
        ``communicationWarning``, and the caller waits; ``"error"`` answers with
        an error instead. Endpoints LM Studio has but the emulator does not serve
        always get an error.
    validate_frames
        Check every message against the SDK's wire schemas and record the
        problems in `protocol_violations` (the drift guard).
    load_latency
        Seconds a model load takes (spread over its progress reports).
    presets
        Preset names accepted by ``preset=``. By default there are none, so a
        ``preset=`` fails with LM Studio's "preset not found" error; None
        accepts any name (lenient).
    allow_remote
        Allow a ``host`` outside loopback (``"0.0.0.0"``, ``"::"``, a LAN
        address). The emulator has no access control, so this is refused
        unless set, and warns (`EmulatorExposedWarning`) when set.
    only_keep_last_jit_model
        LM Studio's default: a model loaded on demand (``getOrLoad``, a JIT
        model) unloads the other JIT models, and the client is told with
        ``unloadingOtherJITModel``. False keeps them all loaded. JIT models
        also honour the client's ``ttl``: unused that long, they are unloaded.
    max_records
        None (the default, for tests) keeps every record until `reset`. A number,
        for a server that runs for long (the ``emulator`` command keeps 1000), keeps
        at most that many of each of `requests`, `predictions`, `uploads`,
        `protocol_violations` and `trace` (the newest), with long strings shortened
        in the trace and in request parameters, and drops the bytes of a client's
        uploads (``Upload.data``, ``Prediction.images``) when the client is gone.
    cors
        Take connections from web pages. A browser sends an ``Origin`` header, which the
        SDKs do not: such a connection is refused (HTTP 403) unless this is set, since any
        page the user opens could otherwise drive the emulator and read what it serves
        (a browser applies no same-origin rule to websockets). LM Studio's server has the
        same switch, off by default (``lms server start --cors``).

    Raises
    ------
    ValueError
        If a setting is of the wrong type or out of range, or ``host`` is not an address
        to listen on (empty, a URL, with a port), or not a loopback address without
        ``allow_remote``.
    TypeError
        If ``models`` is not a list of `EmulatedModel`.

    Examples
    --------
    >>> import lmstudio as lms
    >>> with LMStudioEmulator() as emu, lms.Client(emu.api_host) as client:
    ...     text = client.llm.model("qwen2.5-7b-instruct").respond("Hi").content
    """

    def __init__(
        self,
        models: Sequence[EmulatedModel] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        slots: int = 4,
        token_latency: float = 0.0,
        prompt_latency: float = 0.0,
        unknown_endpoint: Literal["error", "warning"] = "warning",
        validate_frames: bool = False,
        load_latency: float = 0.0,
        presets: Collection[str] | None = (),
        allow_remote: bool = False,
        only_keep_last_jit_model: bool = True,
        max_records: int | None = None,
        cors: bool = False,
    ) -> None:
        if max_records is not None and (
            isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1
        ):
            raise ValueError(f"max_records must be None or an integer >= 1, not {max_records!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 (a free port) to 65535, not {port!r}")
        if not isinstance(host, str):  # found by an audit: 'int' object has no attribute 'strip'
            raise ValueError(f"host must be an address as a string, e.g. '127.0.0.1', not {host!r}")
        for name, flag in (("allow_remote", allow_remote), ("cors", cors)):
            if not isinstance(flag, bool):  # found by an audit: allow_remote="no" allowed it
                raise ValueError(f"{name} must be True or False, not {flag!r}")
        _check_address(host)
        if not is_loopback(host):
            if not allow_remote:
                raise ValueError(
                    f"host={host!r} is not a loopback address (127.x.x.x written in full, ::1 or "
                    "localhost): the emulator would accept "
                    "connections from other machines, and it has no access control. "
                    f"{REMOTE_HINT}"
                )
            warnings.warn(exposed_notice(host), EmulatorExposedWarning, stacklevel=2)
        super().__init__(
            models,
            seed=seed,
            slots=slots,
            token_latency=token_latency,
            prompt_latency=prompt_latency,
            unknown_endpoint=unknown_endpoint,
            validate_frames=validate_frames,
            load_latency=load_latency,
            presets=presets,
            only_keep_last_jit_model=only_keep_last_jit_model,
            max_records=max_records,
        )
        self._host = host.strip("[]")  # "[::1]" binds as "::1"
        self._requested_port = port
        self._cors = cors
        self._port: int | None = None
        self._last_port = 0  # the port it served on before its last stop (0: none yet)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._lifecycle = threading.Lock()
        self._depth = 0  # open ``with`` blocks: the outermost one stops the server
        self._sockets: set[ServerConnection] = set()  # every TCP connection, handshaken or not
        self._settled = True  # from here on, a new public attribute is a misspelt setting

    # -- lifecycle ------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address it listens on (IPv6 without brackets), as given when it was made."""
        return self._host

    @host.setter
    def host(self, value: str) -> None:
        # Found by a probe: an assignment was kept without the checks of `__init__` (a host
        # outside loopback served without allow_remote=True or a warning, on the next
        # start) and outlived the fixture's reset; on a running emulator, `api_host` named
        # an address it did not listen on.
        raise AttributeError(
            f"host is fixed when the emulator is made (it is {self._host!r}): make another "
            "one, LMStudioEmulator(host=...), to listen elsewhere"
        )

    @property
    def api_host(self) -> str:
        """``"HOST:PORT"`` for ``lms.Client(api_host)`` (IPv6 in brackets: ``[::1]:PORT``)."""
        if self._port is None:
            raise RuntimeError("The LM Studio emulator is not running: call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

    @property
    def running(self) -> bool:
        """Whether the server is running."""
        return self._thread is not None

    def start(self) -> LMStudioEmulator:
        """Start serving in a background thread (returns self).

        Started again after `stop`, it serves on the port it had when that port is free (a
        model of this library made before the stop reconnects there, as to LM Studio started
        again; an SDK client made by hand does not, with LM Studio either), else on a new
        one; a ``port=`` given to it is used every time.

        Raises
        ------
        ImportError
            If the ``testing`` extra (websockets, outlines-core) is not installed.
        """
        require_extra()
        with self._lifecycle:
            if self._thread is not None:
                return self
            with self._lock:
                self._slots = {}  # a restart has a new event loop: its own semaphores
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._run, args=(loop, ready, failure), name="lmstudio-emulator", daemon=True
            )
            thread.start()
            ready.wait()
            if failure:
                thread.join()
                raise failure[0]
            self._loop, self._thread = loop, thread
            self._served_from = os.getpid()
        return self

    def stop(self) -> None:
        """Stop serving: close every socket, join the thread, free the models (idempotent).

        A connection still in its opening handshake is closed at once, not after
        websockets' ``open_timeout``.

        A GGUF model's weights are freed; a restart reads them again when it first
        needs them.

        In a process forked from the one that started it (``os.fork()``, multiprocessing's
        ``fork``), it does nothing: the server thread is the parent's, and keeps serving
        until the parent stops it.

        Raises
        ------
        RuntimeError
            If called from the emulator's own thread (a scripted reply function), which
            would wait for itself.
        """
        if self._in_forked_child():
            return  # the parent's server thread: this process has none to stop or wait for
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "LMStudioEmulator.stop() was called from the emulator's own thread (a "
                "scripted reply function?); it would wait for itself. Stop it from your test."
            )
        with self._lifecycle:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                future.result(timeout=15)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=15)
                self._loop = self._thread = self._server = None
                self._last_port = self._port or 0
                self._port = self._served_from = None
                self._remove_file_dir()
                with self._lock:
                    # llama.cpp engines hold their model's weights and KV cache (hundreds
                    # of MB), which a stopped emulator kept for as long as it lived.
                    self._engines = {}

    # -- copies: an emulator owns its server ------------------------------------------------
    def __copy__(self) -> NoReturn:
        """Refuse a copy: it would share this server, and its ``stop()`` would stop both.

        Raises
        ------
        TypeError
            Always (found by a probe: the copy's ``stop()`` closed the original's event
            loop, whose ``with`` block then failed).
        """
        raise TypeError(self._no_copy("be copied (copy.copy)"))

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        """Refuse a deep copy; see `__copy__`."""
        raise TypeError(self._no_copy("be deep-copied (copy.deepcopy)"))

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        """Refuse to pickle it; see `__copy__`."""
        raise TypeError(self._no_copy("be pickled"))

    def _no_copy(self, what: str) -> str:
        return (
            f"An LMStudioEmulator cannot {what}: it owns a server thread and its sockets. "
            "Start another with LMStudioEmulator(...) where one is needed, and pass its "
            "api_host (a string) to other processes; copy its records (emulator.predictions, "
            "emulator.requests), which copy and pickle."
        )

    def __enter__(self) -> LMStudioEmulator:
        self.start()
        with self._lifecycle:
            self._depth += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._close_block():
            self.stop()

    async def __aenter__(self) -> LMStudioEmulator:
        starting = asyncio.ensure_future(asyncio.to_thread(self.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # The start goes on in its thread, and no __aexit__ will come: stop what it
            # started (found by a probe: a task cancelled here left the server running).
            starting.add_done_callback(self._undo_start)
            raise
        with self._lifecycle:
            self._depth += 1
        return self

    def _undo_start(self, starting: asyncio.Future[LMStudioEmulator]) -> None:
        """Stop the server a cancelled ``async with`` started, unless a block holds it."""
        if starting.cancelled() or starting.exception() is not None:
            return
        with self._lifecycle:
            held = self._depth > 0
        if not held:  # stop() waits for the server thread: not on the event loop
            threading.Thread(target=self.stop, name="lmstudio-emulator-stop").start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._close_block():
            await asyncio.to_thread(self.stop)

    def _close_block(self) -> bool:
        """Close one ``with`` block; return whether it was the outermost (stop then)."""
        with self._lifecycle:
            self._depth = max(0, self._depth - 1)
            return self._depth == 0

    def _run(
        self, loop: asyncio.AbstractEventLoop, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        from websockets.asyncio.server import serve

        async def serve_on(port: int) -> Server:
            return await serve(
                self._handle,
                self.host,
                port,
                create_connection=_tracked(self._sockets),
                process_request=self._process_request,
                max_size=_MAX_FRAME,
                compression=None,
                ping_interval=None,
                close_timeout=2,
            )

        async def open_server() -> Server:
            if not self._requested_port and self._last_port:
                # Started again: on the port it had when it can (clients made before its
                # stop reconnect there, as to LM Studio started again; found by a probe).
                with contextlib.suppress(OSError):
                    return await serve_on(self._last_port)
            server = await serve_on(self._requested_port)
            for _ in range(_PORT_ATTEMPTS):
                ports = [sock.getsockname()[1] for sock in server.sockets]
                if len(set(ports)) == 1:
                    return server
                # Port 0 on a name with several addresses ("localhost": ::1 and
                # 127.0.0.1) gets a free port per address, and api_host names only one:
                # listen on the first one's port on every address.
                server.close()
                await server.wait_closed()
                try:
                    server = await serve_on(ports[0])
                except OSError:  # taken on another address: pick another one
                    server = await serve_on(0)
            server.close()
            await server.wait_closed()
            raise OSError(f"found no port free on every address of {self.host!r}")

        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(open_server())
            self._port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            failure.append(exc)
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _shutdown(self) -> None:
        from websockets.protocol import State

        if self._server is not None:
            self._server.close()
            # websockets waits for a connection still in its opening handshake until its
            # open_timeout (10 s): stop() took that long for a client that had connected
            # and sent nothing yet (found by a probe). Nothing is served on it: drop it.
            for sock in list(self._sockets):
                if sock.protocol.state is State.CONNECTING and sock.transport is not None:
                    sock.transport.abort()
            try:
                async with asyncio.timeout(_CLOSE_GRACE):
                    await asyncio.shield(self._server.wait_closed())
            except TimeoutError:
                # A client that reads nothing: its close frame waits behind replies it never
                # takes, and stop() hung past its 15 s (found by a probe). Drop it.
                for sock in list(self._sockets):
                    if sock.transport is not None:
                        sock.transport.abort()
                await self._server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/lmstudio-greeting":
            response = connection.respond(HTTPStatus.OK, _GREETING)
            # Headers is a multidict: assigning added a second Content-Type (found by a probe).
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        if path.strip("/") not in NAMESPACES:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not an LM Studio API path\n")
        # get_all: two Origin headers made `get` raise, an HTTP 500 and a logged traceback
        origins = request.headers.get_all("Origin")
        if origins and not self._cors:  # a web page's (found by a probe)
            return connection.respond(
                HTTPStatus.FORBIDDEN,
                f"The LM Studio emulator takes no connections from web pages (Origin: "
                f"{origins[0][:200]}); start it with cors=True (CLI: --cors) to allow them.\n",
            )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        assert ws.request is not None
        namespace = ws.request.path.split("?", 1)[0].strip("/")
        conn = Connection(self, ws, namespace, next(self._socket_ids))
        try:
            if not await conn.authenticate():
                await ws.close(1008, "authentication failed")
                return
            await conn.serve()
        except ConnectionClosed:
            pass
        finally:
            if conn.counted:  # counted by `_authenticate`, even if the reply never went
                self._release_client(conn.client_id)

    # -- public controls ------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Arm a `Fault`.

        Parameters
        ----------
        fault
            The fault: which endpoint it strikes, how, and for which model (``fault.model``:
            a key, path, alias or loaded identifier; ``None`` for every model).

        Raises
        ------
        KeyError
            If ``fault.model`` names no model (key, path or alias) and no loaded instance.
        TypeError
            If ``fault`` is not a `Fault`.
        ValueError
            If the emulator does not serve ``fault.endpoint`` (no request would meet it).
        RuntimeError
            If called in a process forked from the one that started the emulator.
        """
        self._refuse_in_forked_child("add_fault()")
        if not isinstance(fault, Fault):
            raise TypeError(
                f"add_fault() takes a Fault, not {type(fault).__name__} ({fault!r:.60}); "
                'e.g. emu.add_fault(Fault("predict", "error"))'
            )
        served = {endpoint for _, endpoint in (*RPC_HANDLERS, *CHANNEL_HANDLERS)}
        if fault.endpoint not in served:  # found by a probe: armed, and never struck
            raise ValueError(
                f"The emulator does not serve {fault.endpoint!r} (it answers it as not "
                "implemented, before any fault), so this fault would never strike; the "
                f"endpoints it serves: {', '.join(sorted(served))}"
            )
        model = None if fault.model is None else self._model_name(fault.model)
        self._faults.add(fault, model)

    def clear_faults(self) -> None:
        """Disarm every fault.

        Raises
        ------
        RuntimeError
            If called in a process forked from the one that started the emulator.
        """
        self._refuse_in_forked_child("clear_faults()")
        self._faults.clear()

    def load(self, key: str, identifier: str | None = None) -> str:
        """Load a new instance of a downloaded model, server-side; return its identifier.

        Parameters
        ----------
        key
            The model's key, path or alias in the emulator's catalogue.
        identifier
            The new instance's identifier; ``None`` gives the one LM Studio would (the key,
            then ``key:2``, ``key:3``... for further instances).

        Returns
        -------
        str
            The new instance's identifier.

        Raises
        ------
        KeyError
            If no downloaded model has that key, path or alias.
        TypeError
            If ``key`` or ``identifier`` is not a string.
        ValueError
            If a loaded instance already has that identifier.
        RuntimeError
            If called in a process forked from the one that started the emulator.
        """
        self._refuse_in_forked_child("load()")
        if not isinstance(key, str) or not isinstance(identifier, str | None):
            raise TypeError(
                f"load() takes a model key and an optional identifier, as strings, not "
                f"{key!r:.60} and {identifier!r:.60}"
            )
        with self._lock:
            model = self._catalogue.find_model(key)
            if model is None:
                raise KeyError(f"No downloaded model {key!r} in the emulator's catalogue")
            return self._catalogue.load(model, identifier).identifier

    def unload(self, identifier: str) -> None:
        """Unload a loaded instance, server-side (as if a user clicked in LM Studio).

        Parameters
        ----------
        identifier
            The loaded instance's identifier (`load` returns it).

        Raises
        ------
        KeyError
            If no loaded instance has that identifier.
        RuntimeError
            If called in a process forked from the one that started the emulator.
        """
        self._refuse_in_forked_child("unload()")
        with self._lock:
            if self._catalogue.unload(identifier) is None:
                raise KeyError(f"No loaded instance {identifier!r}")

    def reset(self) -> None:
        """Clear records, scripts and faults; restore the catalogue, loaded state and settings.

        Settings changed since the emulator was made (``emu.token_latency = 0.05``) get
        the values it was made with, so one test's changes do not reach the next. Files
        a still-connected client uploaded stay usable, as in LM Studio (a session's
        client may reuse its file handles); only the `uploads` records are cleared. A
        prediction still running (an earlier test's) takes no script given after the
        reset, and `peak_concurrency` does not count it.

        Raises
        ------
        RuntimeError
            If called in a process forked from the one that started the emulator.
        """
        self._refuse_in_forked_child("reset()")
        self._faults.clear()
        with self._lock:
            # Predictions still running belong to the test before: they run on in the slots
            # of the instances unloaded here (`_slots` is emptied below), take no script
            # given from now on and count in no peak (`_epoch`), as the records go.
            self._epoch += 1
            self._active = {}
            self._peak = {}
            self._recorder.clear()
            self._restore_settings()
            self._catalogue.reset()
            # A file belongs to its client's connection, which a reset does not close.
            self._files = {
                ident: upload
                for ident, upload in self._files.items()
                if upload.client_id in self._client_refs
            }
            self._slots = {}
            self._experiment_flags = set()
            self._restore_scripts()

    def peak_concurrency(self, model: str | None = None) -> int:
        """Most predictions generating at once: overall, or for one model or instance.

        Only predictions that arrived since the last `reset` count, as in `predictions`:
        one of an earlier test still running (hung, delayed) is not counted.

        Parameters
        ----------
        model
            An instance identifier, or a model key, path or alias (all its instances).

        Raises
        ------
        KeyError
            If no model or loaded instance has that name, and none had it.
        """
        with self._lock:
            if model is None:
                return self._peak.get("", 0)
            if f"id:{model}" not in self._peak:
                model = self._model_name(model)
            return max(self._peak.get(f"id:{model}", 0), self._peak.get(f"key:{model}", 0))

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll ``predicate`` until it is true (blocking; in async code use `await_until`).

        Parameters
        ----------
        predicate
            A function of no arguments, e.g. ``lambda: len(emu.predictions) == 2``.
        timeout
            Seconds to wait at most (a finite number >= 0).

        Raises
        ------
        TimeoutError
            If it is still false after ``timeout`` seconds (with the trace tail).
        TypeError, ValueError
            If ``predicate`` is not callable, or ``timeout`` is not a number of seconds >= 0.
        RuntimeError
            If called in a process forked from the one that started the emulator, whose
            records the server never updates.
        """
        self._refuse_in_forked_child("wait_until()")
        deadline = _wait_deadline(predicate, timeout)
        while not _checked_result(predicate, "wait_until"):
            if time.monotonic() > deadline:
                hint = ""
                with contextlib.suppress(RuntimeError):
                    asyncio.get_running_loop()
                    # The sleep below blocked the caller's event loop, so an async client
                    # in it never got to send what the predicate waits for.
                    # Every notebook cell runs in a loop (found by a probe): a hint, not a verdict.
                    hint = (
                        " (wait_until was called where an event loop runs, and blocked it: "
                        "if an async client on that loop was to act, use await "
                        "emu.await_until(...) instead)"
                    )
                raise self._not_met(timeout, hint)
            time.sleep(0.005)

    def _not_met(self, timeout: float, hint: str = "") -> TimeoutError:
        """Make the error of a wait that timed out, with the trace tail (why it never came)."""
        return TimeoutError(
            f"Condition not met within {timeout} s{hint}\n{self.format_trace(last=20)}"
        )

    # The same timeout as wait_until (not asyncio.timeout): its TimeoutError holds the
    # trace tail, which is what says why the condition never came.
    async def await_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Poll ``predicate`` until it is true, letting the caller's event loop run meanwhile.

        The `wait_until` of async tests: an ``lms.AsyncClient`` works in the test's own
        event loop, so a blocking wait would stop it from sending what is awaited.

        Parameters
        ----------
        predicate
            A function of no arguments, e.g. ``lambda: len(emu.predictions) == 2``.
        timeout
            Seconds to wait at most (a finite number >= 0).

        Raises
        ------
        TimeoutError
            If it is still false after ``timeout`` seconds (with the trace tail).
        TypeError, ValueError
            If ``predicate`` is not callable, or ``timeout`` is not a number of seconds >= 0.
        RuntimeError
            If called in a process forked from the one that started the emulator, whose
            records the server never updates.
        """
        self._refuse_in_forked_child("await_until()")
        deadline = _wait_deadline(predicate, timeout, "await_until")
        while not _checked_result(predicate, "await_until"):
            if time.monotonic() > deadline:
                raise self._not_met(timeout)
            await asyncio.sleep(0.005)

    # -- records ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every ``rpcCall`` and ``channelCreate`` received, oldest first."""
        self._refuse_in_forked_child("emu.requests")
        with self._recorder.lock:
            return list(self._recorder.requests)

    @property
    def predictions(self) -> list[Prediction]:
        """Every ``predict`` channel, oldest first."""
        self._refuse_in_forked_child("emu.predictions")
        with self._recorder.lock:
            return list(self._recorder.predictions)

    @property
    def uploads(self) -> list[Upload]:
        """Every uploaded file, oldest first."""
        self._refuse_in_forked_child("emu.uploads")
        with self._recorder.lock:
            return list(self._recorder.uploads)

    @property
    def trace(self) -> list[Frame]:
        """Every frame in and out (the most recent 20 000, or ``max_records``), oldest first."""
        self._refuse_in_forked_child("emu.trace")
        with self._recorder.lock:
            return list(self._recorder.trace)

    @property
    def protocol_violations(self) -> list[str]:
        """Messages that failed the SDK's wire schemas (with ``validate_frames=True``)."""
        self._refuse_in_forked_child("emu.protocol_violations")
        with self._recorder.lock:
            return list(self._recorder.violations)

    def format_trace(self, last: int | None = 50) -> str:
        """Render the last ``last`` frames (all if None), one per line.

        Parameters
        ----------
        last
            How many of the most recent frames to render; ``None`` for every recorded frame.

        Returns
        -------
        str
            A header line, then one line per frame: its time, direction, namespace, socket
            and abbreviated JSON.
        """
        self._refuse_in_forked_child("format_trace()")
        return self._recorder.format_trace(last)

    def __repr__(self) -> str:
        where = self.api_host if self._port is not None else "stopped"
        return f"<LMStudioEmulator {where} models={list(self._catalogue.models)}>"


def _tracked(sockets: set[ServerConnection]) -> type[ServerConnection]:
    """Return a `ServerConnection` class that keeps its open connections in ``sockets``.

    websockets lists only the connections past their opening handshake (``connections``);
    `LMStudioEmulator._shutdown` must also reach those still in it.
    """
    from websockets.asyncio.server import ServerConnection

    class TrackedConnection(ServerConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            sockets.add(self)

        def connection_lost(self, exc: Exception | None) -> None:
            sockets.discard(self)
            super().connection_lost(exc)

    return TrackedConnection


def _checked_result(predicate: Callable[[], object], name: str) -> bool:
    """Call a wait's predicate; refuse what it returns if it must be awaited (always true).

    An ``async def`` predicate, or a lambda around one, made a coroutine, which passed the
    wait at once, unchecked (found by a probe and a review). The first call comes before any
    wait, so it is refused at once.
    """
    result = predicate()
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # no "never awaited" warning on top of the error
        raise TypeError(
            f"{name}() takes a plain function, not an async one: {predicate!r:.60} returned "
            f"{type(result).__name__}, which the wait cannot await; read the records in a def "
            "or a lambda"
        )
    return bool(result)


def _wait_deadline(predicate: object, timeout: object, name: str = "wait_until") -> float:
    """Check the arguments of `LMStudioEmulator.wait_until` (or ``name``); return the deadline."""
    if not callable(predicate):
        raise TypeError(
            f"{name}() takes a function of no arguments, not {type(predicate).__name__}"
            " (e.g. lambda: len(emu.predictions) == 2)"
        )
    if isinstance(timeout, bool) or not (
        isinstance(timeout, int | float) and 0 <= timeout < math.inf
    ):
        raise ValueError(f"timeout must be a finite number of seconds >= 0, not {timeout!r}")
    return time.monotonic() + timeout
