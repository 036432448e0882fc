"""Text the emulator generates: schema-constrained JSON, plain prose, token splits.

JSON-schema output comes from a real constraint engine: outlines-core (the
library LM Studio's MLX engine uses for structured output) turns the schema
into a regular expression and an `Index` (a token-level automaton) over a
small emulator vocabulary. The sampler walks that automaton with a seeded
`random.Random`; a length bias makes it prefer tokens that move toward an
accepting state as the output grows, so every walk ends. Outputs are then
checked with `jsonschema`, and re-drawn a few times when the regex is looser
than the schema (outlines-core ignores, e.g., ``uniqueItems``).

For a GGUF model (``llama_cpp=True``: LM Studio runs it on llama.cpp) the documents are
also ones llama.cpp's grammar for the schema admits: whitespace only where its ``space``
rule goes, times with a zone, and integers its range for their bounds allows.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
import string
import threading
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from outlines_lmstudio.testing._impossible import impossible
from outlines_lmstudio.testing._llama_integers import integer_range

__all__ = [
    "JsonSampler",
    "SchemaError",
    "count_tokens",
    "document_check",
    "plain_text",
    "split_fragments",
    "token_ids",
]

_WORDS = (
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "at",
    "by",
    "from",
    "this",
    "be",
    "are",
    "or",
    "an",
    "data",
    "model",
    "value",
    "name",
    "item",
    "list",
    "text",
    "note",
    "small",
    "large",
    "red",
    "green",
    "blue",
    "light",
    "river",
    "stone",
    "garden",
    "city",
    "world",
    "time",
    "day",
    "year",
    "way",
    "people",
    "water",
    "paper",
    "number",
    "question",
    "answer",
    "example",
    "system",
    "result",
    "simple",
    "clear",
    "quick",
    "quiet",
    "bright",
    "early",
    "later",
    "often",
    "always",
    "every",
    "some",
    "many",
    "each",
    "other",
    "first",
    "last",
    "next",
    "new",
    "old",
    "good",
    "great",
    "local",
    "open",
)

_FRAGMENT_RE = re.compile(r"\s*\S{1,6}|\s+")


class SchemaError(ValueError):
    """outlines-core cannot build a constraint for a JSON schema."""


def split_fragments(text: str) -> list[str]:
    """Split text into token-like fragments whose concatenation is ``text``."""
    return _FRAGMENT_RE.findall(text)


def token_ids(text: str) -> list[int]:
    """Deterministic token ids for ``text`` (one per fragment)."""
    return [zlib.crc32(piece.encode()) % 151_000 for piece in split_fragments(text)]


def count_tokens(text: str) -> int:
    """Count the emulator tokens in ``text``."""
    return len(split_fragments(text))


def plain_text(key: str, seed: int) -> list[str]:
    """Return a few deterministic sentences derived from ``key`` and ``seed``, as tokens."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    tokens: list[str] = []
    for _ in range(rng.randint(2, 4)):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 12))]
        words[0] = words[0].capitalize()
        for i, word in enumerate(words):
            tokens.append(word if not tokens and i == 0 else f" {word}")
        tokens.append(rng.choice(".....!?"))
    return tokens


def _base_tokens() -> list[str]:
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    words = [w for w in _WORDS if len(w) > 1]
    return chars + words + [f" {w}" for w in words] + [w.capitalize() for w in words[:20]]


def _weight(token: str) -> float:
    if len(token) > 1:
        return 6.0 if token[0] == " " else 1.5
    if token.isalpha():
        return 1.0
    if token.isdigit():
        return 1.5
    if token == " ":
        return 0.3
    return 0.15


_INF = 1 << 30


