r"""JSON-schema ``pattern`` in the regex subset LM Studio's engines take (pure, no I/O).

JSON Schema's ``pattern`` is a *search* (ECMA-262): ``"[A-Z]{3}"`` accepts ``"xABCx"``.
llama.cpp's JSON-schema converter takes only ``^...$`` patterns, read as a full match, in
a small regex subset (no ``\d``, no ``(?:``, no escaped punctuation such as ``\.``);
outlines-core reads every pattern as a full match. And both engines match the pattern
against the *JSON text* of the string, between its quotes, escapes included: a ``.`` there
can write a raw ``"`` and run past the end of the string. `engine_pattern` writes a pattern
as one ``^...$`` regex over that JSON text which matches the text of a string exactly when
the original pattern finds a match in the string:

- each top-level alternative ``p`` becomes ``ANY*pANY*`` (`ANY` is one character of a
  JSON string: a plain one or an escape), keeping the side anchored by ``^`` / ``$``;
- characters JSON escapes (``"``, ``\``, control characters) become their escaped form;
  ``\d \w \s``, ``.`` and classes become explicit classes with ECMA-262's meaning, their
  special characters in escaped form (negated classes take only the short escapes, such as
  ``\n``: never wider than the original, a little narrower for rare control characters);
- other punctuation becomes ``[\xHH]``; ``(?:...)`` and named groups become plain groups;
  lazy quantifiers lose their ``?`` (a full match does not depend on laziness);
- a character written as more than one unit before a quantifier becomes a group: a JSON
  escape (``"+`` as ``(\\")+``), and a non-ASCII character (``é?`` as ``(é)?``), which
  llama.cpp's C++ converter reads byte by byte: it would repeat the last byte of its
  UTF-8 form alone, a grammar llama.cpp's parser refuses.

What no engine can match is refused (`PatternError`): lookarounds, backreferences, word
boundaries, inline flags, possessive quantifiers, anchors inside the pattern.

Why hand-written: no library rewrites a regex into llama.cpp's subset over JSON text;
Python's own parser (``re._parser``) is private.
"""

from __future__ import annotations

import contextlib
import re
import threading
import warnings

__all__ = ["ANY", "PatternError", "ecma_compile", "engine_pattern", "is_ecma_regex"]


ANY = r'([^"\\\x00-\x1f]|\\(["\\/bfnrt]|u[0-9a-fA-F]{4}))'
"""Any one character of a string, as it appears in JSON text (plain, or escaped)."""

Intervals = list[tuple[int, int]]
_SPECIAL: Intervals = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]
r"""What JSON text never holds raw inside a string: control characters, ``"`` and ``\``."""
_SHORT = {
    0x22: r'\\"',
    0x5C: r"\\\\",
    0x08: r"\\b",
    0x0C: r"\\f",
    0x0A: r"\\n",
    0x0D: r"\\r",
    0x09: r"\\t",
}
_ECMA_SPACE: Intervals = [
    (0x09, 0x0D),
    (0x20, 0x20),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
    (0xFEFF, 0xFEFF),
]
"""ECMA-262's ``\\s``."""
_CLASS_ESCAPES: dict[str, Intervals] = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    # ECMA-262's \s counts U+FEFF (the byte-order mark) as a space, and U+0085 (next line)
    # not; Python's re and the Rust regex that Pydantic (and parse) validate with read both
    # the other way, so a reply holding either could fail ``parse`` though the engine kept
    # the pattern. ``\s`` is sent without U+FEFF, and ``\S`` / ``[^\s]`` leave out both:
    # each sends only the characters both readings accept there.
    "s": _ECMA_SPACE[:-1],
}
_SPACE_EITHER: Intervals = [(0x85, 0x85), *_ECMA_SPACE]
"""Space to ECMA-262 or to Python's and Rust's regex: what ``\\S`` and ``[^\\s]`` leave out."""
_NEGATED_ESCAPES: dict[str, Intervals] = {**_CLASS_ESCAPES, "s": _SPACE_EITHER}
"""What ``\\D \\W \\S`` leave out."""
_CONTROL_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B}
_DOT: Intervals = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]  # what ECMA-262's . excludes
_PLAIN = frozenset(" _-,:;@#%&=<>!~'`/")
_QUANTIFIER = re.compile(r"\{(\d*)(,(\d*))?\}")
_HEX = re.compile(r"x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}")
_OCTAL = re.compile(r"0[0-7]{0,2}|[0-7]{3}")
"""Python's octal escapes: ``\\0`` and up to two more digits, or three digits (else a
backreference); in a class, any one to three octal digits."""
_CLASS_OCTAL = re.compile(r"[0-7]{1,3}")


