"""`LMStudio`: the Outlines model over a sync ``lmstudio.Client``."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import Any

import lmstudio as lms
from lmstudio import FileHandle
from outlines.models.lmstudio import LMStudio as _OutlinesLMStudio

from ._common import (
    DEFAULT_MAX_CONCURRENCY,
    SYNC_FORMATS,
    SYNC_HANDLES,
    SYNC_IMAGES,
    SYNC_RECONNECTS,
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
from ._interrupt import SigintGuard
from ._sdk_errors import client_host
from ._streams import stream_text
from ._typed import check_reply, partial_value, reask_prompt, validator_for
from .errors import LMStudioConnectionError, LMStudioModelNotFoundError

__all__ = ["LMStudio"]


class LMStudio(Common, _OutlinesLMStudio):
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

        return SYNC_HANDLES.get(self.client, key, resolve)

    def _check_grammar_engine(self, handle: lms.LLM, key: str | None) -> None:
        """Refuse a GBNF grammar for a model whose engine is not llama.cpp (before predicting)."""

        def fetch() -> str:
            try:
                return str(handle.get_info().format)
            except lms.LMStudioError as exc:
                raise self._error(exc, key, "resolve") from exc

        grammar_check(SYNC_FORMATS.get(self.client, handle.identifier, fetch), handle.identifier)

    def _reconnect(self, generation: int) -> None:
        """Reconnect dead sessions and forget the uploads tied to them."""

        def reset() -> None:
            SYNC_IMAGES.clear(self.client)
            for session in (self.client.llm, self.client.files):
                was_connected = session.connected
                with contextlib.suppress(lms.LMStudioError):
                    session.disconnect()
                if was_connected:
                    # Connect here, under the reset lock: the SDK's lazy reconnect is not
                    # thread-safe (threads retrying together would each open a socket).
                    try:
                        session.connect()
                    except lms.LMStudioError as exc:
                        raise self._error(exc, None, "connect") from exc

        SYNC_RECONNECTS.reset(self.client, generation, reset)

    def _chat(self, request: Request) -> lms.Chat:
        handles: dict[str, FileHandle] = {}
        for image in request.prompt.images:

            def upload(image: Any = image) -> FileHandle:
                try:
                    return self.client.files.prepare_image(image.data, name=image.name)
                except lms.LMStudioError as exc:
                    raise self._error(exc, request.key, "upload") from exc

            handles[image.digest] = SYNC_IMAGES.get(self.client, image.digest, upload)
        return build_chat(request.prompt, handles)

    def _fragments(
        self,
        request: Request,
        streams: list[lms.PredictionStream] | None = None,
        guard: SigintGuard | None = None,
    ) -> Generator[str, None, None]:
        """Yield answer fragments; cancel on the server if left early; retry a vanished model.

        Each SDK stream opened is appended to ``streams`` so another thread can cancel it.
        ``guard``: a Ctrl-C guard the caller armed for the whole call; without one, the
        guard is armed only while waiting for each fragment (user code runs in between).
        """
        per_fragment = guard is None
        sigint = SigintGuard() if guard is None else guard
        for attempt in (1, 2):
            generation = SYNC_RECONNECTS.generation(self.client)
            try:
                chat = self._chat(request)
            except LMStudioConnectionError as exc:
                if dropped(exc):
                    self._reconnect(generation)
                    if attempt == 1 and per_fragment:
                        continue
                raise
            handle = self._handle(request.key)
            if request.plan.kind == "grammar":
                self._check_grammar_engine(handle, request.key)
            stream = handle.respond_stream(chat, **request.sdk_kwargs())
            if streams is not None:
                streams.append(stream)
            started = False
            try:
                texts = stream_text(stream, sigint, per_fragment=per_fragment)
                with contextlib.closing(texts):  # closing this generator cancels on the server
                    for text in texts:
                        started = True
                        yield text
                return
            except lms.LMStudioModelNotFoundError as exc:
                if attempt == 1 and not started:
                    SYNC_HANDLES.forget(self.client, request.key)
                    continue
                raise self._error(exc, request.key, "predict") from exc
            except lms.LMStudioWebsocketError as exc:
                self._reconnect(generation)  # the next call (or the retry) reconnects
                if attempt == 1 and not started and per_fragment:
                    continue
                raise self._error(exc, request.key, "predict") from exc
            except lms.LMStudioError as exc:
                raise self._error(exc, request.key, "predict") from exc

    def _run(self, request: Request) -> str:
        return request.plan.render(self._complete(request).text)

    def _join_retrying(
        self, request: Request, streams: list[lms.PredictionStream], guard: SigintGuard
    ) -> str:
        """Collect a whole reply; after a lost connection, ask once more on a new one.

        Nobody has seen part of the reply yet, so asking again is safe (a stream
        that already yielded fragments raises instead).
        """
        try:
            return "".join(self._fragments(request, streams, guard))
        except LMStudioConnectionError as exc:
            if not dropped(exc):
                raise
        return "".join(self._fragments(request, streams, guard))

    def _complete(self, request: Request) -> Completion:
        timeout = request.args.timeout or self.timeout
        streams: list[lms.PredictionStream] = []
        if timeout is None:
            guard = SigintGuard()
            guard.arm()
            try:
                text = self._join_retrying(request, streams, guard)
            finally:
                guard.disarm()
            return Completion(text, stop_reason(streams))
        # The SDK's own sync timeout is one process-wide setting, so a per-call limit runs
        # the prediction in a daemon thread and cancels it on the server when time is up.
        future: concurrent.futures.Future[str] = concurrent.futures.Future()

        def consume() -> None:
            try:
                future.set_result(self._join_retrying(request, streams, SigintGuard()))
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
        return Completion(text, stop_reason(streams))

    # -- Outlines API --------------------------------------------------------------
    def __call__(
        self,
        model_input: Any,
        output_type: Any = None,
        backend: str | None = None,
        **inference_kwargs: Any,
    ) -> Any:
        """Generate a response (``model(prompt, T)``); see `generate`.

        Parameters
        ----------
        model_input
            As for `generate`.
        output_type
            As for `generate`.
        backend
            Must be ``None``: LM Studio does the constrained decoding itself.
        **inference_kwargs
            As for `generate`.

        Returns
        -------
        Any
            The generated text.
        """
        no_backend(backend)
        return super().__call__(model_input, output_type, None, **inference_kwargs)

    def stream(
        self,
        model_input: Any,
        output_type: Any = None,
        backend: str | None = None,
        **inference_kwargs: Any,
    ) -> Iterator[Any]:
        """Stream a response; see `generate_stream`.

        Parameters
        ----------
        model_input
            As for `generate`.
        output_type
            As for `generate`.
        backend
            Must be ``None``.
        **inference_kwargs
            As for `generate`.

        Returns
        -------
        Iterator[Any]
            Text fragments as they arrive.
        """
        no_backend(backend)
        return super().stream(model_input, output_type, None, **inference_kwargs)

    def batch(
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
            As for `generate`.
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
        return super().batch(model_input, output_type, None, **inference_kwargs)

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
        retries = check_retries(retries)
        if is_batch(model_input):
            requests, limit = self._prepare_batch(model_input, output_type, inference_kwargs)
            return self._map(lambda r: self._parse(r, retries), requests, limit)
        return self._parse(self._prepare(model_input, output_type, inference_kwargs), retries)

    def _parse(self, request: Request, retries: int) -> Any:
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

    def _parse_stream(self, request: Request) -> Iterator[Any]:
        validator = validator_for(request.plan)
        streams: list[lms.PredictionStream] = []
        text, last = "", None
        for chunk in self._fragments(request, streams):
            text += chunk
            value = partial_value(text)
            if value is not None and value != last:
                last = value
                yield value
        yield check_reply(validator, text, stop_reason(streams), 1, True)[1]

    def _map(self, work: Any, requests: list[Request], limit: int) -> list[Any]:
        if not requests:
            return []
        results: list[Any] = []
        with concurrent.futures.ThreadPoolExecutor(min(limit, len(requests))) as pool:
            futures = [pool.submit(work, r) for r in requests]
            for future in futures:
                error = future.exception()
                results.append(error if error is not None else future.result())
        return batch_result(results)
