"""Inference keyword arguments -> LM Studio prediction settings (pure, no I/O).

The SDK drops unknown keys of a prediction config silently, so every key is
checked here against the SDK's own config struct before anything is sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgspec
from lmstudio import LlmPredictionConfig

from .errors import InvalidInferenceArgumentError, InvalidInferenceValueError

__all__ = ["CALLBACK_KWARGS", "SIMPLE_KWARGS", "PredictionArgs", "parse_inference_kwargs"]

# Outlines/OpenAI-style keyword -> SDK config key (camelCase, as `to_dict()` emits).
SIMPLE_KWARGS: Mapping[str, str] = {
    "max_tokens": "maxTokens",
    "temperature": "temperature",
    "top_p": "topPSampling",
    "top_k": "topKSampling",
    "min_p": "minPSampling",
    "repeat_penalty": "repeatPenalty",
    "stop": "stopStrings",
}
CALLBACK_KWARGS = (
    "on_message",
    "on_first_token",
    "on_prediction_fragment",
    "on_prompt_processing_progress",
)
_OTHER_KWARGS = ("config", "preset", "model", "timeout")

# Keywords people carry over from other backends, with what to do instead.
_REDIRECTS: Mapping[str, str] = {
    "seed": "LM Studio takes the seed when the model is loaded: "
    "client.llm.model(key, config={'seed': N}), then pass that key as model_name",
    "response_format": "pass the output type as the second argument, e.g. model(prompt, Person)",
    "max_new_tokens": "use max_tokens=",
    "stop_strings": "use stop=",
    "top_p_sampling": "use top_p=",
}


@dataclass(frozen=True)
class PredictionArgs:
    """What a call's keyword arguments ask of the SDK.

    Attributes
    ----------
    config
        Prediction config in the SDK's camelCase dict form (``None`` if empty).
    preset
        Name of an LM Studio preset, or ``None``.
    callbacks
        SDK callbacks (``on_message``, ``on_first_token``, ...), passed through.
    model
        A per-call model key overriding the model's default, or ``None``.
    timeout
        Per-call timeout in seconds, or ``None`` for the model's default.
    """

    config: dict[str, Any] | None = None
    preset: str | None = None
    callbacks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    model: str | None = None
    timeout: float | None = None

    def sdk_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``LLM.respond`` / ``respond_stream``."""
        kwargs: dict[str, Any] = dict(self.callbacks)
        if self.config:
            kwargs["config"] = self.config
        if self.preset is not None:
            kwargs["preset"] = self.preset
        return kwargs


@cache
def _config_keys() -> dict[str, str]:
    """Map every accepted config key (camelCase and snake_case) to its camelCase form."""
    keys: dict[str, str] = {}
    for struct_field in msgspec.structs.fields(LlmPredictionConfig):
        keys[struct_field.name] = struct_field.encode_name
        keys[struct_field.encode_name] = struct_field.encode_name
    return keys


def accepted_keywords() -> list[str]:
    """Return the sorted list of accepted inference keywords."""
    return sorted([*SIMPLE_KWARGS, *CALLBACK_KWARGS, *_OTHER_KWARGS])


def _number(name: str, value: object, *, integer: bool = False) -> float:
    kind = "an int" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInferenceArgumentError(
            f"{name}= must be {kind}, got {type(value).__name__} {value!r}."
        )
    if integer and not isinstance(value, int):
        raise InvalidInferenceArgumentError(f"{name}= must be an int, got {value!r}.")
    if not math.isfinite(value):
        raise InvalidInferenceValueError(f"{name}= must be finite, got {value!r}.")
    return value


def _check_simple(name: str, value: object) -> object:
    """Validate one Outlines-style keyword and return its SDK value."""
    if name == "stop":
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list | tuple) or not all(isinstance(s, str) for s in stops):
            raise InvalidInferenceArgumentError(
                f"stop= must be a string or a list of strings, got {value!r}."
            )
        if any(s == "" for s in stops):
            raise InvalidInferenceValueError("stop= strings must not be empty.")
        return list(stops)
    if name in ("max_tokens", "top_k"):
        number = _number(name, value, integer=True)
        if number < 1:
            raise InvalidInferenceValueError(f"{name}= must be at least 1, got {value!r}.")
        return int(number)
    number = _number(name, value)
    if name == "temperature" and number < 0:
        raise InvalidInferenceValueError(f"temperature= must be >= 0, got {value!r}.")
    if name in ("top_p", "min_p") and not 0 <= number <= 1:
        raise InvalidInferenceValueError(f"{name}= must be between 0 and 1, got {value!r}.")
    if name == "repeat_penalty" and number <= 0:
        raise InvalidInferenceValueError(f"repeat_penalty= must be > 0, got {value!r}.")
    return number


