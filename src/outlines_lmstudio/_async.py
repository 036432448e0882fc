"""`AsyncLMStudio`: the async front, which performs the I/O of the flows in `_flow`.

Everything this module decides is how to wait: tasks, ``asyncio.timeout`` and a semaphore
for batches. Entering, closing and reconnecting the client are in `_async_sessions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, overload

import lmstudio as lms
import msgspec
from lmstudio import FileHandle
from outlines.models.lmstudio import AsyncLMStudio as _OutlinesAsyncLMStudio

from . import _flow
from ._async_sessions import AsyncSessions
from ._cache import LOADS, Heard
from ._common import (
    ASYNC_DOWNLOADS,
    ASYNC_HANDLES,
    ASYNC_IMAGES,
    ASYNC_RECONNECTS,
    ASYNC_TRAITS,
    AskedDownload,
    AskedTraits,
    Completion,
    ModelTraits,
    Request,
    SeveralInputs,
    download_to_load,
    in_batch_item,
    no_backend,
)
from ._config import NO_OUTPUT_TYPE
from ._flow import Call, Effect, Emit, Flow, Sink, wait_limit
from ._images import PendingImage
from ._inputs import ChatPrompt, deferring_images, settled
from ._later_grammar import converted, converting_later, later_gbnf
from ._sdk_errors import client_host, stream_loop_error
from ._streams import AsyncReader, cancel_requested
from .errors import LMStudioTimeoutError, OutlinesLMStudioError

if TYPE_CHECKING:
    from outlines.inputs import Chat

    from ._api import AsyncReplyStream
    from ._reply import Parsed, Reply

    T = TypeVar("T")

__all__ = ["AsyncLMStudio"]


_SEEN: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "outlines_lmstudio_seen", default=None
)
"""The failed enterings a flow's call saw when it was made (`_run`, `_ensure_client`)."""


class _AsyncStream:
    """An async model's stream (``stream``, ``generate_stream``, ``parse_stream``).

    It is its async generator to ``async for`` (which reads the generator itself: nothing
    in between per fragment), ``anext``, ``aclose``, ``asend`` and ``athrow``; a plain
    ``for`` says how to read it, rather than Python's "'async_generator' object is not
    iterable".
    """

    __slots__ = ("_items",)

    def __init__(self, items: AsyncGenerator[Any, None]) -> None:
        self._items = items

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        return self._items

    def __anext__(self) -> Awaitable[Any]:
        return self._items.__anext__()

    def asend(self, value: None) -> Awaitable[Any]:
        return self._items.asend(value)

    def athrow(self, *args: Any) -> Awaitable[Any]:
        return self._items.athrow(*args)

    def aclose(self) -> Awaitable[None]:
        """Leave the stream early (cancels the prediction on the server).

        Raises
        ------
        RuntimeError
            If another task is reading the stream at that moment (its ``async for`` waits
            for a fragment): Python cannot close an async generator while it runs, and the
            prediction would go on. The message says what to do instead.
        """
        if getattr(self._items, "ag_running", False):  # an async generator's (not in typeshed)
            raise RuntimeError(
                "This stream is being read by another task (its async for is waiting for the "
                "next fragment), and an async generator cannot be closed while it runs: "
                "LM Studio would go on generating. Cancel the task that reads it "
                "(task.cancel(): that cancels the prediction on the server), give the call a "
                "timeout=, or have the reading loop check a flag and break."
            )
        return self._items.aclose()

    def __iter__(self) -> Iterator[Any]:
        raise TypeError(
            "This stream comes from AsyncLMStudio (an lmstudio.AsyncClient), so for does not "
            "work on it: read it with async for inside a coroutine, and leave it early with "
            "await stream.aclose(). For a plain for, use a model on an lmstudio.Client."
        )


class _Deferred(Request, frozen=True):
    """A request with work for a worker thread (images, a grammar), done when awaited.

    The work: its prompt's `PendingImage` parts to normalise, its plan's grammar-mode term
    to convert (`_later_grammar`), or both.

    ``item``: its index in a batch (the note an image error gets, as on the sync front).
    ``done``: ``(prompt, settled prompt)`` pairs, so that each prompt is settled once (a
    batch settles its items before any is sent; ``parse`` re-asks with a longer prompt).
    """

    item: int | None = None
    done: list[tuple[ChatPrompt, ChatPrompt]] = msgspec.field(default_factory=list)