@dataclass
class _Automaton:
    """A token automaton built by outlines-core, with distances to acceptance."""

    tokens: list[str]
    initial: int
    finals: frozenset[int]
    transitions: dict[int, dict[int, int]]
    distance: dict[int, int]
    validate: Any
    _choices: dict[int, tuple[list[int], list[int], list[float]]] = field(default_factory=dict)

    def choices(self, state: int) -> tuple[list[int], list[int], list[float]]:
        """Live tokens from ``state``: ids, next states and cumulative weights."""
        cached = self._choices.get(state)
        if cached is not None:
            return cached
        ids: list[int] = []
        nexts: list[int] = []
        cum: list[float] = []
        total = 0.0
        eos = len(self.tokens)
        for tok, nxt in self.transitions.get(state, {}).items():
            if tok == eos or self.distance.get(nxt, _INF) >= _INF:
                continue
            total += _weight(self.tokens[tok])
            ids.append(tok)
            nexts.append(nxt)
            cum.append(total)
        cached = (ids, nexts, cum)
        self._choices[state] = cached
        return cached

    def walk(self, rng: random.Random, target: int) -> list[str]:
        """One random accepted token sequence, biased toward ``target`` tokens."""
        state = self.initial
        out: list[str] = []
        while True:
            ids, nexts, cum = self.choices(state)
            pressure = min(1.0, (len(out) / target) ** 3)
            if state in self.finals and (not ids or rng.random() < 0.3 + 0.7 * pressure):
                return out
            if not ids:  # pragma: no cover - distances rule this out
                return out
            if rng.random() < pressure:
                here = self.distance[state]
                best = [i for i, n in enumerate(nexts) if self.distance[n] < here]
                if not best:  # only a final state (distance 0) has no closer next state
                    return out
                pick = rng.choice(best)
            else:
                pick = rng.choices(range(len(ids)), cum_weights=cum)[0]
            out.append(self.tokens[ids[pick]])
            state = nexts[pick]


def _distances(transitions: dict[int, dict[int, int]], finals: Iterable[int]) -> dict[int, int]:
    reverse: dict[int, set[int]] = {}
    for src, edges in transitions.items():
        for dst in edges.values():
            reverse.setdefault(dst, set()).add(src)
    distance = {f: 0 for f in finals}
    queue = deque(distance)
    while queue:
        node = queue.popleft()
        for prev in reverse.get(node, ()):
            if prev not in distance:
                distance[prev] = distance[node] + 1
                queue.append(prev)
    return distance


class JsonSampler:
    """Samples JSON documents that match a schema; caches one automaton per schema."""

    #: How many times an output that fails `jsonschema` validation is re-drawn.
    attempts = 8

    #: How many schemas' automatons are kept, the least recently used dropped first: an
    #: emulator serving for days kept one for every schema it was ever asked for, about
    #: 44 kB each for one field (found by a probe: 2,000 schemas, 88 MB more).
    kept = 128

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, _Automaton | SchemaError] = OrderedDict()

    def is_cached(self, schema: Any, *, llama_cpp: bool = False) -> bool:
        """Whether the automaton of ``schema`` is already built."""
        key = _cache_key(schema, llama_cpp)
        with self._lock:
            if key not in self._cache:
                return False
            self._cache.move_to_end(key)  # about to be used: not the next one dropped
            return True

    def automaton(self, schema: Any, *, llama_cpp: bool = False) -> _Automaton:
        """Build (or fetch from cache) the automaton of ``schema``.

        With ``llama_cpp``, its documents are ones llama.cpp's grammar admits too (a
        GGUF model's: `_llama_cpp_spaces`, `_LLAMA_CPP_CALENDAR`).

        Raises
        ------
        SchemaError
            If outlines-core cannot turn the schema into a constraint.
        """
        key = _cache_key(schema, llama_cpp)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is None:
            cached = self._build(schema, key, llama_cpp)
            with self._lock:
                self._cache[key] = cached
                while len(self._cache) > self.kept:
                    self._cache.popitem(last=False)
        if isinstance(cached, SchemaError):
            raise cached
        return cached

    def _build(self, schema: Any, key: str, llama_cpp: bool) -> _Automaton | SchemaError:
        from outlines_core import Index, Vocabulary
        from outlines_core.json_schema import build_regex_from_schema

        problem = impossible(schema)
        if problem is not None:
            return SchemaError(f"this JSON schema admits no document: {problem}")
        tightened = _tighten(schema, llama_cpp)
        if _doublings(tightened) > _MAX_DOUBLINGS:
            tightened = _one_item_arrays(tightened)
            if _doublings(tightened) > _MAX_DOUBLINGS:
                return SchemaError(
                    "this JSON schema nests lists and maps too deeply for the emulator's "
                    f"engine: outlines-core would write a regex that doubles more than "
                    f"{_MAX_DOUBLINGS} times (it runs out of memory); nest them less deeply"
                )
        # A placeholder for outlines-core's whitespace, put where llama.cpp's grammar has it
        # (none if the schema holds the placeholder: no whitespace is always admitted).
        text = json.dumps(tightened, ensure_ascii=False)
        space = (_SPACE if _SPACE not in text else "") if llama_cpp else _WHITESPACE
        try:
            regex = _capped_digits(build_regex_from_schema(json.dumps(tightened), space))
            if llama_cpp:
                regex = _llama_cpp_spaces(regex, tightened)
        except Exception as exc:  # outlines-core raises ValueError or TypeError
            # Its message ends by sending the reader to Outlines' issues: not the place for a
            # schema an LM Studio client sent.
            why = str(exc).split("Make sure it is valid", 1)[0].strip()
            return SchemaError(f"outlines-core cannot build a regex for this JSON schema: {why}")
        tokens = _base_tokens()
        known = set(tokens)
        for char in itertools.chain(key, _escaped_chars(regex)):
            if char not in known:  # e.g. letters of enum values or patterns outside ASCII
                known.add(char)
                tokens.append(char)
        # A class that allows only characters the vocabulary lacks, though no escape names
        # them (``[^\x00-\x7F]``: found by a probe; LM Studio's models have tokens for
        # them): those are added only when the index cannot be built without them, so other
        # schemas are sampled as before.
        first_error: Exception | None = None
        for extra in ((), [char for char in _NON_ASCII if char not in known]):
            tokens += extra
            try:
                index = Index(
                    regex, Vocabulary(len(tokens), {t: [i] for i, t in enumerate(tokens)})
                )
                break
            except Exception as exc:
                first_error = first_error or exc
        else:
            return SchemaError(
                f"outlines-core cannot build an index for this JSON schema: {first_error}"
            )
        transitions: dict[int, dict[int, int]] = index.get_transitions()
        finals = frozenset(index.get_final_states())
        distance = _distances(transitions, finals)
        initial = index.get_initial_state()
        if initial not in distance:
            return SchemaError("this JSON schema admits no document the emulator can write")
        return _Automaton(tokens, initial, finals, transitions, distance, document_check(schema))

    def sample(self, schema: Any, rng: random.Random, *, llama_cpp: bool = False) -> list[str]:
        """Return the tokens of one JSON document matching ``schema``.

        With ``llama_cpp``, one llama.cpp's grammar for the schema admits too (a GGUF
        model's reply).
        """
        automaton = self.automaton(schema, llama_cpp=llama_cpp)
        tokens: list[str] = []
        for _ in range(self.attempts):
            # Aim past the shortest document (keys and punctuation cost tokens too), so that
            # large schemas get values with content rather than empty strings and arrays.
            shortest = automaton.distance[automaton.initial]
            tokens = automaton.walk(rng, shortest + rng.randint(24, 64))
            if automaton.validate is None or automaton.validate("".join(tokens)):
                break
        return tokens