class PatternError(ValueError):
    """A pattern uses a construct the engines cannot match (``reason`` says which)."""

    def __init__(self, pattern: str, reason: str) -> None:
        self.pattern = pattern
        self.reason = reason
        super().__init__(f"pattern {pattern!r}: {reason}")


def _merge(intervals: Intervals) -> Intervals:
    merged: Intervals = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _subtract(intervals: Intervals, removed: Intervals) -> Intervals:
    result = _merge(intervals)
    for rlo, rhi in removed:
        kept: Intervals = []
        for lo, hi in result:
            if hi < rlo or lo > rhi:
                kept.append((lo, hi))
                continue
            if lo < rlo:
                kept.append((lo, rlo - 1))
            if hi > rhi:
                kept.append((rhi + 1, hi))
        result = kept
    return result


def _codes(intervals: Intervals) -> list[int]:
    return [code for lo, hi in _merge(intervals) for code in range(lo, hi + 1)]


def _point(code: int) -> str:
    char = chr(code)
    if char.isascii() and char.isalnum():
        return char
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _set(intervals: Intervals) -> str:
    return "".join(_point(lo) if lo == hi else f"{_point(lo)}-{_point(hi)}" for lo, hi in intervals)


def _escaped(code: int) -> str:
    """Return the JSON-text form of a special character, as a regex."""
    if code in _SHORT:
        return _SHORT[code]
    high, low = f"{code:04x}"[2], f"{code:04x}"[3]
    low_class = f"[{low}{low.upper()}]" if low.isalpha() else low
    return rf"\\u00{high}{low_class}"


def _class(intervals: Intervals, negated: bool) -> str:
    r"""Return a character set as a regex over JSON text (specials in escaped form only).

    Exact for a positive set. For a negated set (``.``, ``[^a]``, ``\D``), the escaped
    forms of ``"``, ``\`` and the short control escapes are allowed, the ``\u00XX`` forms
    of other control characters are not (narrower, never wider).
    """
    merged = _merge(intervals)
    if negated:
        parts = [f"[^{_set(_merge([*merged, *_SPECIAL]))}]"]
        allowed = _subtract(_SPECIAL, merged)
        parts += [_escaped(c) for c in _codes(allowed) if c in _SHORT]
    else:
        plain = _subtract(merged, _SPECIAL)
        parts = [f"[{_set(plain)}]"] if plain else []
        parts += [_escaped(c) for c in _codes(merged) if c in set(_codes(_SPECIAL))]
    return parts[0] if len(parts) == 1 else "(" + "|".join(parts) + ")"


def _char(code: int) -> str:
    """One character outside a class, as a regex over JSON text."""
    char = chr(code)
    if code in set(_codes(_SPECIAL)):
        return _escaped(code)
    if (char.isascii() and char.isalnum()) or char in _PLAIN or code > 0x7F:
        return char
    return f"[{_point(code)}]"


