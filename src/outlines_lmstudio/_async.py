"""`AsyncLMStudio`: the Outlines model over an ``lmstudio.AsyncClient``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

import lmstudio as lms
from lmstudio import FileHandle
from outlines.models.lmstudio import AsyncLMStudio as _OutlinesAsyncLMStudio

from ._common import (
    ASYNC_FORMATS,
    ASYNC_HANDLES,
    ASYNC_IMAGES,
    ASYNC_RECONNECTS,
    DEFAULT_MAX_CONCURRENCY,
    DRAIN_SECONDS,
    Common,
    Completion,
    Request,
    batch_result,
    check_retries,
    dropped,
    grammar_check,
    is_batch,
    no_backend,
    stop_reason,
)
from ._inputs import build_chat
from ._sdk_errors import client_host
from ._typed import check_reply, partial_value, reask_prompt, validator_for
from .errors import LMStudioConnectionError, LMStudioModelNotFoundError

__all__ = ["AsyncLMStudio"]


async def _pump(
    stream: lms.AsyncPredictionStream, queue: asyncio.Queue[tuple[str, Any]], whole: bool
) -> None:
    """Read an SDK stream into a queue: answer fragments, then done or the error.

    With ``whole``, the answer is queued once, complete (no task switch per fragment).
    """
    parts: list[str] = []
    try:
        async for fragment in stream:
            if fragment.reasoning_type == "none":
                if whole:
                    parts.append(fragment.content)
                else:
                    queue.put_nowait(("fragment", fragment.content))
        if whole:
            queue.put_nowait(("fragment", "".join(parts)))
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
        await asyncio.wait_for(pump, DRAIN_SECONDS)
    except (TimeoutError, asyncio.CancelledError):
        pump.cancel()


class AsyncLMStudio(Common, _OutlinesAsyncLMStudio):
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
    grammar
        Grammar mode: send ``Regex``, ``CFG`` and other Outlines DSL terms as llama.cpp
        GBNF grammars (GGUF models only) instead of refusing them.
    """

    client: lms.AsyncClient

    def __init__(
        self,
        client: lms.AsyncClient,
        model_name: str | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        timeout: float | None = None,
        grammar: bool = False,
    ) -> None:
        if not isinstance(client, lms.AsyncClient):
            raise TypeError(
                f"AsyncLMStudio needs an lmstudio.AsyncClient, got {type(client).__name__}."
            )
        self.client = client
        self._configure(model_name, max_concurrency, timeout, grammar)
        self.type_adapter = self._adapter
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
                ASYNC_HANDLES.clear(self.client)
                ASYNC_IMAGES.clear(self.client)
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

        return await ASYNC_HANDLES.get(self.client, key, resolve)

    async def _check_grammar_engine(self, handle: lms.AsyncLLM, key: str | None) -> None:
        """Refuse a GBNF grammar for a model whose engine is not llama.cpp (before predicting)."""

        async def fetch() -> str:
            try:
                return str((await handle.get_info()).format)
            except lms.LMStudioError as exc:
                raise self._error(exc, key, "resolve") from exc

        model_format = await ASYNC_FORMATS.get(self.client, handle.identifier, fetch)
        grammar_check(model_format, handle.identifier)

    async def _reconnect(self, generation: int) -> None:
        """Reconnect dead sessions (the async SDK does not reconnect by itself)."""

        async def reset() -> None:
            ASYNC_IMAGES.clear(self.client)
            for session in (self.client.llm, self.client.files):
                with contextlib.suppress(lms.LMStudioError):
                    await session.disconnect()
                try:
                    await session.connect()
                except lms.LMStudioError as exc:
                    raise self._error(exc, None, "connect") from exc

        await ASYNC_RECONNECTS.reset(self.client, generation, reset)

    async def _chat(self, request: Request) -> lms.Chat:
        handles: dict[str, FileHandle] = {}
        for image in request.prompt.images:

            async def upload(image: Any = image) -> FileHandle:
                try:
                    return await self.client.files.prepare_image(image.data, name=image.name)
                except lms.LMStudioError as exc:
                    raise self._error(exc, request.key, "upload") from exc

            handles[image.digest] = await ASYNC_IMAGES.get(self.client, image.digest, upload)
        return build_chat(request.prompt, handles)

    async def _fragments(
        self,
        request: Request,
        streams: list[lms.AsyncPredictionStream] | None = None,
        whole: bool = False,
    ) -> AsyncIterator[str]:
        """Yield answer fragments; cancel on the server if left early or cancelled.

        The SDK stream is read by an inner task: when the task consuming this
        iterator is cancelled, the SDK would otherwise release the channel before
        a cancel could be sent (the server would keep generating).
        """
        await self._ensure_client()
        for attempt in (1, 2):
            generation = ASYNC_RECONNECTS.generation(self.client)
            try:
                chat = await self._chat(request)
            except LMStudioConnectionError as exc:
                if attempt == 1 and dropped(exc):
                    await self._reconnect(generation)
                    continue
                raise
            handle = await self._handle(request.key)
            if request.plan.kind == "grammar":
                await self._check_grammar_engine(handle, request.key)
            stream = await handle.respond_stream(chat, **request.sdk_kwargs())
            if streams is not None:
                streams.append(stream)
            queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            pump = asyncio.create_task(_pump(stream, queue, whole))
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
                    ASYNC_HANDLES.forget(self.client, request.key)
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

    async def _collect(self, request: Request) -> Completion:
        streams: list[lms.AsyncPredictionStream] = []
        parts = [part async for part in self._fragments(request, streams, whole=True)]
        return Completion("".join(parts), stop_reason(streams))

    async def _complete(self, request: Request) -> Completion:
        timeout = request.args.timeout or self.timeout
        if timeout is None:
            return await self._collect(request)
        try:
            async with asyncio.timeout(timeout):
                return await self._collect(request)
        except TimeoutError:
            raise self._timeout_error(request.key, timeout) from None

    async def _run(self, request: Request) -> str:
        return request.plan.render((await self._complete(request)).text)

    # -- Outlines API --------------------------------------------------------------
    async def __call__(
        self,
        model_input: Any,
        output_type: Any = None,
        backend: str | None = None,
        **inference_kwargs: Any,
    ) -> Any:
        """Generate a response (``await model(prompt, T)``); see `generate`.

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
        Any
            The generated text.
        """
        no_backend(backend)
        return await super().__call__(model_input, output_type, None, **inference_kwargs)

    async def batch(
        self,
        model_input: list[Any],
        output_type: Any = None,
        backend: str | None = None,
        **inference_kwargs: Any,
    ) -> list[Any]:
        """Generate responses to several inputs; see `generate_batch`.

        Parameters
        ----------
        model_input
            The inputs.
        output_type
            As for `LMStudio.generate`.
        backend
            Must be ``None``.
        **inference_kwargs
            As for `generate_batch`.

        Returns
        -------
        list[Any]
            One response per input, in order.
        """
        no_backend(backend)
        return await super().batch(model_input, output_type, None, **inference_kwargs)

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
        no_backend(backend)
        return self.generate_stream(model_input, output_type, **inference_kwargs)

    async def _single(self, request: Request) -> AsyncIterator[str]:
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

    async def _map(self, work: Any, requests: list[Request], limit: int) -> list[Any]:
        await self._ensure_client()
        semaphore = asyncio.Semaphore(limit)

        async def one(request: Request) -> Any:
            async with semaphore:
                return await work(request)

        results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
        return batch_result(results)

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
        retries = check_retries(retries)
        if is_batch(model_input):
            requests, limit = self._prepare_batch(model_input, output_type, inference_kwargs)

            async def one(request: Request) -> Any:
                return await self._parse(request, retries)

            return await self._map(one, requests, limit)
        return await self._parse(self._prepare(model_input, output_type, inference_kwargs), retries)

    async def _parse(self, request: Request, retries: int) -> Any:
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

    async def _parse_stream(self, request: Request) -> AsyncIterator[Any]:
        validator = validator_for(request.plan)
        streams: list[lms.AsyncPredictionStream] = []
        text, last = "", None
        async for chunk in self._fragments(request, streams):
            text += chunk
            value = partial_value(text)
            if value is not None and value != last:
                last = value
                yield value
        yield check_reply(validator, text, stop_reason(streams), 1, True)[1]