def _cache_key(schema: Any, llama_cpp: bool) -> str:
    """Return the cache key of a schema's automaton (a GGUF model's has its own)."""
    # Key order matters: outlines-core writes properties in schema order.
    return ("llama.cpp " if llama_cpp else "") + json.dumps(schema, ensure_ascii=False)


_WHITESPACE = r"[ ]?"
"""outlines-core's whitespace between JSON tokens (LM Studio's MLX engine is outlines-core)."""

_SPACE = "\ue000"
"""A placeholder for outlines-core's whitespace in a GGUF model's regex (`_llama_cpp_spaces`)."""


def _llama_cpp_spaces(regex: str, schema: Any) -> str:
    """Keep the whitespace of outlines-core's regex only where llama.cpp's grammar has it.

    outlines-core writes whitespace (`_SPACE` here) on both sides of every ``,`` and
    ``:`` and inside ``enum`` and ``const`` values (``{ "a":8 , "b" :1}``, ``[1 ]``).
    llama.cpp's converter (LM Studio's GGUF engine) has its ``space`` rule only after
    ``{``, ``[``, ``,``, ``:`` and a declared key, and before ``}`` and ``]``: never after
    a value (so never before a ``,``), nor between an additional key and its ``:``, nor
    inside an ``enum`` or ``const`` value, which it writes as the compact JSON text
    (``[1]``, ``{"k":1}``). Each rewrite drops whitespace only, so the documents are a
    subset of what the regex allowed (found by a differential fuzz against the C++
    converter's grammar). No whitespace before a ``:`` at all: the regex does not tell a
    declared key from an additional one.
    """
    for literal in sorted(_literals(schema), key=len, reverse=True):
        regex = regex.replace(literal, literal.replace(_SPACE, ""))
    regex = regex.replace(_SPACE + ",", ",").replace(_SPACE + ":", ":")
    return regex.replace(_SPACE, _WHITESPACE)