def _user_config(config: object) -> dict[str, Any]:
    """Normalise ``config=`` to camelCase keys, refusing keys the SDK would drop."""
    if isinstance(config, LlmPredictionConfig):
        return dict(config.to_dict())
    if not isinstance(config, Mapping):
        raise InvalidInferenceArgumentError(
            "config= must be a dict or an lmstudio.LlmPredictionConfig, "
            f"got {type(config).__name__}."
        )
    keys = _config_keys()
    unknown = sorted(str(k) for k in config if k not in keys)
    if unknown:
        valid = sorted({v for v in keys.values()})
        raise InvalidInferenceArgumentError(
            f"Unknown key(s) in config=: {unknown}. LM Studio would ignore them silently. "
            f"Valid keys: {valid}."
        )
    result: dict[str, Any] = {}
    for key, value in config.items():
        camel = keys[key]
        if camel in result:
            raise InvalidInferenceArgumentError(
                f"config= sets {camel!r} twice (as {key!r} and in another spelling)."
            )
        result[camel] = value
    # Let the SDK's own struct check the value types now, before any request.
    try:
        LlmPredictionConfig._from_any_dict(result)
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        raise InvalidInferenceArgumentError(f"Invalid value in config=: {exc}") from exc
    return result


def parse_inference_kwargs(kwargs: Mapping[str, Any]) -> PredictionArgs:
    """Check and convert a call's inference keyword arguments.

    Parameters
    ----------
    kwargs
        The keyword arguments given to ``generate`` / ``stream`` / ``batch``.

    Returns
    -------
    PredictionArgs
        The SDK settings they ask for.

    Raises
    ------
    InvalidInferenceArgumentError
        For an unknown keyword, a wrong type, or a setting given twice.
    InvalidInferenceValueError
        For a value out of range.
    """
    known = set(accepted_keywords())
    for name in kwargs:
        if name in known:
            continue
        if name in _REDIRECTS:
            raise InvalidInferenceArgumentError(f"{name}= is not accepted: {_REDIRECTS[name]}.")
        raise InvalidInferenceArgumentError(
            f"Unknown keyword argument {name}=. Accepted: {', '.join(accepted_keywords())}."
        )
    config = _user_config(kwargs["config"]) if kwargs.get("config") is not None else {}
    for name, key in SIMPLE_KWARGS.items():
        if name not in kwargs or kwargs[name] is None:
            continue
        if key in config:
            raise InvalidInferenceArgumentError(
                f"{name}= and config[{key!r}] both set the same thing: give only one."
            )
        config[key] = _check_simple(name, kwargs[name])
    callbacks: dict[str, Callable[..., Any]] = {}
    for name in CALLBACK_KWARGS:
        callback = kwargs.get(name)
        if callback is None:
            continue
        if not callable(callback):
            raise InvalidInferenceArgumentError(f"{name}= must be callable, got {callback!r}.")
        callbacks[name] = callback
    preset = kwargs.get("preset")
    if preset is not None and (not isinstance(preset, str) or not preset):
        raise InvalidInferenceArgumentError(f"preset= must be a non-empty string, got {preset!r}.")
    model = kwargs.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidInferenceArgumentError(
            f"model= must be a non-empty model key string, got {model!r}."
        )
    timeout = kwargs.get("timeout")
    if timeout is not None:
        timeout = _number("timeout", timeout)
        if timeout <= 0:
            raise InvalidInferenceValueError(f"timeout= must be > 0 seconds, got {timeout!r}.")
    return PredictionArgs(
        config=config or None,
        preset=preset,
        callbacks=callbacks,
        model=model,
        timeout=timeout,
    )
