"""The llama.cpp engine: a real GGUF model behind the emulator's protocol.

One `LlamaEngine` serves one loaded instance, with the behaviour of LM Studio's
llama.cpp engine where we can reproduce it (see ``docs/real-engine.md``):
the GGUF's chat template (or a documented fallback), llama.cpp's JSON-schema
converter (llama-cpp-python's Python port, ``llama_cpp.llama_grammar``), GBNF
as given, LM Studio's sampler settings, real token counts and stop reasons.

All llama.cpp work runs on worker threads, so the event loop never blocks: a
reply is decoded in a thread of its own (`_Decoding`), which checks for a cancel
before each token. One instance decodes one prediction at a time; further predictions
wait their turn, taken once their prompt is tokenized (see docs/real-engine.md; LM Studio
batches up to 4 slots in one context).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import json
import math
import os
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from outlines_lmstudio._install import install_command
from outlines_lmstudio.testing._engine import Fragment, Generation, PromptProgress
from outlines_lmstudio.testing._llama_all_of import (
    any_of_alternatives,
    endless_all_of,
    schema_kind,
)
from outlines_lmstudio.testing._llama_builder import schema_error
from outlines_lmstudio.testing._llama_plan import (
    MAX_GRAMMAR_DEPTH,
    Plan,
    StopScanner,
    flash_attention,
    grammar_depth,
    plan,
    reversed_repetition,
    template_for,
)
from outlines_lmstudio.testing._llama_schema import (
    REVERSED_REPETITION,
    integer_range_failure,
    local_target,
)
from outlines_lmstudio.testing._records import message_text
from outlines_lmstudio.testing._wire import (
    RequestError,
    acquire_unless_cancelled,
    json_mode_schema,
    server_error,
)

if TYPE_CHECKING:
    from outlines_lmstudio.testing._catalogue import EmulatedModel, Instance
    from outlines_lmstudio.testing._llama_native import Decoder, GgufFacts, NativeModel
    from outlines_lmstudio.testing._records import Prediction

__all__ = [
    "LLAMA_REINSTALL",
    "LlamaUnusableError",
    "LlamaEngine",
    "context_memory_error",
    "cpp_repetition",
    "integer_range_gbnf",
    "json_schema_grammar",
    "memory_bytes",
    "read_facts",
]


LLAMA_REINSTALL = "pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python==0.3.36"
"""Builds llama-cpp-python again on this machine (its library did not load).