def _literals(node: Any) -> set[str]:
    """Return outlines-core's regexes of the arrays and objects a schema's enums and consts hold."""
    from outlines_core.json_schema import build_regex_from_schema

    if isinstance(node, list):
        return set[str]().union(*(_literals(item) for item in node))
    if not isinstance(node, dict):
        return set()
    values = [node["const"]] if "const" in node else []
    values += node["enum"] if isinstance(node.get("enum"), list) else []
    found = {
        build_regex_from_schema(json.dumps({"const": value}), _SPACE)
        for value in values
        if isinstance(value, (list, dict))
    }
    return found.union(*(_literals(v) for k, v in node.items() if k not in _DATA))


_ESCAPE = re.compile(
    r"\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})|\\x\{([0-9a-fA-F]{1,6})\}|\\x([0-9a-fA-F]{2})"
)
"""Escapes naming a character (the pattern rewrite writes U+0080-U+00FF as ``\\xNN``)."""


# outlines-core's integer and number regexes allow any number of digits, and a walk that aims
# past the shortest document wrote ages of 30 digits. llama.cpp's converter allows 16 before
# the point and 16 after it (``[1-9] [0-9]{0,15}``, ``[0-9]{1,16}``), so a model on LM Studio's
# llama.cpp engine writes no more; its exponent is kept to 2 digits, a float's range, with no
# leading zero, as llama.cpp's grammar writes it (``[eE] [-+]? integral-part``: not ``E+01``).
# Each rewrite keeps a subset of what the regex allowed, so any match still validates.
_DIGIT_CAPS = (
    ("(0|[1-9][0-9]*)", "(0|[1-9][0-9]{0,15})"),
    (r"(\.[0-9]+)", r"(\.[0-9]{1,16})"),
    ("([eE][+-][0-9]+)", "([eE][+-](0|[1-9][0-9]?))"),
)


def _capped_digits(regex: str) -> str:
    """Cap the digits of outlines-core's integer and number regexes as llama.cpp does."""
    for unbounded, capped in _DIGIT_CAPS:
        regex = regex.replace(unbounded, capped)
    return regex


_NON_ASCII = ("é", "ß", "λ", "д", "中", "文", "ア", "😀")
"""Characters outside ASCII from several scripts, for a class that allows only such."""


def _escaped_chars(regex: str) -> list[str]:
    r"""Return the characters a regex names by escape (``[\u3041-\u3093]``: both ends).

    The vocabulary must hold a character of every class the regex requires; a pattern's
    non-ASCII characters reach outlines-core's regex as escapes, not as themselves.
    Surrogates are left out (no token can be one).
    """
    codes = (int(next(g for g in m.groups() if g), 16) for m in _ESCAPE.finditer(regex))
    return [chr(c) for c in codes if c <= 0x10FFFF and not 0xD800 <= c <= 0xDFFF]


_MAX_RANGE = 20_000  # an enum this size builds in ~0.1 s
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _num(node: dict[str, Any], key: str) -> float | None:
    value = node.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _bounded_values(node: dict[str, Any], llama_cpp: bool = False) -> list[int | float] | None:
    """Return a finite set of values meeting a numeric node's bounds (None if not applicable).

    outlines-core ignores ``minimum``/``maximum`` and ``multipleOf``; a model may pick
    any valid value, so offering a subset of the valid range still conforms. A whole
    ``multipleOf`` (``5``, ``2.0``) gives its multiples, within the bounds if any; other
    steps (``0.1``) are left to the re-draws. With ``llama_cpp``, an integer's values are
    the ones llama.cpp's grammar for its bounds allows too (`integer_range`: with one
    bound it misses some, ``maximum: -115`` wrote ``-1079``, which a GGUF model never
    writes; found by a differential fuzz), unless it allows none of them.
    """
    values = _values_within(node)
    allowed = integer_range(node) if llama_cpp and values else None
    if values and allowed is not None:
        kept = [value for value in values if allowed.fullmatch(str(value))]
        values = kept or values
    return values