def _deferred(request: Request, item: int | None = None) -> Request:
    """Return ``request`` as a `_Deferred` if it has work for a worker thread."""
    r = request
    if later_gbnf(r.plan) is not None or any(
        type(part) is PendingImage for message in r.prompt.messages for part in message.parts
    ):
        return _Deferred(r.prompt, r.plan, r.args, r.key, r.lookups, r.made, item)
    return request


def _known(request: _Deferred) -> ChatPrompt | None:
    """Return the prompt's settled form if it was settled already."""
    for source, prompt in request.done:
        if source is request.prompt:
            return prompt
    return None


def _settled_now(request: _Deferred) -> Request:
    """Return ``request`` with its images normalised and its grammar converted (blocking).

    The grammar first: it is the batch's, not an item's (no item note on its errors).
    """
    plan = converted(request.plan)
    prompt = _known(request)
    if prompt is None:
        try:
            prompt = settled(request.prompt)
        except OutlinesLMStudioError as exc:
            if request.item is not None:
                in_batch_item(exc, request.item)
            raise
        request.done.append((request.prompt, prompt))
    return Request(prompt, plan, request.args, request.key, request.lookups, request.made)


_AS_IS = contextlib.nullcontext()
"""No deferral of a grammar (a model not in grammar mode): reusable, unlike a new one."""


def _settle_all(requests: list[_Deferred]) -> None:
    for request in requests:  # in order: the first bad item's error, as on the sync front
        _settled_now(request)


async def _settle(request: _Deferred) -> Request:
    """Normalise a request's images and convert its grammar in a worker thread.

    The event loop runs on meanwhile. A cancelled call leaves the thread to finish, which
    only fills the caches: nothing has been uploaded yet.
    """
    prompt, later = _known(request), later_gbnf(request.plan)
    if prompt is not None and (later is None or later.converted):  # settled with its batch
        plan = converted(request.plan)
        return Request(prompt, plan, request.args, request.key, request.lookups, request.made)
    return await asyncio.to_thread(_settled_now, request)


