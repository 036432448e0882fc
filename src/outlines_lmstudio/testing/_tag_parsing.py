"""A request's own reasoning tags, typed in the reply as LM Studio types them (pure, no I/O).

A request may name the strings that open and close reasoning (``reasoningParsing``:
``{"enabled": true, "startString": ..., "endString": ...}``). LM Studio then reads the
reply's text for them, whatever the model: the start string is sent as a
``reasoningStartTag`` fragment, what follows as ``reasoning``, the end string as a
``reasoningEndTag``, and the rest as plain text, a token's text split where a string
begins or ends. lmstudio-js's own test shows it: ``Assistant message 2`` with ``sis`` and
``es`` arrives as ``As`` | ``sis`` (start) | ``tant`` | `` m`` (reasoning) | ``es`` (end) |
``sage`` | `` `` | ``2`` (found by a probe running that test: the emulator typed every
fragment ``none``). That a second start string opens reasoning again is inferred.

The reply's text is read as it streams: text at a fragment's end that may begin the string
looked for is held back until the next fragment says whether it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from outlines_lmstudio.testing._engine import Fragment

__all__ = ["REASONING_PARSING", "TagParser", "request_tags"]

REASONING_PARSING = "llm.prediction.reasoning.parsing"
"""The merged config's key of a request's reasoning parsing setting."""


def request_tags(config: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return the reasoning strings a request names, if it turns reasoning parsing on."""
    parsing = config.get(REASONING_PARSING)
    if not isinstance(parsing, Mapping) or parsing.get("enabled") is not True:
        return None
    start, end = parsing.get("startString"), parsing.get("endString")
    if isinstance(start, str) and isinstance(end, str) and start and end:
        return start, end
    return None


class TagParser:
    """Types the plain text of a reply by a request's reasoning strings, as it streams.

    Parameters
    ----------
    start, end
        The strings that open and close reasoning.
    """

    def __init__(self, start: str, end: str) -> None:
        self._tags = (start, end)
        self._inside = False
        self._held = ""
        self._held_tokens = 0

    def feed(self, fragment: Fragment) -> list[Fragment]:
        """Return the fragments to send for ``fragment`` (text may be held for the next).

        A fragment already typed (a reasoning form's) or structural passes as it is, after
        the text held back, which it shows begins no string.
        """
        if fragment.reasoning_type != "none" or fragment.is_structural:
            return [*self.flush(), fragment]
        text = self._held + fragment.content
        tokens = self._held_tokens + fragment.tokens_count
        self._held, self._held_tokens = "", 0
        out: list[Fragment] = []
        while (found := text.find(tag := self._tags[self._inside])) >= 0:
            self._piece(out, text[:found], self._kind())
            self._piece(out, tag, "reasoningEndTag" if self._inside else "reasoningStartTag")
            self._inside = not self._inside
            text = text[found + len(tag) :]
        keep = _partial(text, self._tags[self._inside])
        self._piece(out, text[: len(text) - keep], self._kind())
        self._held = text[len(text) - keep :]
        # The fragment's tokens go with its first piece, or with the text held back; a
        # token of no text (part of a character) is sent as it came.
        if out:
            out[0] = Fragment(out[0].content, tokens, out[0].reasoning_type)
        elif self._held:
            self._held_tokens = tokens
        elif tokens:
            out.append(Fragment("", tokens, self._kind()))
        return out

    def flush(self) -> list[Fragment]:
        """Return the text held back, at the reply's end (or before a typed fragment)."""
        out = [Fragment(self._held, self._held_tokens, self._kind())] if self._held else []
        self._held, self._held_tokens = "", 0
        return out

    def _kind(self) -> str:
        return "reasoning" if self._inside else "none"

    @staticmethod
    def _piece(out: list[Fragment], text: str, kind: str) -> None:
        if text:
            out.append(Fragment(text, 0, kind))


def _partial(text: str, tag: str) -> int:
    """Return the length of the longest end of ``text`` that begins ``tag`` (shorter than it)."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
