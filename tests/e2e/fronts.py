"""Both fronts behind one test interface, so every end-to-end test runs on sync and async.

A test asks for the ``make_model`` fixture (parametrised ``sync`` / ``async``) and calls the
model as if it were sync. For the async front, the calls run on an event loop in a thread of
its own, with the ``AsyncClient`` entered on that loop; streams become iterators whose
``close()`` closes the async generator (so leaving early is the same act on both sides).
Anything one front does that the other does not fails the test on that front.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Literal

import lmstudio as lms

from outlines_lmstudio import AsyncLMStudio, LMStudio, from_lmstudio

Front = Literal["sync", "async"]
WAIT = 60.0  # no test call may take longer


class Loop:
    """An event loop running in a daemon thread, for driving async code from a sync test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, awaitable: Awaitable[Any]) -> Any:
        async def wrap() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(WAIT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()


def sync_stream(loop: Loop, stream: AsyncIterator[Any]) -> Iterator[Any]:
    """An async iterator read from a sync test; closing this generator closes it on the loop."""
    try:
        while True:
            try:
                item = loop.run(anext(stream))
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose: Callable[[], Awaitable[None]] = stream.aclose  # type: ignore[attr-defined]
        loop.run(aclose())


class Driven:
    """An async model whose calls look sync: values come back, streams are iterators."""

    def __init__(self, loop: Loop, model: AsyncLMStudio) -> None:
        self.loop, self.model = loop, model

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.model, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)  # bad input raises here, as on the sync front
            if hasattr(result, "__anext__"):
                return sync_stream(self.loop, result)
            return self.loop.run(result)

        return call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__getattr__("__call__")(*args, **kwargs)


class Fronts:
    """Make models on one front, against one emulator; close what was opened."""

    def __init__(self, front: Front, api_host: str) -> None:
        self.front, self.api_host = front, api_host
        self._closers: list[Callable[[], None]] = []
        self._loop: Loop | None = None

    def client(self, host: str | None = None, *, enter: bool = True) -> Any:
        """A new client of this front, closed at the end of the test.

        ``enter=False``: a client the model connects itself (sync: on first use; async:
        the model enters it).
        """
        if self.front == "sync":
            client = lms.Client(host or self.api_host)
            self._closers.append(client.close)
            return client
        loop = self.loop()
        async_client = lms.AsyncClient(host or self.api_host)
        if enter:
            loop.run(async_client.__aenter__())
        self._closers.append(lambda: loop.run(async_client.aclose()))
        return async_client

    def run(self, result: Any) -> Any:
        """The value of a sync result, or of an awaitable on the async front."""
        return result if self.front == "sync" else self.loop().run(result)

    @staticmethod
    def raw(model: Any) -> Any:
        """The model object itself (for ``outlines.Generator``)."""
        return model.model if isinstance(model, Driven) else model

    def loop(self) -> Loop:
        if self._loop is None:
            self._loop = Loop()
        return self._loop

    def model(self, client: lms.Client | lms.AsyncClient, *args: Any, **options: Any) -> Any:
        """``from_lmstudio(client, ...)``, driven as if sync."""
        model = from_lmstudio(client, *args, **options)
        if isinstance(model, LMStudio):
            return model
        return Driven(self.loop(), model)

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        if self._loop is not None:
            self._loop.close()
