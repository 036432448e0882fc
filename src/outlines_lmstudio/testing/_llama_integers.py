"""The integers llama.cpp's JSON-schema converter allows for a bounded ``integer``.

LM Studio runs a GGUF model's schema through llama.cpp's converter
(``common/json-schema-to-grammar.cpp``), whose ``build_min_max_int`` writes an integer's
range digit by digit. With both bounds it allows exactly the integers between them (and
``-0``); with one it misses some beyond the bound (``maximum: -115`` refuses -1000 to
-1099). `integer_range` is its grammar as a regex, so the synthetic engine writes only
integers a GGUF model can write.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["integer_bounds", "integer_range", "reversed_repetition"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_REPEAT = re.compile(r"\{(\d+),(\d+)\}")


def integer_range(node: dict[str, Any]) -> re.Pattern[str] | None:
    """Return the integers llama.cpp's grammar allows for a bounded ``integer`` node, or None.

    Parameters
    ----------
    node
        A schema node.

    Returns
    -------
    re.Pattern[str] | None
        A regex of the integer texts the converter's ``build_min_max_int`` writes for
        the node's bounds (as its ``build_integer`` reads them: ``minimum``, else
        ``exclusiveMinimum`` + 1, a fraction rounded inwards), or None for a node that is
        not an integer with a bound, or whose range the converter writes reversed. The
        range is not always the bounds': with one bound it misses some integers
        (``minimum: 115`` refuses 1000 to 1099, ``maximum: -115`` -1000 to -1099).
    """
    if node.get("type") != "integer":
        return None
    low, high = integer_bounds(node)
    if low is None and high is None:
        return None
    try:
        written = _written(low, high)
    except ValueError:  # the converter fails: the schema is refused (`integer_range_failure`)
        return None
    try:  # a reversed repetition ({16,15}): the schema is refused (`integer_range_failure`)
        return re.compile(written)
    except re.error:
        return None


def reversed_repetition(low: int | None, high: int | None) -> str | None:
    """Return the first reversed repetition (``{16,15}``) llama.cpp writes for a range.

    Parameters
    ----------
    low, high
        The bounds as the converter reads them (`integer_bounds`; None: none), not both None.

    Returns
    -------
    str | None
        The first repetition ``build_min_max_int`` writes with its maximum below its
        minimum (on which llama.cpp's grammar parser makes rules until memory runs out), or
        None.

    Raises
    ------
    ValueError
        With the converter's message, where it fails (a range whose negation overflows:
        ``minimum: -(2**63 - 1)`` alone).
    """
    for repeat in _REPEAT.finditer(_written(low, high)):
        if int(repeat.group(2)) < int(repeat.group(1)):
            return repeat.group()
    return None


def _written(low: int | None, high: int | None) -> str:
    """Return ``build_min_max_int(low, high)`` as a regex (`_min_max_int`)."""
    out: list[str] = []
    _min_max_int(
        _INT64_MIN if low is None else low, _INT64_MAX if high is None else high, out, 16, True
    )
    return "".join(out)


def integer_bounds(node: dict[str, Any]) -> tuple[int | None, int | None]:
    """Return an integer's bounds as llama.cpp's schema builder reads them (None: none).

    As its ``build_integer``: ``minimum`` rounded up, else ``exclusiveMinimum`` rounded
    down plus one; ``maximum`` rounded down, else ``exclusiveMaximum`` rounded up minus
    one; in ``int64_t``, a step past its end wrapping, and its least and greatest values
    meaning none. A bound beyond 64 bits is not read (a cast: garbage the library never
    sends). The library's `_rewrites.integer_bounds` reads the same, for what it sends; the
    emulator imports nothing of the library's, so that a misreading there is not mirrored
    here, where tests check what the library sends.
    """

    def read(plain: str, exclusive: str, step: int) -> int | None:
        key = plain if plain in node else exclusive
        value = node.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if isinstance(value, float):
            if not math.isfinite(value):
                return None
            value = math.ceil(value) if (key == plain) == (step > 0) else math.floor(value)
        if not _INT64_MIN <= value <= _INT64_MAX:
            return None
        if key == exclusive:
            value = (value + step - _INT64_MIN) % 2**64 + _INT64_MIN
        return None if value == (_INT64_MIN if step > 0 else _INT64_MAX) else value

    return read("minimum", "exclusiveMinimum", 1), read("maximum", "exclusiveMaximum", -1)


def _negated(value: int) -> int:
    return value if value == _INT64_MIN else -value  # int64_t's least is its own negation


def _min_max_int(low: int, high: int, out: list[str], decimals: int, top: bool) -> None:
    """Write llama.cpp's ``build_min_max_int`` as a regex.

    A line-by-line port of the C++ function (its GBNF's sequences are the regex's): the
    least and greatest ``int64_t`` mean no bound, and a negation wraps, as there.

    Raises
    ------
    ValueError
        With the C++ function's message, where neither bound is left.
    """

    def digit_range(first: str, last: str) -> None:
        out.append(f"[{first}]" if first == last else f"[{first}-{last}]")

    def more_digits(fewest: int, most: int | None) -> None:
        out.append("[0-9]")
        if fewest == most == 1:
            return
        if most == fewest:
            out.append(f"{{{fewest}}}")
        else:
            out.append(f"{{{fewest},{'' if most is None else most}}}")

    def uniform_range(start: str, end: str) -> None:
        i = 0
        while i < len(start) and i < len(end) and start[i] == end[i]:
            i += 1
        out.append(start[:i])
        if i < len(start) and i < len(end):
            sub = len(start) - i - 1
            if sub > 0:
                start_sub, end_sub = start[i + 1 :], end[i + 1 :]
                zeros, nines = "0" * sub, "9" * sub
                reached = False
                out.append("(")
                if start_sub == zeros:
                    digit_range(start[i], chr(ord(end[i]) - 1))
                    more_digits(sub, sub)
                else:
                    out.append(f"[{start[i]}](")
                    uniform_range(start_sub, nines)
                    out.append(")")
                    if start[i] < chr(ord(end[i]) - 1):
                        out.append("|")
                        if end_sub == nines:
                            digit_range(chr(ord(start[i]) + 1), end[i])
                            reached = True
                        else:
                            digit_range(chr(ord(start[i]) + 1), chr(ord(end[i]) - 1))
                        more_digits(sub, sub)
                if not reached:
                    out.append("|")
                    digit_range(end[i], end[i])
                    uniform_range(zeros, end_sub)
                out.append(")")
            else:
                out.append(f"[{start[i]}-{end[i]}]")

    has_low, has_high = low != _INT64_MIN, high != _INT64_MAX
    if has_low and has_high:
        if low < 0 and high < 0:
            out.append("-(")
            _min_max_int(_negated(high), _negated(low), out, decimals, True)
            out.append(")")
            return
        if low < 0:
            out.append("-(")
            _min_max_int(0, _negated(low), out, decimals, True)
            out.append(")|")
            low = 0
        start, end = str(low), str(high)
        for width in range(len(start), len(end)):
            uniform_range(start, "9" * width)
            start = "1" + "0" * width
            out.append("|")
        uniform_range(start, end)
        return
    fewer = max(decimals - 1, 1)
    if has_low:
        if low < 0:
            out.append("-(")
            _min_max_int(_INT64_MIN, _negated(low), out, decimals, False)
            out.append(")|[0]|[1-9]")
            more_digits(0, decimals - 1)
        elif low == 0:
            if top:
                out.append("[0]|[1-9]")
                more_digits(0, fewer)
            else:
                more_digits(1, decimals)
        elif low <= 9:
            digit, first = str(low), "1" if top else "0"
            if digit > first:
                digit_range(first, chr(ord(digit) - 1))
                more_digits(1, fewer)
                out.append("|")
            digit_range(digit, "9")
            more_digits(0, fewer)
        else:
            digits = str(low)
            lead = digits[0]
            if lead > "1":
                digit_range("1" if top else "0", chr(ord(lead) - 1))
                more_digits(len(digits), fewer)
                out.append("|")
            digit_range(lead, lead)
            out.append("(")
            _min_max_int(int(digits[1:]), _INT64_MAX, out, fewer, False)
            out.append(")")
            if lead < "9":
                out.append("|")
                digit_range(chr(ord(lead) + 1), "9")
                more_digits(len(digits) - 1, fewer)
        return
    if has_high:
        if high >= 0:
            if top:
                out.append("-[1-9]")
                more_digits(0, fewer)
                out.append("|")
            _min_max_int(0, high, out, decimals, True)
        else:
            out.append("-(")
            _min_max_int(_negated(high), _INT64_MAX, out, decimals, False)
            out.append(")")
        return
    raise ValueError("At least one of min_value or max_value must be set")