``--no-deps`` keeps the user's numpy, jinja2 and the rest as they are: ``--force-reinstall``
would otherwise reinstall them too, at the newest versions the pins allow.
"""


class LlamaUnusableError(ImportError):
    """llama-cpp-python is installed, but its llama.cpp library cannot be loaded."""


def _native() -> Any:
    try:
        from outlines_lmstudio.testing import _llama_native
    except ImportError as exc:
        raise ImportError(
            f"Serving a GGUF file needs llama-cpp-python ({exc.name!r} is missing). "
            f"Install it with: {install_command('local')}",
            name=exc.name,
        ) from exc
    except (RuntimeError, OSError) as exc:  # llama_cpp raises RuntimeError for its library
        # Found by a probe: a library that does not load (a missing libgomp, a wheel built
        # on another machine) was a traceback, and the demo did not fall back.
        raise LlamaUnusableError(
            f"llama-cpp-python is installed, but its llama.cpp library cannot be loaded "
            f"({exc}). Build it again for this machine: {LLAMA_REINSTALL}",
            name="llama_cpp",
        ) from exc
    return _llama_native


def read_facts(path: str | os.PathLike[str]) -> GgufFacts:
    """Read what LM Studio lists about a GGUF file (see `_llama_native.read_facts`).

    Raises
    ------
    IsADirectoryError
        If ``path`` is a directory (LM Studio keeps each model in one): the file is needed.
    FileNotFoundError
        If nothing is at ``path`` (before llama.cpp is looked for).
    ImportError
        If llama-cpp-python is not installed, or its library cannot be loaded
        (`LlamaUnusableError`).
    """
    if os.path.isdir(path):
        raise IsADirectoryError(
            errno.EISDIR, "a directory, not a GGUF file: give the .gguf file in it", os.fspath(path)
        )
    if not os.path.exists(path):  # said first: it is wrong with or without llama.cpp
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), os.fspath(path))
    facts: GgufFacts = _native().read_facts(path)
    return facts


def memory_bytes() -> int | None:
    """Return the memory a context may take: the machine's RAM, or the address-space limit.

    None where neither can be read (the load is then not checked).
    """
    limits: list[int] = []
    with contextlib.suppress(AttributeError, ValueError, OSError):
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    with contextlib.suppress(ImportError, OSError):
        import resource  # Unix only

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    return min(limits) if limits else None


def context_memory_error(
    model: EmulatedModel, context_length: int, facts: GgufFacts, memory: int | None
) -> RequestError | None:
    """Return the load error for a context that cannot fit in ``memory``, or None.

    Checked before llama.cpp tries: creating a context of a billion tokens would take
    minutes to fail, or take the machine's memory. LM Studio refuses such a load with
    "Failed to load model" (lmstudio-bug-tracker#14, with ``n_ctx`` in its data). A context
    above the model's maximum that fits is loaded, as LM Studio and llama.cpp do.
    """
    if memory is None or facts.kv_bytes_per_token is None:
        return None
    needed = context_length * facts.kv_bytes_per_token + facts.size_bytes
    if needed <= memory:
        return None
    gib = 1 << 30
    return server_error(
        "Failed to load model",
        cause=(
            f"A context length of {context_length} tokens needs about {needed / gib:.1f} GiB "
            f"(KV cache and weights), more than the {memory / gib:.1f} GiB of memory here; "
            f"the maximum context length of {model.key} is {model.context_length}."
        ),
        suggestion=(
            f"Load the model with a smaller contextLength (it was trained for up to "
            f"{model.context_length} tokens)."
        ),
    )


# llama.cpp's escapes for a GBNF string literal. The port leaves out the backslash, so a
# JSON literal holding one (an enum value, a const or a property name with a quote or a
# backslash) became a GBNF literal that does not parse, or that matches invalid JSON.
_LITERAL_ESCAPE = re.compile(r'[\r\n"\\]')
_LITERAL_ESCAPES = {"\r": "\\r", "\n": "\\n", '"': '\\"', "\\": "\\\\"}

# llama.cpp's rule for one character of a JSON string. The port's (``[^"\\] | ...``) lets
# control characters through, so a constrained reply could hold a raw line break: not JSON.
_CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})'


# An integer with one side unbounded has at most this many digits, as the converter's
# own integer rule (``[0] | [1-9] [0-9]{0,15}``).
_INTEGER_DIGITS = 16
_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
# Keywords the converter reads before an integer's bounds (the bounds are then ignored).
_BEFORE_BOUNDS = ("$ref", "oneOf", "anyOf", "const", "enum")
# What the C++ converter replaces with "-" in the name of a ``$ref``'s rule.
_RULE_NAME_JUNK = re.compile(r"[^a-zA-Z0-9-]+")


def _digits(low: str, high: str) -> str:
    """GBNF for the digit strings of one length from ``low`` to ``high`` (``low <= high``)."""
    common = 0
    while common < len(low) and low[common] == high[common]:
        common += 1
    prefix = f'"{low[:common]}"' if common else ""
    low, high = low[common:], high[common:]
    if not low:
        return prefix
    rest = len(low) - 1
    first, last = int(low[0]), int(high[0])
    options = []
    if low[1:] != "0" * rest:  # the first digit, then at least the rest of ``low``
        options.append(f'"{first}" ({_digits(low[1:], "9" * rest)})')
        first += 1
    upper = ""
    if high[1:] != "9" * rest:  # the last digit, then at most the rest of ``high``
        upper = f'"{last}" ({_digits("0" * rest, high[1:])})'
        last -= 1
    if first <= last:
        options.append(f"[{first}-{last}]" + (f" [0-9]{{{rest}}}" if rest else ""))
    if upper:
        options.append(upper)
    body = " | ".join(options)
    return f"{prefix} ({body})" if prefix else f"({body})"


def _magnitudes(low: int, high: int) -> list[str]:
    """GBNF alternatives for the numbers ``low`` to ``high`` (both >= 0), no leading zeros."""
    options = []
    full: list[int] = []  # lengths of more than one digit taken whole: one option for them
    for length in range(len(str(low)), len(str(high)) + 1):
        start = max(low, 10 ** (length - 1) if length > 1 else 0)
        end = min(high, 10**length - 1)
        if length > 1 and start == 10 ** (length - 1) and end == 10**length - 1:
            full.append(length - 1)
        else:
            options.append(_digits(str(start), str(end)))
    if full:  # contiguous: only the shortest and the longest length can be partial
        count = f"{full[0]}" if len(full) == 1 else f"{full[0]},{full[-1]}"
        options.append(f"[1-9] [0-9]{{{count}}}")
    return options


def integer_range_gbnf(low: int | None, high: int | None) -> str:
    """GBNF for the integers from ``low`` to ``high`` as JSON writes them (None: unbounded).

    An unbounded side stops at 16 digits, as the converter's integers do. There is
    no ``-0`` and no leading zero.

    Raises
    ------
    ValueError
        If no integer lies between the bounds.
    """
    if low is not None and high is not None and low > high:
        raise ValueError(f"no integer is at least {low} and at most {high}")
    options = []
    if high is None or high >= 0:  # zero and the positive numbers
        start = 0 if low is None else max(low, 0)
        end = high if high is not None else max(10**_INTEGER_DIGITS - 1, start)
        options += _magnitudes(start, end)
    if low is None or low < 0:  # the negative numbers, by magnitude
        start = 1 if high is None else max(-high, 1)
        end = -low if low is not None else max(10**_INTEGER_DIGITS - 1, start)
        options.append(f'"-" ({" | ".join(_magnitudes(start, end))})')
    return " | ".join(options)


def _integer_bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    """Return the least and greatest integer the bounds of ``schema`` allow (None: unbounded)."""

    def number(key: str) -> float | None:
        value = schema.get(key)
        return None if isinstance(value, bool) or not isinstance(value, int | float) else value

    lows = [math.ceil(v) for v in [number("minimum")] if v is not None]
    lows += [math.floor(v) + 1 for v in [number("exclusiveMinimum")] if v is not None]
    highs = [math.floor(v) for v in [number("maximum")] if v is not None]
    highs += [math.ceil(v) - 1 for v in [number("exclusiveMaximum")] if v is not None]
    return (max(lows) if lows else None), (min(highs) if highs else None)


def cpp_repetition(item: str, least: int, most: int | None, separator: str = "") -> str:
    """Return GBNF repeating ``item``, as llama.cpp's C++ converter writes it.

    Its ``build_repetition``: a counted repetition (``item{2,500}``), where the port
    nests one optional group per repetition (``(item (item ...)?)?``), which llama.cpp's
    grammar parser refuses from about 1500 on.
    """
    if most == 0:
        return ""
    if least == 0 and most == 1:
        return f"{item}?"
    if not separator:
        if least == 1 and most is None:
            return f"{item}+"
        if least == 0 and most is None:
            return f"{item}*"
        return f"{item}{{{least},{'' if most is None else most}}}"
    rest = cpp_repetition(
        f"({separator} {item})", max(least - 1, 0), None if most is None else most - 1
    )
    result = f"{item} {rest}"
    return f"({result})?" if least == 0 else result


def _counted(schema: Any) -> bool:
    """Whether the converter repeats a string's characters or an array's items for ``schema``."""
    if not isinstance(schema, dict) or any(k in schema for k in (*_BEFORE_BOUNDS, "allOf")):
        return False
    if schema.get("type") == "array":
        return isinstance(schema.get("items"), dict) and "prefixItems" not in schema
    fmt = schema.get("format") or ""
    return (
        schema.get("type") == "string"
        and ("minLength" in schema or "maxLength" in schema)
        and "pattern" not in schema
        and not re.match(r"^uuid[1-5]?$", fmt)
        and fmt not in ("date", "time", "date-time")
    )


def _empty_pattern(schema: Any) -> bool:
    """Whether ``schema`` is a string with ``"pattern": ""``, which the C++ converter ignores.

    Its schema builder makes a node without ``type`` a string for a ``pattern`` (after
    ``properties``, ``allOf``, ``items``); the converter then reads an empty pattern as
    none (its ``minLength``, ``maxLength`` or format apply), where the port refused it as
    not anchored.
    """
    if not isinstance(schema, dict) or schema.get("pattern") != "" or schema_kind(schema):
        return False
    kind = schema.get("type")
    return kind == "string" or (
        kind is None and "items" not in schema and "prefixItems" not in schema
    )


def _reads_all_of(schema: Any) -> bool:
    """Whether the C++ converter reaches its ``allOf`` branch for ``schema``.

    After ``$ref``, ``oneOf``/``anyOf``, a type list, ``const``, ``enum`` and an object
    with properties; for no type, ``object`` or ``string``.
    """
    if not isinstance(schema, dict) or not isinstance(schema.get("allOf"), list):
        return False
    if any(key in schema for key in _BEFORE_BOUNDS) or isinstance(schema.get("type"), list):
        return False
    kind = schema.get("type")
    extras = schema.get("additionalProperties", True)
    if kind in (None, "object") and ("properties" in schema or extras is not True):
        return False
    return kind in (None, "object", "string")


def _type_list(schema: Any) -> bool:
    """Whether the converter reads ``schema`` as a union of its ``type`` list."""
    return (
        isinstance(schema, dict)
        and isinstance(schema.get("type"), list)
        and not any(key in schema for key in ("$ref", "oneOf", "anyOf"))
    )


def _dump(value: Any) -> str:
    """Return JSON text as llama.cpp's JSON library dumps it: compact, non-ASCII as it is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _class_char(char: str) -> str:
    """Return one character inside a GBNF character class (hex-escaped unless alphanumeric)."""
    return char if char.isascii() and char.isalnum() else f"\\U{ord(char):08X}"


def _not_strings(names: list[str], char: str) -> str:
    r"""Return GBNF for a JSON string that is none of ``names``, as the C++ converter does.

    Its ``_not_strings``: a trie of the names, one character class per character. The
    C++ original puts each character in its class as it is; here it is escaped, so a
    name holding ``\``, ``]``, ``-`` or ``^`` keeps the class's meaning.
    """
    trie: dict[str, Any] = {}
    for text in names:
        node = trie
        for c in text:
            node = node.setdefault(c, {})
        node[""] = {}  # the end of a name

    def visit(node: dict[str, Any]) -> str:
        options = []
        for c in sorted(k for k in node if k):
            child = node[c]
            if any(child_key for child_key in child):
                options.append(f"[{_class_char(c)}] ({visit(child)})")
            else:
                options.append(f"[{_class_char(c)}] {char}+")
        rejects = "".join(_class_char(c) for c in sorted(k for k in node if k))
        if rejects:
            options.append(f'[^"{rejects}] {char}*')
        return " | ".join(options)

    return f'["] ( {visit(trie)} ){"" if "" in trie else "?"} ["] space'


def _converter() -> Any:
    """Return llama-cpp-python's converter with what llama.cpp's (the C++ original) adds.

    The port leaves out things the C++ converter LM Studio runs does: the
    backslash in string literals' escapes, the bounds of integers, keeping
    control characters out of strings, and the comma before an object's
    additional properties.
    """
    from llama_cpp.llama_grammar import (
        PRIMITIVE_RULES,
        RESERVED_NAMES,
        BuiltinRule,
        SchemaConverter,
    )

    from outlines_lmstudio.testing._llama_pattern import (
        InvalidPatternError,
        UnsupportedPatternError,
        pattern_rule,
    )

    class Converter(SchemaConverter):
        _rules: dict[str, str]  # llama-cpp-python's: typed here for mypy without it (--quick)

        def _add_primitive(self, name: str, rule: Any) -> str:
            if name == "char":
                rule = BuiltinRule(_CHAR_RULE, [])
            added: str = super()._add_primitive(name, rule)
            return added

        def _generate_constant_rule(self, value: Any) -> str:
            # As the C++ converter's ``value.dump()``: compact, and only what JSON must
            # escape escaped (the port's json.dumps writes "é" as "\\u00e9").
            return self._format_literal(_dump(value))

        def _format_literal(self, literal: str) -> str:
            escaped = _LITERAL_ESCAPE.sub(lambda m: _LITERAL_ESCAPES[m.group(0)], literal)
            return f'"{escaped}"'

        def visit(self, schema: Any, name: str) -> Any:
            if _empty_pattern(schema):  # as the C++ converter: no pattern, the rest read
                rest = {key: value for key, value in schema.items() if key != "pattern"}
                schema = {**rest, "type": "string"}
            if (
                isinstance(schema, dict)
                and schema.get("type") == "integer"
                and any(key in schema for key in _BOUND_KEYS)
                and not any(key in schema for key in _BEFORE_BOUNDS)
            ):
                low, high = _integer_bounds(schema)
                if low is not None or high is not None:
                    rule = name + "-" if name in RESERVED_NAMES else name or "root"
                    body = f"({integer_range_gbnf(low, high)}) space"
                    return self._add_rule(rule, body)  # type: ignore[no-untyped-call]
            if _counted(schema):
                rule = name + "-" if name in RESERVED_NAMES else name or "root"
                return self._add_rule(rule, self._counted(schema, name))  # type: ignore[no-untyped-call]
            if _reads_all_of(schema):
                rule = name + "-" if name in RESERVED_NAMES else name or "root"
                return self._add_rule(rule, self._all_of(schema["allOf"], name))  # type: ignore[no-untyped-call]
            if _type_list(schema):
                # As the C++ converter: each type with the schema's other keywords. The
                # port keeps only {"type": t}, so ["object", "null"] took any object.
                rule = name + "-" if name in RESERVED_NAMES else name or "root"
                each = [{**schema, "type": kind} for kind in schema["type"]]
                return self._add_rule(rule, self._generate_union_rule(name, each))  # type: ignore[no-untyped-call]
            return super().visit(schema, name)  # type: ignore[no-untyped-call]

        def _build_object_rule(
            self,
            properties: list[tuple[str, Any]],
            required: set[str],
            name: str,
            additional_properties: Any,
        ) -> str:
            """Return an object's rule as the C++ converter builds it (``_build_object_rule``).

            The port leaves out the comma between the last declared property and the
            first additional one (``{"a": 1 "b": 2}``), lets a declared name be written
            again as an additional key, and writes only objects as the values of
            ``additionalProperties: true``.
            """
            from llama_cpp.llama_grammar import PRIMITIVE_RULES

            sep = "-" if name else ""
            kv_rules: dict[str, str] = {}
            required_props: list[str] = []
            optional_props: list[str] = []
            for prop_name, prop_schema in properties:
                value = self.visit(prop_schema, f"{name}{sep}{prop_name}")
                key = self._format_literal(_dump(prop_name))
                kv_rules[prop_name] = self._add_rule(  # type: ignore[no-untyped-call]
                    f"{name}{sep}{prop_name}-kv", f'{key} space ":" space {value}'
                )
                (required_props if prop_name in required else optional_props).append(prop_name)
            if additional_properties is True or isinstance(additional_properties, dict):
                sub = f"{name}{sep}additional"
                value = (
                    self.visit(additional_properties, f"{sub}-value")
                    if isinstance(additional_properties, dict)
                    else self._add_primitive("value", PRIMITIVE_RULES["value"])
                )
                key = (
                    self._add_rule(f"{sub}-k", _not_strings(list(kv_rules), self._char()))  # type: ignore[no-untyped-call]
                    if kv_rules
                    else self._add_primitive("string", PRIMITIVE_RULES["string"])
                )
                kv_rules["*"] = self._add_rule(f"{sub}-kv", f'{key} ":" space {value}')  # type: ignore[no-untyped-call]
                optional_props.append("*")

            def rest(keys: list[str], first_is_optional: bool) -> str:
                kv = kv_rules[keys[0]]
                comma = f'( "," space {kv} )'
                many = keys[0] == "*"
                if first_is_optional:
                    res = comma + ("*" if many else "?")
                else:
                    res = kv + (f" {comma}*" if many else "")
                if len(keys) > 1:
                    later = rest(keys[1:], True)
                    res += " " + self._add_rule(f"{name}{sep}{keys[0]}-rest", later)  # type: ignore[no-untyped-call]
                return res

            rule = '"{" space ' + ' "," space '.join(kv_rules[k] for k in required_props)
            if optional_props:
                rule += " (" + (' "," space ( ' if required_props else "")
                rule += " | ".join(
                    rest(optional_props[i:], False) for i in range(len(optional_props))
                )
                rule += (" )" if required_props else "") + " )?"
            return rule + ' "}" space'

        def _all_of(self, parts: list[Any], name: str) -> str:
            """Return an ``allOf``'s rule as the C++ converter builds it.

            The properties of its members (a member's ``$ref`` followed; the alternatives
            of an ``anyOf`` member, a ``oneOf`` or a type list too, optional), or, when
            members give enums, the values common to all of them. Each member is of the
            kind llama.cpp's schema builder gives it (`schema_kind`): a string's
            ``properties`` or an ``enum`` beside ``properties`` add no property. The port
            knows only properties: an enum behind ``allOf`` (``{"allOf": [{"$ref":
            "#/$defs/Color"}]}``) became ``{}``.
            """
            required: set[str] = set()
            properties: list[tuple[str, Any]] = []
            counts: dict[str, int] = {}

            def add(member: Any, is_required: bool, seen: frozenset[str]) -> None:
                kind = schema_kind(member)
                if kind == "$ref" and member["$ref"] not in seen:  # not round a cycle
                    ref = member["$ref"]
                    add(self._refs.get(ref), is_required, seen | {ref})
                elif kind == "object" and isinstance(member.get("properties"), dict):
                    for prop_name, prop_schema in member["properties"].items():
                        properties.append((prop_name, prop_schema))
                        if is_required:
                            required.add(prop_name)
                elif kind == "enum" and isinstance(member["enum"], list):
                    for value in member["enum"]:
                        literal = self._generate_constant_rule(value)
                        counts[literal] = counts.get(literal, 0) + 1

            for part in parts:
                alternatives = any_of_alternatives(part)
                for alternative in [part] if alternatives is None else alternatives:
                    add(alternative, alternatives is None, frozenset())
            common = sorted(literal for literal, n in counts.items() if n == len(parts))
            if common:  # sorted: the C++ code counts them in a std::map
                return "(" + " | ".join(common) + ") space"
            return self._build_object_rule(properties, required, name, None)

        def _visit_pattern(self, pattern: str, name: str) -> str:
            r"""Return a pattern's rule as the C++ converter writes it (`pattern_rule`).

            The port's own method failed ``\.``, ``\$`` and ``\^`` ("unknown escape")
            and passed ``\d`` or ``[\.]`` to llama.cpp's parser, which refuses them:
            the C++ converter reads the first three as the characters, and accepts any
            string for the others (with a warning). Unlike it, an unanchored pattern is
            still refused, with the port's reason (docs/real-engine.md).
            """
            if not (pattern.startswith("^") and pattern.endswith("$")):
                raise ValueError('Pattern must start with "^" and end with "$"')
            rules = dict(self._rules)
            try:
                rule = pattern_rule(pattern, name, self._add_rule)
            except UnsupportedPatternError:
                self._rules = rules  # as the C++ converter: its rules are taken back
                string = self._add_primitive("string", PRIMITIVE_RULES["string"])
                return self._add_rule(name, string)  # type: ignore[no-untyped-call,no-any-return]
            except InvalidPatternError as exc:
                raise ValueError(
                    f"JSON schema conversion failed: Invalid pattern {pattern}: {exc}"
                ) from exc
            return self._add_rule(name, f'"\\"" ({rule}) "\\"" space')  # type: ignore[no-untyped-call,no-any-return]

        def _char(self) -> str:
            return self._add_primitive("char", BuiltinRule(_CHAR_RULE, []))

        def resolve_refs(self, schema: Any, url: str) -> Any:
            """Record every local ``$ref``'s target as llama.cpp's schema builder resolves it.

            The port's own stepped into objects only (``#/allOf/0`` failed, where the C++
            builder indexes the list) and failed on any ``$ref`` that resolves to nothing,
            even one the converter never reads (an ``allOf`` beside ``properties``). The
            builder's check (`schema_error`) has already refused the ones it reads; the
            rest are left out, and nothing is fetched. ``schema`` comes back as it is.
            """
            stack = [schema]
            while stack:
                node = stack.pop()
                if isinstance(node, list):
                    stack.extend(node)
                elif isinstance(node, dict):
                    ref = node.get("$ref")
                    if isinstance(ref, str) and ref not in self._refs:
                        target = local_target(ref, schema)
                        if isinstance(target, dict):
                            self._refs[ref] = target
                    stack.extend(node.values())
            return schema

        def _resolve_ref(self, ref: str) -> str:
            """Return the rule of a ``$ref``, named as the C++ converter names it.

            ``ref`` plus the JSON pointer with every run of other characters than
            letters, digits and ``-`` as one ``-`` (``#/$defs/_Node`` is
            ``ref-defs-Node``). The port names it after the pointer's last part as
            it is, and a rule named ``_Node`` is not GBNF: a recursive model whose
            name holds an underscore failed to parse.
            """
            name = "ref" + _RULE_NAME_JUNK.sub("-", ref.split("#")[-1])
            if name not in self._rules and ref not in self._refs_being_resolved:
                self._refs_being_resolved.add(ref)
                name = self.visit(self._refs[ref], name)
                self._refs_being_resolved.remove(ref)
            return name

        def _counted(self, schema: dict[str, Any], name: str) -> str:
            """Return a string's length or an array's item count as the C++ converter does."""
            if schema["type"] == "string":
                char = self._add_primitive("char", BuiltinRule(_CHAR_RULE, []))
                least, most = schema.get("minLength", 0), schema.get("maxLength")
                return '"\\"" ' + cpp_repetition(char, least, most) + ' "\\"" space'
            item = self.visit(schema["items"], f"{name}{'-' if name else ''}item")
            least, most = schema.get("minItems", 0), schema.get("maxItems")
            return '"[" space ' + cpp_repetition(item, least, most, '"," space') + ' "]" space'

    # As the port's json_schema_to_gbnf builds it.
    return Converter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )


def json_schema_grammar(schema: Any) -> str:
    """Convert a JSON schema to GBNF with llama.cpp's converter (llama-cpp-python's port).

    It is the port's ``json_schema_to_gbnf``, with string literals escaped as llama.cpp's
    own converter escapes them (the port does not escape a backslash), and integer bounds
    (``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``) constrained as
    llama.cpp's own converter constrains them (the port ignores them).

    Raises
    ------
    ValueError
        With the converter's reason, for a schema it cannot convert.
    """
    if (remote := _fetched_ref(schema)) is not None:
        # The port's own refusal is an `assert`, gone under `python -O`: it then fetched the
        # URL, with no timeout (found by a probe). LM Studio's converter fetches nothing.
        raise ValueError(f"Fetching remote schemas is not allowed: {remote}")
    if (error := schema_error(schema)) is not None:
        # What llama.cpp's schema builder refuses before converting (a boolean or a list
        # as the schema, an empty anyOf...): the port failed on some with Python's words
        # ("'bool' object has no attribute 'get'") and converted others.
        raise ValueError(f"JSON schema conversion failed: {error}")
    if (endless := endless_all_of(schema)) is not None:
        # The port, like the C++ converter, would recurse until Python's limit and then
        # blame the depth. Before the patterns: the C++ converter never gets past it.
        raise ValueError(endless)
    try:
        converter = _converter()
        # Refs keep their own "#/..." form, as llama.cpp's build_grammar resolves them
        # (the Converter's resolve_refs). The port's "stdin" rewrote only the refs it
        # visits, and it did not visit below a "$ref": the refs inside "$defs" of a "$ref"
        # root (a recursive Pydantic model) then named nothing, and the conversion failed.
        converter.visit(converter.resolve_refs(json.loads(json.dumps(schema)), ""), "")
        return str(converter.format_grammar())
    except RecursionError as exc:  # depth: endless loops are refused above
        raise ValueError(
            "the schema nests deeper than llama-cpp-python's converter can follow (Python's "
            "recursion limit; LM Studio's C++ converter goes deeper)"
        ) from exc
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise ValueError(reason) from exc


