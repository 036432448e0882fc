"""Tool calls: scripted ones, the default one, and their wire events.

LM Studio parses the model's tool-call syntax itself and streams it to the client as
``toolCallGenerationStart``, ``toolCallGenerationNameReceived``,
``toolCallGenerationArgumentFragmentGenerated`` and ``toolCallGenerationEnd`` packets;
the prediction then ends with ``stopReason: "toolCalls"``. The client (``.act()``) runs
the tool and sends the result back in a new prediction, as a ``tool`` message.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from ._sampler import document_check, split_fragments

__all__ = [
    "ToolCall",
    "awaits_tool_call",
    "default_tool_call",
    "offered_tools",
    "tool_call_packets",
    "tool_choice",
    "tool_definitions",
    "tool_results",
    "with_id",
]


@dataclass(frozen=True)
class ToolCall:
    """A scripted reply in which the model calls a tool.

    It answers a request that offers tools (``.act()``); a request without tools
    fails with a server error that says so.

    Parameters
    ----------
    name
        The tool to call.
    arguments
        Its arguments (a JSON object).
    text
        Text the model writes before the call (sent as ordinary fragments).
    id
        The tool call id (a random one by default).

    Examples
    --------
    >>> from outlines_lmstudio.testing import LMStudioEmulator, ToolCall
    >>> emu = LMStudioEmulator()
    >>> emu.script("qwen2.5-7b-instruct", [ToolCall("add", {"a": 1, "b": 2}), "It is 3."])
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"ToolCall.name must be a non-empty string, not {self.name!r:.80}")
        if not isinstance(self.arguments, dict):
            raise TypeError(f"ToolCall.arguments must be a dict, not {type(self.arguments)}")
        # JSON as the wire carries it (a TypeError names a value that is not): json.dumps
        # alone took an int key, sent as "1" where the SDK's schema wants the str the test
        # gave, and NaN, which is not JSON (found by a probe).
        try:
            json.dumps(self.arguments, allow_nan=False)
        except ValueError as exc:
            raise ValueError(f"ToolCall.arguments must be JSON: {exc}") from None
        stack: list[Any] = [self.arguments]
        while stack:
            value = stack.pop()
            if isinstance(value, dict):
                keys = [k for k in value if not isinstance(k, str)]
                if keys:
                    raise TypeError(f"ToolCall.arguments keys must be strings, not {keys[0]!r}")
                stack.extend(value.values())
            elif isinstance(value, list | tuple):
                stack.extend(value)


