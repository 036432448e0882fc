"""Scripted replies: what `LMStudioEmulator.script` and ``EmulatedModel.replies`` accept.

Checked when a script is given, so a wrong value fails in the test that wrote it instead of
reaching the client as the text of its ``repr`` (``b"abc"`` as ``97``, ``None`` as ``None``).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from outlines_lmstudio.testing._reasoning_forms import ReasoningReply
from outlines_lmstudio.testing._tools import ToolCall

if TYPE_CHECKING:
    from outlines_lmstudio.testing._records import Prediction

__all__ = ["REPLY_KINDS", "Script", "check_replies", "check_reply"]

REPLY_KINDS = "a str, a ToolCall, a ReasoningReply, or a function of the Prediction returning one"
"""What one scripted reply may be (for error messages)."""

Script: TypeAlias = "deque[Any] | Callable[[Prediction], Any]"
"""A checked script: replies consumed in order, or one function for every request."""


def _is_fixed(reply: object) -> bool:
    return isinstance(reply, str | ToolCall | ReasoningReply)


def check_replies(replies: object) -> Script:
    """Check scripted replies and return them as a script.

    Parameters
    ----------
    replies
        A list (or any iterable) of replies, one reply, or one function used for
        every request.

    Raises
    ------
    TypeError
        If ``replies``, or one of its items, is not a reply (`REPLY_KINDS`).
    """
    if _is_fixed(replies):
        return deque([replies])
    if callable(replies):
        _refuse_async(replies, "The reply function")
        return replies
    if isinstance(replies, Iterable) and not isinstance(replies, bytes | bytearray | Mapping):
        items = list(replies)
        for index, reply in enumerate(items):
            if not (_is_fixed(reply) or callable(reply)):
                raise TypeError(
                    f"Scripted reply {index} is {type(reply).__name__} ({reply!r:.60}); "
                    f"each reply must be {REPLY_KINDS}"
                )
            if callable(reply):
                _refuse_async(reply, f"Scripted reply {index}")
        return deque(items)
    raise TypeError(
        f"Scripted replies must be a list of replies, or one reply ({REPLY_KINDS}); "
        f"got {type(replies).__name__} ({replies!r:.60})"
    )


def _refuse_async(function: Callable[..., object], what: str) -> None:
    """Refuse an ``async def`` reply function when it is scripted, not when a request calls it.

    The emulator calls a reply function where it cannot await (its engine's thread): the
    coroutine failed the prediction there, and Python printed "coroutine ... was never
    awaited" into the user's test output (found by a probe).
    """
    call = getattr(function, "__call__", None)  # noqa: B004 - an object's async __call__ too
    if inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call):
        raise TypeError(
            f"{what} is an async function ({function!r:.60}); the emulator calls a reply "
            "function without awaiting it: make it a plain def that returns the reply"
        )


def check_reply(reply: object) -> str | ToolCall | ReasoningReply:
    """Check the value a reply function returned.

    Raises
    ------
    TypeError
        If it is not a str, `ToolCall` or `ReasoningReply`.
    """
    if isinstance(reply, str | ToolCall | ReasoningReply):
        return reply
    raise TypeError(
        f"the reply function returned {type(reply).__name__} ({reply!r:.60}); "
        "return a str, a ToolCall or a ReasoningReply"
    )