def _values_within(node: dict[str, Any]) -> list[int | float] | None:
    """Return a finite set of values meeting a numeric node's bounds (`_bounded_values`)."""
    kind = node.get("type")
    step = _num(node, "multipleOf")
    whole_step = step is not None and step > 0 and float(step).is_integer()
    if kind not in ("integer", "number") or {"enum", "const"} & set(node):
        return None
    if "multipleOf" in node and not whole_step:
        return None
    if not whole_step and not any(k in node for k in _BOUNDS):
        return None
    lo, hi = _num(node, "minimum"), _num(node, "maximum")
    xlo, xhi = _num(node, "exclusiveMinimum"), _num(node, "exclusiveMaximum")

    def ok(v: float) -> bool:
        return (
            (lo is None or v >= lo)
            and (hi is None or v <= hi)
            and (xlo is None or v > xlo)
            and (xhi is None or v < xhi)
        )

    lows = [b for b in (lo, xlo) if b is not None]
    highs = [b for b in (hi, xhi) if b is not None]
    unit = int(step) if whole_step and step is not None else 1
    span = (999 if kind == "integer" or whole_step else 1000.0) * unit
    if lows:
        low = max(lows)
        high = min(highs) if highs else low + span
    elif highs:
        high = min(highs)
        low = high - span
    elif whole_step:
        low, high = 0, span
    else:
        return None
    if kind == "integer" or whole_step:
        first = math.ceil(low / unit)
        last = min(math.floor(high / unit), first + _MAX_RANGE)
        values: list[int | float] = [k * unit for k in range(first, last + 1) if ok(k * unit)]
    else:
        steps = [round(low + (high - low) * k / 64, 6) for k in range(65)]
        values = sorted({v for v in steps if ok(v)})
    if not values and "multipleOf" in node:
        # No multiple within the bounds: llama.cpp (a GGUF model's engine) keeps integer
        # bounds and not multipleOf; any number was written (found by a probe).
        return _values_within({k: v for k, v in node.items() if k != "multipleOf"})
    return values or None


# Valid e-mail addresses and URIs of a simple shape: letters around a fixed part.
# outlines-core's own "email" pattern is exact, and its automaton grows so fast that an
# e-mail field with a maxLength, or one inside an array of arrays of objects, took over
# 100 s to build; its "uri" pattern (``[^\s]``: any character but a space) did the same
# with a list of URIs, a client's request timing out while a core was busy for minutes
# (found by a probe). These take milliseconds.
_ADDRESSES = {"email": ("", "@example.com"), "uri": ("https://example.com/", "")}


def _simple_address(node: dict[str, Any]) -> dict[str, Any] | None:
    """Return an e-mail or URI node as a pattern of simple ones within its length bounds.

    None if the node has a pattern or its bounds leave no room for one.
    """
    before, after = _ADDRESSES[node["format"]]
    if "pattern" in node:
        return None
    fixed = len(before) + len(after)
    shortest = max(1, int(node.get("minLength", 0)) - fixed)
    bound = node.get("maxLength")
    longest = shortest + 8 if bound is None else int(bound) - fixed
    if longest < shortest:
        return None
    rest = {k: v for k, v in node.items() if k not in ("format", "minLength", "maxLength")}
    letters = f"[a-z]{{{shortest},{min(longest, 64)}}}"
    return {**rest, "pattern": f"{re.escape(before)}{letters}{re.escape(after)}"}


# Dates and times every validator takes. outlines-core's own date-time pattern allows years
# of any length (``3925373-02-16T...``) and day 31 in every month, which Pydantic's datetime
# and date refuse; a model writing for llama.cpp's grammar has 4-digit years. Days stop at
# 28 so that every month has them.
_DATE = "[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
_TIME = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_CALENDAR = {"date": _DATE, "time": _TIME + "Z?", "date-time": f"{_DATE}T{_TIME}Z"}
# llama.cpp's converter (a GGUF model's) writes a time with a zone, ``Z`` or an offset
# (``( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )``): a time
# without one is not in its grammar (found by a differential fuzz).
_OFFSET = "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_LLAMA_CPP_CALENDAR = {**_CALENDAR, "time": _TIME + _OFFSET}


def _calendar(node: dict[str, Any], llama_cpp: bool) -> dict[str, Any] | None:
    """Return a date, time or date-time string node as a pattern of valid values, or None."""
    calendar = _LLAMA_CPP_CALENDAR if llama_cpp else _CALENDAR
    pattern = calendar.get(node.get("format", ""))
    if pattern is None or {"pattern", "minLength", "maxLength"} & set(node):
        return None
    return {**{k: v for k, v in node.items() if k != "format"}, "pattern": pattern}


