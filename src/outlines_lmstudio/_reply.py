"""One call's answer, its reasoning and its stats (pure values, no I/O).

`Reply` is what ``model.reply(...)`` returns; `ReplyChunk` is one piece of
``model.reply_stream(...)``; `Parsed` is what ``model.parse_reply(...)`` returns.
`reply_stats` builds `ReplyStats` from the SDK's ``LlmPredictionStats`` (or its dict
form), adding what LM Studio does not report itself: the reasoning token count (summed
from the typed fragments) and the time to the first answer token (measured by the caller).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Parsed", "Reply", "ReplyChunk", "ReplyStats", "reply_stats", "stop_reason"]


@dataclass(frozen=True)
class ReplyChunk:
    """One piece of a streamed reply.

    Attributes
    ----------
    text
        The text of this piece (never empty when produced by the splitter).
    reasoning
        ``True`` for thinking text, ``False`` for answer text.
    """

    text: str
    reasoning: bool


@dataclass(frozen=True)
class ReplyStats:
    """What is known about how a reply was produced.

    Each figure is ``None`` when it is not known: LM Studio did not send it (an older
    version, another engine; the draft figures for a reply without a draft model).

    Attributes
    ----------
    stop_reason
        LM Studio's ``stopReason`` (``eosFound``, ``maxPredictedTokensReached``...).
    prompt_tokens
        Tokens in the prompt, as the server counted them.
    predicted_tokens
        Tokens the model produced, reasoning included.
    reasoning_tokens
        Of those, the tokens spent on reasoning, summed from the fragments'
        ``tokensCount`` (LM Studio reports no such figure); ``None`` when unknown.
    time_to_first_token
        The server's time to the first token (reasoning or answer), in seconds.
    time_to_first_answer_token
        Seconds from the request to the first answer text, measured by the client.
    tokens_per_second
        The server's generation speed.
    total_tokens
        Prompt and predicted tokens together, as the server counted them.
    model_key
        The key of the model that answered (``qwen2.5-7b-instruct``): with
        ``model_name=None``, or after a model was loaded anew, the model it was.
    identifier
        The identifier of the loaded copy that answered (``qwen2.5-7b-instruct:2``).
    draft_model_key
        The draft model of a speculative-decoding reply.
    draft_tokens, accepted_draft_tokens, rejected_draft_tokens, ignored_draft_tokens
        The draft model's proposed tokens, and how many of them were accepted, rejected
        and ignored.
    """

    stop_reason: str | None = None
    prompt_tokens: int | None = None
    predicted_tokens: int | None = None
    reasoning_tokens: int | None = None
    time_to_first_token: float | None = None
    time_to_first_answer_token: float | None = None
    tokens_per_second: float | None = None
    # Found by a probe: which model answered, and the SDK's other figures, were dropped.
    total_tokens: int | None = None
    model_key: str | None = None
    identifier: str | None = None
    draft_model_key: str | None = None
    draft_tokens: int | None = None
    accepted_draft_tokens: int | None = None
    rejected_draft_tokens: int | None = None
    ignored_draft_tokens: int | None = None


@dataclass(frozen=True)
class Reply:
    """The answer of one call, apart from the model's reasoning.

    Attributes
    ----------
    text
        The answer only: exactly what ``generate`` returns for the same output type.
    reasoning
        The thinking text, without tags or markers (``""`` when the model did not reason).
    stats
        Token counts, stop reason and timings.
    """

    text: str
    reasoning: str
    stats: ReplyStats


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """A validated value, with the reply it was read from and the replies asked again.

    What ``parse_reply`` returns: the value as ``parse`` gives it, with the token counts
    and timings of every attempt (instructor's ``create_with_completion``, pydantic-ai's
    ``usage()``).

    Attributes
    ----------
    value
        The value of the output type.
    reply
        The accepted reply: its text (what ``value`` was read from), reasoning and stats.
    rejected
        The replies that did not validate, in order, each asked again with its errors
        (empty when the first reply validated).
    """

    value: T
    reply: Reply
    rejected: tuple[Reply, ...] = ()

    @property
    def attempts(self) -> int:
        """How many replies were asked for: the rejected ones and the accepted one."""
        return len(self.rejected) + 1

    @property
    def replies(self) -> tuple[Reply, ...]:
        """Every reply, in order: the rejected ones, then the accepted one."""
        return (*self.rejected, self.reply)


# The SDK's struct attribute names, and the camelCase keys of its wire/dict form.
_FIELDS = {
    "stop_reason": ("stop_reason", "stopReason"),
    "prompt_tokens": ("prompt_tokens_count", "promptTokensCount"),
    "predicted_tokens": ("predicted_tokens_count", "predictedTokensCount"),
    "time_to_first_token": ("time_to_first_token_sec", "timeToFirstTokenSec"),
    "tokens_per_second": ("tokens_per_second", "tokensPerSecond"),
    "total_tokens": ("total_tokens_count", "totalTokensCount"),
    "draft_model_key": ("used_draft_model_key", "usedDraftModelKey"),
    "draft_tokens": ("total_draft_tokens_count", "totalDraftTokensCount"),
    "accepted_draft_tokens": ("accepted_draft_tokens_count", "acceptedDraftTokensCount"),
    "rejected_draft_tokens": ("rejected_draft_tokens_count", "rejectedDraftTokensCount"),
    "ignored_draft_tokens": ("ignored_draft_tokens_count", "ignoredDraftTokensCount"),
}


def stop_reason(stats: object | Mapping[str, Any] | None) -> str | None:
    """Return the stop reason of the SDK's prediction stats, in any form `reply_stats` takes."""
    attr, key = _FIELDS["stop_reason"]
    if stats is None:
        return None
    # The SDK's struct first: read on every call, and an isinstance check against the
    # Mapping ABC runs Python code (abc.__instancecheck__) for a struct.
    reason: str | None = getattr(stats, attr, None)  # typed, not cast(): no call per reply
    if reason is None and isinstance(stats, Mapping):
        reason = stats.get(key, stats.get(attr))
    return reason