def _load_failed(exc: Exception) -> Exception:
    """Return LM Studio's error for a model whose weights llama.cpp cannot load."""
    return server_error(
        "Failed to load model",
        cause=str(exc),
        suggestion="Use another GGUF file (a whole one, all its shards), or a newer "
        "llama-cpp-python for a newer architecture.",
    )


def _fetched_ref(schema: Any) -> str | None:
    """Return the first ``$ref`` the port would fetch (an ``https://`` URL), or ``None``."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("https://"):
                return ref
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _parse_reason(reason: str, gbnf: str) -> str:
    """llama.cpp's reason for refusing ``gbnf``, with the place when it gives none.

    llama.cpp logs only "failed to parse grammar"; the place (``expecting ')'``) goes
    to the process's stderr. The emulator's own GBNF parser then names it.
    """
    if reason != "failed to parse grammar":
        return reason
    from outlines_lmstudio.testing._gbnf import GrammarError, parse_gbnf

    try:
        grammar = parse_gbnf(gbnf)
    except GrammarError as exc:
        return f"{reason}: {exc}"
    named = [token for token in grammar.tokens if "<[" not in token]
    if named:  # the one thing llama.cpp checks that the emulator's parser cannot
        return (
            f"{reason}: each token reference ({', '.join(named)}) must be exactly one token "
            "of the model's vocabulary"
        )
    return reason


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class _Ended(NamedTuple):
    """How a reply ended: LM Studio's stop reason, its token count, the stop string found."""

    stop: str
    predicted: int
    stop_string: str | None


