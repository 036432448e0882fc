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

__all__ = ["integer_range"]

_INT64 = range(-(2**63), 2**63)


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
    low = _read_bound(node, "minimum", "exclusiveMinimum", 1)
    high = _read_bound(node, "maximum", "exclusiveMaximum", -1)
    if low is None and high is None:
        return None
    out: list[str] = []
    _min_max_int(low, high, out, 16, True)
    try:  # a reversed repetition ({16,15}): the schema is refused (`reversed_integer_range`)
        return re.compile("".join(out))
    except re.error:
        return None


def _read_bound(node: dict[str, Any], plain: str, exclusive: str, step: int) -> int | None:
    """Return an integer's bound as llama.cpp's ``build_integer`` reads it, or None."""
    key = plain if plain in node else exclusive
    value = node.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    upward = (key == plain) == (step > 0)  # a minimum rounds up, an exclusive one down
    whole = value if isinstance(value, int) else math.ceil(value) if upward else math.floor(value)
    whole = whole if key == plain else whole + step
    return whole if whole in _INT64 else None


def _min_max_int(
    low: int | None, high: int | None, out: list[str], decimals: int, top: bool
) -> None:
    """Write llama.cpp's ``build_min_max_int`` as a regex (None: no bound on that side).

    A line-by-line port of the C++ function (its GBNF's sequences are the regex's).
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

    if low is not None and high is not None:
        if low < 0 and high < 0:
            out.append("-(")
            _min_max_int(-high, -low, out, decimals, True)
            out.append(")")
            return
        if low < 0:
            out.append("-(")
            _min_max_int(0, -low, out, decimals, True)
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
    if low is not None:
        if low < 0:
            out.append("-(")
            _min_max_int(None, -low, out, decimals, False)
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
            _min_max_int(int(digits[1:]), None, out, fewer, False)
            out.append(")")
            if lead < "9":
                out.append("|")
                digit_range(chr(ord(lead) + 1), "9")
                more_digits(len(digits) - 1, fewer)
        return
    if high is not None:
        if high >= 0:
            if top:
                out.append("-[1-9]")
                more_digits(0, fewer)
                out.append("|")
            _min_max_int(0, high, out, decimals, True)
        else:
            out.append("-(")
            _min_max_int(-high, None, out, decimals, False)
            out.append(")")
