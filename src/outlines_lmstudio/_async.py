"""`AsyncLMStudio`: the async front, which performs the I/O of the flows in `_flow`.

Everything this module decides is how to wait: tasks, ``asyncio.timeout``, a semaphore for
batches, and entering the client once under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator
from functools import partial
from types import TracebackType
from typing import Any, Self

import lmstudio as lms
from lmstudio import FileHandle
from outlines.models.lmstudio import AsyncLMStudio as _OutlinesAsyncLMStudio

from . import _flow
from ._api import ModelApi
from ._common import (
    ASYNC_FORMATS,
    ASYNC_HANDLES,
    ASYNC_IMAGES,
    ASYNC_RECONNECTS,
    DEFAULT_MAX_CONCURRENCY,
    Completion,
    Request,
)
from ._flow import Call, Emit, Flow, Runner, Sink
from ._streams import AsyncReader

__all__ = ["AsyncLMStudio"]


class AsyncLMStudio(ModelApi, _OutlinesAsyncLMStudio):
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
    _handles = ASYNC_HANDLES
    _formats = ASYNC_FORMATS
    _reconnects = ASYNC_RECONNECTS

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

    # -- lifecycle ---------------------------------------------------------------------------
    async def _ensure_client(self) -> None:
        if not self._ready:
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

    # -- drivers -----------------------------------------------------------------------------
    async def _drive(self, runner: Runner[Any]) -> AsyncIterator[Any]:
        with runner:
            for step in runner:
                if isinstance(step, Emit):
                    yield step.value
                    continue
                try:
                    answer = getattr(self, step.method)(step)
                    runner.answer(await answer if inspect.isawaitable(answer) else answer)
                except Exception as exc:  # the flow decides what an I/O error means
                    runner.fail(exc)

    async def _run(self, flow: Flow[Any]) -> Any:
        await self._ensure_client()
        runner = Runner(flow)
        async for _ in self._drive(runner):
            pass
        return runner.result

    async def _iterate(
        self, request: Request, sink: Sink, call: Call | None = None
    ) -> AsyncIterator[Any]:
        call = call or Call(request)
        await self._ensure_client()
        try:
            async for item in self._drive(Runner(_flow.predict(call, sink, self._error))):
                yield item
        finally:
            if not call.finished and call.reader is not None:
                await call.reader.stop()  # cancel on the server

    async def _map(self, flows: list[Flow[Any]], limit: int) -> list[Any]:
        await self._ensure_client()
        semaphore = asyncio.Semaphore(limit)

        async def one(flow: Flow[Any]) -> Any:
            async with semaphore:
                return await self._run(flow)

        results = await asyncio.gather(*(one(f) for f in flows), return_exceptions=True)
        return _flow.batch_result(results)

    # -- effects -----------------------------------------------------------------------------
    async def _complete(self, effect: _flow.Complete) -> Completion:
        call = Call(effect.request)
        timeout = effect.request.args.timeout or self.timeout
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                async for _ in self._iterate(effect.request, Sink(), call):
                    pass
        except TimeoutError:
            if not scope.expired():
                raise
            raise self._timeout_error(effect.request.key, timeout or 0) from None
        assert call.done is not None
        return call.done

    async def _upload(self, effect: _flow.Upload) -> dict[str, FileHandle]:
        files = self.client.files
        handles: dict[str, FileHandle] = {}
        for image in effect.request.prompt.images:
            upload = partial(files.prepare_image, image.data, name=image.name)
            handles[image.digest] = await ASYNC_IMAGES.get(self.client, image.digest, upload)
        return handles

    async def _resolve(self, effect: _flow.Resolve) -> lms.AsyncLLM:
        llm, key = self.client.llm, effect.key
        resolve = partial(llm.model, key) if key else llm.model
        return await ASYNC_HANDLES.get(self.client, key, resolve)

    async def _model_format(self, effect: _flow.ModelFormat) -> str:
        handle: lms.AsyncLLM = effect.handle

        async def fetch() -> str:
            return str((await handle.get_info()).format)

        return await ASYNC_FORMATS.get(self.client, handle.identifier, fetch)

    async def _open(self, effect: _flow.Open) -> None:
        stream = await effect.handle.respond_stream(effect.chat, **effect.kwargs)
        effect.call.reader = AsyncReader(stream)

    async def _read(self, effect: _flow.Read) -> list[lms.LlmPredictionFragment] | None:
        reader: AsyncReader = effect.call.reader
        return await reader.read()

    async def _reconnect(self, effect: _flow.Reconnect) -> None:
        await ASYNC_RECONNECTS.reset(self.client, effect.generation, self._reset)

    async def _reset(self) -> None:
        """Reconnect dead sessions (the async SDK does not reconnect by itself)."""
        ASYNC_IMAGES.clear(self.client)
        for session in (self.client.llm, self.client.files):
            with contextlib.suppress(lms.LMStudioError):
                await session.disconnect()
            await session.connect()
