"""Errors raised by outlines-lmstudio.

Every error derives from `OutlinesLMStudioError` and also from the builtin
exception that matches its meaning, so ``except TypeError`` keeps working for
code written against Outlines. A subclass also is what its parent is (an
`InvalidClientError` is a ``TypeError`` and a ``ValueError``):

```
OutlinesLMStudioError
├── UnsupportedInputError      (TypeError, ValueError) input type or shape not understood
├── InvalidPromptError         (ValueError)   empty prompt, list or chat
├── UnsupportedOutputTypeError (TypeError)    output type not supported
├── InvalidInferenceArgumentError (TypeError) unknown, mistyped or conflicting argument
│   ├── InvalidClientError     (ValueError)   not an lmstudio.Client / AsyncClient
│   └── UnknownSettingError    (AttributeError) a model attribute that is not a setting
├── InvalidInferenceValueError (ValueError)   keyword value out of range
├── InvalidSchemaError         (ValueError)   malformed JSON schema
├── UnsupportedGrammarError    (ValueError)   regex/grammar construct GBNF cannot express
├── InvalidImageError          (ValueError)   image cannot be read or converted
├── ParseError                 (ValueError)   reply does not validate as the type asked for
│   ├── TruncatedOutputError                  ...because max tokens / context cut it off
│   │   └── ReasoningTruncatedError           ...while the model was still reasoning
│   └── EmptyAnswerError                      ...the model reasoned, then answered nothing
├── LMStudioConnectionError    (ConnectionError) server unreachable or went away
├── LMStudioModelNotFoundError (LookupError)  no such model on the server
├── LMStudioTimeoutError       (TimeoutError) no answer in time
├── LMStudioPredictionError    (RuntimeError) the server failed a prediction
└── BatchGenerationError       (RuntimeError) some batch items failed
```

The four server errors also derive from the ``lmstudio`` SDK's exception of the same
meaning, which Outlines' LM Studio model lets through, so ``except`` clauses written for
that model keep working: `LMStudioConnectionError` is an ``lmstudio.LMStudioWebsocketError``,
`LMStudioModelNotFoundError` an ``lmstudio.LMStudioModelNotFoundError``,
`LMStudioTimeoutError` an ``lmstudio.LMStudioTimeoutError``, `LMStudioPredictionError` an
``lmstudio.LMStudioPredictionError``, and so each an ``lmstudio.LMStudioError``. The
not-found and prediction errors are ``lmstudio.LMStudioServerError`` s: their
``server_error`` holds LM Studio's error details when it sent them, else ``None``.

A schema ``pattern`` that no engine constrains and ``parse`` cannot check either (a
lookaround, a backreference) is refused with an error that is both an
`UnsupportedOutputTypeError` and an `InvalidSchemaError` (a private subclass of the two).

Errors that wrap an SDK failure carry ``host``, ``model`` and ``hint`` and
keep the SDK exception as ``__cause__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lmstudio as lms

if TYPE_CHECKING:
    from outlines_lmstudio._reply import Reply

__all__ = [
    "BatchGenerationError",
    "EmptyAnswerError",
    "InvalidClientError",
    "InvalidImageError",
    "InvalidInferenceArgumentError",
    "InvalidInferenceValueError",
    "InvalidPromptError",
    "InvalidSchemaError",
    "LMStudioConnectionError",
    "LMStudioModelNotFoundError",
    "LMStudioPredictionError",
    "LMStudioTimeoutError",
    "OutlinesLMStudioError",
    "ParseError",
    "ReasoningTruncatedError",
    "TruncatedOutputError",
    "UnknownSettingError",
    "UnsupportedGrammarError",
    "UnsupportedInputError",
    "UnsupportedOutputTypeError",
]


class OutlinesLMStudioError(Exception):
    """Base class of every error raised by outlines-lmstudio."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuild from the message and the attributes, not by calling ``__init__``.

        ``Exception``'s own reduction calls ``cls(*args)``, which the errors taking
        keyword-only attributes (`ParseError`, `BatchGenerationError`...) refuse: without
        this they could not be pickled (a process pool, a task queue) or copied.
        """
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(
    cls: type[OutlinesLMStudioError], args: tuple[Any, ...], state: dict[str, Any]
) -> OutlinesLMStudioError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class UnsupportedInputError(OutlinesLMStudioError, TypeError, ValueError):
    """The model input has a type or shape LM Studio cannot take.

    A ``TypeError`` and a ``ValueError``: Outlines' own model raises the first for an input
    type it does not take and the second for a bad shape (an unknown role, a list item that
    is not an image), so code written for either catches this.
    """


class InvalidPromptError(OutlinesLMStudioError, ValueError):
    """The prompt is empty or has no user text."""


class UnsupportedOutputTypeError(OutlinesLMStudioError, TypeError):
    """The output type cannot be expressed as an LM Studio structured setting."""


class InvalidInferenceArgumentError(OutlinesLMStudioError, TypeError):
    """An argument is unknown, mistyped or given twice.

    Inference keywords, ``from_lmstudio`` options, and a client that is not an
    ``lmstudio.Client`` / ``lmstudio.AsyncClient`` (e.g. an ``openai.OpenAI``).
    """


class InvalidClientError(InvalidInferenceArgumentError, ValueError):
    """The client is not an ``lmstudio.Client`` / ``lmstudio.AsyncClient``.

    A ``ValueError`` too, as Outlines' own ``from_lmstudio`` raises for it: code written for
    Outlines catches it (found by a probe running Outlines' tests).
    """


class UnknownSettingError(InvalidInferenceArgumentError, AttributeError):
    """An assignment to a model attribute that is none of its settings (``model.tmeout = 5``).

    An ``AttributeError`` too, as Python raises for an attribute an object cannot take:
    without it a misspelt setting was stored and did nothing (found by a probe).
    """


class InvalidInferenceValueError(OutlinesLMStudioError, ValueError):
    """An inference keyword has a value out of its valid range."""


class InvalidSchemaError(OutlinesLMStudioError, ValueError):
    """A JSON schema is malformed or uses something we refuse (e.g. remote ``$ref``)."""


class UnsupportedGrammarError(OutlinesLMStudioError, ValueError):
    """A regex or grammar uses a construct GBNF cannot express (lookaround, backreference...)."""


class InvalidImageError(OutlinesLMStudioError, ValueError):
    """An image cannot be decoded or converted to a format LM Studio accepts."""


class _ServerError(OutlinesLMStudioError, lms.LMStudioError):
    """An SDK failure, with where it happened and what to try.

    Also an ``lmstudio.LMStudioError``, as each subclass is the SDK's exception of its
    meaning (the SDK's class before the builtin: the SDK's own timeout error puts its base
    first): code that caught the SDK's exceptions around Outlines' model catches ours.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        model: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.host = host
        self.model = model
        self.hint = hint
        parts = [message]
        where = ", ".join(
            f"{name}={value!r:.200}" for name, value in (("host", host), ("model", model)) if value
        )
        if where:
            parts.append(f"({where})")
        if hint:
            parts.append(f"Hint: {hint}")
        details = self.__dict__.get("server_error")  # an error made again keeps LM Studio's
        super().__init__(" ".join(parts))  # the SDK's server error base sets it to None
        if details is not None:
            self.__dict__["server_error"] = details


class LMStudioConnectionError(_ServerError, lms.LMStudioWebsocketError, ConnectionError):
    """LM Studio is not reachable, or the connection was lost."""


class LMStudioModelNotFoundError(_ServerError, lms.LMStudioModelNotFoundError, LookupError):
    """The requested model is not loaded or downloaded on the server."""


class LMStudioTimeoutError(_ServerError, lms.LMStudioTimeoutError, TimeoutError):
    """The server did not answer within the allowed time."""


class LMStudioPredictionError(_ServerError, lms.LMStudioPredictionError, RuntimeError):
    """The server reported a failure while predicting."""


class BatchGenerationError(OutlinesLMStudioError, RuntimeError):
    """Some items of a batch failed; the others' results are kept.

    Raised whenever an item fails, even if every item did (a client closed before the
    batch, a model that cannot load): ``except BatchGenerationError`` sees every failed
    batch. The message lists at most the first ten failed indexes, and says so when every
    item failed with the same error.

    Attributes
    ----------
    results
        One entry per input, in order: the result, or ``None`` where that item failed.
    errors
        The exception of each failed item, by index.
    """

    def __init__(self, results: list[Any], errors: dict[int, BaseException]) -> None:
        self.results = results
        self.errors = errors
        first = min(errors)
        error = f"{type(errors[first]).__name__}: {str(errors[first]).rstrip('.')}"
        if len(errors) < len(results):
            indexes = sorted(errors)
            shown = ", ".join(map(str, indexes[:_SHOWN]))
            shown += f", ... and {len(indexes) - _SHOWN} more" if indexes[_SHOWN:] else ""
            message = (
                f"{len(errors)} of {len(results)} batch items failed (indexes [{shown}]); "
                f"first, item {first}: {error}. "
                "The other results are in .results, each error in .errors."
            )
        elif len({(type(e), str(e)) for e in errors.values()}) == 1:
            message = (
                f"All {len(results)} batch items failed, each with the same error: {error}. "
                "Each item's error is in .errors; there are no results."
            )
        else:
            message = (
                f"All {len(results)} batch items failed; first, item {first}: {error}. "
                "Each item's error is in .errors; there are no results."
            )
        super().__init__(message)


_SHOWN = 10
"""How many failed indexes a `BatchGenerationError`'s message lists."""


class ParseError(OutlinesLMStudioError, ValueError):
    """The reply does not validate as the requested type.

    Attributes
    ----------
    raw
        The text the model returned (last attempt).
    errors
        The validation errors, one line each.
    stop_reason
        Why the model stopped (LM Studio's ``stopReason``), when known.
    attempts
        How many replies were asked for (1 + retries used).
    replies
        The replies of ``parse`` and ``parse_reply``'s attempts that came back, in order,
        each with its text, reasoning and stats (token counts): what the failed call spent.
        The last one is the reply ``raw`` is the text of; for a reasoning model's
        `EmptyAnswerError` or `ReasoningTruncatedError`, the reply with no answer (its
        reasoning and stats). Empty where no reply was parsed (``parse_stream``).
    """

    def __init__(
        self,
        message: str,
        *,
        raw: str,
        errors: list[str],
        stop_reason: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.raw = raw
        self.errors = errors
        self.stop_reason = stop_reason
        self.attempts = attempts
        self.replies: tuple[Reply, ...] = ()  # set by the parse that raises
        shown = raw if len(raw) <= 200 else raw[:200] + "..."
        details = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if errors[5:] else "")
        super().__init__(f"{message}: {details}. Raw reply: {shown!r}")


class TruncatedOutputError(ParseError):
    """The reply was cut off (max tokens or context length) before it was complete."""


class _ReasoningReplyError(ParseError):
    """A reasoning model's reply with no answer; keeps the reasoning and its counts."""

    def __init__(
        self,
        message: str,
        *,
        raw: str,
        errors: list[str],
        stop_reason: str | None = None,
        attempts: int = 1,
        reasoning: str = "",
        reasoning_tokens: int | None = None,
        predicted_tokens: int | None = None,
    ) -> None:
        self.reasoning = reasoning
        self.reasoning_tokens = reasoning_tokens
        self.predicted_tokens = predicted_tokens
        super().__init__(
            message, raw=raw, errors=errors, stop_reason=stop_reason, attempts=attempts
        )
        self.args = (message,)  # the message says it all; there is no reply text to show


class ReasoningTruncatedError(_ReasoningReplyError, TruncatedOutputError):
    """The token budget ran out while the model was still reasoning: there is no answer.

    Attributes
    ----------
    reasoning
        The reasoning text written before the stop.
    reasoning_tokens
        Tokens spent on reasoning, when known.
    predicted_tokens
        Tokens predicted in all, when known.
    """


class EmptyAnswerError(_ReasoningReplyError):
    """The model reasoned and then wrote an empty answer.

    Attributes
    ----------
    reasoning
        The reasoning text.
    reasoning_tokens
        Tokens spent on reasoning, when known.
    predicted_tokens
        Tokens predicted in all, when known.
    """
