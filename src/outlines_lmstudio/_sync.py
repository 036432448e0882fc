"""`LMStudio`: the sync front, which performs the I/O of the flows in `_flow` with a ``Client``.

Everything this module decides is how to wait: in the caller's thread under a Ctrl-C guard,
or, for a call with a time limit, in a worker thread the caller waits for.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Generator, Hashable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, Never, TypeVar, Unpack, overload

import lmstudio as lms
from lmstudio import FileHandle
from outlines.models.lmstudio import LMStudio as _OutlinesLMStudio

from . import _flow, _threads
from ._api import ModelOptions, shows_options
from ._cache import LOADS, Heard, copied_error
from ._common import (
    CONFIRM_SECONDS,
    SYNC_DOWNLOADS,
    SYNC_HANDLES,
    SYNC_IMAGES,
    SYNC_RECONNECTS,
    SYNC_TRAITS,
    AskedDownload,
    AskedTraits,
    Completion,
    ModelTraits,
    Request,
    SeveralInputs,
    download_to_load,
)
from ._discovery import ensure_host
from ._flow import Call, Emit, Flow, Sink
from ._forks import in_child, renewed
from ._images import ImageData
from ._interrupt import SigintGuard, redeliver_if_dropped
from ._sdk_errors import (
    client_closed,
    client_host,
    forked_client_error,
    orphan,
    orphan_parent_threads,
    task_manager,
)
from ._silence import StalledWait, sdk_stall
from ._streams import SyncReader, Waits, noting_progress
from ._sync_sessions import SyncSessions
from ._user_time import UserTime
from .errors import LMStudioConnectionError, LMStudioTimeoutError

if TYPE_CHECKING:
    from outlines.inputs import Chat

    from ._api import SyncReplyStream
    from ._reply import Parsed, Reply

    T = TypeVar("T")

__all__ = ["LMStudio"]


class _Entries(NamedTuple):
    """A client with its LLM session and its own entries of the handle and traits caches.

    Attributes
    ----------
    client
        The client (``None`` before the first call).
    llm
        Its LLM session (``client.llm``; the session's class is private to the SDK).
    handles
        The client's own entries of the handle cache.
    traits
        The client's own entries of the model-traits cache.
    """

    client: lms.Client | None
    llm: Any
    handles: dict[Hashable, lms.LLM]
    traits: dict[Hashable, AskedTraits]


def _loaded(client: lms.Client, llm: Any, key: str, load: Heard) -> lms.LLM:
    """Look a model up, hearing its load's progress (`LoadProgress`).

    The SDK's own limit on each wait run out in a stall of the process is `StalledWait`
    (the lookup is asked again), as for a prediction (found by a probe: a Ctrl-Z of 70 s
    during `chat -m`'s load ended the chat, "LM Studio sent nothing for 60 s").
    """
    began = time.monotonic()
    try:
        with LOADS.looking_up(client, key, load):
            handle: lms.LLM = llm.model(key, on_load_progress=load.beat)
    except lms.LMStudioTimeoutError as exc:
        # The wait began at the request, or at the load's last progress report.
        if (stall := sdk_stall(exc, max(began, load.at), time.monotonic())) is not None:
            raise stall from exc
        raise
    return handle


def _confirm_wait(left: BaseException) -> float:
    """How long leaving a prediction waits for LM Studio to confirm its cancel.

    Leaving on Ctrl-C waits a moment (the process may exit next); leaving otherwise (an
    error, a closed stream) does not wait.
    """
    return CONFIRM_SECONDS if isinstance(left, KeyboardInterrupt) else 0


def _prepare_image(call: Call, files: Any, image: ImageData) -> FileHandle:
    """Upload an image for a call, unless its caller has left."""
    handle: FileHandle = _threads.unless_left(
        call, files.prepare_image, image.data, name=image.name
    )
    return handle


# Outlines types `type_adapter` as any ModelTypeAdapter; ours reads as the LMStudioTypeAdapter
# it is (its `grammar`, `strict_schema`), and refuses any other at run time.
class LMStudio(SyncSessions, _OutlinesLMStudio):  # type: ignore[misc]
    """An Outlines model backed by LM Studio through a sync ``lmstudio.Client``.

    The model uses the client but never closes it. Its settings are those of
    `from_lmstudio`. A call waits in the caller's thread (Ctrl-C cancels the
    prediction on the server first); a call with a time limit runs in a worker thread.

    Parameters
    ----------
    client
        The ``lmstudio.Client`` to talk to LM Studio through.
    model_name
        The model key, or ``None`` to use the model LM Studio has loaded. A call's
        ``model=`` keyword overrides it for that call.
    **options
        Keyword-only, as `from_lmstudio` describes them: ``max_concurrency``, ``timeout``,
        ``connect_timeout``, ``read_timeout``, ``grammar`` and ``strict_schema``
        (``inspect.signature`` shows them with their defaults).

    Raises
    ------
    InvalidClientError
        (a ``TypeError`` and a ``ValueError``) If ``client`` is not an ``lmstudio.Client``
        (for an ``lmstudio.AsyncClient``, use `AsyncLMStudio` or `from_lmstudio`).
    InvalidInferenceArgumentError, InvalidInferenceValueError
        As `from_lmstudio` raises them for an option or ``model_name``; the first also if
        more than two arguments are given by position.
    """

    _client_class = lms.Client
    _handles = SYNC_HANDLES
    _traits = SYNC_TRAITS

    if TYPE_CHECKING:
        # What the entry points return on this front, for type checkers: the code is the
        # shared `ModelApi`'s, typed ``Any`` since the async front awaits it (found by a
        # probe: ``n: int = model("x")`` passed mypy). Declared only, so no call pays a
        # wrapper for it.
        def __call__(
            self,
            model_input: Any,
            output_type: Any = None,
            backend: str | None = None,
            **inference_kwargs: Any,
        ) -> str: ...

        def generate(
            self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
        ) -> str: ...

        def stream(
            self,
            model_input: Any,
            output_type: Any = None,
            backend: str | None = None,
            **inference_kwargs: Any,
        ) -> Generator[str, None, None]: ...

        def generate_stream(
            self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
        ) -> Generator[str, None, None]: ...

        def batch(
            self,
            model_input: list[Any] | tuple[Any, ...],
            output_type: Any = None,
            backend: str | None = None,
            **inference_kwargs: Any,
        ) -> list[str]: ...

        def generate_batch(
            self,
            model_input: list[Any] | tuple[Any, ...],
            output_type: Any = None,
            **inference_kwargs: Any,
        ) -> list[str]: ...

        # output_type is required here: its run-time default only names a missing one
        @overload  # type: ignore[override]
        def parse(
            self,
            model_input: str | Chat | lms.Chat,
            output_type: type[T],
            *,
            retries: int = 0,
            context: Any = None,
            **inference_kwargs: Any,
        ) -> T: ...

        @overload
        def parse(
            self,
            model_input: SeveralInputs,
            output_type: type[T],
            *,
            retries: int = 0,
            context: Any = None,
            **inference_kwargs: Any,
        ) -> list[T]: ...

        @overload
        def parse(
            self,
            model_input: Any,
            output_type: Any,
            *,
            retries: int = 0,
            context: Any = None,
            **inference_kwargs: Any,
        ) -> Any: ...

        def parse(
            self,
            model_input: Any,
            output_type: Any,
            *,
            retries: int = 0,
            context: Any = None,
            **inference_kwargs: Any,
        ) -> Any: ...

        # output_type is required here: its run-time default only names a missing one
        @overload  # type: ignore[override]
        def parse_reply(
            self,
            model_input: str | Chat | lms.Chat,
            output_type: type[T],
            *,
            retries: int = 0,
            context: Any = None,
            **inference_kwargs: Any,
        ) -> Parsed[T]: ...

        @overload
        def parse_reply(
            self,
            model_input: SeveralInputs,
            output_type: type[T],
            *,
            retries: int = 0,
            context: Any = None,
            **inference_kwargs: Any,
        ) -> list[Parsed[T]]: ...

        @overload
        def parse_reply(
            self,
            model_input: Any,
            output_type: Any,
            *,
            retries: int = 0,
            context: Any = None,
            **inference_kwargs: Any,
        ) -> Any: ...

        def parse_reply(
            self,
            model_input: Any,
            output_type: Any,
            *,
            retries: int = 0,
            context: Any = None,
            **inference_kwargs: Any,
        ) -> Any: ...

        def parse_stream(  # type: ignore[override]  # output_type required (see parse)
            self,
            model_input: Any,
            output_type: Any,
            *,
            context: Any = None,
            **inference_kwargs: Any,
        ) -> Generator[Any, None, None]: ...

        def reply(
            self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
        ) -> Reply: ...

        def reply_batch(
            self,
            model_input: list[Any] | tuple[Any, ...],
            output_type: Any = None,
            **inference_kwargs: Any,
        ) -> list[Reply]: ...

        def reply_stream(
            self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
        ) -> SyncReplyStream: ...

    @shows_options(lms.Client)
    def __init__(
        self,
        client: lms.Client,
        model_name: str | None = None,
        *args: Never,  # refused at run time, with a message (`ModelApi`)
        **options: Unpack[ModelOptions],
    ) -> None:
        super().__init__(client, model_name, *args, **options)
        self._batches = _threads.BatchPool()
        # The client whose host is known (once known, it stays): no check on every call.
        self._host_known_of: lms.Client | None = None
        renewed(self)
        _USED_IN.setdefault(client, os.getpid())
        # A client and its own entries of the handle and model-traits caches, read without
        # a lookup by client; one attribute, so a thread replacing ``client`` never pairs
        # one client with another's entries (see `_hold_entries`).
        self._held = _Entries(None, None, {}, {})
        _backend_imported()

    def _after_fork(self) -> None:
        """In a forked child, make the next call check the client (`_check_process`).

        The parent's clients cannot work there: the SDK's websocket thread was not copied,
        and a call through one waited forever for it.
        """
        self._host_known_of = None

    # -- drivers -----------------------------------------------------------------------------
    # The drivers step the flow themselves (``send``/``throw``), with no runner object or
    # helper in between: on this path every Python call costs about 2 µs (cold caches).
    def _run(self, flow: Flow[Any]) -> Any:
        """Drive a flow whose emits nobody reads (a whole reply) to its result.

        Such flows run in the caller's or a batch thread, never in a `_threads.Worker`
        (that runs `_predict`), so no pulse is beaten here.
        """
        try:
            step = flow.send(None)
            while True:
                if isinstance(step, Emit):
                    step = flow.send(None)
                    continue
                try:
                    answer = getattr(self, step.method)(step)
                except Exception as exc:  # the flow decides what an I/O error means
                    step = flow.throw(self._failure(exc))
                else:
                    step = flow.send(answer)
        except StopIteration as stop:
            return stop.value
        finally:
            flow.close()

    def _complete_then(self, request: Request, finish: Callable[[Completion], Any]) -> Any:
        return finish(self._complete(_flow.Complete(request)))

    def _iterate(self, request: Request, sink: Sink) -> Iterator[Any]:
        call = _threads.new(request, None)
        timed = (request.args.timeout or self.timeout) is not None
        if timed or _threads.idle_bound(self.read_timeout) is not None:
            # The call's clock starts at the first next(), as on the async front.
            return self._in_worker(call, sink, starts_clock=timed)
        call.front = SigintGuard()  # armed around each wait only: user code runs in between
        return self._predict(call, sink)

    def _find_host(self, call: Call) -> None:
        """Find LM Studio on its default ports if the client was made with no host."""
        client = self.client
        if self._host_known_of is client:
            return
        self._check_process(call.request.key)
        if client_host(client) is None:  # made as lms.Client()
            lookups = call.request.lookups
            if lookups is not None and lookups.search is not None:
                raise copied_error(lookups.search)  # an earlier item searched in vain
            try:
                with _threads.held():  # finding LM Studio has bounds of its own
                    ensure_host(client, call.request.key)
            except LMStudioConnectionError as exc:
                if lookups is not None:
                    lookups.search = exc
                raise
        self._host_known_of = client

    def _check_process(self, key: str | None) -> None:
        """Refuse a client made in the process this one was forked from (it would hang).

        Known by the process the client was first seen in, or by its websocket thread: a
        forked child has none of its parent's threads, while the client, not closed, still
        counts on it.
        """
        if (forked := self._forked(key)) is not None:
            raise forked

    def _forked_error(self, request: Request) -> LMStudioConnectionError:
        """Return the error of a call read on in a forked child (its client is the parent's)."""
        return forked_client_error(client_host(self.client), request.key or self.model_name)

    def _forked(self, key: str | None) -> LMStudioConnectionError | None:
        """Return the error of a call through a client made in a parent process, if it is one."""
        client = self.client
        pid = os.getpid()
        if _USED_IN.setdefault(client, pid) != pid or _thread_gone(client):
            return forked_client_error(client_host(client), key or self.model_name)
        return None

    def _predict(self, call: Call, sink: Sink) -> Iterator[Any]:
        """Drive a prediction in the caller's thread, yielding its emits.

        Leaving early cancels the prediction on the server. One generator drives the flow
        (no nested driver): each fragment passes through one generator frame less.
        """
        self._find_host(call)
        pulse = _threads.pulse()
        flow = _flow.predict(call, sink, self._error)
        try:
            step = flow.send(None)
            while True:
                if isinstance(step, Emit):
                    yield step.value
                    step = flow.send(None)
                    continue
                try:
                    answer = getattr(self, step.method)(step)
                except Exception as exc:
                    error: BaseException | None = self._failure(exc)
                else:
                    error = None
                if pulse is not None:  # an answer came (the idle bound's wait begins anew)
                    pulse.beat()
                step = flow.send(answer) if error is None else flow.throw(error)
        except StopIteration:
            return
        except BaseException as left:  # GeneratorExit too: the caller closed the stream
            try:
                self._leave(call, _confirm_wait(left))
            except KeyboardInterrupt as stop:  # in a finalizer (``break``), Python drops it
                redeliver_if_dropped(stop)
                raise
            raise
        finally:
            flow.close()

    def _predict_whole(self, call: Call) -> None:
        """`_predict` for a whole reply: nobody reads its emits, so no generators."""
        self._find_host(call)
        try:
            self._run(_flow.predict(call, Sink(), self._error))
        except BaseException as left:
            self._leave(call, _confirm_wait(left))
            raise

    def _leave(self, call: Call, wait: float) -> None:
        """Cancel an unfinished prediction on the server, waiting at most ``wait`` s for it."""
        # On the SDK's own thread it is handed off (see `_threads.off_sdk_thread`); a
        # Ctrl-C's leave waits for LM Studio's confirmation, as it promises (signals reach
        # the main thread, never the SDK's).
        if not wait and _threads.off_sdk_thread(partial(self._leave_now, call, wait)):
            return
        self._leave_now(call, wait)

    def _leave_now(self, call: Call, wait: float) -> None:
        if not call.finished and call.reader is not None:
            call.finished = True
            if (drain := call.reader.abandon(wait)) is not None:
                self._watch(drain, predicting=True)

    def _in_worker(self, call: Call, sink: Sink, *, starts_clock: bool = False) -> Iterator[Any]:
        """Drive a prediction in a worker thread; the caller waits until the call's deadline.

        The SDK's own sync timeout is one process-wide setting, so a call with a time limit
        (or a shorter ``read_timeout``: `_threads.idle_bound`) is read by a daemon thread.
        Leaving (time up, silence, ``break``, Ctrl-C) cancels on the server at once and opens
        nothing more; the worker ends when LM Studio confirms. ``starts_clock``: a stream's
        deadline is set here, at its first ``next()``, not when the stream was made.
        """
        if starts_clock:
            call.deadline = self._deadline(call.request)
        idle = _threads.idle_bound(self.read_timeout)
        beats = None if idle is None else _threads.Pulse()
        clock = None
        if callbacks := call.request.args.callbacks:  # their time is the caller's, not LM Studio's
            clock = UserTime(None if beats is None else beats.beat)
            call.request = call.request.with_callbacks(clock.timing(callbacks))
        worker = _threads.Worker(lambda: self._predict(call, sink), beats, clock)
        confirm = 0.0
        try:
            yield from worker.items(
                call.deadline,
                partial(self._ran_out, call),
                idle,
                lambda: self._wait_error(call.request, False, call.reader is not None),
                partial(self._forked_error, call.request),
            )
        except KeyboardInterrupt:
            confirm = CONFIRM_SECONDS  # the process may exit next: see the cancel confirmed
            raise
        finally:
            call.stopped = True  # from here on, the worker opens and sends nothing
            if worker.alive:
                stop = partial(self._stop_worker, call, worker.thread, confirm)
                if confirm or not _threads.off_sdk_thread(stop):  # see `_leave`
                    stop()

    def _stop_worker(self, call: Call, thread: threading.Thread, confirm: float) -> None:
        """Cancel a left call's prediction, and let its worker end in the background."""
        _threads.cancel(call)
        # No prediction opened yet (a lookup or load): no cancel to confirm (found by a
        # probe: Ctrl-C during a load waited the whole second). The stream may be closed
        # by the garbage collector on its own worker, which cannot join itself (a probe).
        if thread is not threading.current_thread():
            thread.join(confirm if call.reader is not None else 0)
        self._watch(thread, predicting=call.reader is not None)

    def _ran_out(self, call: Call) -> LMStudioTimeoutError:
        """Return the error of a call whose time ran out, opened or not (read at that moment)."""
        started, session = call.reader is not None, call.session
        # The session the call's step waits on (none: not reached, say nothing of the
        # connection). Not always the model's: an upload's connection was judged by the
        # model session, which a reset had closed meanwhile (found by a probe: a slow
        # upload was told its connection was not complete).
        connected = started or session is None or session.connected
        return self._wait_error(call.request, True, started, connected)

    def _map(
        self, flows: list[Flow[Any]], limit: int, requests: Sequence[Request] = ()
    ) -> list[Any]:
        if not flows:
            return []
        if self._forked(None) is not None:  # before the pool: its threads are gone in a fork
            # Every item fails, as through a closed client: `BatchGenerationError`.
            keys = [r.key for r in requests] or [None] * len(flows)
            return _flow.batch_result([self._forked(key) for key in keys])
        with self._batches.lend(limit) as pool:
            return _threads.run_batch(self._run, flows, pool, self._unstick_if)

    # -- effects -----------------------------------------------------------------------------
    def _complete(self, effect: _flow.Complete) -> Completion:
        call = _threads.new(effect.request, self._completion_deadline(effect))
        if call.deadline is not None or _threads.idle_bound(self.read_timeout) is not None:
            for _ in self._in_worker(call, Sink()):
                pass
        else:
            # Armed once the prediction opens (`_open`), for the rest of the call.
            call.front = guard = SigintGuard(whole=True)
            try:
                self._predict_whole(call)
            finally:
                guard.armed = False  # first, with no call before it: see SigintGuard.disarm
                guard.disarm()
        assert call.done is not None
        return call.done

    def _hold_entries(self, client: lms.Client) -> _Entries:
        """Hold and return ``client`` with its LLM session and its own cache entries.

        Done once per client (a model's ``client`` may be replaced: each use checks whose
        entries are held). The handle and traits caches are never cleared (an entry is
        dropped or replaced in place), and keep a client's dict for the client's life, so
        what is held stays current. The image cache is cleared when a session is dropped, so
        it is not held. The SDK makes a client's ``llm`` session once and keeps it (a
        reconnect reuses it), so holding it saves a public-API property call, seven Python
        calls, on every call.
        """
        held = self._held = _Entries(
            client, client.llm, SYNC_HANDLES.entries(client), SYNC_TRAITS.entries(client)
        )
        return held

    def _upload(self, effect: _flow.Upload) -> dict[str, FileHandle]:
        client, call = self.client, effect.call
        beats = _threads.pulse()  # read under an idle bound: each upload's reply is heard
        handles, model_session = {}, call.session
        for image in call.request.prompt.images:  # uploaded once per client: cached
            cached = SYNC_IMAGES.peek(client, image.digest)
            if cached is None:  # only an upload needs the files session
                files = call.session = client.files
                self._connect(files)
                upload = partial(_prepare_image, call, files, image)
                cached = SYNC_IMAGES.get(client, image.digest, upload)
                if beats is not None:
                    beats.beat()
            handles[image.digest] = cached
        call.session = model_session  # the prediction opens on the model's session
        return handles

    def _resolve(self, effect: _flow.Resolve) -> lms.LLM:
        client, held = self.client, self._held
        if held.client is not client:
            held = self._hold_entries(client)
        effect.call.generation = SYNC_RECONNECTS.generation(client)
        llm, key = held.llm, effect.call.request.key
        effect.call.session = llm
        if llm.connected and (cached := held.handles.get(key)) is not None:
            return cached  # the common case: nothing to connect, nothing to make
        self._connect(llm)
        beats = _threads.pulse()
        load = None
        if key:
            # A load's progress reports, whichever call's load it is, are signs of life
            # for every call waiting on it under an idle bound (a large model loads for
            # minutes), also one whose lookup was started by a call without such a bound
            # (it heard nothing of it, and failed: found by a review).
            load = LOADS.of(client, key)
            if beats is not None:
                beats.also = load
            resolve = partial(_loaded, client, llm, key, load)
        else:
            resolve = llm.model
        make = partial(self._lookup, effect.call, resolve)
        try:
            return SYNC_HANDLES.get(client, key, make)
        finally:
            if beats is not None:
                beats.also = None
            if load is not None:  # a lookup skipped (cached, failed for the batch, left)
                LOADS.release(client, key, load)

    def _downloaded(self, effect: _flow.Downloaded) -> ModelTraits | None:
        client, held, call = self.client, self._held, effect.call
        if held.client is not client:
            held = self._hold_entries(client)
        key = call.request.key
        llm = held.llm
        if not key or (llm.connected and key in held.handles):
            return None  # found already: nothing to load
        self._connect(llm)

        def ask() -> AskedDownload:
            at = time.monotonic()  # before the requests: LM Studio answers of then or later
            try:
                loaded = [h.identifier for h in _threads.unless_left(call, llm.list_loaded)]
                downloads = [m.info for m in _threads.unless_left(call, llm.list_downloaded)]
            except lms.LMStudioServerError:
                return None, at  # not judged before: the lookup says what LM Studio says
            info = download_to_load(key, loaded, downloads)
            return (None if info is None else ModelTraits.of(info)), at

        made = call.request.made
        return SYNC_DOWNLOADS.get(client, key, ask, lambda asked: asked[1] < made)[0]

    def _lookup(self, call: Call, resolve: Callable[[], lms.LLM]) -> lms.LLM:
        """Look the model up, unless it failed meanwhile for another item of the batch.

        Threads asking for one key wait for the one looking it up (`SyncClientCache`); a
        lookup that failed is not kept there, so each would ask again in turn. Its failure
        is noted here, before the next thread takes the key's lock.
        """
        if (failed := _flow.failed_lookup(call.request, self._error)) is not None:
            raise failed
        try:
            handle: lms.LLM = _threads.unless_left(call, resolve)
        except lms.LMStudioError as exc:
            if not isinstance(exc, StalledWait):  # each item asks again, not the batch fails
                _flow.note_failed_lookup(call.request, exc)
            raise
        return handle

    def _model_info(self, effect: _flow.ModelInfo) -> ModelTraits:
        handle: lms.LLM = effect.handle
        client, held, since = self.client, self._held, effect.since
        if held.client is not client:
            held = self._hold_entries(client)
        cached = held.traits.get(handle.identifier)
        if cached is not None and cached.current(since):
            return cached.traits

        def ask() -> AskedTraits:
            at = time.monotonic()  # before the request: LM Studio answers of then or later
            return AskedTraits(ModelTraits.of(handle.get_info()), at)

        # Threads bound by the same call time wait for one ask (under the key's lock).
        return SYNC_TRAITS.get(client, handle.identifier, ask, AskedTraits.too_old(since)).traits

    def _open(self, effect: _flow.Open) -> None:
        call = effect.call
        if call.stopped:
            raise _threads.left_early()
        guard: SigintGuard = call.front or SigintGuard()
        if guard.whole:  # from here on, Ctrl-C cancels the prediction first
            guard.arm()
        beats = _threads.pulse()
        # Progress is a sign of life: it pushes an idle bound back (read under one), and it
        # begins the SDK's next wait, which the reader times (see `Waits`).
        waits = Waits(None if beats is None else beats.beat)
        kwargs = noting_progress(effect.kwargs, waits.progress)
        stream = effect.handle.respond_stream(effect.chat, **kwargs)
        call.reader = SyncReader(
            stream,
            guard,
            per_fragment=not guard.armed,
            whole=guard.armed,  # armed for the whole call: nothing of ours between fragments
            heard=None if beats is None else beats.beat,
            manager=None if guard.armed else task_manager(self.client),
            client=self.client,
            waits=waits,
        )

    def _read(self, effect: _flow.Read) -> list[lms.LlmPredictionFragment] | None:
        call = effect.call
        if call.stopped:  # the first read sends the request: not once left
            raise _threads.left_early()
        reader: SyncReader = call.reader
        if reader.process != os.getpid():  # opened by the parent: its thread is not here
            raise self._forked_error(call.request)
        fragments = reader.read()
        # Left while this read sent the request: the caller's cancel found no channel to
        # stop, so leave now (leaving cancels the open prediction on the server).
        if call.stopped:
            raise _threads.left_early()
        return fragments


_USED_IN: weakref.WeakKeyDictionary[lms.Client, int] = weakref.WeakKeyDictionary()
"""The process each client was first used in (``os.getpid()``)."""


def _thread_gone(client: lms.Client) -> bool:
    """Whether the client's websocket thread ran, is gone, and the client is not closed."""
    thread = getattr(client, "_ws_thread", None)
    if not isinstance(thread, threading.Thread) or thread.ident is None or thread.is_alive():
        return False
    return not client_closed(client)


@functools.cache
def _backend_imported() -> None:
    """Import what the SDK's websocket thread imports just after a client starts (once).

    That thread imports anyio's asyncio backend in the milliseconds after ``lms.Client()``
    returns; a fork then left the child a module lock held for good, and the child's first
    use of anyio waited forever (found by a probe: a gunicorn ``--preload`` worker, forked
    right after the app made its model, hung on its first request). Imported here, in the
    caller's thread (waiting for the SDK thread if it is importing the same), no import is
    under way when the model is returned. anyio imports it by this name itself.
    """
    with contextlib.suppress(ImportError):
        importlib.import_module("anyio._backends._asyncio")


def _after_fork_in_child() -> None:
    """In a forked child, make each client of the parent inert (`orphan`).

    Closing one, or collecting it, waited forever for its websocket thread, not copied.
    The parent's other clients, which the package does not know, are settled at the
    child's exit (`orphan_parent_threads`), before the SDK's finalizers run.
    """
    for client in list(_USED_IN):
        orphan(client)
    atexit.register(orphan_parent_threads)  # atexit runs last-in first: before weakref's


in_child(_after_fork_in_child)
