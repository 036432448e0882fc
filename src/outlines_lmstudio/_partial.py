"""Partial values of a growing JSON text, in time linear in its length (pure).

``parse_stream`` yields the partial value of the reply after every fragment.
Parsing the whole text again each time (``pydantic_core.from_json(text,
allow_partial="trailing-strings")``) makes a stream of n fragments cost
O(n^2). `PartialJson` gives the same values for the price of reading each
character once: it scans the new text only, keeps the finished children of
every open array and object as Python values, decodes the open string
incrementally, and asks pydantic-core to parse only small complete pieces (a
key, a number, a literal, a run of string characters), so every value has
pydantic-core's exact meaning.

No library parses partial JSON incrementally with pydantic's semantics (ijson
streams events but drops the trailing string; jiter and pydantic-core parse
whole texts), hence this scanner. It only tracks the structure: anything it
does not expect (invalid JSON, text after the document) makes it hand the
text to ``from_json`` whole, which then decides, as before, until its value can
no longer change (an error before the end of the text, or a finished document):
later fragments then cost nothing.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec
import pydantic_core

__all__ = ["LONE_SURROGATE", "PartialJson"]

_STRING_STOP = re.compile(r'["\\\x00-\x1f]')
_ESCAPE = re.compile(
    r'\\(?:["\\/bfnrt]|u(?![dD][89a-fA-F])[0-9a-fA-F]{4}'
    r"|u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
"""A whole escape: a surrogate escape only as the high half of a pair then its low half
(pydantic-core refuses a lone one, which is not Unicode text). A pair is read as one
escape: a pair cut in its low half had the open string decode its high half alone, which
pydantic-core refuses, and the scanner fell back for good to whole parses (found by a probe)."""
_ESCAPE_PREFIX = re.compile(
    r"\\(?:u(?:[0-9a-fA-F]{0,3}|[dD][89abAB][0-9a-fA-F]{2}(?:\\(?:u[0-9a-fA-F]{0,3})?)?))?"
)
"""The end of a text that later text may turn into a whole escape (pydantic-core judges
the escape after a high surrogate once it has its 4 digits, as here)."""
_SCALAR_PREFIX = re.compile(
    r"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:(?<=[0-9])[eE][+-]?[0-9]*)?)?"
    r"|t(?:r(?:ue?)?)?|f(?:a(?:l(?:se?)?)?)?|n(?:u(?:ll?)?)?"
    r"|N(?:aN?)?|-?I(?:n(?:f(?:i(?:n(?:i(?:ty?)?)?)?)?)?)?"
)
"""What later text may still turn into a number or a literal (pydantic-core reads
``NaN`` and ``Infinity``, which are not JSON, as numbers: followed, as it reads them)."""
_SCALAR_CHARS = frozenset("-+.eE0123456789abcdefghijklmnopqrstuvwxyzIN")
_WHITESPACE = frozenset(" \t\n\r")
_MAX_DEPTH = 200
"""pydantic-core's recursion limit: it refuses text nested deeper (as its error says)."""
_DELIMITERS = frozenset(" \t\n\r,]}")


class _Broken(Exception):
    """The text is not a JSON prefix this scanner follows: fall back to whole parses."""


class _Frame(msgspec.Struct):
    """An open array or object: its finished children and what comes next."""

    is_object: bool
    items: list[Any] = msgspec.field(default_factory=list)
    pairs: dict[Any, Any] = msgspec.field(default_factory=dict)
    key: Any = None
    """The finished key whose value comes next (objects)."""
    expect: str = "first"
    """``first`` (a child or the end), ``key``, ``colon``, ``value`` or ``comma``."""

    def add(self, value: Any) -> None:
        if self.is_object:
            self.pairs[self.key] = value
        else:
            self.items.append(value)
        self.expect = "comma"

    def with_child(self, child: Any, has_child: bool) -> Any:
        """Build a new container of the finished children and the partial child, if any."""
        if self.is_object:
            value = dict(self.pairs)
            if has_child and self.expect == "value":
                value[self.key] = child
            return value
        return [*self.items, child] if has_child and self.expect == "value" else list(self.items)


LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""A surrogate as a character: the SDK reads LM Studio's ``\\ud800`` escape into one, which
no Unicode text holds (typed results refuse it; the CLI writes it as its escape)."""


def _parse(piece: str) -> Any:
    try:
        return pydantic_core.from_json(piece)
    except (ValueError, TypeError) as exc:  # TypeError: a lone surrogate (not UTF-8)
        raise _Broken from exc


class PartialJson:
    r"""Feed a JSON text fragment by fragment; get its partial value after each.

    The values are those of ``pydantic_core.from_json(text,
    allow_partial="trailing-strings")`` on the whole text so far (``None`` when
    that raises, as for an empty text). The open containers are new objects
    each time; finished children are shared between successive values, so
    treat partial values as read-only.

    Parameters
    ----------
    whole_scalars
        Leave out a number or ``true``/``false``/``null`` until it is complete (a
        delimiter follows it). pydantic-core gives a number as far as it goes (``-12``
        of ``-12345``) and drops it, key and all, while it cannot be read (``-12.``,
        ``-12e``), so a key would appear, vanish and come back with another value.

    Attributes
    ----------
    invalid
        Whether the text so far already makes the reply one a typed result refuses,
        however it goes on: an object that writes a key again (its value would replace
        one given out, so a key shown would go away: found by a probe), a number that
        is not finite (``NaN``, ``1e999``), or a lone surrogate as a character (what the
        SDK makes of LM Studio's ``\ud800``: found by a probe, it was in a partial value,
        which then could not be printed). Not looked for once the text is broken.

    Examples
    --------
    >>> parser = PartialJson()
    >>> parser.feed('{"name": "Al')
    {'name': 'Al'}
    >>> parser.feed('ice", "tags": [1, 2')
    {'name': 'Alice', 'tags': [1, 2]}
    """

    def __init__(self, *, whole_scalars: bool = False) -> None:
        self._whole_scalars = whole_scalars
        self.invalid = False
        self.text = ""
        self._pos = 0
        self._frames: list[_Frame] = []
        self._broken = False
        # once broken, whether no later text can change the value (`_last`): parsing the
        # whole text again on every fragment made a broken reply's stream quadratic
        self._settled = False
        self._last: Any = None
        self._done = False
        self._root: Any = None
        # the token being read: "" (none), "key", "string" or "scalar", from _start
        self._token = ""
        self._start = 0
        # the open string: decoded characters and how far the raw text was decoded
        self._decoded = ""
        self._decoded_to = 0

    def feed(self, fragment: str) -> Any:
        """Add ``fragment`` to the text and return the partial value of the whole text."""
        self.text += fragment
        if self._settled:
            return self._last
        if LONE_SURROGATE.search(fragment) is not None:
            self.invalid = True  # a typed result refuses it, wherever it is
        if not self._broken:
            try:
                self._scan()
                return self._value()
            except _Broken:
                self._broken = True
        try:
            value = pydantic_core.from_json(self.text, allow_partial="trailing-strings")
        except TypeError:  # text with a lone surrogate, which later text keeps
            value, self._settled = None, True
        except ValueError as exc:
            # An error before the end of the text (anything but EOF: a raw control
            # character, a missing ":") stays whatever follows.
            value, self._settled = None, not str(exc).startswith("EOF")
        else:
            self._settled = self._done  # the document is over: text after it is ignored
        self._last = value
        return value

    # -- scanning ---------------------------------------------------------------------
    def _finish(self, value: Any) -> None:
        if self._frames:
            self._frames[-1].add(value)
        else:
            self._root, self._done = value, True

    def _start_value(self) -> None:
        """Check that a value may start here, and note that one has (raises `_Broken`)."""
        if not self._frames:
            if self._done:
                raise _Broken
            return
        frame = self._frames[-1]
        if not (frame.expect == "value" or (frame.expect == "first" and not frame.is_object)):
            raise _Broken
        frame.expect = "value"

    def _scan(self) -> None:
        text, i, n = self.text, self._pos, len(self.text)
        while i < n:
            if self._token in ("key", "string"):
                stop = _STRING_STOP.search(text, i)
                if stop is None:
                    i = n
                    break
                i = stop.start()
                char = text[i]
                if char == "\\":
                    escape = _ESCAPE.match(text, i)
                    if escape is not None:
                        i = escape.end()
                        continue
                    if _ESCAPE_PREFIX.fullmatch(text, i):
                        break  # the rest of the escape (or of the pair) is still to come
                    raise _Broken  # pydantic-core refuses it at once, even partial
                if char != '"':
                    raise _Broken  # a control character: invalid in a JSON string
                i += 1
                raw = text[self._start : i]
                if self._token == "key":
                    key = self._frames[-1].key = _parse(raw)
                    self._frames[-1].expect = "colon"
                    self.invalid = self.invalid or key in self._frames[-1].pairs
                else:
                    self._finish(_parse(raw))
                self._token = ""
                continue
            char = text[i]
            if self._token == "scalar":
                if char in _SCALAR_CHARS:
                    i += 1
                    continue
                if char not in _DELIMITERS:
                    raise _Broken
                scalar = _parse(text[self._start : i])
                if isinstance(scalar, float) and not math.isfinite(scalar):
                    self.invalid = True
                self._finish(scalar)
                self._token = ""
            if char in _WHITESPACE:
                i += 1
                continue
            if self._done:
                raise _Broken  # text after the document
            frame = self._frames[-1] if self._frames else None
            if char == '"':
                if frame is not None and frame.is_object and frame.expect in ("first", "key"):
                    self._token = "key"
                else:
                    self._start_value()
                    self._token = "string"
                    self._decoded, self._decoded_to = "", i + 1
                self._start = i
            elif char in "{[":
                if len(self._frames) == _MAX_DEPTH:
                    raise _Broken  # deeper than pydantic-core reads: it decides, as before
                self._start_value()
                self._frames.append(_Frame(is_object=char == "{"))
            elif char in "}]":
                if frame is None or frame.is_object != (char == "}"):
                    raise _Broken
                if frame.expect not in ("first", "comma"):
                    raise _Broken
                self._frames.pop()
                self._finish(frame.pairs if frame.is_object else frame.items)
            elif char == ",":
                if frame is None or frame.expect != "comma":
                    raise _Broken
                frame.expect = "key" if frame.is_object else "value"
            elif char == ":":
                if frame is None or frame.expect != "colon":
                    raise _Broken
                frame.expect = "value"
            elif char in _SCALAR_CHARS:
                self._start_value()
                self._token, self._start = "scalar", i
            else:
                raise _Broken
            i += 1
        self._pos = i

    # -- the partial value ----------------------------------------------------------------
    def _open_string(self) -> str:
        """Return the open string's characters so far, decoding only the new raw text."""
        raw = self.text[self._decoded_to : self._pos]  # up to an escape still to finish
        if raw:
            self._decoded += raw if "\\" not in raw else _parse(f'"{raw}"')
            self._decoded_to += len(raw)
        return self._decoded

    def _value(self) -> Any:
        if self._done:
            return self._root
        child: Any = None
        has_child = False
        if self._token == "string":
            child, has_child = self._open_string(), True
        elif self._token == "scalar":
            try:
                child = pydantic_core.from_json(self.text[self._start :], allow_partial=True)
                has_child = True
            except ValueError:
                # "-", "1.", "tru": nothing yet, as for the whole text; "E", "01": invalid
                if not _SCALAR_PREFIX.fullmatch(self.text[self._start :]):
                    raise _Broken from None
            if self._whole_scalars:
                child, has_child = None, False  # checked above, shown once delimited
        if not self._frames:
            return child  # None while nothing is parseable
        for frame in reversed(self._frames):
            child, has_child = frame.with_child(child, has_child), True
        return child