# Outlines types `type_adapter` as any ModelTypeAdapter; ours reads as the LMStudioTypeAdapter
# it is (its `grammar`, `strict_schema`), and refuses any other at run time.
class AsyncLMStudio(AsyncSessions, _OutlinesAsyncLMStudio):  # type: ignore[misc]
    """An Outlines model backed by LM Studio through an ``lmstudio.AsyncClient``.

    The client is entered (``async with``) on first use if it is not already,
    exactly once even under concurrent first calls, and only a client entered
    here is closed by `close`. The model is an async context manager. Its
    settings are those of `from_lmstudio`.

    Parameters
    ----------
    client
        The ``lmstudio.AsyncClient`` to talk to LM Studio through, entered or not (see
        above).
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
        (a ``TypeError`` and a ``ValueError``) If ``client`` is not an
        ``lmstudio.AsyncClient`` (for an ``lmstudio.Client``, use `LMStudio` or
        `from_lmstudio`).
    InvalidInferenceArgumentError, InvalidInferenceValueError
        As `from_lmstudio` raises them for an option or ``model_name``; the first also if
        more than two arguments are given by position.
    """

    _client_class = lms.AsyncClient
    _handles = ASYNC_HANDLES
    _traits = ASYNC_TRAITS

    # -- the awaitable entry points: bad input raises at the await ------------------------------
    # Outlines declares these ``async def``, and a caller may build the coroutines before
    # awaiting any: ``gather(*(model(p) for p in prompts), return_exceptions=True)`` gets an
    # input error among the results, instead of raising it while the list is built and
    # leaving the others never awaited (found by a probe). Still before any request is sent.
    async def __call__(
        self,
        model_input: Any,
        output_type: Any = None,
        backend: str | None = None,
        **inference_kwargs: Any,
    ) -> str:
        """Generate a response, as `generate` does (``backend`` must be ``None``).

        Parameters
        ----------
        model_input
            As for `LMStudio.generate`.
        output_type
            As for `LMStudio.generate`.
        backend
            Must be ``None``: LM Studio does the constrained decoding itself.
        **inference_kwargs
            As for `LMStudio.generate`.

        Returns
        -------
        str
            The generated text.

        Raises
        ------
        OutlinesLMStudioError
            What `LMStudio.generate` raises, when the call is awaited.
        """
        if backend is not None:
            no_backend(backend)
        text: str = await super().generate(model_input, output_type, **inference_kwargs)
        return text

    async def generate(
        self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
    ) -> str:
        """Generate a complete response; as `LMStudio.generate`.

        Parameters
        ----------
        model_input
            As for `LMStudio.generate`.
        output_type
            As for `LMStudio.generate`.
        **inference_kwargs
            As for `LMStudio.generate`.

        Returns
        -------
        str
            The generated text (a JSON document for JSON-schema output types).

        Raises
        ------
        OutlinesLMStudioError
            What `LMStudio.generate` raises, when the call is awaited.
        """
        text: str = await super().generate(model_input, output_type, **inference_kwargs)
        return text

    async def batch(
        self,
        model_input: list[Any] | tuple[Any, ...],
        output_type: Any = None,
        backend: str | None = None,
        **inference_kwargs: Any,
    ) -> list[str]:
        """Generate responses to several inputs, as `generate_batch` does (no ``backend``).

        Parameters
        ----------
        model_input
            A list of inputs, each as for `LMStudio.generate`.
        output_type
            As for `LMStudio.generate`, the same for every input.
        backend
            Must be ``None``: LM Studio does the constrained decoding itself.
        **inference_kwargs
            As for `LMStudio.generate`, plus ``max_concurrency``.

        Returns
        -------
        list[str]
            One response per input, in input order.

        Raises
        ------
        BatchGenerationError
            If any item failed; it holds the other results and each error by index.
        OutlinesLMStudioError
            For a bad argument or input, what `LMStudio.generate_batch` raises.
        """
        no_backend(backend)
        texts: list[str] = await super().generate_batch(
            model_input, output_type, **inference_kwargs
        )
        return texts

    async def generate_batch(
        self,
        model_input: list[Any] | tuple[Any, ...],
        output_type: Any = None,
        **inference_kwargs: Any,
    ) -> list[str]:
        """Generate responses concurrently, in order; as `LMStudio.generate_batch`.

        Parameters
        ----------
        model_input
            A list of inputs, each as for `LMStudio.generate`.
        output_type
            As for `LMStudio.generate`, the same for every input.
        **inference_kwargs
            As for `LMStudio.generate`, plus ``max_concurrency``.

        Returns
        -------
        list[str]
            One response per input, in input order.

        Raises
        ------
        BatchGenerationError
            If any item failed; it holds the other results and each error by index.
        OutlinesLMStudioError
            For a bad argument or input, what `LMStudio.generate_batch` raises.
        """
        texts: list[str] = await super().generate_batch(
            model_input, output_type, **inference_kwargs
        )
        return texts

    # output_type is required here: its run-time default only names a missing one
    @overload  # type: ignore[override]
    async def parse(
        self,
        model_input: str | Chat | lms.Chat,
        output_type: type[T],
        *,
        retries: int = 0,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> T: ...

    @overload
    async def parse(
        self,
        model_input: SeveralInputs,
        output_type: type[T],
        *,
        retries: int = 0,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> list[T]: ...

    @overload
    async def parse(
        self,
        model_input: Any,
        output_type: Any,
        *,
        retries: int = 0,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> Any: ...

    async def parse(
        self,
        model_input: Any,
        output_type: Any = NO_OUTPUT_TYPE,
        *,
        retries: int = 0,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> Any:
        """Generate and return a validated value of ``output_type``; as `LMStudio.parse`.

        Parameters
        ----------
        model_input
            One input, or a list (or tuple) of inputs; as for `LMStudio.parse`.
        output_type
            The type to return; as for `LMStudio.parse`.
        retries
            How many times to re-ask when a reply does not validate; as for `LMStudio.parse`.
        context
            Passed to the type's Pydantic validators; as for `LMStudio.parse`.
        **inference_kwargs
            As for `LMStudio.generate` (plus ``max_concurrency`` for a list of inputs).

        Returns
        -------
        Any
            The value (a list of values for a list of inputs).

        Raises
        ------
        ParseError
            The reply does not validate (it carries the raw text and the errors).
        TruncatedOutputError
            The reply was cut off by ``max_tokens`` or the context length.
        OutlinesLMStudioError
            What `LMStudio.parse` raises otherwise, when the call is awaited.
        """
        return await super().parse(
            model_input, output_type, retries=retries, context=context, **inference_kwargs
        )

    # output_type is required here: its run-time default only names a missing one
    @overload  # type: ignore[override]
    async def parse_reply(
        self,
        model_input: str | Chat | lms.Chat,
        output_type: type[T],
        *,
        retries: int = 0,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> Parsed[T]: ...

    @overload
    async def parse_reply(
        self,
        model_input: SeveralInputs,
        output_type: type[T],
        *,
        retries: int = 0,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> list[Parsed[T]]: ...

    @overload
    async def parse_reply(
        self,
        model_input: Any,
        output_type: Any,
        *,
        retries: int = 0,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> Any: ...

    async def parse_reply(
        self,
        model_input: Any,
        output_type: Any = NO_OUTPUT_TYPE,
        *,
        retries: int = 0,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> Any:
        """`parse`, also returning the reply and the rejected ones; as `LMStudio.parse_reply`.

        Parameters
        ----------
        model_input
            One input, or a list (or tuple) of inputs; as for `LMStudio.parse`.
        output_type
            The type to return; as for `LMStudio.parse`.
        retries
            How many times to re-ask when a reply does not validate; as for `LMStudio.parse`.
        context
            Passed to the type's Pydantic validators; as for `LMStudio.parse`.
        **inference_kwargs
            As for `LMStudio.parse`.

        Returns
        -------
        Parsed
            The value, the accepted reply and the rejected ones (a list of them for a list
            of inputs).

        Raises
        ------
        OutlinesLMStudioError
            What `LMStudio.parse` raises, when the call is awaited.
        """
        return await super().parse_reply(
            model_input, output_type, retries=retries, context=context, **inference_kwargs
        )

    async def reply(
        self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
    ) -> Reply:
        """Generate a response: its answer, reasoning and stats; as `LMStudio.reply`.

        Parameters
        ----------
        model_input
            As for `LMStudio.generate`.
        output_type
            As for `LMStudio.generate`.
        **inference_kwargs
            As for `LMStudio.generate`.

        Returns
        -------
        Reply
            The answer (``text``), the reasoning and the stats.

        Raises
        ------
        OutlinesLMStudioError
            What `LMStudio.reply` raises, when the call is awaited.
        """
        reply: Reply = await super().reply(model_input, output_type, **inference_kwargs)
        return reply

    async def reply_batch(
        self,
        model_input: list[Any] | tuple[Any, ...],
        output_type: Any = None,
        **inference_kwargs: Any,
    ) -> list[Reply]:
        """Return a `Reply` for each of several inputs, in order; as `LMStudio.reply_batch`.

        Parameters
        ----------
        model_input
            A list of inputs, each as for `LMStudio.generate`.
        output_type
            As for `LMStudio.generate`, the same for every input.
        **inference_kwargs
            As for `LMStudio.generate`, plus ``max_concurrency``.

        Returns
        -------
        list[Reply]
            One reply per input, in input order.

        Raises
        ------
        BatchGenerationError
            If any item failed; it holds the other results and each error by index.
        OutlinesLMStudioError
            For a bad argument or input, what `LMStudio.reply_batch` raises.
        """
        replies: list[Reply] = await super().reply_batch(
            model_input, output_type, **inference_kwargs
        )
        return replies

    if TYPE_CHECKING:
        # The streams, for type checkers (the shared `ModelApi` code is typed ``Any``):
        # ``async for`` them; a plain ``for`` raises (found by a probe: it passed mypy).
        def stream(
            self,
            model_input: Any,
            output_type: Any = None,
            backend: str | None = None,
            **inference_kwargs: Any,
        ) -> AsyncGenerator[str, None]: ...

        def generate_stream(  # type: ignore[override]  # a plain method, as documented
            self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
        ) -> AsyncGenerator[str, None]: ...

        def parse_stream(  # type: ignore[override]  # output_type required (see parse)
            self,
            model_input: Any,
            output_type: Any,
            *,
            context: Any = None,
            **inference_kwargs: Any,
        ) -> AsyncGenerator[Any, None]: ...

        def reply_stream(
            self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
        ) -> AsyncReplyStream: ...

    # -- images and grammars: made ready off the event loop ------------------------------------
    def _prepare(self, model_input: Any, output_type: Any, kwargs: dict[str, Any]) -> Request:
        """Check a call, leaving its costly images and grammar for when it is awaited.

        Both are done in a worker thread (`_settle`): the images normalised, a grammar-mode
        term converted to GBNF (`_later_grammar`).
        """
        grammar = self._adapter.grammar
        with deferring_images() as pending, converting_later() if grammar else _AS_IS:
            request = super()._prepare(model_input, output_type, kwargs)
        return _deferred(request) if pending or grammar else request

    def _prepare_batch(
        self, model_input: Any, output_type: Any, kwargs: dict[str, Any]
    ) -> tuple[list[Request], int]:
        grammar = self._adapter.grammar
        with deferring_images() as pending, converting_later() if grammar else _AS_IS:
            requests, limit = super()._prepare_batch(model_input, output_type, kwargs)
        if pending or grammar:
            requests = [_deferred(r, index) for index, r in enumerate(requests)]
        return requests, limit

    # -- drivers -----------------------------------------------------------------------------
    # The drivers step the flow themselves (``send``/``throw``), with no runner object in
    # between, as the sync front's do (a runner cost three Python calls a step).
    async def _answer(self, step: Effect, call: Call | None) -> tuple[Any, BaseException | None]:
        """Perform one effect: its answer, or the error to throw into the flow.

        An effect method returns its answer, or an awaitable of it (a cached handle needs
        no wait, hence no timer); a prediction's waits are bounded by `_within`.
        """
        try:
            answer = getattr(self, step.method)(step)
            # A coroutine, task or future; asyncio.iscoroutine is Python code on every step.
            if hasattr(answer, "__await__"):
                if call is not None and step.bounded:
                    answer = self._within(answer, call)
                answer = await answer
            return answer, None
        except Exception as exc:  # the flow decides what an I/O error means
            return None, self._failure(exc)

    async def _steps(self, flow: Flow[Any], call: Call | None = None) -> Any:
        """Drive a flow whose emits nobody reads (a whole reply) to its result."""
        try:
            step = flow.send(None)
            while True:
                if isinstance(step, Emit):
                    step = flow.send(None)
                    continue
                answer, error = await self._answer(step, call)
                step = flow.send(answer) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value
        finally:
            flow.close()

    async def _drive(self, flow: Flow[Any], call: Call | None = None) -> AsyncIterator[Any]:
        """Drive a flow, yielding its emits."""
        try:
            step = flow.send(None)
            while True:
                if isinstance(step, Emit):
                    yield step.value
                    step = flow.send(None)
                    continue
                answer, error = await self._answer(step, call)
                step = flow.send(answer) if error is None else flow.throw(error)
        except StopIteration:
            return
        finally:
            flow.close()

    async def _within(self, answer: Awaitable[Any], call: Call, load: Heard | None = None) -> Any:
        """Await one step of a prediction, within ``read_timeout`` and the call's limit.

        ``load``: the step waits for a model load, whose progress reports push the idle
        bound back (the wait's start counts as heard too).
        """
        if load is not None:
            return await self._within_load(answer, call, load)
        limit, by_deadline = wait_limit(call.deadline, self.read_timeout, time.monotonic())
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                return await answer
        except TimeoutError:
            if not scope.expired():
                raise
            raise self._gave_up(call, by_deadline) from None
        except asyncio.CancelledError:
            self._cancelled(call)
            raise

    def _cancelled(self, call: Call) -> None:
        """Note that the caller was cancelled (``wait_for``, a task's ``cancel()``) in a step.

        As when the step's own bound runs out (`_gave_up`): a shared lookup, upload or model
        info its callers left is reset if LM Studio still has not answered a while later.
        """
        if call.reader is None:
            self._unstick_later()

    def _gave_up(self, call: Call, by_deadline: bool) -> LMStudioTimeoutError:
        """Return the error of a step whose wait ran out (the caller gives the step up)."""
        if call.reader is None:  # a lookup, upload or model info the callers left
            self._unstick_later()
        return self._wait_error(call.request, by_deadline, call.reader is not None)

    async def _within_load(self, answer: Awaitable[Any], call: Call, load: Heard) -> Any:
        """`_within` for a model lookup that may load: each progress report is heard."""
        started = time.monotonic()
        waiting = asyncio.ensure_future(answer)
        try:
            while True:
                now = time.monotonic()
                idle = self.read_timeout
                if idle is not None:  # what is left of the bound since last heard
                    idle = max(idle - (now - max(started, load.at)), 0.0)
                limit, by_deadline = wait_limit(call.deadline, idle, now)
                done, _ = await asyncio.wait((waiting,), timeout=limit)
                if done:
                    return waiting.result()
                heard = max(started, load.at)
                if (
                    by_deadline
                    or self.read_timeout is None
                    or (time.monotonic() - heard >= self.read_timeout)
                ):
                    raise self._gave_up(call, by_deadline)
        except asyncio.CancelledError:
            self._cancelled(call)
            raise
        finally:
            if not waiting.done():
                waiting.cancel()  # the load itself is shared (shielded): it goes on

    async def _run(self, flow: Flow[Any], seen: int | None = None) -> Any:
        # The client is entered by the flow's first prediction (`_complete`), under the
        # call's timeout=; ``seen`` goes with it (see `_ensure_client`).
        token = _SEEN.set(seen)
        try:
            return await self._steps(flow)
        finally:
            _SEEN.reset(token)

    async def _entered(self, call: Call, seen: int | None = None) -> None:
        """Enter the client (`_ensure_client`) within the call's ``timeout=``, if it has one.

        Found by a probe: a server that never completed the connection held a call with
        ``timeout=2`` for ``connect_timeout`` (10 s), and for good with ``None``; the sync
        front's timeout bounds its connecting too.
        """
        if not self._ready and (forked := self._forked()) is not None:
            # Before asyncio.timeout: in a child forked inside a coroutine, asyncio says no
            # loop runs (found by a probe: its bare RuntimeError, where this error is due).
            raise forked
        if call.deadline is None:
            await self._ensure_client(seen)
            return
        try:
            async with asyncio.timeout(max(0.0, call.deadline - time.monotonic())) as scope:
                await self._ensure_client(seen)
        except TimeoutError:
            if not scope.expired():  # an error of the entering's own
                raise
            raise self._wait_error(call.request, True, started=False, connected=False) from None

    async def _complete_then(self, request: Request, finish: Callable[[Completion], Any]) -> Any:
        return finish(await self._complete(_flow.Complete(request)))

    def _iterate(self, request: Request, sink: Sink) -> _AsyncStream:
        alive: list[weakref.ref[AsyncGenerator[Any, None]]] = []
        items = self._items(request, sink, alive)
        alive.append(weakref.ref(items))  # see `_items`
        return _AsyncStream(items)

    async def _items(
        self, request: Request, sink: Sink, alive: list[weakref.ref[AsyncGenerator[Any, None]]]
    ) -> AsyncGenerator[Any, None]:
        """Yield a stream's items; leaving early cancels the prediction.

        ``alive`` holds a weak reference to this generator: Python clears it before it
        finalises a generator that became garbage, and ``finally`` then cannot always wait
        (see `_leave`).
        """
        if isinstance(request, _Deferred):
            request = await _settle(request)
        call = Call(request, deadline=self._deadline(request))
        await self._entered(call)
        try:
            flow = _flow.predict(call, sink, self._error)
            async for item in self._drive(flow, call):
                yield item
        finally:
            await self._leave(call, garbage=alive[0]() is None)

    @staticmethod
    async def _leave(call: Call, *, garbage: bool = False) -> None:
        """Cancel an unfinished prediction on the server (the caller left, or it failed).

        A stream that became ``garbage`` may be finalised where nothing can be awaited:
        Python closes an async generator that it never handed to an event loop's finaliser
        hook (its first step was taken outside the loop, as a sync bridge's
        ``loop.run_until_complete(stream.__anext__())`` does) on the spot, in whatever
        thread collects it, with the loop running or not, or at interpreter exit; an await
        that suspends there fails ("no running event loop", "async generator ignored
        GeneratorExit"), and the prediction went on. So it, and a stream closed away from
        its reader's loop, hand the cancel to that loop without waiting (`stop_soon`).
        """
        if call.finished or (reader := call.reader) is None:
            return
        if garbage or not reader.on_its_loop():
            reader.stop_soon()
        else:
            await reader.stop()

    async def _map(
        self, flows: list[Flow[Any]], limit: int, requests: Sequence[Request] = ()
    ) -> list[Any]:
        self._asyncio_loop()  # its semaphore and gather are asyncio's
        deferred = [r for r in requests if isinstance(r, _Deferred)]
        if deferred:  # an image error fails the batch before anything is sent, as on sync
            await asyncio.to_thread(_settle_all, deferred)
        # Each item enters the client in `_run` (once, under the lock), so a client that
        # cannot connect fails every item, as on the sync front: `BatchGenerationError`.
        semaphore, seen = asyncio.Semaphore(limit), self._entry.generation
        # What an item raised that is no Exception (its callback's sys.exit(), Ctrl-C,
        # pytest.fail() or CancelledError): it stops the batch, as on the sync front and as
        # it stops a call. Found by a probe: it was one of a `BatchGenerationError`'s errors,
        # which ``except Exception`` catches, or (sys.exit(), Ctrl-C) it left the event loop
        # with the other items' predictions going on.
        fatal: list[BaseException] = []
        items: list[asyncio.Task[Any]] = []

        async def one(flow: Flow[Any]) -> Any:
            try:
                async with semaphore:
                    return await self._run(flow, seen)  # see `_ensure_client`
            except Exception:
                raise
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and cancel_requested(
                    asyncio.current_task()
                ):
                    raise  # the batch was cancelled, or another item stops it
                if not fatal:
                    fatal.append(exc)
                    for item in items:  # each leaves its prediction (`_leave`)
                        if item is not asyncio.current_task():
                            item.cancel()
                return None  # raised by the batch, not by this task (see above)

        # Each item's task is made as its coroutine is. An error while they are made (a
        # signal handler's, a task factory's) cancels those made so far, before they send
        # anything, and closes the coroutine not yet in a task. `gather` made every
        # coroutine first: the rest were left "never awaited", and the tasks it had made
        # went on and sent their predictions (found by a probe).
        try:
            for flow in flows:
                made = one(flow)
                try:
                    items.append(asyncio.ensure_future(made))
                except BaseException:
                    made.close()
                    raise
        except BaseException:
            for item in items:
                item.cancel()
            raise
        results = await asyncio.gather(*items, return_exceptions=True)
        if fatal:
            raise fatal[0]
        return _flow.batch_result(results)

    # -- effects -----------------------------------------------------------------------------
    async def _complete(self, effect: _flow.Complete) -> Completion:
        request = effect.request
        if isinstance(request, _Deferred):
            request = await _settle(request)
        call = Call(request, deadline=self._completion_deadline(effect))
        if not self._ready:
            await self._entered(call, _SEEN.get())
        try:
            await self._steps(_flow.predict(call, Sink(), self._error), call)
        finally:
            if not call.finished:  # the common case needs no extra await
                await self._leave(call)
        assert call.done is not None
        return call.done

    async def _upload(self, effect: _flow.Upload) -> dict[str, FileHandle]:
        """Upload the images, each within ``read_timeout`` (each reply is a sign of life)."""
        files, call = self.client.files, effect.call
        handles: dict[str, FileHandle] = {}
        for image in call.request.prompt.images:
            upload = partial(files.prepare_image, image.data, name=image.name)
            handle = ASYNC_IMAGES.get(self.client, image.digest, upload)
            handles[image.digest] = await self._within(handle, call)
        return handles

    def _resolve(self, effect: _flow.Resolve) -> lms.AsyncLLM | Awaitable[lms.AsyncLLM]:
        """Return the cached handle at once (no wait to bound), else an awaitable of it."""
        effect.call.generation = ASYNC_RECONNECTS.generation(self.client)
        key = effect.call.request.key
        cached = ASYNC_HANDLES.peek(self.client, key)
        if cached is not None:
            return cached
        llm = self.client.llm  # a public-API property: seven Python calls, so not when cached
        if not key:  # a loaded model: no load to hear from
            return self._within(ASYNC_HANDLES.get(self.client, key, llm.model), effect.call)
        # A large model loads for minutes: its progress reports (shared by every call
        # waiting for it) push read_timeout back.
        client, load = self.client, LOADS.of(self.client, key)

        async def resolve() -> lms.AsyncLLM:  # the lookup itself, shared by every caller
            with LOADS.looking_up(client, key, load):
                handle: lms.AsyncLLM = await llm.model(key, on_load_progress=load.beat)
            return handle

        return self._within(ASYNC_HANDLES.get(client, key, resolve), effect.call, load)

    def _downloaded(self, effect: _flow.Downloaded) -> Awaitable[ModelTraits | None] | None:
        """Return ``None`` at once for a key already found, else an awaitable of the traits."""
        client, key = self.client, effect.call.request.key
        if not key or ASYNC_HANDLES.peek(client, key) is not None:
            return None  # found already: nothing to load
        llm, made = client.llm, effect.call.request.made

        async def ask() -> AskedDownload:
            at = time.monotonic()  # before the requests: LM Studio answers of then or later
            try:
                loaded = [h.identifier for h in await llm.list_loaded()]
                downloads = [m.info for m in await llm.list_downloaded()]
            except lms.LMStudioServerError:
                return None, at  # not judged before: the lookup says what LM Studio says
            info = download_to_load(key, loaded, downloads)
            return (None if info is None else ModelTraits.of(info)), at

        async def traits() -> ModelTraits | None:
            return (await ASYNC_DOWNLOADS.get(client, key, ask, lambda at: at[1] < made))[0]

        return traits()

    def _model_info(self, effect: _flow.ModelInfo) -> ModelTraits | Awaitable[ModelTraits]:
        """Return the cached traits at once, else an awaitable of them.

        Calls bound by the same call time (`ModelInfo.since`) share one ask.
        """
        handle: lms.AsyncLLM = effect.handle
        client, since = self.client, effect.since
        cached = ASYNC_TRAITS.peek(client, handle.identifier)
        if cached is not None and cached.current(since):
            return cached.traits

        async def ask() -> AskedTraits:
            at = time.monotonic()  # before the request: LM Studio answers of then or later
            return AskedTraits(ModelTraits.of(await handle.get_info()), at)

        async def traits() -> ModelTraits:
            too_old = AskedTraits.too_old(since)
            return (await ASYNC_TRAITS.get(client, handle.identifier, ask, too_old)).traits

        return traits()

    def _open(self, effect: _flow.Open) -> None:
        """Start the prediction in the reader's task; the first `_read` waits for it."""
        reader = AsyncReader(whole=not effect.live)  # progress counts as a sign of life
        kwargs = reader.watch_progress(effect.kwargs)

        async def open_stream() -> lms.AsyncPredictionStream:
            stream: lms.AsyncPredictionStream = await effect.handle.respond_stream(
                effect.chat, **kwargs
            )
            # The SDK opens the channel lazily, and its cancel() is a no-op until then: open
            # it here, so a cancel sent at any later moment reaches LM Studio.
            await stream.start()
            return stream

        reader.start(open_stream)
        ASYNC_RECONNECTS.reading(self.client, reader)  # a reset ends it if its socket is lost
        effect.call.reader = reader

    async def _read(self, effect: _flow.Read) -> list[lms.LlmPredictionFragment] | None:
        """Wait for fragments (not bounded by `_within`: progress messages extend the wait)."""
        call = effect.call
        reader: AsyncReader = call.reader
        if reader.process != os.getpid() and (forked := self._forked()) is not None:
            raise forked  # opened by the parent, on its socket: not read on here
        if not reader.on_its_loop():  # stepped from another loop: nobody would wake it
            host, key = client_host(self.client), call.request.key or self.model_name
            raise stream_loop_error(host, key, closed=reader.loop_closed())
        try:
            return await reader.read(self.read_timeout, call.deadline)
        except TimeoutError as expired:
            raise self._wait_error(call.request, expired.args == ("deadline",)) from None
