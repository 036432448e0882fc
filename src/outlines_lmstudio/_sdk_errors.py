"""Translate ``lmstudio`` SDK exceptions into ours, with host, model and a hint."""

from __future__ import annotations

from typing import Literal

import lmstudio as lms

from .errors import (
    LMStudioConnectionError,
    LMStudioModelNotFoundError,
    LMStudioPredictionError,
    LMStudioTimeoutError,
    OutlinesLMStudioError,
)

__all__ = ["client_host", "translate_sdk_error"]

Stage = Literal["resolve", "predict", "upload", "connect"]

_START_HINT = (
    "Start LM Studio's server (Developer tab, or `lms server start`), check the host and "
    "port given to lms.Client(...), or test against outlines_lmstudio.testing.LMStudioEmulator."
)


def client_host(client: lms.Client | lms.AsyncClient) -> str | None:
    """Return the host a client talks to, or ``None`` if not yet resolved."""
    try:
        return client.api_host
    except lms.LMStudioError:
        return None


def translate_sdk_error(
    exc: BaseException,
    *,
    host: str | None,
    model: str | None,
    stage: Stage,
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

    Returns
    -------
    OutlinesLMStudioError | None
        The error to raise ``from exc``; ``None`` for exceptions that are not the SDK's.
    """
    if isinstance(exc, OutlinesLMStudioError):
        return exc
    if not isinstance(exc, lms.LMStudioError):
        return None
    text = " ".join(str(exc).split())
    if isinstance(exc, lms.LMStudioTimeoutError):
        return LMStudioTimeoutError(
            f"LM Studio did not answer in time: {text}",
            host=host,
            model=model,
            hint="Check that the model is not stuck loading; pass timeout= to wait longer.",
        )
    if isinstance(exc, lms.LMStudioWebsocketError) or "not reachable" in text:
        lost = "not reachable" not in text
        return LMStudioConnectionError(
            f"{'Lost the connection to' if lost else 'Cannot talk to'} LM Studio: {text}",
            host=host,
            model=model,
            hint="The next call reconnects; if LM Studio stopped, start it again."
            if lost
            else _START_HINT,
        )
    if isinstance(exc, lms.LMStudioModelNotFoundError) or (
        stage == "resolve" and isinstance(exc, lms.LMStudioServerError | lms.LMStudioClientError)
    ):
        return LMStudioModelNotFoundError(
            f"LM Studio has no model matching {model!r}: {text}" if model else text,
            host=host,
            model=model,
            hint="Load it in LM Studio (or `lms load <key>`), or pick one from "
            "client.llm.list_loaded() / `outlines-lmstudio models`.",
        )
    if isinstance(exc, lms.LMStudioPresetNotFoundError):
        return LMStudioPredictionError(
            f"LM Studio has no such preset: {text}",
            host=host,
            model=model,
            hint="Check the preset name in LM Studio's presets list.",
        )
    if stage == "upload":
        return LMStudioPredictionError(
            f"LM Studio refused the image upload: {text}", host=host, model=model
        )
    return LMStudioPredictionError(
        f"LM Studio failed the prediction: {text}",
        host=host,
        model=model,
        hint="See LM Studio's server log for details; check the model supports this request "
        "(e.g. images need a vision model).",
    )