class _Scanner:
    """One left-to-right pass over a pattern, writing the engine form."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.i = 0

    def fail(self, reason: str) -> PatternError:
        return PatternError(self.pattern, reason)

    def peek(self, offset: int = 0) -> str:
        index = self.i + offset
        return self.pattern[index] if index < len(self.pattern) else ""

    def escape(self, in_class: bool) -> int | tuple[Intervals, bool]:
        """Read the escape at ``self.i``: a code point, or a class ``(intervals, negated)``."""
        char = self.peek(1)
        if not char:
            raise self.fail("trailing backslash")
        hexa = _HEX.match(self.pattern, self.i + 1)
        if hexa:
            code = int(hexa.group(0)[1:], 16)
            if 0xD800 <= code <= 0xDFFF and not in_class:  # in a class: a range's end
                raise self.fail(self._surrogate(code, hexa.end()))
            self.i = hexa.end()
            return code
        octal = (_CLASS_OCTAL if in_class else _OCTAL).match(self.pattern, self.i + 1)
        if octal:  # \01 is one character (U+0001), not NUL and "1"
            self.i = octal.end()
            return int(octal.group(0), 8)
        self.i += 2
        if char.lower() in _CLASS_ESCAPES:
            if char.isupper() and in_class:
                raise self.fail(f"negated class escape \\{char} inside a character class")
            if char.isupper():
                return _NEGATED_ESCAPES[char.lower()], True
            return _CLASS_ESCAPES[char], False
        if char in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[char]
        if char == "b" and in_class:
            return 0x08  # backspace, inside a class
        if char in "bBAZzG":
            raise self.fail(f"assertion \\{char} (only a leading ^ and a trailing $ are allowed)")
        if char.isdigit() or char == "k":
            raise self.fail(f"backreference \\{char}")
        if char == "_":  # JavaScript's u-mode refuses it; every reader takes _ itself
            raise self.fail("unsupported escape \\_ (write _ without the backslash)")
        if char.isalnum():
            raise self.fail(f"unsupported escape \\{char}")
        return ord(char)

    def _surrogate(self, code: int, end: int) -> str:
        r"""Say why a ``\uD83D`` escape is refused (found by a probe).

        The engines read a pair of them as one character, as JavaScript does; Python's
        ``re``, which checks the replies, reads two code points no text holds, so no reply
        would ever pass.
        """
        low = _HEX.match(self.pattern, end + 1) if self.pattern[end : end + 1] == "\\" else None
        low_code = int(low.group(0)[1:], 16) if low else 0
        if 0xD800 <= code <= 0xDBFF and 0xDC00 <= low_code <= 0xDFFF:
            char = chr(0x10000 + ((code - 0xD800) << 10) + (low_code - 0xDC00))
            instead = f"write the character itself ({char!r})"
        else:
            instead = "write the character itself"
        return (
            f"the escape \\u{code:04X} is half of a UTF-16 surrogate pair: the engines read "
            "the pair as one character, but replies are checked with Python's re, which does "
            f"not, so none would pass; {instead}"
        )

    def class_atom(self) -> int | Intervals:
        if self.peek() == "\\":
            atom = self.escape(in_class=True)
            return atom[0] if isinstance(atom, tuple) else atom
        self.i += 1
        return ord(self.pattern[self.i - 1])

    def char_class(self) -> str:
        """Translate the character class starting at ``self.i`` (a ``[``)."""
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        intervals: Intervals = []
        first = True
        while True:
            if not self.peek():
                raise self.fail("unterminated character class")
            if self.peek() == "]" and not first:
                self.i += 1
                return _class(intervals, negated)
            first = False
            low = self.class_atom()
            if isinstance(low, list):
                # [^\s] leaves out U+FEFF and U+0085 (see _CLASS_ESCAPES)
                intervals += _SPACE_EITHER if negated and low is _CLASS_ESCAPES["s"] else low
            elif self.peek() == "-" and self.peek(1) not in ("", "]"):
                self.i += 1
                high = self.class_atom()
                if isinstance(high, list):
                    raise self.fail("a class escape cannot end a range")
                intervals.append((low, high))
            else:
                intervals.append((low, low))

    def group_open(self) -> str:
        """Translate a ``(`` and its extension syntax; advance past it."""
        self.i += 1
        if self.peek() != "?":
            return "("
        rest = self.pattern[self.i + 1 :]
        if rest.startswith(":"):
            self.i += 2
            return "("
        named = re.match(r"P?<([A-Za-z_]\w*)>", rest)
        if named:
            self.i += 1 + named.end()
            return "("
        if rest[:1] in ("=", "!") or rest[:2] in ("<=", "<!"):
            raise self.fail("lookaround (?=, (?!, (?<= or (?<!")
        if rest.startswith("P="):
            raise self.fail("backreference (?P=...)")
        raise self.fail("group extension (?...) such as inline flags")

    def quantifier_suffix(self) -> str:
        """Drop a lazy ``?`` after a quantifier; refuse a possessive ``+``."""
        if self.peek() == "?":
            self.i += 1
        elif self.peek() == "+":
            raise self.fail("possessive quantifier")
        return ""

    def unit(self, written: str) -> str:
        r"""Group a character written as several regex atoms when a quantifier follows.

        A JSON escape (``\\"``, ``\\n``, ``\\u0001``) is a backslash and more: ``"+``
        written ``\\"+`` would repeat only the quote. llama.cpp's converter also reads a run
        of literal characters up to a quantifier as one literal and repeats all of it
        (``a\\\\+`` as ``("a\\\\")+``); a group keeps the repeat on the one character.

        A non-ASCII character is several bytes to the C++ converter, which reads the
        pattern byte by byte: ``é?`` became ``"\xc3" "\xa9"?``, half a character in each
        literal, and llama.cpp's grammar parser refused the grammar (found by a
        differential fuzz). In a group, its bytes stay one literal.
        """
        if self.peek() in ("*", "+", "?", "{") and (
            written.startswith("\\\\") or not written.isascii()
        ):
            return f"({written})"
        return written

    def alternatives(self) -> list[str]:
        """Translate the whole pattern; return its top-level alternatives (anchors kept)."""
        pieces: list[str] = []
        out = ""
        depth = 0
        while self.i < len(self.pattern):
            char = self.peek()
            if char == "\\":
                atom = self.escape(in_class=False)
                out += self.unit(_char(atom) if isinstance(atom, int) else _class(*atom))
            elif char == "[":
                out += self.unit(self.char_class())
            elif char == "(":
                out += self.group_open()
                depth += 1
            elif char == ")":
                depth -= 1
                out += ")"
                self.i += 1
            elif char == "|" and depth == 0:
                pieces.append(out)
                out = ""
                self.i += 1
            elif char == "|":
                out += "|"
                self.i += 1
            elif char in "*+?":
                out += char
                self.i += 1
                out += self.quantifier_suffix()
            elif char == "{":
                match = _QUANTIFIER.match(self.pattern, self.i)
                if match and match.group(1) == "" and match.group(2):
                    raise self.fail("quantifier {,n} (write {0,n})")
                if match and match.group(1):
                    out += match.group(0)
                    self.i = match.end()
                    out += self.quantifier_suffix()
                else:  # Python reads a "{" that starts no quantifier as a literal
                    out += _char(ord(char))
                    self.i += 1
            elif char == ".":
                self.i += 1
                out += self.unit(_class(_DOT, negated=True))
            elif char in "^$":
                at_start = out == "" and depth == 0 and char == "^"
                at_end = depth == 0 and char == "$" and self.peek(1) in ("", "|")
                if not (at_start or at_end):
                    raise self.fail("anchor ^ or $ inside the pattern")
                out += char
                self.i += 1
            else:
                self.i += 1
                out += self.unit(_char(ord(char)))
        pieces.append(out)
        return pieces


_VERBOSE = re.compile(r"\(\?[aiLmsux]*x")
"""An inline verbose flag, under which ``#`` starts a comment that `_unambiguous` would
read as pattern."""

_QUIETING = threading.Lock()
"""Held while `warnings.catch_warnings` swaps the process-wide filters (see `ecma_compile`)."""


def _unambiguous(pattern: str) -> str | None:
    r"""Return ``pattern`` with what Python's ``re`` warns of escaped, its meaning the same.

    Python warns (``FutureWarning``) of ``[[`` opening a class and of ``--``, ``&&``, ``~~``
    and ``||`` inside one, which a future Python may read as set syntax; today, as in
    ECMA-262, they are characters, and their escaped forms (``\[``, ``\&``...) are the same
    characters without the warning. The walk follows ``re._parser``'s reading of a class
    token by token (an escape is one token). ``None`` under an inline verbose flag, whose
    comments it cannot tell from the pattern.
    """
    if _VERBOSE.search(pattern):
        return None
    tokens = re.findall(r"\\.|.", pattern, re.DOTALL)
    out: list[str] = []
    i, n = 0, len(tokens)
    while i < n:
        token = tokens[i]
        i += 1
        if token == "(" and tokens[i : i + 2] == ["?", "#"]:  # a comment: up to its ")"
            end = tokens.index(")", i) + 1 if ")" in tokens[i:] else n
            out.extend(["(", *tokens[i:end]])
            i = end
            continue
        out.append(token)
        if token != "[":
            continue
        if i < n and tokens[i] == "[":  # "Possible nested set"
            tokens[i] = "\\["
        if i < n and tokens[i] == "^":
            out.append("^")
            i += 1
        filled = False  # a "]" first in the class is a character
        while i < n:
            this = tokens[i]
            i += 1
            if this == "]" and filled:
                out.append(this)
                break
            if filled and this in ("-", "&", "~", "|") and i < n and tokens[i] == this:
                this = "\\" + this  # "Possible set difference" (intersection...)
            out.append(this)
            filled = True
            if i < n and tokens[i] == "-":  # a range, or a "-" before the "]"
                out.append("-")
                that = tokens[i + 1] if i + 1 < n else ""
                i += 2
                if that == "]":
                    out.append(that)
                    break
                out.append("\\-" if that == "-" else that)  # "Possible set difference"
    return "".join(out)


def ecma_compile(pattern: str) -> re.Pattern[str]:
    """Compile a JSON-schema pattern with Python's ``re``, without its FutureWarnings.

    Python warns of ``[[`` and ``&&`` in a class ("Possible nested set"), which a future
    Python may read as set syntax. A JSON schema's pattern is ECMA-262, which reads them
    as characters, as Python does today: the warning is not the schema's (found by a
    probe: the CLI, run with warnings as errors, called it a bug). They are escaped
    (`_unambiguous`) rather than silenced: ``warnings.catch_warnings`` swaps the
    process-wide filters, and calls in two threads at once left a program that had made
    warnings errors ignoring FutureWarning for good (found by a probe). It stays, under a
    lock, for a pattern that is not read otherwise (a verbose one, or one Python refuses:
    its error then gives positions in the pattern as written).

    Raises
    ------
    re.error
        If Python cannot read the pattern.
    """
    rewritten = _unambiguous(pattern)
    if rewritten is not None:
        with contextlib.suppress(re.error):
            return re.compile(rewritten)
    with _QUIETING, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.compile(pattern)


def is_ecma_regex(instance: object) -> bool:
    """Check a ``format: regex`` value as jsonschema does (``re.error`` if not), quietly.

    For the meta-schema check of a schema's ``pattern`` values, and for replies.
    """
    if isinstance(instance, str):
        ecma_compile(instance)
    return True


def engine_pattern(pattern: str) -> str:
    r"""Write a JSON-schema pattern as one anchored regex in the engines' subset.

    Parameters
    ----------
    pattern
        A ``pattern`` value (search semantics, as in JSON Schema).

    Returns
    -------
    str
        ``^...$``: a string matches it entirely exactly when the original pattern finds a
        match in the string (under ECMA-262's meaning of ``.``, ``\d``, ``\\w``, ``\\s``).

    Raises
    ------
    PatternError
        If the pattern is not a valid regular expression, or uses a construct that no
        engine can match.
    """
    try:
        ecma_compile(pattern)
    except re.error as exc:
        raise PatternError(pattern, f"not a valid regular expression ({exc})") from exc
    pieces = []
    for alternative in _Scanner(pattern).alternatives():
        inner = alternative.removeprefix("^")
        start = "" if len(inner) < len(alternative) else f"{ANY}*"
        end = "$" if inner.endswith("$") else ""
        inner = inner.removesuffix(end)
        pieces.append(start + inner + ("" if end else f"{ANY}*"))
    body = pieces[0] if len(pieces) == 1 else "(" + "|".join(pieces) + ")"
    return f"^{body}$"