def tool_definitions(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the function tools of a prediction config (``llm.prediction.tools``).

    Each is an ``LlmTool`` definition, as the client sent it.
    """
    tools = config.get("llm.prediction.tools")
    if not isinstance(tools, dict) or tools.get("type") != "toolArray":
        return []
    return [
        t
        for t in tools.get("tools") or []
        if isinstance(t, dict)
        and t.get("type") == "function"
        and isinstance(t.get("function"), dict)
    ]


def offered_tools(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the functions of a prediction config's tools (name, description, parameters)."""
    return [t["function"] for t in tool_definitions(config)]


def tool_choice(config: dict[str, Any]) -> str:
    """Return the ``llm.prediction.toolChoice`` mode: ``auto``, ``none`` or ``required``.

    The 2.x TypeScript SDK sends ``toolChoice: {type: "generic", mode}``: ``none`` lets
    the model call no tool, ``required`` makes it call one every time.
    """
    choice = config.get("llm.prediction.toolChoice")
    mode = choice.get("mode") if isinstance(choice, dict) else None
    return str(mode) if mode in ("none", "required") else "auto"


def awaits_tool_call(messages: list[dict[str, Any]]) -> bool:
    """Whether the conversation ends with the user (not with a tool result)."""
    return bool(messages) and messages[-1].get("role") == "user"


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# A quoted piece of the prompt: "double", curly (U+201C/U+201D, U+2018/U+2019, and the
# German U+201E/U+201C), guillemets (U+00AB/U+00BB), `backticks`, or 'single' quotes that are
# not an apostrophe (no letter or digit just outside them: "What's" is no quote).
_QUOTED = re.compile(
    r'"([^"\n]*)"|\u201c([^\u201d\n]*)\u201d|\u2018([^\u2019\n]*)\u2019|\u201e([^\u201c\n]*)\u201c'
    r"|\u00ab([^\u00bb\n]*)\u00bb|`([^`\n]*)`|(?<![\w'])'([^'\n]*)'(?![\w'])"
)


def default_tool_call(
    tools: list[dict[str, Any]], prompt: str, sample: Any, rng: random.Random
) -> ToolCall:
    """Call the first offered tool, as a simple model would.

    The arguments are sampled from the tool's parameter schema, except that its
    ``integer`` and ``number`` parameters take the numbers of the prompt and its
    ``string`` parameters the prompt's quoted pieces (in ``"..."``, curly quotes,
    guillemets, backticks or single quotes), each in the order the schema's ``required`` lists them
    ("What is 2 + 3?" calls ``add(a=2, b=3)``; 'Write "hi" to "a.txt"' calls
    ``write(text="hi", path="a.txt")``), each one only if the parameter's schema takes it.
    """
    tool = tools[0]
    schema = _without_dangling_refs(tool.get("parameters") or {"type": "object", "properties": {}})
    arguments = json.loads("".join(sample(schema, rng)))
    numbers = [_as_number(literal) for literal in _NUMBER.findall(prompt)]
    quoted = ["".join(groups) for groups in _QUOTED.findall(prompt)]
    # Numbers are one sequence, for integer and number parameters alike.
    left = iter(numbers)
    taken = {"integer": left, "number": left, "string": iter(quoted)}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    properties = properties if isinstance(properties, dict) else {}
    # Declaration order: ``required`` keeps it where ``properties`` may be sorted.
    required = [n for n in schema.get("required") or [] if n in properties]
    for name in [*required, *(n for n in properties if n not in required)]:
        spec = properties[name]
        kind = spec.get("type") if isinstance(spec, dict) else None
        if not isinstance(kind, str) or kind not in taken:  # ["integer", "null"]: sampled
            continue
        value = next(taken[kind], None)
        if value is None:
            continue
        # Only a value the parameter takes (found by a probe: 2.5 for an integer, 7 for
        # an enum of 1 and 2, which the SDK refused): else the sampled one stays.
        fits = document_check(spec)
        if fits is None or fits(json.dumps(value)):
            arguments[name] = value
    return ToolCall(str(tool.get("name")), arguments, text="Let me use a tool for that. ")


def _as_number(literal: str) -> int | float:
    """Return a number of the prompt as JSON would carry it (``3``, not ``3.0``)."""
    value = float(literal)
    return int(value) if value.is_integer() else value


def _without_dangling_refs(schema: Any) -> Any:
    """Return ``schema`` with each ``$ref`` it does not hold read as any value (``{}``).

    The Python SDK 1.5.0 writes a TypedDict or dataclass parameter as
    ``{"$ref": "#/$defs/Point"}`` and leaves ``$defs`` out of the tool's parameters. A
    model still sees the tool and calls it; its arguments may then not fit the function.
    """

    def resolves(ref: str) -> bool:
        node: Any = schema
        if not ref.startswith("#/"):
            return False  # another document: nothing here to sample from
        for part in ref[2:].split("/"):
            name = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list) and name.isdigit() and int(name) < len(node):
                node = node[int(name)]
            elif isinstance(node, dict) and name in node:
                node = node[name]
            else:
                return False
        return True

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref != "#" and not resolves(ref):
                return {}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def tool_results(messages: list[dict[str, Any]]) -> list[str]:
    """Return the tool results that end the conversation (none if it ends otherwise)."""
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        for part in message.get("content") or []:
            if isinstance(part, dict) and part.get("type") == "toolCallResult":
                results.insert(0, str(part.get("content", "")))
    return results


def with_id(call: ToolCall) -> ToolCall:
    """Return ``call`` with the id it is sent with: its own, or a new random one.

    The record keeps the call as sent: a test matches it to the tool result that comes back
    (found by a probe: an unscripted ``.act()`` round recorded ``id=None``).
    """
    return call if call.id else replace(call, id=f"call_{uuid.uuid4().hex[:12]}")


def tool_call_packets(call: ToolCall) -> list[dict[str, Any]]:
    """Build the ``channelSend`` messages that stream one tool call (`with_id`) to the client.

    The start, the name, the arguments' JSON a token at a time, the end.
    """
    call_id = with_id(call).id
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    request = {"type": "function", "id": call_id, "name": call.name, "arguments": call.arguments}
    raw = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return [
        {"type": "toolCallGenerationStart", "toolCallId": call_id},
        {"type": "toolCallGenerationNameReceived", "name": call.name},
        *(
            {"type": "toolCallGenerationArgumentFragmentGenerated", "content": piece}
            for piece in split_fragments(arguments)
        ),
        {
            "type": "toolCallGenerationEnd",
            "toolCallRequest": request,
            "rawContent": f"<tool_call>{raw}</tool_call>",
        },
    ]