# Letters, digits and spaces: each is one character of JSON text, with no escapes.
_LENGTH_CHARS = "[a-zA-Z0-9 ]"
_LENGTH_SPAN = 32  # longest string over the minimum when there is no maximum
_LENGTH_CAP = 256  # longest string over the minimum offered at all


def _bounded_string(node: dict[str, Any]) -> dict[str, Any] | None:
    """Return a string node with length bounds as a pattern of such strings, or None.

    outlines-core spells ``minLength``/``maxLength`` as a counted repetition of every
    character JSON allows. Outside an object (the root, an ``anyOf``) its automaton grew
    exponentially with the bound: ``maxLength: 16`` took 8 s to index, ``maxLength: 20``
    over a minute (the SDK timed out, a thread kept building). Letters, digits and
    spaces within the same bounds index in milliseconds and are a subset of the valid
    strings.
    """
    if node.get("type") != "string" or {"pattern", "format", "enum", "const"} & set(node):
        return None
    if "minLength" not in node and "maxLength" not in node:
        return None
    low, high = node.get("minLength", 0), node.get("maxLength")
    if isinstance(low, bool) or not isinstance(low, int) or low < 0:
        return None
    if high is None:
        high = low + _LENGTH_SPAN
    elif isinstance(high, bool) or not isinstance(high, int) or high < low:
        return None
    rest = {k: v for k, v in node.items() if k not in ("minLength", "maxLength")}
    return {**rest, "pattern": f"{_LENGTH_CHARS}{{{low},{min(high, low + _LENGTH_CAP)}}}"}


_SCALAR = {"anyOf": [{"type": t} for t in ("null", "boolean", "number", "string")]}
_CONTAINER_KEYWORDS = {
    "array": ("items", "prefixItems", "contains"),
    "object": ("properties", "additionalProperties", "patternProperties", "propertyNames"),
}
_CONTAINER_ANY = {"array": "items", "object": "additionalProperties"}
_NOTES = frozenset({"title", "description", "default", "examples", "$comment", "deprecated"})
_DATA = frozenset({"const", "enum", "default", "examples"})  # values, not subschemas


def _anything(schema: object) -> bool:
    """Whether a subschema allows every value (``{}``, ``true``, annotations only)."""
    return schema is True or (isinstance(schema, dict) and not set(schema) - _NOTES)


def _open_container(node: dict[str, Any]) -> dict[str, Any] | None:
    """Return an array or object node that allows any items as one with scalar items.

    outlines-core spells "any array" or "any object" as every JSON document nested a few
    levels deep: one such regex takes seconds to index, an ``anyOf`` of two about a minute
    (the request then times out), and its regex for ``additionalProperties: {}`` admits
    invalid JSON (``{12}``). Scalar items are a subset of what the node allows.
    """
    kinds = node.get("type")
    listed = [kinds] if isinstance(kinds, str) else kinds
    if not isinstance(listed, list) or not {"array", "object"} & set(listed):
        return None
    said = [key for kind in listed for key in _CONTAINER_KEYWORDS.get(kind, ()) if key in node]
    if any(not _anything(node[key]) or key not in _CONTAINER_ANY.values() for key in said):
        return None
    if len(listed) == 1:
        return {**node, _CONTAINER_ANY[listed[0]]: _SCALAR}
    if set(node) - _NOTES - {"type"}:
        return None  # other keywords apply to some of the types: leave it as it is
    return {"anyOf": [_open_container({"type": k}) or {"type": k} for k in listed]}


# outlines-core writes an array's item schema twice (the first item, then ``(,item)*``), and
# a map's value schema too, so its regex doubles with each level of nesting: 10 levels of
# arrays are 50,000 characters (0.3 s to index), 14 are 800,000 (5 s, 280 MB), and 20 made
# its index allocate gigabytes and abort the process the emulator runs in.
_MAX_DOUBLINGS = 10


def _doublings(node: Any) -> int:
    """How many times outlines-core's regex doubles along the most doubling path of a schema."""
    if isinstance(node, list):
        return max((_doublings(item) for item in node), default=0)
    if not isinstance(node, dict):
        return 0
    items, extra = node.get("items"), node.get("additionalProperties")
    doubles = (isinstance(items, dict) and node.get("maxItems") != 0) or isinstance(extra, dict)
    inner = (_doublings(v) for k, v in node.items() if k not in _DATA)
    return int(doubles) + max(inner, default=0)


