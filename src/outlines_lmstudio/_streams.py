"""Reading a sync SDK prediction stream so that leaving it early stops the server."""

from __future__ import annotations

import contextlib
from collections.abc import Generator

import lmstudio as lms

from ._interrupt import SigintGuard

__all__ = ["stream_text"]


def stream_text(
    stream: lms.PredictionStream, sigint: SigintGuard, *, per_fragment: bool = True
) -> Generator[str, None, None]:
    """Yield the answer text of a sync prediction stream, fragment by fragment.

    Leaving early (``close()``, an exception in the consumer, a Ctrl-C noted by
    ``sigint``) cancels the prediction on the server: the SDK sends nothing by
    itself, and its ``cancel()`` is a no-op once its iterator has been closed, so
    the cancel is sent here, before that iterator is drained and closed.
    Reasoning fragments are not part of the answer and are skipped. SDK errors
    propagate (the server ended the prediction itself).

    Parameters
    ----------
    stream
        The SDK's stream (``LLM.respond_stream`` / ``complete_stream``), not started.
    sigint
        The Ctrl-C guard; a noted Ctrl-C cancels, then raises ``KeyboardInterrupt``.
    per_fragment
        Arm ``sigint`` around each wait only (the consumer runs its own code between
        fragments); ``False`` when the caller armed it for the whole call.

    Yields
    ------
    str
        The text of each answer fragment.
    """
    events = iter(stream)
    finished = False
    try:
        while True:
            if per_fragment:
                sigint.arm()
                try:
                    fragment = next(events, None)
                finally:
                    sigint.disarm()
            else:
                fragment = next(events, None)
            if sigint.interrupted:
                raise KeyboardInterrupt  # after the finally below cancels on the server
            if fragment is None:
                finished = True
                return
            if fragment.reasoning_type == "none":
                yield fragment.content
    except lms.LMStudioError:
        finished = True  # the server ended the prediction
        raise
    finally:
        if not finished:
            with contextlib.suppress(lms.LMStudioError):
                stream.cancel()
                for _ in events:  # until LM Studio confirms (stopReason userStopped)
                    pass
