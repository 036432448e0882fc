r"""Character sets as sorted code point ranges, with Python's own ``re`` semantics.

A set is a tuple of inclusive, sorted, non-overlapping, non-adjacent ``(low, high)`` code
point ranges. Which characters a regex class matches (``\w``, ``\d``, ``\s`` and their
negations, anything under ``IGNORECASE``) is asked of Python's ``re`` engine itself, by
scanning a string that holds every code point once: the result is exact for the running
Python and its Unicode version, with no hand-written tables to drift.
"""

from __future__ import annotations

import array
import functools
import re
import sys

__all__ = [
    "MAX_CODE_POINT",
    "WRITABLE",
    "Ranges",
    "complement",
    "matched_by",
    "normalize",
    "union",
    "writable",
]

MAX_CODE_POINT = 0x10FFFF

Ranges = tuple[tuple[int, int], ...]

WRITABLE: Ranges = ((0x01, 0xD7FF), (0xE000, MAX_CODE_POINT))
"""The code points a model's reply can hold: not NUL (llama.cpp's grammar code ends its
strings there, so no token holding it is ever allowed) and no lone surrogate (not valid
Unicode: a reply is UTF-8)."""


def normalize(ranges: list[tuple[int, int]] | Ranges) -> Ranges:
    """Sort and merge overlapping or adjacent ranges."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return tuple(merged)


def union(*sets: Ranges) -> Ranges:
    """Return the union of several sets."""
    return normalize([pair for ranges in sets for pair in ranges])


def complement(ranges: Ranges) -> Ranges:
    """Return every code point not in ``ranges``."""
    result: list[tuple[int, int]] = []
    start = 0
    for low, high in ranges:
        if low > start:
            result.append((start, low - 1))
        start = high + 1
    if start <= MAX_CODE_POINT:
        result.append((start, MAX_CODE_POINT))
    return tuple(result)


def writable(ranges: Ranges) -> Ranges:
    """Return the code points of ``ranges`` a reply can hold (`WRITABLE`)."""
    return complement(union(complement(ranges), complement(WRITABLE)))


@functools.cache
def _every_code_point() -> str:
    # Decoded from UTF-32: a third of the time of joining 1.1 million chr()s (50 against
    # 165 ms here), paid once, on the first class a process converts; in slices, as
    # `matched_by` searches, so that no step holds the interpreter lock for long.
    if array.array("I").itemsize != 4:  # pragma: no cover - no such CPython build is known
        return "".join(map(chr, range(MAX_CODE_POINT + 1)))
    utf32 = f"utf-32-{sys.byteorder[0]}e"
    return "".join(
        array.array("I", range(start, min(start + _SLICE, MAX_CODE_POINT + 1)))
        .tobytes()
        .decode(utf32, "surrogatepass")
        for start in range(0, MAX_CODE_POINT + 1, _SLICE)
    )


@functools.lru_cache(maxsize=256)  # a user's (?i) classes: bounded (found by a probe)
def matched_by(single_char_pattern: str, flags: int) -> Ranges:
    """Return the code points that a one-character regex matches under ``flags``.

    Parameters
    ----------
    single_char_pattern
        A regex that matches exactly one character (a literal, a class, ``.``).
    flags
        ``re`` flags that change what it matches (``IGNORECASE``, ``DOTALL``, ``ASCII``).

    Returns
    -------
    Ranges
        The matched code points, as maximal runs found by Python's engine.
    """
    compiled = re.compile(f"(?:{single_char_pattern})+", flags)
    text, runs = _every_code_point(), list[tuple[int, int]]()
    # In slices: Python's engine holds the interpreter lock for a whole search, 40 to 100
    # ms over all of Unicode, and the async front converts in a worker thread so that the
    # event loop runs on meanwhile (`_later_grammar`); a slice takes a few ms.
    for start in range(0, len(text), _SLICE):
        for match in compiled.finditer(text, start, start + _SLICE):
            low, high = match.start(), match.end() - 1
            if runs and runs[-1][1] == low - 1:  # a run cut by the slice's edge
                low = runs.pop()[0]
            runs.append((low, high))
    return tuple(runs)


_SLICE = 0x10000
"""Code points searched at once by `matched_by` (17 searches over all of Unicode)."""
