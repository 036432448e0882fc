"""Translate ``lmstudio`` SDK exceptions into ours, with host, model and a hint."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any, Literal, TypeGuard, TypeVar

import lmstudio as lms
import msgspec

from ._cache import PerClient
from ._exhausted import files_hint, out_of_files
from ._forks import detach
from ._silence import StalledWait
from .errors import (
    LMStudioConnectionError,
    LMStudioModelNotFoundError,
    LMStudioPredictionError,
    LMStudioTimeoutError,
    OutlinesLMStudioError,
)

__all__ = [
    "Stage",
    "Unreadable",
    "SLOW_PROBE",
    "client_closed",
    "client_entered",
    "orphan",
    "orphan_parent_threads",
    "clipped",
    "proxy_note",
    "client_host",
    "client_in_other_loop",
    "closed_client_error",
    "forked_client_error",
    "from_sdk",
    "half_entered",
    "unplug_sessions",
    "websocket_descriptors",
    "other_loop_error",
    "stream_loop_error",
    "mark_searched",
    "prediction_channel",
    "release_unsent",
    "searched",
    "server_hint",
    "task_manager",
    "translate_sdk_error",
    "unreadable",
    "with_details",
]

Stage = Literal["resolve", "predict", "upload", "connect"]
E = TypeVar("E", bound=BaseException)

_START_HINT = (
    "Start LM Studio's server (Developer tab, or `lms server start`), check the host and "
    "port given to lms.Client(...) or lms.AsyncClient(...), or test against "
    "outlines_lmstudio.testing.LMStudioEmulator."
)

SLOW_PROBE = (
    "the lmstudio SDK waits 1 s for that first HTTP answer whatever connect_timeout= says, so "
    "a server this slow to answer cannot be used"
)
"""Why a server that accepted the connection but did not answer HTTP in time failed.

Before it connects, the lmstudio SDK asks the host over HTTP with a fixed 1 s limit of its
own (sync and async): ``connect_timeout=`` does not reach that request.
"""


_MOVED_HINT = (
    "This client was made without a host and keeps the port it found first on LM Studio's "
    "default ports; LM Studio may have stopped or moved (restarted on another port): start "
    "it, or make a new lms.Client() or lms.AsyncClient(), which searches the default ports "
    'again, or pass the host: lms.Client("HOST:PORT").'
)

_SEARCHED: PerClient[bool] = PerClient()


def mark_searched(client: lms.Client | lms.AsyncClient) -> None:
    """Record that ``client``, made without a host, had its host found on the default ports."""
    _SEARCHED.setdefault(client, True)


def searched(client: lms.Client | lms.AsyncClient) -> bool:
    """Say whether ``client``'s host was found on the default ports (see `mark_searched`)."""
    return _SEARCHED.get(client, False)


_PROXY_VARIABLES = ("ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY")


def proxy_note() -> str:
    """Say which proxy variables the environment sets, for a connection that failed ("").

    The lmstudio SDK connects through httpx, which reads them: a dead proxy, or a SOCKS one
    without ``socksio``, made LM Studio "not reachable" while it ran (found by a probe).
    """
    names = [n for n in _PROXY_VARIABLES if os.environ.get(n) or os.environ.get(n.lower())]
    if not names:
        return ""
    return (
        f" The environment sets {', '.join(names)}, which the lmstudio SDK connects through "
        "(httpx): for a local LM Studio set NO_PROXY=127.0.0.1,localhost, or unset them."
    )


_MOST_SDK_TEXT = 2_000
"""The most characters of an SDK error's text a message of ours quotes.

LM Studio's error text is quoted whole by the SDK (its title, ``displayData``, the model
name given): a 1 MB title made a 1 MB message and log line (found by a probe)."""