def reply_stats(
    stats: object | Mapping[str, Any] | None,
    *,
    model_key: str | None = None,
    identifier: str | None = None,
    reasoning_tokens: int | None = None,
    time_to_first_answer_token: float | None = None,
) -> ReplyStats:
    """Build `ReplyStats` from the SDK's prediction stats.

    Parameters
    ----------
    stats
        An ``lmstudio.LlmPredictionStats``, its dict form (camelCase keys, as the
        wire and ``to_dict()`` give it, or snake_case attribute names), or ``None``
        when the server sent none.
    model_key
        The key of the model that answered (the reply's ``model_info.model_key``).
    identifier
        The identifier of the loaded copy the prediction was sent to (the SDK's
        ``model_info`` of a reply has none).
    reasoning_tokens
        The reasoning token count (see `ReasoningSplitter.reasoning_tokens`).
    time_to_first_answer_token
        Seconds from the request to the first answer text, measured by the caller.

    Returns
    -------
    ReplyStats
        The figures found; missing ones are ``None``.
    """
    # One type check, not one per field: the fields are read on every call's finish.
    if stats is None:
        values: dict[str, Any] = dict.fromkeys(_FIELDS)
    elif isinstance(stats, Mapping):
        values = {name: stats.get(key, stats.get(attr)) for name, (attr, key) in _FIELDS.items()}
    else:
        values = {name: getattr(stats, attr, None) for name, (attr, _) in _FIELDS.items()}
    return ReplyStats(
        reasoning_tokens=reasoning_tokens,
        time_to_first_answer_token=time_to_first_answer_token,
        model_key=model_key,
        identifier=identifier,
        **values,
    )