def _one_item_arrays(node: Any) -> Any:
    """Narrow arrays that may hold one item to exactly one, which outlines-core writes once.

    ``{"prefixItems": [item], "items": false}`` is an array of one item, a valid subset of
    ``{"items": item}`` when the bounds allow one item; its regex holds ``item`` once.
    """
    if isinstance(node, list):
        return [_one_item_arrays(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: v if k in _DATA else _one_item_arrays(v) for k, v in node.items()}
    items = out.get("items")
    low, high = out.get("minItems", 0), out.get("maxItems", 1)
    if (
        isinstance(items, dict)
        and not {"prefixItems", "contains", "uniqueItems"} & set(out)
        and isinstance(low, int)
        and isinstance(high, int)
        and low <= 1 <= high
    ):
        rest = {k: v for k, v in out.items() if k not in ("items", "minItems", "maxItems")}
        return {**rest, "prefixItems": [items], "items": False}
    return out


# outlines-core's regex of an object holds every way its optional properties can follow one
# another, so it grows with their square and more: 100 optional properties take 1 s to index,
# 200 take 10 s, and 5,000 (a generated schema) never finish before the client times out.
_MAX_OPTIONAL = 48
# Keywords under which leaving optional properties out could make a document invalid.
_WHOLE_OBJECT = frozenset(
    {
        "minProperties",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "patternProperties",
        "propertyNames",
        "unevaluatedProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
    }
)


def _few_optional(node: dict[str, Any]) -> dict[str, Any] | None:
    """Return an object node with many optional properties as one with the first few.

    The required properties and the first `_MAX_OPTIONAL` optional ones, and no others
    (``additionalProperties: false``): a subset of the documents the node allows, whenever
    no other keyword of the node counts or constrains its properties.
    """
    properties, required = node.get("properties"), node.get("required", [])
    if not isinstance(properties, dict) or not isinstance(required, list):
        return None
    optional = [key for key in properties if key not in required]
    if (
        len(optional) <= _MAX_OPTIONAL
        or _WHOLE_OBJECT & set(node)
        or not set(required) <= set(properties)  # a required key only additional properties hold
    ):
        return None
    keep = set(required) | set(optional[:_MAX_OPTIONAL])
    kept = {key: value for key, value in properties.items() if key in keep}
    return {**node, "properties": kept, "additionalProperties": False}


_DOCUMENT_KEYS = frozenset({"$defs", "definitions", "$schema", "$id"})
_OBJECT_PART = frozenset({"type", "properties", "required"}) | _NOTES


def _merged_all_of(node: dict[str, Any]) -> dict[str, Any] | None:
    """Return an ``allOf`` of plain objects as one object with all their properties, or None.

    outlines-core writes each member's regex one after the other, so
    ``{"allOf": [{"properties": {"a": ...}}, {"properties": {"b": ...}}]}`` came out as
    ``{"a": 1}{"b": ""}``, not JSON. Only members of properties and required ones, no
    key in two of them, are merged: the object is then exactly what the ``allOf`` allows
    (what LM Studio's MLX engine does is not verified). A GGUF model's schema reaches the
    sampler with no ``allOf``: llama.cpp's converter reads it otherwise (every property
    required, the object closed), and the synthetic engine writes it so first
    (`outlines_lmstudio.testing._llama_all_of`).
    """
    parts = node.get("allOf")
    if not isinstance(parts, list) or len(parts) < 2 or set(node) - _OBJECT_PART - {"allOf"}:
        return None
    properties: dict[str, Any] = {}
    required: list[Any] = []
    for part in [node, *parts]:
        if not isinstance(part, dict) or part.get("type", "object") != "object":
            return None
        if set(part) - _OBJECT_PART - ({"allOf"} if part is node else set()):
            return None
        own, wanted = part.get("properties", {}), part.get("required", [])
        if not isinstance(own, dict) or not isinstance(wanted, list) or set(own) & set(properties):
            return None
        properties.update(own)
        required += [key for key in wanted if key not in required]
    notes = {key: value for key, value in node.items() if key in _NOTES}
    return {**notes, "type": "object", "properties": properties, "required": required}


def _split_types(node: dict[str, Any]) -> dict[str, Any] | None:
    """Return a node with a ``type`` list as ``anyOf`` one copy per type, or None.

    ``{"type": ["integer", "null"], "minimum": 7}`` is the union of the same node with
    each type (every other keyword applies to its own type only), as llama.cpp's
    converter reads it. Split, each copy is tightened like any node: a type list hid
    the bounds from `_bounded_values`, and the re-draws rarely met them.
    """
    kinds = node.get("type")
    if not isinstance(kinds, list) or not kinds or {"anyOf", "oneOf"} & set(node):
        return None
    # Definitions stay where "#/$defs/..." references find them.
    top = {key: value for key, value in node.items() if key in _DOCUMENT_KEYS}
    rest = {key: value for key, value in node.items() if key not in _DOCUMENT_KEYS}
    return {**top, "anyOf": [{**rest, "type": kind} for kind in kinds]}


def _tighten(node: Any, llama_cpp: bool = False) -> Any:
    """Narrow a schema to a subset of its valid documents that outlines-core samples fast.

    Numeric bounds become enums of valid values (outlines-core ignores them), an ``email``
    or ``uri`` string a simple pattern of valid ones, dates and times patterns of values
    that every validator takes (with ``llama_cpp``, times with a zone, as llama.cpp
    writes them), strings with length bounds patterns of letters, digits and spaces
    within them, arrays and objects that say nothing of their items arrays and objects
    of scalars, and objects with many optional properties objects with the first few of
    them.
    """
    if isinstance(node, list):
        return [_tighten(item, llama_cpp) for item in node]
    if not isinstance(node, dict):
        return node
    split = _split_types(node) or _merged_all_of(node)
    if split is not None:
        return _tighten(split, llama_cpp)
    values = _bounded_values(node, llama_cpp)
    if values is not None:
        return {"enum": values}
    node = _open_container(node) or node
    node = _few_optional(node) or node
    if node.get("format") in _ADDRESSES:
        node = _simple_address(node) or node
    elif node.get("type") == "string" and node.get("format") in _CALENDAR:
        node = _calendar(node, llama_cpp) or node
    else:
        node = _bounded_string(node) or node
    return {key: _tighten_value(key, value, llama_cpp) for key, value in node.items()}


# Keywords whose value maps names to the subschemas of values inside the document.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
# Keywords whose value lists subschemas of the same value (``items`` as a draft-07 tuple too).
_MEMBER_LISTS = frozenset({"items", "prefixItems", "anyOf", "oneOf", "allOf"})


def _tighten_value(key: str, value: Any, llama_cpp: bool) -> Any:
    """Tighten the value of keyword ``key`` of a schema node.

    An empty subschema (``{}``: any value) as a property's value, an item, a definition
    or a member of an ``anyOf``, ``oneOf`` or ``allOf`` becomes one of scalars:
    outlines-core writes "any value" as an alternation it does not group, so
    ``{"properties": {"p": {}}}`` admitted bare numbers in place of the object, and as
    every JSON document nested a few levels deep, so ``{"items": {"anyOf": [{}, {"type":
    "null"}]}}`` took minutes to index (the client timed out; found by a differential
    fuzz). Narrowing a member of an ``anyOf`` or ``allOf`` keeps a subset of the valid
    documents; a ``oneOf`` can admit one more where members overlapped, which the
    `jsonschema` check re-draws. (``true`` and annotations-only subschemas there stay
    refused, as both llama.cpp's converter and outlines-core refuse them.)
    """
    if key in _DATA:
        return value
    if key in _SCHEMA_MAPS and isinstance(value, dict):
        return {name: _member(sub, llama_cpp) for name, sub in value.items()}
    if key in _MEMBER_LISTS and isinstance(value, list):
        return [_member(sub, llama_cpp) for sub in value]
    if key == "items":
        return _member(value, llama_cpp)
    return _tighten(value, llama_cpp)


def _member(schema: Any, llama_cpp: bool) -> Any:
    """Tighten the subschema of a value inside an object or array (``{}``: scalars)."""
    return _SCALAR if schema == {} else _tighten(schema, llama_cpp)


def document_check(schema: Any) -> Callable[[str], bool] | None:
    """Return a function text -> bool checking documents against ``schema`` (None if unusable)."""
    try:
        from jsonschema.validators import validator_for

        cls = validator_for(schema)
        cls.check_schema(schema)
        validator = cls(schema)
    except Exception:
        return None

    def check(text: str) -> bool:
        try:
            return bool(validator.is_valid(json.loads(text)))
        except Exception:  # invalid JSON, or a $ref jsonschema cannot resolve
            return False

    return check