def clipped(text: str, most: int = _MOST_SDK_TEXT) -> str:
    """Cut the middle of ``text`` past ``most`` characters, saying how many were cut.

    The result, with what it says, is at most ``most`` characters long when ``most`` holds
    the saying (30 characters or so): clipped again, it stays as it is. It was clipped again
    a few characters longer, and the count said 33 characters where 49,750 had been cut
    (found by a probe).
    """
    if len(text) <= most:
        return text
    saying = len(f" ... ({len(text):,} characters cut) ... ")  # no shorter than the real one
    half = max((most - saying) // 2, 0)
    cut = len(text) - 2 * half
    return f"{text[:half]} ... ({cut:,} characters cut) ... {text[len(text) - half :]}"


def server_hint(more: str, searched: bool = False) -> str:
    """Return the hint for a host that took the connection but not as LM Studio, ``more`` after.

    ``searched``: the client was made without a host, its port found on the default ports.
    """
    if searched:
        return (
            f"Check that LM Studio's server (not another program) listens on that port{more}. "
            f"{_MOVED_HINT}"
        )
    return (
        f"Check that LM Studio's server (not another program) listens on that host and port{more}."
    )


_SAMPLES = (("availablePathsSample", "totalModels"), ("loadedModelsSample", "totalLoadedModels"))
"""The lists of models a "not found" error of LM Studio carries, and their totals."""


def _not_found_text(exc: lms.LMStudioError, text: str) -> str:
    """Say LM Studio's "not found" in one sentence, with a few of the models it has.

    Only when the server lists some: otherwise the SDK's text is kept as it is.

    The SDK's text holds the server's whole ``displayData`` as indented JSON and a
    suggestion; squashed on one line it made a 1,100-character message (found by a probe).
    The SDK's error stays the ``__cause__``, with all of it.
    """
    served = getattr(exc, "server_error", None)
    title = getattr(served, "title", None)
    shown = getattr(served, "display_data", None)
    if not isinstance(title, str) or not title or not isinstance(shown, Mapping):
        return text
    for sample, total in _SAMPLES:
        names = shown.get(sample)
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            count = shown.get(total)
            more = f" ({count} in all)" if isinstance(count, int) and count > 3 else ""
            return f"{_titled(exc, text)}; LM Studio has {', '.join(names[:3])}{more}."
    # No list to show: the SDK's text, whose cause and suggestion may be all there is
    # (found by a review: "Failed to load the model." alone lost why).
    return text


def _code(exc: lms.LMStudioError) -> object:
    """Return the ``code`` of LM Studio's error data (``generic.pathNotFound``...), if any."""
    shown = getattr(getattr(exc, "server_error", None), "display_data", None)
    return shown.get("code") if isinstance(shown, Mapping) else None


_DRAFT_NOT_FOUND = 'Cannot find model "'
"""The start of LM Studio's title for a prediction's draft model it does not have."""


def _draft_not_found(title: str, model: str | None) -> bool:
    """Whether LM Studio's ``title`` says a prediction's draft model is not there.

    Not when it names the main model (a review: that was told as a draft model's).
    """
    if not title.startswith(_DRAFT_NOT_FOUND):
        return False
    return title[len(_DRAFT_NOT_FOUND) :].partition('"')[0] != model


def _titled(exc: lms.LMStudioError, text: str) -> str:
    """Say LM Studio's error by its title and cause, without its data as JSON."""
    served = getattr(exc, "server_error", None)
    title = getattr(served, "title", None)
    if not isinstance(title, str) or not title:
        return text
    cause = getattr(served, "cause", None)
    why = f" ({cause.rstrip('.')})" if isinstance(cause, str) and cause else ""
    return clipped(title.rstrip(".") + why)  # it quotes names given (a 100 KB preset's)


def client_host(client: lms.Client | lms.AsyncClient) -> str | None:
    """Return the host a client talks to, or ``None`` if not yet resolved."""
    try:
        return client.api_host
    except lms.LMStudioError:
        return None


def client_closed(client: object) -> bool:
    """Tell whether an ``lmstudio`` client was closed (``close()``, ``aclose()``, its ``with``).

    The SDK has no public flag, and a closed client fails with errors that do not say so
    (``RuntimeError: ... is currently inactive``, a cancelled future, "not reachable").
    Its task manager knows: it was activated when the client opened, and is no longer
    active once the client closed. ``False`` when the SDK's internals are not as expected.
    """
    manager = task_manager(client)
    if getattr(manager, "activated", False) is not True:
        return False
    return getattr(manager, "active", True) is False or _closing(client) or _loop_closed(manager)


def _loop_closed(manager: object) -> bool:
    """Tell whether the event loop an ``AsyncClient``'s task manager runs in was closed.

    ``asyncio.run`` cancels the client's tasks before it closes its loop, and the manager is
    no longer active; a loop closed by hand (``loop.close()``) leaves it active in a loop
    that will never run again (found by a probe: every later call was told to call the
    model "from that loop", and ``model.client`` could not be given a new client). Such a
    client is as closed as one whose loop ``asyncio.run`` ended.
    """
    loop = getattr(manager, "_event_loop", None)
    return isinstance(loop, asyncio.AbstractEventLoop) and loop.is_closed()


def orphan(client: object) -> None:
    """In a forked child, make a sync client of the parent close at once, doing nothing.

    Its websocket thread does not exist in the child, and the SDK's close, also run by its
    finalizer when the client is collected or when the child exits, asked that thread's
    event loop to stop and waited for the answer forever. Found by a probe: a worker that
    gave its model a client of its own (as the fork error's hint says) dropped the last
    reference to the parent's client, and hung; a gunicorn ``--preload`` worker took the
    whole graceful timeout to exit. With no loop, the SDK's own termination returns at once;
    and the client's exit stack, whose sessions (opened by a call in the parent) would ask
    that loop to say goodbye (a review: the SDK's ``RuntimeError`` traceback at every
    child's exit), is emptied: ``ExitStack.pop_all``, the callbacks dropped unrun.
    """
    manager = task_manager(client)
    if getattr(manager, "_event_loop", None) is not None:
        manager._event_loop = None
    resources = getattr(client, "_resources", None)
    if isinstance(resources, contextlib.ExitStack):
        resources.pop_all()


def orphan_parent_threads() -> None:
    """At a forked child's exit, give every websocket thread of the parent's clients no loop.

    The SDK's thread object has a finalizer of its own, run at exit, that asks the thread's
    event loop to stop and waits for the answer; in the child the thread was not copied,
    so a child ending with ``sys.exit()`` (or by returning: gunicorn's workers) waited
    forever, and so did the client's own finalizer (its sessions' goodbye). `orphan`
    settles the clients given to a model at the fork; this settles the others, as
    `orphan` does: a client used through the SDK alone, and one closed just before the
    fork, whose thread had not yet ended (found by a flaky test: about one child in five
    hung then). No registry of the SDK's clients is public, so they are found among the
    live objects, once, at the child's exit: a thread of the parent is not alive in the
    child, and a client or thread the child started itself is left to close as it should.
    """
    for thing in gc.get_objects():
        if isinstance(thing, lms.Client):  # its sessions' goodbye would wait too
            thread = getattr(thing, "_ws_thread", None)
            if isinstance(thread, threading.Thread) and not thread.is_alive():
                orphan(thing)
        elif isinstance(thing, threading.Thread) and not thing.is_alive():
            manager: Any = getattr(thing, "_task_manager", None)
            if getattr(manager, "_event_loop", None) is not None:
                manager._event_loop = None


def client_entered(client: object) -> bool:
    """Tell whether an ``AsyncClient`` is entered and open: its task manager runs.

    ``False`` when the SDK's internals are not as expected.
    """
    return getattr(task_manager(client), "active", False) is True


def websocket_descriptors(client: object) -> list[int]:
    """Return the file descriptors of an ``AsyncClient``'s open websockets, one per session.

    Read through the SDK's sessions to httpcore's stream, whose ``"socket"`` is public
    there. Empty when the SDK's internals are not as expected, or nothing is open (a
    closed socket's ``fileno()`` is -1).
    """
    sessions = getattr(client, "_sessions", None)
    if not isinstance(sessions, dict):
        return []
    found = []
    for session in sessions.values():
        websocket = getattr(getattr(session, "_lmsws", None), "_ws", None)
        extra_info = getattr(getattr(websocket, "stream", None), "get_extra_info", None)
        try:
            socket = extra_info("socket") if callable(extra_info) else None
        except Exception:  # anyio reads every address for any attribute: a socket gone bad
            continue
        descriptor = getattr(socket, "fileno", lambda: -1)()
        if isinstance(descriptor, int) and descriptor >= 0:
            found.append(descriptor)
    return found


def unplug_sessions(client: object) -> None:
    """In a forked child, make an ``AsyncClient``'s sessions the parent's no more.

    Each websocket's descriptor is detached (`_forks.detach`), and each session is left
    without its websocket, so that the SDK used directly refuses at once ("Session must be
    connected", its own error) where it waited for a reply that could not come (found by a
    probe). Nothing when the SDK's internals are not as expected.
    """
    detach(websocket_descriptors(client))
    sessions = getattr(client, "_sessions", None)
    for session in sessions.values() if isinstance(sessions, dict) else ():
        if getattr(session, "_lmsws", None) is not None:
            session._lmsws = None


def half_entered(client: object) -> bool:
    """Tell whether an ``AsyncClient`` whose entering failed opened some of its sessions.

    Its ``__aenter__`` opens the sessions only when it has none, and ``aclose()`` does not
    forget them: a client left with some cannot be entered again (every later call then
    failed with ``KeyError: 'llm'``; found by a probe). ``False`` when the SDK's internals
    are not as expected.
    """
    return bool(getattr(client, "_sessions", None))


def task_manager(client: object) -> Any:
    """Return the SDK's task manager of a client (``None`` if its internals differ).

    Its ``active`` is ``False`` once the client is closed (see `client_closed`).
    """
    manager = getattr(client, "_task_manager", None)  # AsyncClient
    if manager is None:  # Client: the manager of its websocket thread
        manager = getattr(getattr(client, "_ws_thread", None), "task_manager", None)
    return manager


def _closing(client: object) -> bool:
    """Tell whether a client's ``close()`` or ``aclose()`` has begun (its manager still active).

    See `_sync_closing` and `_async_closing`.
    """
    if isinstance(client, lms.Client):
        return _sync_closing(client)
    return _async_closing(client)


def _sync_closing(client: lms.Client) -> bool:
    """Tell whether a sync ``Client``'s ``close()`` has begun (its manager is still active).

    ``close()`` unwinds the client's exit stack: it disconnects the sessions (the last made
    first), then forgets them (``_sessions.clear``), and only then stops the websocket
    thread; calls running meanwhile fail as if the connection were lost ("Client
    unexpectedly disconnected") or LM Studio were not there ("not reachable"). What
    ``close()`` has unwound is out of the stack: its ``_sessions.clear`` no longer in it
    means the client is closing, and so does a session the client lists that is not in it,
    unless another thread is making that session: the SDK lists a new session and pushes
    it on the stack just after, without a lock (a review found an open client reported
    closed). That thread pushes it within its next turn, while a closing client only goes
    on unwinding, so a session missing is looked at again for up to `_SESSION_PUSHED`
    seconds. This library never takes anything out of that stack (it disconnects sessions
    with ``disconnect()``, which leaves them there). ``False`` when the SDK's internals are
    not as expected.
    """
    deadline = None
    while True:
        unwound = _sync_unwound(client)
        if unwound != "session":
            return unwound == "cleared"
        now = time.monotonic()
        deadline = now + _SESSION_PUSHED if deadline is None else deadline
        if now >= deadline:
            return True
        time.sleep(0.001)  # lets the thread making the session push it


_SESSION_PUSHED = 0.05
"""Seconds a session listed but not on the exit stack is given to be pushed there."""


def _sync_unwound(client: lms.Client) -> str | None:
    """Return what of a sync client's exit stack is gone: ``"cleared"``, ``"session"``, None."""
    callbacks = getattr(getattr(client, "_resources", None), "_exit_callbacks", None)
    sessions = getattr(client, "_sessions", None)
    if callbacks is None or not isinstance(sessions, dict):
        return None
    try:
        held = [callback for _, callback in list(callbacks)]
        listed = list(sessions.values())
    except (TypeError, ValueError, RuntimeError):  # changed while read, or not as expected
        return None
    if not any(getattr(callback, "__wrapped__", None) == sessions.clear for callback in held):
        return "cleared"
    owners = {id(getattr(callback, "__self__", None)) for callback in held}
    return "session" if any(id(session) not in owners for session in listed) else None


def _async_closing(client: object) -> bool:
    """Tell whether an ``AsyncClient``'s ``aclose()`` has begun (its manager is still active).

    ``aclose()`` disconnects the sessions in the reverse order they were opened, the system
    session first, and only then stops the manager; calls running meanwhile fail as if the
    connection were lost. This library never disconnects the system session (it reconnects
    ``llm`` and ``files`` only), so once it is disconnected the client is closing.
    """
    if not isinstance(client, lms.AsyncClient):
        return False
    try:
        system = client.system
    except KeyError:  # not entered (yet), or closed while its sessions were being opened
        return _unwound_while_entering(client)
    return not system.connected


def _unwound_while_entering(client: lms.AsyncClient) -> bool:
    """Tell whether ``aclose()`` ran while ``client`` was being entered.

    Entering pushes the task manager on the client's exit stack, then each session it
    lists, one by one (the one being opened is listed, not yet pushed); ``aclose()`` unwinds
    that stack, so it holds fewer than that once the client is closing (found by a probe of
    random sequences: the next session's failure said LM Studio "is not reachable").
    ``False`` when the SDK's internals are not as expected.
    """
    callbacks = getattr(getattr(client, "_resources", None), "_exit_callbacks", None)
    sessions = getattr(client, "_sessions", None)
    if callbacks is None or not isinstance(sessions, dict) or not sessions:
        return False
    return len(callbacks) < len(sessions)


def release_unsent(exc: BaseException) -> None:
    """Close the coroutines that ``exc``'s traceback holds and nobody ever started.

    A sync ``lmstudio.Client`` closed (from another thread) while a call reads its reply:
    the SDK builds ``rx_queue.get()`` and only then finds its event loop gone
    (``_rx_queue_get_threadsafe``: ``RuntimeError: ... is currently inactive``). The
    coroutine lives on in the traceback of the error, and when the garbage collector frees
    it, at any later moment, Python prints "RuntimeWarning: coroutine 'Queue.get' was never
    awaited" (an error under ``-W error``). Closing it first is all that is needed; nothing
    can run it any more. Hand-written: no library cleans up after this.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        for frame, _ in traceback.walk_tb(error.__traceback__):
            for value in frame.f_locals.values():
                if (
                    inspect.iscoroutine(value)
                    and inspect.getcoroutinestate(value) == inspect.CORO_CREATED
                ):
                    value.close()
        error = error.__cause__ or error.__context__


def client_in_other_loop(client: object) -> bool:
    """Tell whether an open ``AsyncClient`` belongs to an event loop other than the running one.

    Its task manager runs in the loop that opened the client, and the SDK refuses a request
    made from any other loop (``LMStudioRuntimeError``: "running in a different event loop")
    before sending it. ``False`` for a sync client or when the SDK's internals are not as
    expected.
    """
    if not isinstance(client, lms.AsyncClient):
        return False
    manager = getattr(client, "_task_manager", None)
    in_its_loop = getattr(manager, "is_running_in_task_loop", None)
    active = getattr(manager, "active", False) is True and not _loop_closed(manager)
    return active and callable(in_its_loop) and not in_its_loop()


def prediction_channel(stream: object) -> Any:
    """Return the SDK's channel of a started sync prediction stream (``None`` once released).

    An exception raised inside the stream's iterator (by a signal handler, during the wait
    for a message) makes the SDK release the channel before anyone can cancel it: its
    ``cancel()`` then sends nothing. Held from the start, the channel can still send the
    cancel (`SyncReader.abandon`). ``None`` when the SDK's internals are not as expected.
    """
    channel = getattr(stream, "_channel", None)
    return channel if callable(getattr(channel, "cancel", None)) else None


def forked_client_error(
    host: str | None, model: str | None, *, shared: bool = False
) -> LMStudioConnectionError:
    """Return the error for a call, in a forked process, through its parent's client.

    ``shared``: an ``AsyncClient``, whose socket the child shares with its parent.
    """
    why = (
        "its connection is the other process's too, so their replies would be mixed up"
        if shared
        else "its websocket thread does not exist here, so a call would wait forever"
    )
    return LMStudioConnectionError(
        "The lmstudio client this model uses was made in another process (this one was "
        f"forked from it, with os.fork() or multiprocessing's fork start method): {why}.",
        host=host,
        model=model,
        hint="Make the client and the model in the process that uses them (after the fork: "
        "gunicorn's post_fork hook or no --preload, Celery's worker_process_init signal, a "
        "multiprocessing Pool's initializer), or start processes with multiprocessing's "
        "'spawn' or 'forkserver' method.",
    )


def closed_client_error(
    host: str | None, model: str | None, *, in_a_loop: bool = False
) -> LMStudioConnectionError:
    """Return the error for a call through a client that was closed.

    ``in_a_loop`` (an ``AsyncClient``) adds the cause nobody asked for: the end of the event
    loop that opened the client, such as an earlier ``asyncio.run()``.
    """
    how = "close(), aclose(), or the end of its with block"
    hint = (
        "Keep the client open while the model is in use, or make a new client and a new "
        "model with from_lmstudio(client, ...)."
    )
    if in_a_loop:
        how = "close(), aclose(), the end of its with block, or the end of the event loop it "
        how += "was opened in, such as an earlier asyncio.run()"
        hint += " An AsyncClient works only in the event loop that opened it: make it inside "
        hint += "the asyncio.run(...) that uses it."
    current, main = threading.current_thread(), threading.main_thread()
    if current.daemon and not main.is_alive():
        # Found by a probe: a daemon thread's call at the program's exit blamed the user's
        # close(). The main thread is stopped first when the interpreter exits (public);
        # clients close at exit only once no other thread runs, but daemon threads' (a
        # review: a non-daemon thread outliving the main one had closed its client itself).
        how += "; the program is exiting (its main thread has ended), and clients close then"
        hint = (
            "A call in a daemon thread cannot outlive the program: join the thread (or make "
            "it non-daemon) before the main thread ends."
        )
    elif current is main and not main.is_alive():
        # Found by a probe: the same words for the main thread's own calls at exit (an
        # atexit function, a __del__ at exit), made after the SDK's exit hook (registered
        # when lmstudio is imported; atexit runs the last registered first) closed clients.
        how += (
            "; the program is exiting, and the lmstudio SDK closes its clients at exit, "
            "before atexit functions registered before lmstudio was imported and before "
            "objects are collected at exit"
        )
        hint += (  # either may be the cause: a with block may have ended before
            " A call at exit works in an atexit function registered after importing "
            "lmstudio (atexit runs the last registered first), not in __del__."
        )
    return LMStudioConnectionError(
        f"The lmstudio client this model uses was closed ({how}), so nothing can be sent to "
        "LM Studio through it.",
        host=host,
        model=model,
        hint=hint,
    )


def other_loop_error(
    host: str | None, model: str | None, done: str = "nothing was sent", *, opening: bool = False
) -> LMStudioConnectionError:
    """Return the error for a call through an ``AsyncClient`` opened in another event loop.

    ``done``: what the call left undone (``close()``: "nothing was closed"). ``opening``:
    the other loop is opening it still.
    """
    was = "is being opened" if opening else "was opened"
    return LMStudioConnectionError(
        f"The lmstudio.AsyncClient this model uses {was} in another event loop, and an "
        f"AsyncClient works only in the event loop that opened it; {done}.",
        host=host,
        model=model,
        hint="Call the model from that loop (asyncio.run_coroutine_threadsafe(..., loop)), or "
        "make a client and a model in this one.",
    )


def stream_loop_error(
    host: str | None, model: str | None, *, closed: bool
) -> LMStudioConnectionError:
    """Return the error for a stream read in an event loop other than the one it began in.

    Its prediction is read by a task of that loop. Awaited from another, the wait was woken
    by nobody: it lasted ``read_timeout``, then went on, or (that loop closed) blamed a
    silent LM Studio and said a cancel was sent (found by a probe; the SDK alone raises
    asyncio's "bound to a different event loop" at once). ``closed``: that loop is closed,
    and nothing can be cancelled through it.
    """
    done = (
        "that loop is closed, so its prediction could not be cancelled (LM Studio ends it when "
        "the connection closes, or at its end)"
        if closed
        else "a cancel of its prediction is handed to that loop (sent when that loop runs)"
    )
    return LMStudioConnectionError(
        "This stream began in another event loop, and a stream is read only in the event "
        f"loop it began in; nothing was read, and {done}.",
        host=host,
        model=model,
        hint="Read a stream to its end in the loop that began it (asyncio.run_coroutine_"
        "threadsafe(...) with that loop), or begin a new stream in this one.",
    )


class Unreadable(Exception):
    """The SDK failed to read a message LM Studio sent while it read a prediction.

    Raised by the prediction readers (`_streams`) in place of what the SDK raised (its
    ``__cause__``): a ``KeyError``, ``TypeError``, ``ValueError`` (msgspec's
    ``ValidationError`` among them) or ``AttributeError`` out of its message handling, or
    its ``LMStudioUnknownMessageWarning`` raised as an error (warnings filtered to errors).
    A newer LM Studio may send what the SDK does not know; the server did not end the
    prediction, so the reader cancels it, and the error is said as ours (`_translated`).
    Found by a probe of such messages: the SDK's bare ``KeyError`` came out of calls, and
    the unknown-message warning was blamed on LM Studio with no cancel.
    """


_NEWER_HINT = (
    "A newer LM Studio may send what this lmstudio SDK does not know yet: update "
    "outlines-lmstudio (it pins the lmstudio releases it supports) and install it again, or "
    "report this with LM Studio's version."
)
# Not `pip install -U lmstudio`: it leaves the pin, and the package is on no index (an audit).

_UNREADABLE = (KeyError, TypeError, ValueError, AttributeError, lms.LMStudioUnknownMessageWarning)


def unreadable(exc: BaseException) -> Unreadable | None:
    """Return the `Unreadable` that the SDK's ``exc``, raised while reading, stands for."""
    if not isinstance(exc, _UNREADABLE) or isinstance(exc, OutlinesLMStudioError):
        return None
    wrapped = Unreadable(f"{type(exc).__name__}: {exc}")
    wrapped.__cause__ = exc
    return wrapped


def from_sdk(exc: BaseException) -> TypeGuard[lms.LMStudioError]:
    """Tell whether an exception is the ``lmstudio`` SDK's own, not one of ours.

    Our server errors derive from the SDK's exception classes as well (see `errors`), so
    ``isinstance(exc, lms.LMStudioError)`` alone no longer tells an SDK failure, which is
    still to be translated (or retried, or reported by its cause), from ours.
    """
    return isinstance(exc, lms.LMStudioError) and not isinstance(exc, OutlinesLMStudioError)


def translate_sdk_error(
    exc: BaseException,
    *,
    host: str | None,
    model: str | None,
    stage: Stage,
    searched: bool = False,
) -> OutlinesLMStudioError | None:
    """Return our error for an SDK exception, or ``None`` if it is not an SDK failure.

    Parameters
    ----------
    exc
        The exception raised by the SDK.
    host
        The server host, when known.
    model
        The model key or identifier the call was for.
    stage
        What was being done: resolving a model handle, predicting, uploading.
    searched
        The client was made without a host, its port found on LM Studio's default ports:
        the hint says so, rather than to check the host given.

    Returns
    -------
    OutlinesLMStudioError | None
        The error to raise ``from exc``; ``None`` for exceptions that are not the SDK's.
        Ours that are ``lmstudio.LMStudioServerError`` s carry the SDK error's
        ``server_error`` (LM Studio's details), as the SDK's own would.
    """
    if isinstance(exc, OutlinesLMStudioError):
        return exc
    error = _translated(exc, host=host, model=model, stage=stage, searched=searched)
    return None if error is None else with_details(error, exc)


def with_details(error: E, exc: BaseException) -> E:
    """Give ``error``, ours, the details LM Studio sent with the SDK's ``exc``, if it has none.

    Our not-found and prediction errors are ``lmstudio.LMStudioServerError`` s: their
    ``server_error`` holds those details, as the SDK's own does (``None`` if it sent none).
    """
    if isinstance(error, LMStudioModelNotFoundError | LMStudioPredictionError) and (
        error.server_error is None
    ):
        error.server_error = getattr(exc, "server_error", None)
    return error


def _translated(
    exc: BaseException,
    *,
    host: str | None,
    model: str | None,
    stage: Stage,
    searched: bool = False,
) -> OutlinesLMStudioError | None:
    """`translate_sdk_error` without LM Studio's error details (``server_error``)."""
    if isinstance(exc, msgspec.ValidationError | Unreadable):
        # The SDK checks each message against its own schema: a value it does not know (a
        # fragment's `reasoningType` of a newer LM Studio) came out as msgspec's bare error,
        # no error of ours (found by a probe); the readers' `Unreadable` says the others.
        return LMStudioPredictionError(
            f"The lmstudio SDK {lms.__version__} cannot read a message LM Studio sent "
            f"({'during the prediction' if stage == 'predict' else 'for this call'}): "
            f"{clipped(str(exc))}",
            host=host,
            model=model,
            hint=_NEWER_HINT,
        )
    if not isinstance(exc, lms.LMStudioError):
        return None
    text = clipped(" ".join(str(exc).split()))
    if isinstance(exc, lms.LMStudioRuntimeError) and "from an active channel" in text:
        # The SDK's own words for a channel LM Studio closed before its result message
        # (found by a probe of a newer server's messages: blamed on LM Studio "failing").
        return LMStudioPredictionError(
            f"LM Studio ended the request without the result message the lmstudio SDK "
            f"{lms.__version__} waits for (the SDK: {text})",
            host=host,
            model=model,
            hint=_NEWER_HINT,
        )
    if isinstance(exc, StalledWait):
        return LMStudioTimeoutError(
            f"This process was stopped or stalled (Ctrl-Z, a debugger, another thread holding "
            f"the GIL) for at least {round(exc.overslept, 1):g} s past the lmstudio SDK's "
            f"{exc.limit:g} s limit on each wait of a sync client, so the SDK gave the request "
            "up, though LM Studio's reply may have come meanwhile"
            + ("; a cancel of its prediction was sent to LM Studio." if exc.cancelled else "."),
            host=host,
            model=model,
            hint="Ask again. A whole reply nobody saw part of is asked again once by itself; "
            "to keep longer stalls from ending a wait, raise the SDK's limit with "
            "lmstudio.set_sync_api_timeout(seconds), or pass None for none.",
        )
    if isinstance(exc, lms.LMStudioTimeoutError):  # only a sync client's waits have one
        limit = lms.get_sync_api_timeout()
        return LMStudioTimeoutError(
            f"LM Studio sent nothing for {limit or 0:g} s, the lmstudio SDK's limit on each wait "
            "of a sync client (process-wide, in place of read_timeout). The SDK gave up the "
            "request at that limit, so LM Studio may still be working on it.",
            host=host,
            model=model,
            hint="If the model needs longer (loading a large model, a long prompt), raise the "
            "limit with lmstudio.set_sync_api_timeout(seconds); otherwise check the server.",
        )
    if isinstance(exc, lms.LMStudioWebsocketError) or "not reachable" in text:
        lost = "not reachable" not in text
        if out_of_files(exc):  # not LM Studio's doing: no socket to be had
            hint = files_hint(exc)
        elif lost:
            hint = "The next call reconnects; if LM Studio stopped, start it again."
        elif "ReadTimeout" in text and "ws://" in text:
            # The websocket's opening got no answer: no 1 s HTTP probe ran (a probe found the
            # SLOW_PROBE hint on a sync client given a host, and on a server frozen mid-call).
            hint = server_hint(
                "; it took the connection but did not answer the websocket's opening in time",
                searched,
            )
        elif "ReadTimeout" in text:  # a server took the connection, and said nothing in 1 s
            hint = server_hint(f"; {SLOW_PROBE}", searched)
        else:
            hint = (_MOVED_HINT if searched else _START_HINT) + proxy_note()
        return LMStudioConnectionError(
            f"{'Lost the connection to' if lost else 'Cannot talk to'} LM Studio: {text}",
            host=host,
            model=model,
            hint=hint,
        )
    if isinstance(exc, lms.LMStudioModelNotFoundError) or (
        stage == "resolve" and isinstance(exc, lms.LMStudioServerError | lms.LMStudioClientError)
    ):
        text = clipped(_not_found_text(exc, text))  # the title quotes the name given
        return LMStudioModelNotFoundError(
            f"LM Studio has no model matching {model!r:.200}: {text}" if model else text,
            host=host,
            model=model,
            # Found by a probe: an instance's name whose TTL ran out got only this advice,
            # which loads the model under its key, not that name.
            hint="Load it in LM Studio (or `lms load <key>`), or pick one from "
            "client.llm.list_loaded() / `outlines-lmstudio models`. An instance's own name "
            "(an identifier given when it was loaded) is not loaded again by a call once it is "
            "unloaded (its TTL ran out, the UI, another client): load it again under that name "
            "(`lms load <key> --identifier NAME`, or client.llm.load_new_instance(key, NAME)).",
        )
    if isinstance(exc, lms.LMStudioPresetNotFoundError):
        return LMStudioPredictionError(
            f"LM Studio has no such preset: {_titled(exc, text)}",
            host=host,
            model=model,
            hint="Check the preset name in LM Studio's presets list.",
        )
    if stage == "predict" and (
        _code(exc) == "generic.pathNotFound" or _draft_not_found(_titled(exc, ""), model)
    ):
        # Within a prediction, the only model looked up by path is the draft model (found by
        # a probe: the server's JSON in the message, and a hint about the main model). LM
        # Studio says `Cannot find model "<name>"` (lmstudio-js's own test of speculative
        # decoding, found by a probe running it: that was told as a failed prediction).
        return LMStudioPredictionError(
            f"LM Studio has no draft model matching config['draftModel']: "
            f"{clipped(_not_found_text(exc, _titled(exc, text)))}",
            host=host,
            model=model,
            hint="Give config['draftModel'] the key of a downloaded model (`outlines-lmstudio "
            "models`) that shares the main model's vocabulary, or leave it out.",
        )
    if stage == "upload":
        return LMStudioPredictionError(
            f"LM Studio refused the image upload: {text}", host=host, model=model
        )
    lowered = text.lower()
    if "alternate" in lowered or "role" in lowered:
        hint = (
            "The model's chat template refused these messages: many templates take one system "
            "message, first, then user and assistant messages in turn. Reorder or merge the "
            "messages, or use a model whose template takes them."
        )
    elif "template" in lowered:  # a broken template too: no order of messages helps then
        hint = (
            "The model's chat template could not render these messages. If the error names "
            "roles or their order, reorder or merge the messages; if the template itself is "
            "broken (a syntax error), fix the model's prompt template in LM Studio (the "
            "model's settings) or use another model."
        )
    else:
        hint = (
            "See LM Studio's server log for details; check the model supports this request "
            "(its context length, its chat template, tools)."
        )
    return LMStudioPredictionError(
        f"LM Studio failed the prediction: {text}", host=host, model=model, hint=hint
    )
