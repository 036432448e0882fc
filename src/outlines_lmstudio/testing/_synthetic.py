"""The synthetic engine: seeded text, sampled JSON and GBNF, scripted replies, tool calls.

Moved out of `_predict` so that the protocol layer sits above its engines: `_predict`
asks an `Engine` (found by `_lookup.engine_for`) and never imports an engine's module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import random
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from outlines_lmstudio.testing._engine import Fragment, Generation
from outlines_lmstudio.testing._llama_all_of import (
    DATA_KEYWORDS,
    all_of_as_llama_cpp,
    changed_subschemas,
    endless_all_of,
)
from outlines_lmstudio.testing._llama_builder import schema_error
from outlines_lmstudio.testing._llama_pattern import cut_character
from outlines_lmstudio.testing._llama_schema import (
    integer_range_failure,
    local_target,
    read_patterns,
    refused_pattern,
)
from outlines_lmstudio.testing._reasoning_forms import (
    ReasoningReply,
    cut_at_tokens,
    plan_reasoning,
    shape_reply,
)
from outlines_lmstudio.testing._records import Prediction, message_text
from outlines_lmstudio.testing._sampler import (
    SchemaError,
    count_tokens,
    plain_text,
    split_fragments,
    token_ids,
)
from outlines_lmstudio.testing._scripts import check_reply
from outlines_lmstudio.testing._tools import (
    ToolCall,
    awaits_tool_call,
    default_tool_call,
    offered_tools,
    tool_choice,
    tool_definitions,
    tool_results,
)
from outlines_lmstudio.testing._wire import (
    embedding_overflow,
    json_mode_schema,
    max_predicted_tokens,
    server_error,
    stop_strings,
    well_formed,
)

if TYPE_CHECKING:
    from outlines_lmstudio.testing._catalogue import Instance
    from outlines_lmstudio.testing._state import EmulatorState

__all__ = ["SyntheticEngine", "format_prompt"]

# Embedding tokenizers (BERT-style, like nomic-embed) wrap the text in [CLS] ... [SEP].
_CLS, _SEP = 101, 102


_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def format_prompt(messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]] = ()) -> str:
    """Render a wire history with a ChatML-style template (Qwen2.5's).

    Tool call requests and tool results are rendered as Qwen2.5's template does
    (``<tool_call>`` in the assistant's turn, ``<tool_response>`` in a user turn),
    so neither disappears from the prompt. ``tools`` (``LlmTool`` definitions: the
    ``toolDefinitions`` of ``applyPromptTemplate``, the tools a prediction offers) go
    into the system turn, after the system message, as Qwen2.5's template lists them
    (with sorted keys: the SDK sends a prediction's tools sorted, and
    ``toolDefinitions`` in its own order).
    """
    parts = []
    if tools:
        system = ""
        if messages and messages[0].get("role") == "system":
            system = message_text(messages[0]) + "\n\n"
            messages = messages[1:]
        listed = "".join(
            "\n" + json.dumps(tool, ensure_ascii=False, sort_keys=True) for tool in tools
        )
        parts.append(
            f"<|im_start|>system\n{system}{_TOOLS_INTRO}{listed}{_TOOLS_OUTRO}<|im_end|>\n"
        )
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        items = [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []
        if role == "tool":
            responses = "".join(
                f"\n<tool_response>\n{p.get('content', '')}\n</tool_response>"
                for p in items
                if p.get("type") == "toolCallResult"
            )
            parts.append(f"<|im_start|>user{responses}<|im_end|>\n")
            continue
        calls = [
            p["toolCallRequest"]
            for p in items
            if p.get("type") == "toolCallRequest" and isinstance(p.get("toolCallRequest"), dict)
        ]
        if role != "assistant" or not calls:
            parts.append(f"<|im_start|>{role}\n{message_text(message)}<|im_end|>\n")
            continue
        text = message_text(message)
        turn = "<|im_start|>assistant" + (f"\n{text}" if text else "")
        for call in calls:
            request = {"name": call.get("name"), "arguments": call.get("arguments", {})}
            turn += f"\n<tool_call>\n{json.dumps(request)}\n</tool_call>"
        parts.append(turn + "<|im_end|>\n")
    return "".join(parts) + "<|im_start|>assistant\n"


def _prompt_text(record: Prediction) -> str:
    """Return the prompt the model reads: the history in the template `format_prompt` writes.

    A prompt template from the config is ``complete()``'s pass-through template (the
    synthetic engine renders no Jinja): the messages' text as it is.
    """
    if isinstance(record.config.get("llm.prediction.promptTemplate"), dict):
        return "".join(message_text(m) for m in record.messages)
    return format_prompt(record.messages, tool_definitions(record.config))


def _seed_for(*parts: Any) -> int:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    # "surrogatepass": a prompt may hold a lone surrogate (JSON allows "\ud800").
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def _cut(tokens: list[Fragment], config: dict[str, Any]) -> tuple[list[Fragment], str, str | None]:
    """Apply stop strings and the token limit, as a model would while generating.

    Returns the fragments kept, the stop reason and the stop string that ended the
    reply (None unless the stop reason is ``stopStringFound``).
    """
    stops = stop_strings(config)
    max_tokens = max_predicted_tokens(config)
    keep = max((len(s) for s in stops), default=1) - 1  # what a stop string may start in
    out: list[Fragment] = []
    # The text's end only, from `offset` on: the whole text, made again for each token,
    # took quadratic time, and a 2 MB scripted reply held the emulator's event loop for
    # minutes (no ping answered, no stop possible; found by a probe).
    tail, offset = "", 0
    for token in tokens:
        if max_tokens is not None and len(out) >= max_tokens:
            return out, "maxPredictedTokensReached", None
        out.append(token)
        if not stops:
            continue
        tail += token.content
        found = [
            (offset + i, s)
            for i, s in (
                (tail.find(s, max(0, len(tail) - len(token.content) - len(s))), s) for s in stops
            )
            if i >= 0
        ]
        if found:
            # Like llama.cpp, text that may start a stop string is held back, so
            # the cut can fall inside a fragment sent "earlier".
            at, stop = min(found, key=lambda hit: hit[0])
            return _prefix(out, at), "stopStringFound", stop
        if len(tail) > keep:
            offset += len(tail) - keep
            tail = tail[len(tail) - keep :]
    if max_tokens is not None and len(out) >= max_tokens:
        # llama.cpp checks the budget after each token, before the end of generation: a
        # reply exactly max_tokens long ends on the limit, as on the llama.cpp engine.
        return out, "maxPredictedTokensReached", None
    return out, "eosFound", None


def _within_context(
    tokens: list[Fragment], stop_reason: str, config: dict[str, Any], room: int
) -> tuple[list[Fragment], str]:
    """Stop where the context is full, under ``contextOverflowPolicy: stopAtLimit``.

    ``room`` is the context length less the prompt's tokens. LM Studio's other policies
    (``truncateMiddle``, ``rollingWindow``) make room by dropping earlier tokens, so the
    reply goes on; the synthetic engine has nothing to drop and simply goes on too.
    """
    if config.get("llm.prediction.contextOverflowPolicy") != "stopAtLimit":
        return tokens, stop_reason
    return cut_at_tokens(tokens, room, stop_reason, "contextLengthReached")


def _prefix(tokens: list[Fragment], length: int) -> list[Fragment]:
    """Return the tokens covering the first ``length`` characters (the last one trimmed)."""
    kept: list[Fragment] = []
    used = 0
    for token in tokens:
        if used + len(token.content) >= length:
            if length > used:
                kept.append(dataclasses.replace(token, content=token.content[: length - used]))
            return kept
        kept.append(token)
        used += len(token.content)
    return kept


# How much of each tool result the next reply quotes: a result can be a whole web page or
# file, and quoting it all would make a reply longer than the model's context, streamed one
# word piece at a time.
QUOTED_RESULT_CHARS = 200


def _quote_result(result: str) -> str:
    """Return the start of a tool result, saying how much of it is left out."""
    if len(result) <= QUOTED_RESULT_CHARS:
        return result
    left = len(result) - QUOTED_RESULT_CHARS
    return f"{result[:QUOTED_RESULT_CHARS]}... ({left} more characters)"


def _fragments(tokens: list[str]) -> list[Fragment]:
    return [Fragment(token) for token in tokens]


async def _reply(
    emu: EmulatorState, instance: Instance, record: Prediction
) -> tuple[list[Fragment] | ReasoningReply, ToolCall | None]:
    """Return the reply's fragments, and the tool call that follows them (if any)."""
    script = emu._next_reply(instance, record)
    if script is not None:
        try:
            reply = check_reply(script(record)) if callable(script) else script
        except Exception as exc:
            raise server_error(f"Scripted reply failed: {exc!r}") from exc
        if isinstance(reply, ToolCall):
            if not offered_tools(record.config):
                # LM Studio parses a tool call only out of a request that offers tools.
                raise server_error(
                    f"Scripted reply ToolCall({reply.name!r}) calls a tool, but the request "
                    "offered none: call .act() with tools, or script text for this request "
                    "(.act() offers no tools on its last round, max_prediction_rounds: "
                    "script text for that round, or allow more rounds)"
                )
            return _fragments(split_fragments(reply.text)), reply
        if isinstance(reply, ReasoningReply):
            return reply, None
        return _fragments(split_fragments(str(reply))), None
    tools = offered_tools(record.config)
    choice = tool_choice(record.config)
    # LM Studio's default tool use works with every model: `required` makes any model call
    # one (found by a probe: it was ignored on models without `tool_use`); under `auto`, a
    # model trained for tools calls one, the others answer in text.
    if (
        tools
        and record.structured is None
        and choice != "none"
        and (
            choice == "required" or (instance.model.tool_use and awaits_tool_call(record.messages))
        )
    ):
        rng = random.Random(_seed_for(emu.seed, record.messages, tools))
        try:
            call = default_tool_call(tools, record.last_user_text, emu._sampler.sample, rng)
        except SchemaError as exc:
            raise server_error(f"Cannot build a grammar for the tool parameters: {exc}") from exc
        return _fragments(split_fragments(call.text)), call
    results = tool_results(record.messages)
    if results and record.structured is None:
        # A simple model reports what the tool returned, then goes on.
        quoted = "; ".join(_quote_result(result) for result in results)
        answer = _fragments(split_fragments(f"The tool returned {quoted}. "))
        return answer + await _reply_tokens(emu, instance, record), None
    return await _reply_tokens(emu, instance, record), None


def _check_llama_cpp_dialect(instance: Instance, schema: Any) -> None:
    """Refuse what llama.cpp's converter refuses, for a GGUF model (LM Studio runs it there).

    The synthetic engine samples with outlines-core, which takes an unanchored pattern and
    what llama.cpp's schema builder fails on (a boolean subschema, an empty ``anyOf``...);
    LM Studio's llama.cpp engine refuses the schema (inferred from llama.cpp's converter and
    lmstudio-bug-tracker #2168, with the wording of our llama.cpp engine; the builder's, its
    own, `_llama_builder`). A pattern whose grammar llama.cpp's parser refuses (a character
    the converter cut in two, `cut_character`) or an integer range it writes reversed
    (`integer_range_failure`) fails as the llama.cpp engine fails it.
    """
    if instance.model.format != "gguf":
        return
    error = schema_error(schema)
    if error is not None:
        raise server_error(
            "Failed to convert the JSON schema to a grammar: JSON schema conversion failed: "
            f"{error}",
            cause="llama.cpp's JSON-schema-to-grammar converter refused the schema.",
        )
    endless = endless_all_of(schema)  # before the pattern: the converter never gets past it
    if endless is not None:
        raise server_error(
            f"Failed to convert the JSON schema to a grammar: {endless}",
            cause="llama.cpp's JSON-schema-to-grammar converter refused the schema.",
        )
    pattern = refused_pattern(schema)
    if pattern is not None:
        raise server_error(
            'Failed to convert the JSON schema to a grammar: Pattern must start with "^" '
            'and end with "$"',
            cause="llama.cpp's JSON-schema-to-grammar converter refused the schema.",
            suggestion=f"Anchor the pattern {pattern!r} at both ends: ^...$",
        )
    for pattern in read_patterns(schema):
        # A non-ASCII character before a quantifier: the converter cuts it in two, and
        # llama.cpp's grammar parser refuses what it wrote (as in the llama.cpp engine).
        reason = cut_character(pattern)
        if reason is not None:
            raise server_error(f"Failed to parse the grammar: {reason}")
    failure = integer_range_failure(schema)
    if failure is not None:  # mostly a long one-sided range: as the llama.cpp engine fails it
        raise server_error(failure)


# The string formats outlines-core constrains; it refuses a schema with any other.
_SAMPLED_FORMATS = frozenset({"date", "time", "date-time", "email", "uri", "uuid"})
# The string formats llama.cpp's converter constrains (``uuid1`` to ``uuid5`` too).
_LLAMA_FORMATS = frozenset({"date", "time", "date-time", "uuid"})
# Keywords llama.cpp's converter reads before the ones that give a node without ``type``
# its kind (``$ref``, ``anyOf``, ``oneOf``, ``type``, ``const``, ``enum``).
_KINDED = frozenset({"$ref", "anyOf", "oneOf", "type", "const", "enum"})
# The keywords outlines-core reads before a node's ``type``, whichever type it says.
_READ_FIRST = ("properties", "allOf", "anyOf", "oneOf", "prefixItems", "enum", "const", "$ref")
_DEFINITIONS = ("$defs", "definitions")
_STRING_READ = ("pattern", "minLength", "maxLength")
_ANY = {"anyOf": [{"type": t} for t in ("object", "array", "string", "number", "boolean", "null")]}


_DEFINITION_REF = re.compile(r"#/(\$defs|definitions)/[^/]+")


def _refs_to_definitions(schema: Any) -> Any:
    """Point each ``$ref`` at a root definition (a copy of its target), for a GGUF model.

    llama.cpp's schema builder resolves a ``$ref`` into any place of the schema, a list's
    items included (``#/properties/x/anyOf/0``, ``#/allOf/0/properties/a``). outlines-core
    steps into objects only ("Invalid reference path: 0"), and the rewrites for llama.cpp's
    reading (`_for_llama_cpp`, `all_of_as_llama_cpp`) move what such a ``$ref`` points at:
    an ``allOf`` is merged, an ``items`` list becomes ``prefixItems``. So, before them, a
    ``$ref`` other than ``#/$defs/NAME`` or ``#/definitions/NAME`` points at a copy of
    its target in the root's ``$defs``, under a name the schema does not hold.
    """
    if not isinstance(schema, dict) or not isinstance(schema.get("$defs", {}), dict):
        return schema
    text = json.dumps(schema, ensure_ascii=False)
    names: dict[str, str] = {}  # ref -> the definition it points at now
    targets: dict[str, Any] = {}
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref not in names and not _DEFINITION_REF.fullmatch(ref):
                target = local_target(ref, schema)
                if isinstance(target, dict):  # else left as it is (the builder refuses it)
                    index = len(names)
                    while f"emulatedRef{index}" in text or f"emulatedRef{index}" in targets:
                        index += 1
                    names[ref] = f"emulatedRef{index}"
                    targets[names[ref]] = target
                    pending.append(target)  # its refs too, were it inside an enum's values
            pending.extend(value for key, value in node.items() if key not in DATA_KEYWORDS)
    if not names:
        return schema

    def moved(node: Any) -> Any:
        if isinstance(node, list):
            return [moved(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: value if key in DATA_KEYWORDS else moved(value) for key, value in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref in names:
            out["$ref"] = f"#/$defs/{names[ref]}"
        return out

    result: dict[str, Any] = moved(schema)
    copies = {name: moved(target) for name, target in targets.items()}
    result["$defs"] = {**result.get("$defs", {}), **copies}
    return result


def _for_llama_cpp(schema: Any) -> Any:
    """Rewrite what llama.cpp's converter takes and outlines-core refuses, for a GGUF model.

    LM Studio answers such a schema on a GGUF model; outlines-core (the synthetic engine's
    sampler, and LM Studio's MLX engine) refuses it, or writes what llama.cpp would not:

    - llama.cpp's converter constrains ``date``, ``time``, ``date-time`` and ``uuid`` (and
      ``uuid1`` to ``uuid5``, as any UUID) and writes a string of any other format
      (``duration``, ``ipv4``, ``binary``...) as any string: those formats are dropped.
    - An object with ``additionalProperties: false`` and no ``properties`` is the empty
      object to llama.cpp's converter (it reads the missing properties as none), and
      "Unsupported JSON Schema structure false" to outlines-core: it gets ``properties: {}``.
    - ``patternProperties`` is ignored by llama.cpp's converter (an object of it and
      ``additionalProperties: false`` is the empty object): it is dropped.
    - ``items`` as a list (the draft-07 tuple, what zod's ``z.tuple`` writes) is the tuple
      of exactly those items to llama.cpp's converter (its ``items.is_array()`` branch), and
      an unsupported structure to outlines-core: it gets ``prefixItems`` and ``items: false``.
    - A node without ``type`` (nor ``$ref``, ``anyOf``, ``oneOf``, ``const`` or ``enum``)
      has the kind llama.cpp's converter reads from its keywords, and outlines-core
      refuses most such nodes: it gets ``type: object`` for ``properties`` or an
      ``additionalProperties`` other than ``true`` (an ``allOf`` beside them is not read),
      then, without ``allOf``, ``type: array`` for ``items`` or ``prefixItems``, then
      ``type: string`` for ``pattern``, ``minLength``, ``maxLength`` or a format llama.cpp
      constrains. Any other node (``{"not": ...}``, ``{"title": ...}``, ``{"minimum": 3}``)
      is any value to llama.cpp: it becomes ``{}`` (an ``anyOf`` of the JSON types beside
      its ``$defs``).
    - llama.cpp's converter gives a node its kind by ``$ref``, then ``oneOf``/``anyOf``, then
      a ``type`` list (one copy of the node per type), ``const``, ``enum``, then ``type``;
      outlines-core reads ``properties``, ``allOf``, ``anyOf``, ``oneOf``, ``prefixItems``,
      ``enum``, ``const`` and ``$ref`` before ``type``, so ``{"type": "string",
      "properties": ...}`` came out an object where llama.cpp writes a string (found by a
      differential fuzz). Of those keywords, the ones llama.cpp does not read for the
      node's kind are dropped (`_unread_by_llama_cpp`), and a ``type`` list whose copies
      would lose one is the ``anyOf`` of its copies, each read so.
    - A string's ``pattern`` is all llama.cpp's converter reads of it (then its format,
      then its lengths), where outlines-core reads the lengths first (``"2%h"`` for
      ``^a+$`` with ``maxLength: 3``) and hangs on a ``uuid`` with ``minLength: 40``: the
      keywords llama.cpp does not read beside a pattern or a constrained format are dropped.
      An empty pattern is none to llama.cpp's converter (it reads the lengths then): it is
      dropped.
    - llama.cpp's converter writes an object's required properties first, each in its
      place among them, then the others; outlines-core writes them in the schema's order
      (``{"a": 1, "b": 2}`` with only ``b`` required, which llama.cpp's grammar refuses:
      found by a differential fuzz): the required ones are put first (`_required_first`,
      after `all_of_as_llama_cpp`: an ``allOf``'s members keep their order, all required).

    An ``allOf`` is left for `all_of_as_llama_cpp`, which runs on the whole result (its
    ``$ref`` members resolve there).
    """
    if isinstance(schema, list):
        return [_for_llama_cpp(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "format" and isinstance(value, str):
            if re.fullmatch(r"uuid[1-5]", value):  # llama.cpp writes any UUID for these
                kept[key] = "uuid"
            elif value in _SAMPLED_FORMATS:
                kept[key] = value
        elif key == "items" and isinstance(value, list):  # a draft-07 tuple
            kept["prefixItems"], kept["items"] = _for_llama_cpp(value), False
        elif key == "prefixItems" and isinstance(schema.get("items"), list):
            continue  # llama.cpp's converter reads the items first
        elif key == "patternProperties":  # llama.cpp's converter ignores it
            continue
        else:
            kept[key] = changed_subschemas(key, value, _for_llama_cpp)
    return _node_as_llama_cpp(kept)


def _node_as_llama_cpp(kept: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a node's own keywords for llama.cpp's reading (`_for_llama_cpp`).

    Its subschemas are rewritten already.
    """
    kept = _typed_as_llama_cpp(kept)
    kinds = kept.get("type")
    if isinstance(kinds, list) and not (_KINDED - {"type"}) & set(kept):
        rest = {key: value for key, value in kept.items() if key not in _DEFINITIONS}
        copies = [{**rest, "type": kind} for kind in kinds]
        if any(_unread_by_llama_cpp(copy) or _closed_empty(copy) for copy in copies):
            top = {key: value for key, value in kept.items() if key in _DEFINITIONS}
            return {**top, "anyOf": [_node_as_llama_cpp(copy) for copy in copies]}
    unread = _unread_by_llama_cpp(kept)
    kept = {key: value for key, value in kept.items() if key not in unread}
    if _closed_empty(kept):
        kept["properties"] = {}
    return _string_as_llama_cpp(kept)


def _required_first(schema: Any) -> Any:
    """Put each object's required properties first, as llama.cpp's converter writes them.

    After `all_of_as_llama_cpp`: the converter writes an ``allOf``'s members' properties
    in their order, every one required (``_for_llama_cpp``).
    """
    if isinstance(schema, list):
        return [_required_first(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kept = {key: changed_subschemas(key, value, _required_first) for key, value in schema.items()}
    properties, required = kept.get("properties"), kept.get("required")
    if isinstance(properties, dict) and isinstance(required, list):
        first = {name: sub for name, sub in properties.items() if name in required}
        kept["properties"] = first | {k: v for k, v in properties.items() if k not in first}
    return kept


def _closed_empty(node: dict[str, Any]) -> bool:
    """Whether a node is an object of ``additionalProperties: false`` and no ``properties``.

    llama.cpp's converter writes it as the empty object (`_for_llama_cpp`); a ``type`` list
    with ``"object"`` is one copy per type, so the object copy is the empty object too
    (``{"type": ["object", "null"], "additionalProperties": false}``: ``{}`` or ``null``).
    """
    return (
        node.get("additionalProperties") is False
        and node.get("type", "object") == "object"
        and "properties" not in node
    )


def _typed_as_llama_cpp(kept: dict[str, Any]) -> dict[str, Any]:
    """Give a node without ``type`` the kind llama.cpp's converter reads (`_for_llama_cpp`)."""
    if _KINDED & set(kept):
        return kept
    extra = kept.get("additionalProperties", True)
    if "properties" in kept or extra is not True:
        return {"type": "object", **kept}
    if "allOf" in kept:  # left for `all_of_as_llama_cpp`
        return kept
    if "items" in kept or "prefixItems" in kept:
        return {"type": "array", **kept}
    # The format as sent: "uuid4" is kept (as "uuid") and "ipv4" dropped above.
    if set(_STRING_READ) & set(kept) or kept.get("format") in _LLAMA_FORMATS:
        return {"type": "string", **kept}
    definitions = {k: v for k, v in kept.items() if k in _DEFINITIONS}
    return {**_ANY, **definitions} if definitions else {}


def _unread_by_llama_cpp(node: dict[str, Any]) -> set[str]:
    """Return the keywords outlines-core reads before ``type`` that llama.cpp does not read.

    llama.cpp's schema builder (``build_node``) reads ``$ref``, else ``oneOf`` (before
    ``anyOf``), and nothing else of the node (its ``type`` goes too: the sampler writes a
    number's bounds as an enum, `_sampler._bounded_values`); else ``const``, else
    ``enum`` (an ``additionalProperties`` beside them goes too: outlines-core wrote ``{}``
    for a closed object's listed values); else, by the type: an object's ``properties``
    (its ``allOf`` only without them), a string's ``allOf``, an array's ``items`` (before
    ``prefixItems``). A ``type`` list is read per type (`_node_as_llama_cpp`).
    """
    present = set(_READ_FIRST) & set(node)
    for key in ("$ref", "oneOf", "anyOf"):  # the type too: the sampler reads its bounds
        if key in node:
            return (present | ({"type"} & set(node))) - {key}
    for key in ("const", "enum"):  # a type list's copies: the same
        if key in node:  # an object's extras too: outlines-core wrote {} beside them
            return (present | ({"additionalProperties"} & set(node))) - {key}
    kind = node.get("type")
    if isinstance(kind, list):
        return set()
    has_properties = "properties" in node or node.get("additionalProperties", True) is not True
    if kind == "object" and has_properties:
        return present - {"properties"}
    if kind in (None, "object", "string"):  # None: an allOf (`_typed_as_llama_cpp`), or none
        return present - {"allOf"}
    if kind == "array" and not isinstance(node.get("items"), dict):
        return present - {"prefixItems"}
    return present


def _string_as_llama_cpp(kept: dict[str, Any]) -> dict[str, Any]:
    """Drop what llama.cpp's converter does not read beside a string's pattern or format."""
    kinds = kept.get("type")
    if "string" not in (kinds if isinstance(kinds, list) else [kinds]):
        return kept
    if {"const", "enum", "allOf"} & set(kept):  # read before the string's keywords
        return kept
    if kept.get("pattern") == "":  # no pattern to llama.cpp's converter
        kept = {key: value for key, value in kept.items() if key != "pattern"}
    if isinstance(kept.get("pattern"), str):
        unread: tuple[str, ...] = ("format", "minLength", "maxLength")
    elif kept.get("format") in _LLAMA_FORMATS:
        unread = ("minLength", "maxLength")
    else:
        return kept
    return {key: value for key, value in kept.items() if key not in unread}


_ESCAPED_IN_JSON = re.compile(r'["\\\x00-\x1f]')
"""A character JSON writes escaped in a string (a property name holding one is renamed)."""


def _plain_names(schema: Any) -> tuple[Any, dict[str, str]]:
    r"""Rename the property names JSON writes escaped; return the schema and the renames.

    outlines-core writes a property name into its regex as it stands: ``{"q\"": ...}``
    came out as ``{"q"": ...}``, and a line break raw, not JSON (found by a probe). On a
    GGUF model LM Studio runs llama.cpp's converter, which escapes the name, so the
    synthetic engine samples with a plain stand-in (``emulatedName0``) and `_real_names`
    writes the name back, escaped. (LM Studio's MLX engine is outlines-core: an MLX model
    keeps its fault.)
    """
    text = json.dumps(schema, ensure_ascii=False)
    renames: dict[str, str] = {}  # stand-in -> the name

    def stand_in(name: str) -> str:
        if not _ESCAPED_IN_JSON.search(name):
            return name
        for known, original in renames.items():
            if original == name:
                return known
        index = len(renames)
        while f"emulatedName{index}" in text:
            index += 1
        renames[f"emulatedName{index}"] = name
        return f"emulatedName{index}"

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in DATA_KEYWORDS:
                out[key] = value
            elif key == "properties" and isinstance(value, dict):
                out[key] = {stand_in(name): walk(sub) for name, sub in value.items()}
            elif key == "required" and isinstance(value, list):
                out[key] = [stand_in(n) if isinstance(n, str) else n for n in value]
            else:
                out[key] = walk(value)
        return out

    renamed = walk(schema)
    return renamed, renames


def _real_names(tokens: list[str], renames: dict[str, str]) -> list[str]:
    """Write each renamed property's name back into a sampled document (`_plain_names`)."""
    if not renames:
        return tokens
    text = "".join(tokens)
    for stand_in, name in renames.items():
        text = text.replace(f'"{stand_in}"', json.dumps(name, ensure_ascii=False))
    return split_fragments(text)


async def _reply_tokens(
    emu: EmulatorState, instance: Instance, record: Prediction
) -> list[Fragment]:
    structured = record.structured
    if structured is not None and structured.get("type") == "json":
        schema = json_mode_schema(structured)
        _check_llama_cpp_dialect(instance, schema)
        renames: dict[str, str] = {}
        if instance.model.format == "gguf":
            schema, repeats = all_of_as_llama_cpp(_for_llama_cpp(_refs_to_definitions(schema)))
            schema = _required_first(schema)
            schema, renames = _plain_names(schema)
            renames.update(repeats)
        rng = random.Random(_seed_for(emu.seed, record.messages, schema))
        gguf = instance.model.format == "gguf"  # a reply in llama.cpp's grammar too
        try:
            if emu._sampler.is_cached(schema, llama_cpp=gguf):
                tokens = emu._sampler.sample(schema, rng, llama_cpp=gguf)
            else:
                sample = emu._sampler.sample
                tokens = await asyncio.to_thread(sample, schema, rng, llama_cpp=gguf)
        except SchemaError as exc:
            raise server_error(f"Failed to build a grammar for the JSON schema: {exc}") from exc
        return _fragments(_real_names(tokens, renames))
    if structured is not None and structured.get("type") == "gbnf":
        from outlines_lmstudio.testing._gbnf import (
            SAMPLE_LIMIT,
            GrammarError,
            draw_gbnf,
            parse_gbnf,
        )

        rng = random.Random(_seed_for(emu.seed, record.messages, structured))
        grammar = str(structured.get("gbnfGrammar", ""))
        try:
            await asyncio.to_thread(parse_gbnf, grammar)  # as JSON: off the loop
        except GrammarError as exc:
            raise server_error(f"Failed to parse the GBNF grammar: {exc}") from exc
        try:
            text, whole = await asyncio.to_thread(draw_gbnf, grammar, rng)  # parse_gbnf caches
        except GrammarError as exc:  # a token reference; no text at all
            raise server_error(f"Cannot generate from the GBNF grammar: {exc}") from exc
        fragments = _fragments(split_fragments(text))
        limit = max_predicted_tokens(record.config)
        if not whole and (limit is None or limit > len(fragments)):
            # Not a sentence of the grammar, so not "eosFound" (found by an audit); LM
            # Studio would generate until maxTokens or the context's end.
            raise server_error(
                "Cannot generate from the GBNF grammar: its shortest text is longer than "
                f"the {SAMPLE_LIMIT:,} characters the emulator's synthetic engine writes; "
                "set maxTokens to cut the reply there, as LM Studio would"
            )
        return fragments
    return _fragments(plain_text(json.dumps(record.messages, sort_keys=True), emu.seed))


class SyntheticEngine:
    """The synthetic engine: seeded text, sampled JSON and GBNF, scripted replies.

    Instant and deterministic; it has no language model. Tokens are the
    emulator's own word pieces (`outlines_lmstudio.testing._sampler`).
    """

    def __init__(self, emu: EmulatorState, instance: Instance) -> None:
        self._emu = emu
        self._instance = instance

    async def generate(self, record: Prediction) -> Generation:
        """Start a prediction; its reply is made when the fragments are first iterated.

        The whole reply is then made at once, cut by stop strings and the token limit; a
        reasoning model thinks first, in its reasoning form (`_reasoning_forms`). Made
        then, not now, so a request cancelled before it runs takes no scripted reply.
        """
        box: list[Generation] = []
        generation = Generation(
            self._run(record, box), prompt_tokens=count_tokens(_prompt_text(record))
        )
        box.append(generation)
        return generation

    async def _run(
        self, record: Prediction, box: list[Generation]
    ) -> AsyncGenerator[Fragment, None]:
        """Make the reply, fill in how the generation (``box[0]``) ends, then yield it."""
        generation = box[0]
        produced, tool_call = await _reply(self._emu, self._instance, record)
        answer, reasoning, form = plan_reasoning(
            produced,
            self._instance.model.reasoning,
            key=json.dumps(record.messages, sort_keys=True),
            seed=self._emu.seed,
        )
        cut, stop_reason, stop_string = _cut(answer, record.config)
        tokens, stop_reason = shape_reply(
            form, reasoning, cut, stop_reason, record.config, structured=bool(record.structured)
        )
        tokens, stop_reason = _within_context(
            tokens,
            stop_reason,
            record.config,
            self._instance.context_length - generation.prompt_tokens,
        )
        if tool_call is not None and stop_reason == "eosFound":
            stop_reason = "toolCalls"
        else:
            tool_call = None  # cut short before the call was written
        generation.stop_reason = stop_reason
        generation.tool_call = tool_call
        if stop_reason == "stopStringFound" and stop_string is not None:
            generation.stats["stopString"] = stop_string
        for token in tokens:
            yield token

    async def tokenize(self, text: str) -> list[int]:
        """Return deterministic ids, one per word piece (embeddings add start and end)."""
        tokens = token_ids(well_formed(text))
        if self._instance.model.type == "embedding":
            return [_CLS, *tokens, _SEP]
        return tokens

    async def count_tokens(self, text: str) -> int:
        """Return the number of word pieces (without an embedding's start and end)."""
        return count_tokens(text)

    async def apply_prompt_template(
        self, messages: list[dict[str, Any]], opts: Mapping[str, Any]
    ) -> str:
        """Render with a ChatML-style template (it has no BOS or EOS token to omit).

        ``opts["toolDefinitions"]`` are listed in the system turn, as Qwen2.5's template does.
        """
        tools = opts.get("toolDefinitions")
        listed = [t for t in tools if isinstance(t, Mapping)] if isinstance(tools, list) else []
        return format_prompt(messages, listed)

    async def embed(self, text: str) -> list[float]:
        """Return a deterministic unit vector derived from the model key and the text.

        An input longer than the instance's context length (start and end tokens included)
        is refused with LM Studio's error (lmstudio-ai/examples#29).
        """
        length, context = len(await self.tokenize(text)), self._instance.context_length
        if length > context:
            raise server_error(embedding_overflow(length, context))
        model = self._instance.model
        digest = hashlib.sha256(f"{model.key}\x00{well_formed(text)}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        vector = [rng.gauss(0.0, 1.0) for _ in range(model.embedding_dims)]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]