class _Decoding:
    """One reply decoded in a thread of its own, handing each fragment to the event loop.

    The thread decodes the next token while the loop sends the last one: a token asked
    for from the loop each time (``asyncio.to_thread`` per token) waited for two thread
    wake-ups a token, with nothing decoded meanwhile. `stop` is checked before each
    token, so a cancel still stops decoding within one token.

    ``items`` receives ``(text, tokens, predicted)`` per fragment, then an `_Ended` or
    the exception decoding raised.
    """

    def __init__(
        self,
        step: Callable[[int | None], tuple[int, bytes, bool, bool]],
        how: Plan,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._step = step
        self._how = how
        self._loop = loop
        self._leaving = threading.Event()
        self._done = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
        self.items: asyncio.Queue[tuple[str, int, int] | _Ended | BaseException] = asyncio.Queue()
        self.predicted = 0  # tokens decoded so far (read after an error)
        self.pending = 0  # of them, the ones held back for a stop string, not given out
        self.first_token_at: float | None = None  # when the first was (time.monotonic())

    def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        """Stop decoding (after the token being decoded, if any) and wait until it has.

        The next prediction may then use the context. If the wait is cancelled, the
        thread ends after its current token on its own (it takes the run lock per token).
        """
        self._leaving.set()
        await self._done.wait()

    def _hand(self, item: tuple[str, int, int] | _Ended | BaseException) -> None:
        try:
            self._loop.call_soon_threadsafe(self.items.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the emulator stopped
            self._leaving.set()

    def _run(self) -> None:
        try:
            self._hand(self._decode())
        except BaseException as exc:  # handed to the loop, which raises it
            self._hand(exc)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._done.set)

    def _decode(self) -> _Ended:
        how = self._how
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        scanner = StopScanner(how.stops)
        predicted = pending = 0
        last: int | None = None
        while not self._leaving.is_set():
            if how.max_tokens is not None and predicted >= how.max_tokens:
                stop = "maxPredictedTokensReached"
                break
            token, data, end, full = self._step(last)
            if full:
                stop = "contextLengthReached"
                break
            if end:
                stop = "eosFound"
                break
            last = token
            if not predicted:
                self.first_token_at = time.monotonic()
            self.predicted = predicted = predicted + 1
            pending += 1
            text = scanner.feed(utf8.decode(data))
            if text:
                self._hand((text, pending, predicted))
                pending = 0
            self.pending = pending
            if scanner.found:
                return _Ended("stopStringFound", predicted, scanner.found)
        else:
            return _Ended("userStopped", predicted, None)  # left: nobody reads it
        rest = scanner.feed(utf8.decode(b"", final=True)) + scanner.flush()
        if rest:
            self._hand((rest, pending, predicted))
        return _Ended(stop, predicted, None)


class LlamaEngine:
    """Serves one loaded instance of a GGUF model with llama.cpp."""

    def __init__(self, instance: Instance) -> None:
        gguf = instance.model.gguf
        assert gguf is not None
        self._path = os.fspath(gguf)
        self._instance = instance
        self._model: NativeModel | None = None
        self._decoder: Decoder | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # the context: one llama.cpp call at a time
        self._queue: asyncio.Lock | None = None  # predictions in arrival order
        self._queue_loop: asyncio.AbstractEventLoop | None = None

    # -- blocking parts (worker threads) -------------------------------------------

    def _loaded(self) -> NativeModel:
        with self._load_lock:
            if self._model is None:
                self._model = _native().NativeModel(self._path)
            return self._model

    def _decoder_for(self, threads: int) -> Decoder:
        if self._decoder is None:
            context = self._instance.context_length
            try:
                self._decoder = _native().Decoder(
                    self._loaded(), context, threads, flash_attention(self._instance.load_fields)
                )
            except ValueError as exc:  # memory the load-time estimate did not foresee
                raise server_error(
                    "Failed to load model",
                    cause=f"{exc} (the maximum context length of the model is "
                    f"{self._instance.model.context_length})",
                    suggestion="Load the model with a smaller contextLength.",
                ) from exc
        return self._decoder

    def _render(
        self,
        model: NativeModel,
        messages: list[dict[str, Any]],
        how: Plan,
        omit: tuple[bool, bool] = (False, False),
    ) -> str:
        """Render with the plan's or the model's template; ``omit``: (BOS, EOS) left out.

        Raises
        ------
        ValueError
            If the template cannot render the history (its ``raise_exception``, an
            undefined value such as the first message of an empty history, bad syntax).
        """
        import jinja2
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if how.template is not None:
            template, bos, eos = how.template, how.bos_token or "", how.eos_token or ""
        else:
            template = template_for(model.chat_template, model.architecture)
            bos, eos = model.bos_text, model.eos_text
        bos, eos = ("" if omit[0] else bos), ("" if omit[1] else eos)
        plain = [{"role": str(m.get("role")), "content": message_text(m)} for m in messages]
        try:
            formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
            return str(formatter(messages=plain).prompt)  # type: ignore[arg-type]
        except jinja2.TemplateError as exc:  # jinja's own errors are not ValueErrors
            raise ValueError(str(exc) or type(exc).__name__) from exc

    def _prompt(self, messages: list[dict[str, Any]], how: Plan) -> list[int]:
        model = self._loaded()
        text = self._render(model, messages, how)
        add_bos = model.add_bos and not (model.bos_text and text.startswith(model.bos_text))
        return model.tokenize(text, add_special=add_bos)

    def _check_grammar(self, gbnf: str) -> None:
        depth = grammar_depth(gbnf)
        if depth > MAX_GRAMMAR_DEPTH:
            raise ValueError(
                f"it nests {depth} groups deep, more than the {MAX_GRAMMAR_DEPTH} llama.cpp's "
                "parser can take (a JSON schema's large maxItems or maxLength does this)"
            )
        repeat = reversed_repetition(gbnf)
        if repeat is not None:  # llama.cpp would allocate memory until the process dies
            raise ValueError(REVERSED_REPETITION.format(repeat))
        native = _native()
        try:
            sampler = self._loaded().grammar(gbnf)
        except native.GrammarError as exc:
            raise ValueError(_parse_reason(str(exc), gbnf)) from exc
        native.L.llama_sampler_free(sampler)

    def _start(self, tokens: list[int], how: Plan, gbnf: str | None, grammar_first: bool) -> int:
        """Set the decoder up for ``tokens``; return how many of them are cached."""
        with self._run_lock:
            threads = how.cpu_threads or _threads()
            decoder = self._decoder_for(threads)
            decoder.use_threads(threads)  # the context outlives the prediction that made it
            grammar = self._loaded().grammar(gbnf) if gbnf is not None else None
            decoder.begin(tokens, how.sampling, grammar, grammar_first=grammar_first)
            return len(tokens) - len(decoder.pending)

    def _prefill(self) -> int:
        """Process the next batch of the prompt; return how many of its tokens remain."""
        with self._run_lock:
            assert self._decoder is not None
            self._decoder.prefill()
            return len(self._decoder.pending)

    def _step(self, feed: int | None) -> tuple[int, bytes, bool, bool]:
        """Decode the previous token (if any) and sample the next: (token, bytes, end, full)."""
        with self._run_lock:
            decoder = self._decoder
            assert decoder is not None
            if feed is not None:
                if decoder.full:
                    return -1, b"", False, True
                decoder.feed(feed)
            token = decoder.sample()
            model = decoder.model
            if model.is_end(token):
                return token, b"", True, False
            return token, model.piece(token), False, False

    # -- the engine protocol -------------------------------------------------------

    async def generate(self, record: Prediction) -> Generation:
        """Template, tokenize and compile the grammar, then decode when iterated."""
        return await self.start(record)

    async def start(self, record: Prediction, *, grammar_first: bool = False) -> Generation:
        """Like `generate`; ``grammar_first`` masks with the grammar before every sample."""
        how = plan(record.config, self._instance.load_fields)
        try:
            tokens = await asyncio.to_thread(self._prompt, record.messages, how)
        except ValueError as exc:  # jinja's raise_exception, e.g. roles that do not alternate
            if isinstance(exc, _native().ModelLoadError):  # found by a probe: "jinja" for it
                raise _load_failed(exc) from exc
            raise server_error(f"Error rendering prompt with jinja template: {exc}") from exc
        n_ctx = self._instance.context_length
        if len(tokens) >= n_ctx:
            raise server_error(
                f"The prompt has {len(tokens)} tokens, but the model is loaded with a "
                f"context length of {n_ctx}",
                suggestion="Shorten the prompt, or load the model with a larger contextLength.",
            )
        gbnf = await self._grammar(record.structured)
        box: list[Generation] = []
        generation = Generation(self._fragments(box, record, tokens, how, gbnf, grammar_first))
        generation.prompt_tokens = len(tokens)
        generation.processes_prompt = True
        box.append(generation)
        return generation

    async def _grammar(self, structured: dict[str, Any] | None) -> str | None:
        if structured is None:
            return None
        if structured.get("type") == "json":
            schema = json_mode_schema(structured)
            try:
                gbnf = await asyncio.to_thread(json_schema_grammar, schema)
            except ValueError as exc:
                raise server_error(
                    f"Failed to convert the JSON schema to a grammar: {exc}",
                    cause="llama.cpp's JSON-schema-to-grammar converter refused the schema.",
                ) from exc
            # LM Studio's converter writes a long one-sided integer range as a reversed
            # repetition (found by a probe), which llama.cpp's parser takes until memory
            # runs out; the port here writes the range right, so it is read off the schema.
            failure = integer_range_failure(schema)
            if failure is not None:
                raise server_error(failure)
        elif structured.get("type") == "gbnf":
            gbnf = str(structured.get("gbnfGrammar", ""))
        else:
            raise server_error(f"Unsupported structured output type {structured.get('type')!r}")
        try:
            await asyncio.to_thread(self._check_grammar, gbnf)
        except ValueError as exc:
            raise server_error(f"Failed to parse the grammar: {exc}") from exc
        return gbnf

    async def _fragments(
        self,
        box: list[Generation],
        record: Prediction,
        tokens: list[int],
        how: Plan,
        gbnf: str | None,
        grammar_first: bool,
    ) -> AsyncGenerator[Fragment, None]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._queue_loop is not loop:
            # A restarted emulator runs a new event loop, and a lock belongs to one loop.
            self._queue, self._queue_loop = asyncio.Lock(), loop
        generation = box[0]
        queue = self._queue
        # A prediction cancelled while it waits for the running one leaves at once.
        if not await acquire_unless_cancelled(queue, record.cancel_event):
            return
        try:
            cached = await asyncio.to_thread(self._start, tokens, how, gbnf, grammar_first)
            await self._report(generation, cached, 0)
            remaining = len(tokens) - cached
            while remaining:
                # A cancel is read before each batch of the prompt: a long prompt takes
                # seconds, and the next prediction waits for it.
                if record.cancelled:
                    return
                remaining = await asyncio.to_thread(self._prefill)
                # Reported after each batch, as LM Studio does: a client that counts
                # reports as signs of life (a read timeout) hears one per batch.
                await self._report(generation, cached, len(tokens) - cached - remaining)
            decoding = _Decoding(self._step, how, loop)
            decoding.start()
            try:
                while True:
                    item = await decoding.items.get()
                    if isinstance(item, _Ended):
                        ended = item
                        break
                    if isinstance(item, BaseException):
                        if isinstance(item, _native().GrammarDeadEnd):
                            raise server_error(
                                f"Generation stopped after {decoding.predicted} tokens: {item}"
                            ) from item
                        raise item
                    text, tokens_count, predicted = item
                    # Kept current: a prediction stopped early (a cancel, an unload) reports
                    # these, and the total must stay the prompt plus the predicted tokens.
                    generation.stats["predictedTokensCount"] = predicted
                    generation.stats["totalTokensCount"] = generation.prompt_tokens + predicted
                    yield Fragment(text, tokens_count)
            finally:
                await decoding.stop()
                generation.first_token_at = decoding.first_token_at
                generation.held_tokens = decoding.pending
            generation.stop_reason = ended.stop
            if ended.stop_string is not None:
                generation.stats["stopString"] = ended.stop_string
            generation.stats["predictedTokensCount"] = ended.predicted
            generation.stats["totalTokensCount"] = generation.prompt_tokens + ended.predicted
        finally:
            queue.release()

    @staticmethod
    async def _report(generation: Generation, cached: int, processed: int) -> None:
        """Tell the protocol layer how far the prompt is processed (if it listens)."""
        if generation.on_progress is not None:
            progress = PromptProgress(generation.prompt_tokens, cached, processed)
            await generation.on_progress(progress)

    async def clear_cache(self) -> None:
        """Forget the KV cache, so the next prompt is processed from its first token.

        Prompt processing in one batch or in pieces gives slightly different
        floating-point results, so greedy output can depend on what was cached.
        Benchmarks and identity tests start each run from an empty cache.
        """

        def run() -> None:
            with self._run_lock:
                if self._decoder is not None:
                    self._decoder.forget()

        await asyncio.to_thread(run)

    async def tokenize(self, text: str) -> list[int]:
        """Token ids by the model's tokenizer, special tokens parsed.

        An embedding model's ids have the start and end tokens the model adds (those
        `embed` counts against the context length), as in LM Studio; an LLM's have none.
        """
        embedding = self._instance.model.type == "embedding"
        return await self._tokens(text, add_special=embedding)

    async def count_tokens(self, text: str) -> int:
        """Count the text's tokens, with no start or end token (as LM Studio counts them)."""
        return len(await self._tokens(text, add_special=False))

    async def _loaded_or_failed(self) -> NativeModel:
        """Return the loaded model, or raise LM Studio's "Failed to load model" as a prediction.

        Found by a probe: tokenizing, counting and templating with a model whose weights
        cannot load failed as the emulator's own error ("failed to serve this request").
        """
        try:
            return await asyncio.to_thread(self._loaded)
        except ValueError as exc:
            if isinstance(exc, _native().ModelLoadError):
                raise _load_failed(exc) from exc
            raise

    async def _tokens(self, text: str, *, add_special: bool) -> list[int]:
        model = await self._loaded_or_failed()
        return await asyncio.to_thread(model.tokenize, text, add_special=add_special)

    async def apply_prompt_template(
        self, messages: list[dict[str, Any]], opts: Mapping[str, Any]
    ) -> str:
        """Render the history with the model's chat template (or the fallback).

        ``omitBosToken`` / ``omitEosToken`` render the template with an empty
        ``bos_token`` / ``eos_token``.
        """
        model = await self._loaded_or_failed()
        omit = (bool(opts.get("omitBosToken")), bool(opts.get("omitEosToken")))
        try:
            return await asyncio.to_thread(self._render, model, messages, plan({}, []), omit)
        except ValueError as exc:
            raise server_error(f"Error rendering prompt with jinja template: {exc}") from exc

    async def embed(self, text: str) -> list[float]:
        """Pooled, normalised hidden states of ``text`` (BOS/EOS added as the model says)."""
        model = await self._loaded_or_failed()

        def run() -> list[float]:
            with self._run_lock:
                vector: list[float] = _native().embed(
                    model, text, self._instance.context_length, _threads()
                )
                return vector

        try:
            return await asyncio.to_thread(run)
        except ValueError as exc:
            raise server_error(str(exc)) from exc
