r"""JSON-schema ``pattern`` in the regex subset LM Studio's engines take (pure, no I/O).

JSON Schema's ``pattern`` is a *search* (ECMA-262): ``"[A-Z]{3}"`` accepts ``"xABCx"``.
llama.cpp's JSON-schema converter takes only ``^...$`` patterns, read as a full match, in
a small regex subset (no ``\d``, no ``(?:``, no escaped punctuation such as ``\.``);
outlines-core reads every pattern as a full match. `engine_pattern` writes a pattern as
one ``^...$`` regex that accepts exactly the strings the original finds a match in, using
only constructs both engines read the same way:

- each top-level alternative ``p`` becomes ``ANY*pANY*`` (``ANY`` is any character),
  keeping the side anchored by ``^`` / ``$``;
- ``\d \w \s`` (and negations) become the explicit ECMA-262 classes, ``.`` becomes
  ``[^\n\r\u2028\u2029]`` (ECMA-262's dot), escaped punctuation becomes ``[\xHH]``;
- ``(?:...)`` and named groups become plain groups, lazy quantifiers lose their ``?``
  (a full match does not depend on laziness).

What no engine can match is refused (`PatternError`): lookarounds, backreferences, word
boundaries, inline flags, possessive quantifiers, anchors inside the pattern.

Why hand-written: no library rewrites a regex into llama.cpp's subset; Python's own
parser (``re._parser``) is private and loses the source spelling we must keep.
"""

from __future__ import annotations

import re

__all__ = ["ANY", "ECMA_SPACE", "PatternError", "engine_pattern"]

ANY = r"[\x00-\U0010FFFF]"
"""Any one character (llama.cpp's own "dotall" class)."""

ECMA_SPACE = r"\x09-\x0d\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
"""The characters of ECMA-262's ``\\s``, as the inside of a character class."""

_DIGIT = "0-9"
_WORD = "0-9A-Za-z_"
_CLASS_ESCAPES = {"d": _DIGIT, "w": _WORD, "s": ECMA_SPACE}
_CONTROL_ESCAPES = {"t": r"\t", "n": r"\n", "r": r"\r", "f": r"\x0c", "v": r"\x0b", "0": r"\x00"}
_DOT = r"[^\n\r\u2028\u2029]"
_QUANTIFIER = re.compile(r"\{(\d*)(,(\d*))?\}")
_HEX = re.compile(r"x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}")


class PatternError(ValueError):
    """A pattern uses a construct the engines cannot match (``reason`` says which)."""

    def __init__(self, pattern: str, reason: str) -> None:
        self.pattern = pattern
        self.reason = reason
        super().__init__(f"pattern {pattern!r}: {reason}")


def _hex(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


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

    def escape(self, in_class: bool) -> str:
        """Translate the escape at ``self.i`` (a backslash); advance past it."""
        char = self.peek(1)
        if not char:
            raise self.fail("trailing backslash")
        hexa = _HEX.match(self.pattern, self.i + 1)
        if hexa:
            self.i = hexa.end()
            return "\\" + hexa.group(0)
        self.i += 2
        if char in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[char] if in_class else f"[{_CLASS_ESCAPES[char]}]"
        if char.lower() in _CLASS_ESCAPES:  # \D \W \S
            if in_class:
                raise self.fail(f"negated class escape \\{char} inside a character class")
            return f"[^{_CLASS_ESCAPES[char.lower()]}]"
        if char in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[char]
        if char == "b" and in_class:
            return r"\x08"  # backspace, inside a class
        if char in "bBAZzG":
            raise self.fail(f"assertion \\{char} (only a leading ^ and a trailing $ are allowed)")
        if char.isdigit() or char == "k":
            raise self.fail(f"backreference \\{char}")
        if char.isalnum() or char == "_":
            raise self.fail(f"unsupported escape \\{char}")
        return _hex(char) if in_class else f"[{_hex(char)}]"

    def char_class(self) -> str:
        """Translate the character class starting at ``self.i`` (a ``[``)."""
        self.i += 1
        out = "["
        if self.peek() == "^":
            out += "^"
            self.i += 1
        first = True
        while True:
            char = self.peek()
            if not char:
                raise self.fail("unterminated character class")
            if char == "]" and not first:
                self.i += 1
                return out + "]"
            first = False
            if char == "\\":
                out += self.escape(in_class=True)
            elif char in '[]"':  # Python reads a leading "]" (and "[") as a literal
                out += _hex(char)
                self.i += 1
            else:
                out += char
                self.i += 1

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

    def alternatives(self) -> list[str]:
        """Translate the whole pattern; return its top-level alternatives (anchors kept)."""
        pieces: list[str] = []
        out = ""
        depth = 0
        while self.i < len(self.pattern):
            char = self.peek()
            if char == "\\":
                out += self.escape(in_class=False)
            elif char == "[":
                out += self.char_class()
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
                    out += f"[{_hex(char)}]"
                    self.i += 1
            elif char in '}]"':
                out += f"[{_hex(char)}]"
                self.i += 1
            elif char == ".":
                out += _DOT
                self.i += 1
            elif char in "^$":
                at_start = out == "" and depth == 0 and char == "^"
                at_end = depth == 0 and char == "$" and self.peek(1) in ("", "|")
                if not (at_start or at_end):
                    raise self.fail("anchor ^ or $ inside the pattern")
                out += char
                self.i += 1
            else:
                out += char
                self.i += 1
        pieces.append(out)
        return pieces


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
        re.compile(pattern)
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
