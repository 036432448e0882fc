"""`LMStudio`: the sync front, which performs the I/O of the flows in `_flow` with a ``Client``.

Everything this module decides is how to wait: in the caller's thread under a Ctrl-C guard,
or, for a call with a time limit, in a worker thread the caller waits for.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import lmstudio as lms
from lmstudio import FileHandle
from outlines.models.lmstudio import LMStudio as _OutlinesLMStudio

from . import _flow
from ._api import ModelApi
from ._common import (
    CONFIRM_SECONDS,
    DEFAULT_MAX_CONCURRENCY,
    SYNC_FORMATS,
    SYNC_HANDLES,
    SYNC_IMAGES,
    SYNC_RECONNECTS,
    Completion,
    Request,
)
from ._flow import Call, Emit, Flow, Runner, Sink
from ._interrupt import SigintGuard
from ._streams import SyncReader

__all__ = ["LMStudio"]


class LMStudio(ModelApi, _OutlinesLMStudio):
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
    grammar
        Grammar mode: send ``Regex``, ``CFG`` and other Outlines DSL terms as llama.cpp
        GBNF grammars (GGUF models only) instead of refusing them.
    """

    client: lms.Client
    _handles = SYNC_HANDLES
    _formats = SYNC_FORMATS
    _reconnects = SYNC_RECONNECTS

    def __init__(
        self,
        client: lms.Client,
        model_name: str | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        timeout: float | None = None,
        grammar: bool = False,
    ) -> None:
        if not isinstance(client, lms.Client):
            raise TypeError(f"LMStudio needs an lmstudio.Client, got {type(client).__name__}.")
        self.client = client
        self._configure(model_name, max_concurrency, timeout, grammar)
        self.type_adapter = self._adapter

    # -- drivers -----------------------------------------------------------------------------
    def _drive(self, runner: Runner[Any]) -> Iterator[Any]:
        with runner:
            for step in runner:
                if isinstance(step, Emit):
                    yield step.value
                    continue
                try:
                    runner.answer(getattr(self, step.method)(step))
                except Exception as exc:  # the flow decides what an I/O error means
                    runner.fail(exc)

    def _run(self, flow: Flow[Any]) -> Any:
        runner = Runner(flow)
        for _ in self._drive(runner):
            pass
        return runner.result

    def _iterate(self, request: Request, sink: Sink) -> Iterator[Any]:
        return self._predict(Call(request, front=SigintGuard()), sink)  # armed per wait

    def _predict(self, call: Call, sink: Sink) -> Iterator[Any]:
        try:
            yield from self._drive(Runner(_flow.predict(call, sink, self._error)))
        except KeyboardInterrupt:
            self._leave(call, CONFIRM_SECONDS)  # the process may exit next: see it confirmed
            raise
        finally:
            self._leave(call, 0)

    @staticmethod
    def _leave(call: Call, wait: float) -> None:
        """Cancel an unfinished prediction on the server, waiting at most ``wait`` s for it."""
        if not call.finished and call.reader is not None:
            call.finished = True
            call.reader.abandon(wait)

    def _whole(self, call: Call) -> Completion:
        """Run one whole prediction in this thread."""
        for _ in self._predict(call, Sink()):
            pass
        assert call.done is not None
        return call.done

    def _map(self, flows: list[Flow[Any]], limit: int) -> list[Any]:
        if not flows:
            return []
        results: list[Any] = []
        with concurrent.futures.ThreadPoolExecutor(min(limit, len(flows))) as pool:
            futures = [pool.submit(self._run, flow) for flow in flows]
            for future in futures:
                error = future.exception()
                results.append(error if error is not None else future.result())
        return _flow.batch_result(results)

    # -- effects -----------------------------------------------------------------------------
    def _complete(self, effect: _flow.Complete) -> Completion:
        timeout = effect.request.args.timeout or self.timeout
        if timeout is None:
            guard = SigintGuard()
            guard.arm()  # once for the whole call: nothing of ours runs between fragments
            try:
                return self._whole(Call(effect.request, front=guard))
            finally:
                guard.disarm()
        # The SDK's own sync timeout is one process-wide setting, so a per-call limit runs
        # the prediction in a daemon thread and cancels it on the server when time is up.
        call = Call(effect.request)
        future: concurrent.futures.Future[Completion] = concurrent.futures.Future()

        def consume() -> None:
            try:
                call.front = SigintGuard()  # made in this thread: off (signals are main-thread)
                future.set_result(self._whole(call))
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)

        threading.Thread(target=consume, name="outlines-lmstudio-timeout", daemon=True).start()
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if not call.finished and call.reader is not None:
                with contextlib.suppress(lms.LMStudioError):
                    call.reader.stream.cancel()  # thread-safe; the server stops generating
            raise self._timeout_error(effect.request.key, timeout) from None

    def _upload(self, effect: _flow.Upload) -> dict[str, FileHandle]:
        files = self.client.files
        return {
            image.digest: SYNC_IMAGES.get(
                self.client, image.digest, partial(files.prepare_image, image.data, name=image.name)
            )
            for image in effect.request.prompt.images
        }

    def _resolve(self, effect: _flow.Resolve) -> lms.LLM:
        llm, key = self.client.llm, effect.key
        return SYNC_HANDLES.get(self.client, key, lambda: llm.model(key) if key else llm.model())

    def _model_format(self, effect: _flow.ModelFormat) -> str:
        handle: lms.LLM = effect.handle
        return SYNC_FORMATS.get(
            self.client, handle.identifier, lambda: str(handle.get_info().format)
        )

    def _open(self, effect: _flow.Open) -> None:
        guard: SigintGuard = effect.call.front
        stream = effect.handle.respond_stream(effect.chat, **effect.kwargs)
        effect.call.reader = SyncReader(stream, guard, per_fragment=not guard.armed)

    def _read(self, effect: _flow.Read) -> list[lms.LlmPredictionFragment] | None:
        reader: SyncReader = effect.call.reader
        return reader.read()

    def _reconnect(self, effect: _flow.Reconnect) -> None:
        SYNC_RECONNECTS.reset(self.client, effect.generation, self._reset)

    def _reset(self) -> None:
        """Reconnect dead sessions and forget the uploads tied to them."""
        SYNC_IMAGES.clear(self.client)
        for session in (self.client.llm, self.client.files):
            was_connected = session.connected
            with contextlib.suppress(lms.LMStudioError):
                session.disconnect()
            if was_connected:
                # Connect here, under the reset lock: the SDK's lazy reconnect is not
                # thread-safe (threads retrying together would each open a socket).
                session.connect()
