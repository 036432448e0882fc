"""`LMStudio`, `AsyncLMStudio` and `from_lmstudio`.

The classes subclass Outlines' own LM Studio models so that
``outlines.Generator`` (which dispatches on a closed set of Outlines classes)
accepts them, and override every method Outlines calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self, overload

import lmstudio as lms
from lmstudio import FileHandle
from outlines.inputs import Chat
from outlines.models.lmstudio import AsyncLMStudio as _OutlinesAsyncLMStudio
from outlines.models.lmstudio import LMStudio as _OutlinesLMStudio

from ._adapter import LMStudioTypeAdapter
from ._cache import AsyncClientCache, SyncClientCache
from ._config import PredictionArgs, parse_inference_kwargs
from ._inputs import ChatPrompt, build_chat
from ._interrupt import deferred_sigint
from ._output import OutputPlan
from ._reconnect import AsyncReconnects, SyncReconnects
from ._sdk_errors import Stage, client_host, translate_sdk_error
from ._typed import check_reply, partial_value, reask_prompt, validator_for
from .errors import (
    BatchGenerationError,
    InvalidInferenceArgumentError,
    InvalidInferenceValueError,
    LMStudioConnectionError,
    LMStudioModelNotFoundError,
    LMStudioTimeoutError,
    OutlinesLMStudioError,
)

__all__ = ["AsyncLMStudio", "LMStudio", "from_lmstudio"]

_DRAIN_SECONDS = 5.0
"""How long a cancelled prediction may take to confirm before its reader is dropped."""

DEFAULT_MAX_CONCURRENCY = 4
"""LM Studio serves 4 predictions at once per llama.cpp model by default."""

_SYNC_HANDLES: SyncClientCache[lms.LLM] = SyncClientCache()
_SYNC_IMAGES: SyncClientCache[FileHandle] = SyncClientCache()
_ASYNC_HANDLES: AsyncClientCache[lms.AsyncLLM] = AsyncClientCache()
_ASYNC_IMAGES: AsyncClientCache[FileHandle] = AsyncClientCache()
_SYNC_RECONNECTS = SyncReconnects()
_ASYNC_RECONNECTS = AsyncReconnects()


@dataclass(frozen=True)
class _Request:
    """A checked request: everything known before any I/O happens."""

    prompt: ChatPrompt
    plan: OutputPlan
    args: PredictionArgs
    key: str | None

    def sdk_kwargs(self) -> dict[str, Any]:
        kwargs = self.args.sdk_kwargs()
        if self.plan.response_format is not None:
            kwargs["response_format"] = self.plan.response_format
        return kwargs


@dataclass(frozen=True)
class _Completion:
    """A finished reply: its text and why the model stopped."""

    text: str
    stop_reason: str | None


def _is_batch(model_input: object) -> bool:
    """Tell whether ``parse`` got several inputs rather than one ``[prompt, Image, ...]``."""
    return isinstance(model_input, list) and all(
        isinstance(item, str | list | Chat | lms.Chat) for item in model_input
    )


def _stop_reason(streams: Sequence[lms.PredictionStream | lms.AsyncPredictionStream]) -> str | None:
    try:
        return str(streams[-1].result().stats.stop_reason) if streams else None
    except lms.LMStudioError:
        return None


def _dropped(exc: BaseException) -> bool:
    """Tell whether an error comes from a lost websocket (not from a refused connection)."""
    return isinstance(exc.__cause__, lms.LMStudioWebsocketError) and "not reachable" not in str(
        exc.__cause__
    )


def _check_concurrency(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInferenceArgumentError(f"max_concurrency must be an int, got {value!r}.")
    if value < 1:
        raise InvalidInferenceValueError(f"max_concurrency must be at least 1, got {value}.")
    return value


def _check_timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidInferenceValueError(
            f"timeout must be a positive number of seconds, got {value!r}."
        )
    return float(value)


def _check_model_name(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InvalidInferenceArgumentError(
            f"model_name must be a non-empty model key string or None, got {value!r}."
        )
    return value


class _Common:
    """What the sync and async models share: checking a call before any I/O."""

    client: lms.Client | lms.AsyncClient
    model_name: str | None
    _adapter: LMStudioTypeAdapter
    max_concurrency: int
    timeout: float | None

    def _prepare(self, model_input: Any, output_type: Any, kwargs: dict[str, Any]) -> _Request:
        args = parse_inference_kwargs(kwargs)
        plan = self._adapter.plan_output(output_type)
        if plan.response_format is not None and args.config and "structured" in args.config:
            raise InvalidInferenceArgumentError(
                "Both an output type and config['structured'] were given: pass only one."
            )
        prompt = self._adapter.format_input(model_input)
        return _Request(prompt, plan, args, args.model or self.model_name)

    def _prepare_batch(
        self, model_input: Any, output_type: Any, kwargs: dict[str, Any]
    ) -> tuple[list[_Request], int]:
        if not isinstance(model_input, list | tuple):
            raise InvalidInferenceArgumentError(
                f"batch() takes a list of inputs, got {type(model_input).__name__}."
            )
        limit = _check_concurrency(kwargs.pop("max_concurrency", self.max_concurrency))
        requests = []
        for index, item in enumerate(model_input):
            try:
                requests.append(self._prepare(item, output_type, kwargs))
            except OutlinesLMStudioError as exc:
                exc.add_note(f"(in batch item {index})")
                raise
        return requests, limit

    def _error(self, exc: BaseException, key: str | None, stage: Stage) -> BaseException:
        translated = translate_sdk_error(
            exc, host=client_host(self.client), model=key or self.model_name, stage=stage
        )
        return translated if translated is not None else exc

    def _timeout_error(self, key: str | None, seconds: float) -> LMStudioTimeoutError:
        return LMStudioTimeoutError(
            f"No complete answer from LM Studio within {seconds:g} s; "
            "the prediction was cancelled.",
            host=client_host(self.client),
            model=key or self.model_name,
            hint="Pass a larger timeout= (per call or on from_lmstudio), or check the server.",
        )


async def _pump(stream: lms.AsyncPredictionStream, queue: asyncio.Queue[tuple[str, Any]]) -> None:
    """Read an SDK stream into a queue: answer fragments, then done or the error."""
    try:
        async for fragment in stream:
            if fragment.reasoning_type == "none":
                queue.put_nowait(("fragment", fragment.content))
        queue.put_nowait(("done", None))
    except lms.LMStudioError as exc:
        queue.put_nowait(("error", exc))


_DRAINING: set[asyncio.Task[None]] = set()


async def _stop(stream: lms.AsyncPredictionStream, pump: asyncio.Task[None]) -> None:
    """Cancel a prediction on the server; its reader finishes in the background."""
    try:
        await stream.cancel()
    except (lms.LMStudioError, asyncio.CancelledError):
        pump.cancel()
        return
    drain = asyncio.create_task(_drain(pump))
    _DRAINING.add(drain)  # keep a reference until done
    drain.add_done_callback(_DRAINING.discard)


async def _drain(pump: asyncio.Task[None]) -> None:
    """Wait for a cancelled prediction to confirm; drop its reader if the server never does."""
    try:
        await asyncio.wait_for(pump, _DRAIN_SECONDS)
    except (TimeoutError, asyncio.CancelledError):
        pump.cancel()


def _no_backend(backend: str | None) -> None:
    if backend is not None:
        raise InvalidInferenceArgumentError(
            f"backend={backend!r} has no effect: LM Studio does the constrained decoding itself. "
            "Leave backend unset."
        )


def _batch_result(results: Sequence[Any]) -> list[Any]:
    errors = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
    if errors:
        raise BatchGenerationError(
            [None if isinstance(r, BaseException) else r for r in results], errors
        )
    return list(results)


def _check_retries(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInferenceValueError(f"retries must be an int >= 0, got {value!r}.")
    return value


class LMStudio(_Common, _OutlinesLMStudio):
    """An Outlines model backed by LM Studio through a sync ``lmstudio.Client``.

    Parameters
    ----------
    client
        An ``lmstudio.Client``; the model uses it but does not close it.
    model_name
        The model key to use, or ``None`` for the model LM Studio has loaded.
    max_concurrency
        Most predictions ``batch`` runs at once.
    timeout
        Seconds to wait for a complete answer (``None``: no limit of ours).
    """

    client: lms.Client

    def __init__(
        self,
        client: lms.Client,
        model_name: str | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(client, lms.Client):
            raise TypeError(f"LMStudio needs an lmstudio.Client, got {type(client).__name__}.")
        self.client = client
        self.model_name = _check_model_name(model_name)
        self._adapter = self.type_adapter = LMStudioTypeAdapter()
        self.max_concurrency = _check_concurrency(max_concurrency)
        self.timeout = _check_timeout(timeout)

    # -- I/O helpers ---------------------------------------------------------------
    def _handle(self, key: str | None) -> lms.LLM:
        def resolve() -> lms.LLM:
            try:
                return self.client.llm.model(key) if key else self.client.llm.model()
            except lms.LMStudioClientError as exc:
                if key is None and "no models" in str(exc).lower():
                    raise LMStudioModelNotFoundError(
                        "LM Studio has no model loaded, and no model_name was given.",
                        host=client_host(self.client),
                        hint="Load a model in LM Studio, or pass model_name to from_lmstudio.",
                    ) from exc
                raise self._error(exc, key, "resolve") from exc
            except lms.LMStudioError as exc:
                raise self._error(exc, key, "resolve") from exc

        return _SYNC_HANDLES.get(self.client, key, resolve)

    def _reconnect(self, generation: int) -> None:
        """Drop dead sessions (the SDK reconnects lazily) and the uploads tied to them."""

        def reset() -> None:
            for session in (self.client.llm, self.client.files):
                with contextlib.suppress(lms.LMStudioError):
                    session.disconnect()
            _SYNC_IMAGES.clear(self.client)

        _SYNC_RECONNECTS.reset(self.client, generation, reset)

    def _chat(self, request: _Request) -> lms.Chat:
        handles: dict[str, FileHandle] = {}
        for image in request.prompt.images:

            def upload(image: Any = image) -> FileHandle:
                try:
                    return self.client.files.prepare_image(image.data, name=image.name)
                except lms.LMStudioError as exc:
                    raise self._error(exc, request.key, "upload") from exc

            handles[image.digest] = _SYNC_IMAGES.get(self.client, image.digest, upload)
        return build_chat(request.prompt, handles)

    def _fragments(
        self, request: _Request, streams: list[lms.PredictionStream] | None = None
    ) -> Generator[str, None, None]:
        """Yield answer fragments; cancel on the server if left early; retry a vanished model.

        Each SDK stream opened is appended to ``streams`` so another thread can cancel it.
        """
        for attempt in (1, 2):
            generation = _SYNC_RECONNECTS.generation(self.client)
            try:
                chat = self._chat(request)
            except LMStudioConnectionError as exc:
                if attempt == 1 and _dropped(exc):
                    self._reconnect(generation)
                    continue
                raise
            stream = self._handle(request.key).respond_stream(chat, **request.sdk_kwargs())
            if streams is not None:
                streams.append(stream)
            events = iter(stream)
            started = finished = False
            try:
                while True:
                    with deferred_sigint() as sigint:
                        fragment = next(events, None)
                    if sigint.interrupted:
                        raise KeyboardInterrupt  # after the finally below cancels on the server
                    if fragment is None:
                        break
                    if fragment.reasoning_type == "none":
                        started = True
                        yield fragment.content
                finished = True
                return
            except lms.LMStudioModelNotFoundError as exc:
                finished = True
                if attempt == 1 and not started:
                    _SYNC_HANDLES.forget(self.client, request.key)
                    continue
                raise self._error(exc, request.key, "predict") from exc
            except lms.LMStudioWebsocketError as exc:
                finished = True
                self._reconnect(generation)  # the next call (or the retry) reconnects
                if attempt == 1 and not started:
                    continue
                raise self._error(exc, request.key, "predict") from exc
            except lms.LMStudioError as exc:
                finished = True
                raise self._error(exc, request.key, "predict") from exc
            finally:
                if not finished:
                    # Left early (break, exception, close): stop the server generating.
                    # cancel() must come before the SDK iterator is closed (it is a no-op after).
                    try:
                        stream.cancel()
                        for _ in events:
                            pass
                    except lms.LMStudioError:
                        pass

    def _run(self, request: _Request) -> str:
        return request.plan.render(self._complete(request).text)

    def _complete(self, request: _Request) -> _Completion:
        timeout = request.args.timeout or self.timeout
        streams: list[lms.PredictionStream] = []
        if timeout is None:
            text = "".join(self._fragments(request, streams))
            return _Completion(text, _stop_reason(streams))
        # The SDK's own sync timeout is one process-wide setting, so a per-call limit runs
        # the prediction in a daemon thread and cancels it on the server when time is up.
        future: concurrent.futures.Future[str] = concurrent.futures.Future()

        def consume() -> None:
            try:
                future.set_result("".join(self._fragments(request, streams)))
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)

        threading.Thread(target=consume, name="outlines-lmstudio-timeout", daemon=True).start()
        try:
            text = future.result(timeout)
        except concurrent.futures.TimeoutError:
            if streams:
                with contextlib.suppress(lms.LMStudioError):
                    streams[-1].cancel()  # thread-safe; the server stops generating
            raise self._timeout_error(request.key, timeout) from None
        return _Completion(text, _stop_reason(streams))

    # -- Outlines API --------------------------------------------------------------
    def generate(self, model_input: Any, output_type: Any = None, **inference_kwargs: Any) -> str:
        """Generate a complete response.

        Parameters
        ----------
        model_input
            A str, a list ``[prompt, Image, ...]``, an Outlines ``Chat`` or an
            ``lmstudio.Chat``.
        output_type
            ``None`` for free text, or a structured output type.
        **inference_kwargs
            ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``min_p``,
            ``repeat_penalty``, ``stop``, ``config``, ``preset``, ``model``,
            ``timeout`` and the SDK callbacks.

        Returns
        -------
        str
            The generated text (a JSON document for JSON-schema output types).
        """
        return self._run(self._prepare(model_input, output_type, inference_kwargs))

    def generate_stream(
        self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
    ) -> Iterator[str]:
        """Stream a response; leaving the iteration early cancels it on the server.

        Parameters
        ----------
        model_input
            As for `generate`.
        output_type
            As for `generate`.
        **inference_kwargs
            As for `generate`.

        Returns
        -------
        Iterator[str]
            Text fragments as they arrive.
        """
        request = self._prepare(model_input, output_type, inference_kwargs)
        if request.plan.kind == "simple":
            return iter([request.plan.render("".join(self._fragments(request)))])
        return self._fragments(request)

    def generate_batch(
        self, model_input: list[Any], output_type: Any = None, **inference_kwargs: Any
    ) -> list[str]:
        """Generate responses to several inputs concurrently, in input order.

        Parameters
        ----------
        model_input
            The inputs.
        output_type
            The output type, the same for every input.
        **inference_kwargs
            As for `generate`, plus ``max_concurrency``.

        Returns
        -------
        list[str]
            One response per input, in input order.

        Raises
        ------
        BatchGenerationError
            If any item failed; it holds the other results and each error by index.
        """
        requests, limit = self._prepare_batch(model_input, output_type, inference_kwargs)
        return self._map(self._run, requests, limit)

    # -- typed results ---------------------------------------------------------------
    def parse(
        self, model_input: Any, output_type: Any, *, retries: int = 0, **inference_kwargs: Any
    ) -> Any:
        """Generate and return a validated value of ``output_type``.

        Parameters
        ----------
        model_input
            One input (as for `generate`), or a list of inputs (str, Chat or
            ``[prompt, Image, ...]`` lists), answered concurrently in order.
        output_type
            The type to return: a Pydantic model (an instance comes back), a
            dataclass, TypedDict, dict/str JSON schema (a dict comes back), int,
            Enum (a member comes back), Literal, ...
        retries
            How many times to re-ask, with the validation errors, when a reply
            does not validate.
        **inference_kwargs
            As for `generate` (plus ``max_concurrency`` for a list of inputs).

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
        """
        retries = _check_retries(retries)
        if _is_batch(model_input):
            requests, limit = self._prepare_batch(model_input, output_type, inference_kwargs)
            return self._map(lambda r: self._parse(r, retries), requests, limit)
        return self._parse(self._prepare(model_input, output_type, inference_kwargs), retries)

    def _parse(self, request: _Request, retries: int) -> Any:
        validator = validator_for(request.plan)
        for attempt in range(1, retries + 2):
            done = self._complete(request)
            ok, value, errors = check_reply(
                validator, done.text, done.stop_reason, attempt, attempt > retries
            )
            if ok:
                return value
            request = replace(request, prompt=reask_prompt(request.prompt, done.text, errors))
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    def parse_stream(
        self, model_input: Any, output_type: Any, **inference_kwargs: Any
    ) -> Iterator[Any]:
        """Yield partial values while the reply streams, then the validated value.

        Parameters
        ----------
        model_input
            As for `generate`.
        output_type
            As for `parse`.
        **inference_kwargs
            As for `generate`.

        Returns
        -------
        Iterator[Any]
            Partial JSON values (dicts, lists, strings, each more complete than the
            last), then the final value of ``output_type``.
        """
        request = self._prepare(model_input, output_type, inference_kwargs)
        return self._parse_stream(request)

    def _parse_stream(self, request: _Request) -> Iterator[Any]:
        validator = validator_for(request.plan)
        streams: list[lms.PredictionStream] = []
        text, last = "", None
        for chunk in self._fragments(request, streams):
            text += chunk
            value = partial_value(text)
            if value is not None and value != last:
                last = value
                yield value
        yield check_reply(validator, text, _stop_reason(streams), 1, True)[1]

    def _map(self, work: Any, requests: list[_Request], limit: int) -> list[Any]:
        if not requests:
            return []
        results: list[Any] = []
        with concurrent.futures.ThreadPoolExecutor(min(limit, len(requests))) as pool:
            futures = [pool.submit(work, r) for r in requests]
            for future in futures:
                error = future.exception()
                results.append(error if error is not None else future.result())
        return _batch_result(results)


class AsyncLMStudio(_Common, _OutlinesAsyncLMStudio):
    """An Outlines model backed by LM Studio through an ``lmstudio.AsyncClient``.

    The client is entered (``async with``) on first use if it is not already,
    exactly once even under concurrent first calls, and only a client entered
    here is closed by `close`. The model is an async context manager.

    Parameters
    ----------
    client
        An ``lmstudio.AsyncClient``, entered or not.
    model_name
        The model key to use, or ``None`` for the model LM Studio has loaded.
    max_concurrency
        Most predictions ``batch`` runs at once.
    timeout
        Seconds to wait for a complete answer (``None``: no limit of ours).
    """

    client: lms.AsyncClient

    def __init__(
        self,
        client: lms.AsyncClient,
        model_name: str | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(client, lms.AsyncClient):
            raise TypeError(
                f"AsyncLMStudio needs an lmstudio.AsyncClient, got {type(client).__name__}."
            )
        self.client = client
        self.model_name = _check_model_name(model_name)
        self._adapter = self.type_adapter = LMStudioTypeAdapter()
        self.max_concurrency = _check_concurrency(max_concurrency)
        self.timeout = _check_timeout(timeout)
        self._enter_lock = asyncio.Lock()
        self._ready = False
        self._owns_client = False

    # -- lifecycle -----------------------------------------------------------------
    async def _ensure_client(self) -> None:
        if self._ready:
            return
        async with self._enter_lock:
            await self._enter_once()

    async def _enter_once(self) -> None:
        """Enter the client unless it is already entered (called under the lock)."""
        if not self._ready:
            try:
                self.client.llm  # noqa: B018 - raises KeyError until the client is entered
            except KeyError:
                try:
                    await self.client.__aenter__()
                except lms.LMStudioError as exc:
                    raise self._error(exc, None, "connect") from exc
                self._owns_client = True
            self._ready = True

    async def close(self) -> None:
        """Close the client if this model entered it; safe to call more than once."""
        async with self._enter_lock:
            if self._owns_client:
                self._owns_client = False
                _ASYNC_HANDLES.clear(self.client)
                _ASYNC_IMAGES.clear(self.client)
                await self.client.aclose()
            self._ready = False

    async def __aenter__(self) -> Self:
        await self._ensure_client()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- I/O helpers ---------------------------------------------------------------
    async def _handle(self, key: str | None) -> lms.AsyncLLM:
        async def resolve() -> lms.AsyncLLM:
            try:
                return await (self.client.llm.model(key) if key else self.client.llm.model())
            except lms.LMStudioClientError as exc:
                if key is None and "no models" in str(exc).lower():
                    raise LMStudioModelNotFoundError(
                        "LM Studio has no model loaded, and no model_name was given.",
                        host=client_host(self.client),
                        hint="Load a model in LM Studio, or pass model_name to from_lmstudio.",
                    ) from exc
                raise self._error(exc, key, "resolve") from exc
            except lms.LMStudioError as exc:
                raise self._error(exc, key, "resolve") from exc

        return await _ASYNC_HANDLES.get(self.client, key, resolve)

    async def _reconnect(self, generation: int) -> None:
        """Reconnect dead sessions (the async SDK does not reconnect by itself)."""

        async def reset() -> None:
            _ASYNC_IMAGES.clear(self.client)
            for session in (self.client.llm, self.client.files):
                with contextlib.suppress(lms.LMStudioError):
                    await session.disconnect()
                try:
                    await session.connect()
                except lms.LMStudioError as exc:
                    raise self._error(exc, None, "connect") from exc

        await _ASYNC_RECONNECTS.reset(self.client, generation, reset)

    async def _chat(self, request: _Request) -> lms.Chat:
        handles: dict[str, FileHandle] = {}
        for image in request.prompt.images:

            async def upload(image: Any = image) -> FileHandle:
                try:
                    return await self.client.files.prepare_image(image.data, name=image.name)
                except lms.LMStudioError as exc:
                    raise self._error(exc, request.key, "upload") from exc

            handles[image.digest] = await _ASYNC_IMAGES.get(self.client, image.digest, upload)
        return build_chat(request.prompt, handles)

    async def _fragments(
        self, request: _Request, streams: list[lms.AsyncPredictionStream] | None = None
    ) -> AsyncIterator[str]:
        """Yield answer fragments; cancel on the server if left early or cancelled.

        The SDK stream is read by an inner task: when the task consuming this
        iterator is cancelled, the SDK would otherwise release the channel before
        a cancel could be sent (the server would keep generating).
        """
        await self._ensure_client()
        for attempt in (1, 2):
            generation = _ASYNC_RECONNECTS.generation(self.client)
            try:
                chat = await self._chat(request)
            except LMStudioConnectionError as exc:
                if attempt == 1 and _dropped(exc):
                    await self._reconnect(generation)
                    continue
                raise
            handle = await self._handle(request.key)
            stream = await handle.respond_stream(chat, **request.sdk_kwargs())
            if streams is not None:
                streams.append(stream)
            queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            pump = asyncio.create_task(_pump(stream, queue))
            started = False
            try:
                while True:
                    kind, item = await queue.get()
                    if kind == "fragment":
                        started = True
                        yield item
                    elif kind == "done":
                        return
                    else:
                        raise item
            except lms.LMStudioModelNotFoundError as exc:
                if attempt == 1 and not started:
                    _ASYNC_HANDLES.forget(self.client, request.key)
                    continue
                raise self._error(exc, request.key, "predict") from exc
            except lms.LMStudioWebsocketError as exc:
                await self._reconnect(generation)
                if attempt == 1 and not started:
                    continue
                raise self._error(exc, request.key, "predict") from exc
            except lms.LMStudioError as exc:
                raise self._error(exc, request.key, "predict") from exc
            finally:
                if not pump.done():
                    await _stop(stream, pump)

    async def _collect(self, request: _Request) -> _Completion:
        streams: list[lms.AsyncPredictionStream] = []
        parts = [part async for part in self._fragments(request, streams)]
        return _Completion("".join(parts), _stop_reason(streams))

    async def _complete(self, request: _Request) -> _Completion:
        timeout = request.args.timeout or self.timeout
        if timeout is None:
            return await self._collect(request)
        try:
            async with asyncio.timeout(timeout):
                return await self._collect(request)
        except TimeoutError:
            raise self._timeout_error(request.key, timeout) from None

    async def _run(self, request: _Request) -> str:
        return request.plan.render((await self._complete(request)).text)

    # -- Outlines API --------------------------------------------------------------
    async def generate(
        self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
    ) -> str:
        """Generate a complete response (see `LMStudio.generate`).

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
            The generated text.
        """
        return await self._run(self._prepare(model_input, output_type, inference_kwargs))

    def generate_stream(  # type: ignore[override]
        self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
    ) -> AsyncIterator[str]:
        """Stream a response; leaving early (``break``, ``aclose``) cancels it on the server.

        Outlines declares this method ``async def``; it is a plain method here so
        that bad input raises at the call, before any request is sent.

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
        AsyncIterator[str]
            Text fragments as they arrive.
        """
        request = self._prepare(model_input, output_type, inference_kwargs)
        if request.plan.kind == "simple":
            return self._single(request)
        return self._fragments(request)

    def stream(
        self,
        model_input: Any,
        output_type: Any = None,
        backend: str | None = None,
        **inference_kwargs: Any,
    ) -> AsyncIterator[str]:
        """Stream a response (``async for chunk in model.stream(...)``).

        Unlike Outlines' own method, bad input raises here, at the call.

        Parameters
        ----------
        model_input
            As for `LMStudio.generate`.
        output_type
            As for `LMStudio.generate`.
        backend
            Unused (LM Studio does the constrained decoding); must be ``None``.
        **inference_kwargs
            As for `LMStudio.generate`.

        Returns
        -------
        AsyncIterator[str]
            Text fragments as they arrive.
        """
        _no_backend(backend)
        return self.generate_stream(model_input, output_type, **inference_kwargs)

    async def _single(self, request: _Request) -> AsyncIterator[str]:
        yield await self._run(request)

    async def generate_batch(
        self, model_input: list[Any], output_type: Any = None, **inference_kwargs: Any
    ) -> list[str]:
        """Generate responses to several inputs concurrently, in input order.

        Parameters
        ----------
        model_input
            The inputs.
        output_type
            The output type, the same for every input.
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
        """
        requests, limit = self._prepare_batch(model_input, output_type, inference_kwargs)
        return await self._map(self._run, requests, limit)

    async def _map(self, work: Any, requests: list[_Request], limit: int) -> list[Any]:
        await self._ensure_client()
        semaphore = asyncio.Semaphore(limit)

        async def one(request: _Request) -> Any:
            async with semaphore:
                return await work(request)

        results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
        return _batch_result(results)

    # -- typed results ---------------------------------------------------------------
    async def parse(
        self, model_input: Any, output_type: Any, *, retries: int = 0, **inference_kwargs: Any
    ) -> Any:
        """Generate and return a validated value of ``output_type`` (see `LMStudio.parse`).

        Parameters
        ----------
        model_input
            One input, or a list of inputs answered concurrently in order.
        output_type
            The type to return.
        retries
            How many times to re-ask with the validation errors.
        **inference_kwargs
            As for `LMStudio.generate`.

        Returns
        -------
        Any
            The value (a list of values for a list of inputs).
        """
        retries = _check_retries(retries)
        if _is_batch(model_input):
            requests, limit = self._prepare_batch(model_input, output_type, inference_kwargs)

            async def one(request: _Request) -> Any:
                return await self._parse(request, retries)

            return await self._map(one, requests, limit)
        return await self._parse(self._prepare(model_input, output_type, inference_kwargs), retries)

    async def _parse(self, request: _Request, retries: int) -> Any:
        validator = validator_for(request.plan)
        for attempt in range(1, retries + 2):
            done = await self._complete(request)
            ok, value, errors = check_reply(
                validator, done.text, done.stop_reason, attempt, attempt > retries
            )
            if ok:
                return value
            request = replace(request, prompt=reask_prompt(request.prompt, done.text, errors))
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    def parse_stream(
        self, model_input: Any, output_type: Any, **inference_kwargs: Any
    ) -> AsyncIterator[Any]:
        """Yield partial values while the reply streams, then the validated value.

        Parameters
        ----------
        model_input
            As for `LMStudio.generate`.
        output_type
            As for `LMStudio.parse`.
        **inference_kwargs
            As for `LMStudio.generate`.

        Returns
        -------
        AsyncIterator[Any]
            Partial JSON values, then the final value of ``output_type``.
        """
        return self._parse_stream(self._prepare(model_input, output_type, inference_kwargs))

    async def _parse_stream(self, request: _Request) -> AsyncIterator[Any]:
        validator = validator_for(request.plan)
        streams: list[lms.AsyncPredictionStream] = []
        text, last = "", None
        async for chunk in self._fragments(request, streams):
            text += chunk
            value = partial_value(text)
            if value is not None and value != last:
                last = value
                yield value
        yield check_reply(validator, text, _stop_reason(streams), 1, True)[1]


@overload
def from_lmstudio(
    client: lms.Client, model_name: str | None = None, **options: Any
) -> LMStudio: ...
@overload
def from_lmstudio(
    client: lms.AsyncClient, model_name: str | None = None, **options: Any
) -> AsyncLMStudio: ...
def from_lmstudio(
    client: lms.Client | lms.AsyncClient, model_name: str | None = None, **options: Any
) -> LMStudio | AsyncLMStudio:
    """Create an Outlines model from an ``lmstudio`` client.

    Parameters
    ----------
    client
        An ``lmstudio.Client`` (gives `LMStudio`) or ``lmstudio.AsyncClient``
        (gives `AsyncLMStudio`).
    model_name
        The model key, or ``None`` to use the model LM Studio has loaded.
    **options
        ``max_concurrency`` (default 4) and ``timeout`` (seconds).

    Returns
    -------
    LMStudio | AsyncLMStudio
        A model usable with ``outlines.Generator``.

    Raises
    ------
    TypeError
        If ``client`` is neither an ``lmstudio.Client`` nor an ``lmstudio.AsyncClient``.
    """
    unknown = sorted(set(options) - {"max_concurrency", "timeout"})
    if unknown:
        raise InvalidInferenceArgumentError(
            f"Unknown option(s) {unknown} for from_lmstudio. Accepted: max_concurrency, timeout. "
            "Inference settings (temperature, max_tokens, ...) go on each call."
        )
    if isinstance(client, lms.Client):
        return LMStudio(client, model_name, **options)
    if isinstance(client, lms.AsyncClient):
        return AsyncLMStudio(client, model_name, **options)
    raise TypeError(
        "from_lmstudio needs an lmstudio.Client or an lmstudio.AsyncClient, "
        f"got {type(client).__name__}. Create one with lmstudio.Client('localhost:1234')."
    )
