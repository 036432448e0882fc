"""What the sync and async models share: checked requests, caches, argument checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lmstudio as lms
from lmstudio import FileHandle
from outlines.inputs import Chat

from ._adapter import LMStudioTypeAdapter
from ._cache import AsyncClientCache, SyncClientCache
from ._config import PredictionArgs, check_seconds, parse_inference_kwargs
from ._inputs import ChatPrompt
from ._output import OutputPlan
from ._reconnect import AsyncReconnects, SyncReconnects
from ._sdk_errors import Stage, client_host, translate_sdk_error
from .errors import (
    InvalidInferenceArgumentError,
    InvalidInferenceValueError,
    LMStudioTimeoutError,
    OutlinesLMStudioError,
)

__all__ = [
    "ASYNC_FORMATS",
    "ASYNC_HANDLES",
    "ASYNC_IMAGES",
    "ASYNC_RECONNECTS",
    "CONFIRM_SECONDS",
    "DEFAULT_MAX_CONCURRENCY",
    "DRAIN_SECONDS",
    "Common",
    "Completion",
    "Request",
    "SYNC_FORMATS",
    "SYNC_HANDLES",
    "SYNC_IMAGES",
    "SYNC_RECONNECTS",
    "check_concurrency",
    "check_flag",
    "check_model_name",
    "check_retries",
    "check_timeout",
    "is_batch",
    "no_backend",
]

DRAIN_SECONDS = 5.0
"""How long a cancelled prediction may take to confirm before its reader is dropped."""

CONFIRM_SECONDS = 1.0
"""How long a Ctrl-C waits for LM Studio to confirm the cancel (the process may exit next)."""

DEFAULT_MAX_CONCURRENCY = 4
"""LM Studio serves 4 predictions at once per llama.cpp model by default."""

SYNC_HANDLES: SyncClientCache[lms.LLM] = SyncClientCache()
SYNC_IMAGES: SyncClientCache[FileHandle] = SyncClientCache()
ASYNC_HANDLES: AsyncClientCache[lms.AsyncLLM] = AsyncClientCache()
ASYNC_IMAGES: AsyncClientCache[FileHandle] = AsyncClientCache()
SYNC_RECONNECTS = SyncReconnects()
SYNC_FORMATS: SyncClientCache[str] = SyncClientCache()
ASYNC_FORMATS: AsyncClientCache[str] = AsyncClientCache()
ASYNC_RECONNECTS = AsyncReconnects()


@dataclass(frozen=True)
class Request:
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
class Completion:
    """A finished reply: its answer text and why the model stopped."""

    text: str
    stop_reason: str | None


def is_batch(model_input: object) -> bool:
    """Tell whether ``parse`` got several inputs rather than one ``[prompt, Image, ...]``."""
    return isinstance(model_input, list) and all(
        isinstance(item, str | list | Chat | lms.Chat) for item in model_input
    )


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInferenceArgumentError(f"{name} must be True or False, got {value!r}.")
    return value


def check_concurrency(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInferenceArgumentError(f"max_concurrency must be an int, got {value!r}.")
    if value < 1:
        raise InvalidInferenceValueError(f"max_concurrency must be at least 1, got {value}.")
    return value


def check_timeout(value: object) -> float | None:
    return check_seconds("timeout", value)


def check_model_name(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InvalidInferenceArgumentError(
            f"model_name must be a non-empty model key string or None, got {value!r}."
        )
    return value


class Common:
    """What the sync and async models share: checking a call before any I/O."""

    client: lms.Client | lms.AsyncClient
    model_name: str | None
    _adapter: LMStudioTypeAdapter
    max_concurrency: int
    timeout: float | None

    def _configure(
        self, model_name: object, max_concurrency: object, timeout: object, grammar: object
    ) -> None:
        """Check and store the settings both model classes take."""
        self.model_name = check_model_name(model_name)
        self._adapter = LMStudioTypeAdapter(grammar=check_flag("grammar", grammar))
        self.max_concurrency = check_concurrency(max_concurrency)
        self.timeout = check_timeout(timeout)

    def _prepare(self, model_input: Any, output_type: Any, kwargs: dict[str, Any]) -> Request:
        args = parse_inference_kwargs(kwargs)
        plan = self._adapter.plan_output(output_type)
        if plan.response_format is not None and args.config and "structured" in args.config:
            raise InvalidInferenceArgumentError(
                "Both an output type and config['structured'] were given: pass only one."
            )
        prompt = self._adapter.format_input(model_input)
        return Request(prompt, plan, args, args.model or self.model_name)

    def _prepare_batch(
        self, model_input: Any, output_type: Any, kwargs: dict[str, Any]
    ) -> tuple[list[Request], int]:
        if not isinstance(model_input, list | tuple):
            raise InvalidInferenceArgumentError(
                f"batch() takes a list of inputs, got {type(model_input).__name__}."
            )
        limit = check_concurrency(kwargs.pop("max_concurrency", self.max_concurrency))
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


def no_backend(backend: str | None) -> None:
    if backend is not None:
        raise InvalidInferenceArgumentError(
            f"backend={backend!r} has no effect: LM Studio does the constrained decoding itself. "
            "Leave backend unset."
        )


def check_retries(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInferenceValueError(f"retries must be an int >= 0, got {value!r}.")
    return value
