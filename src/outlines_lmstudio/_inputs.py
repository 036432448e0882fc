"""Model inputs -> LM Studio chats (pure, no I/O).

`format_input` turns what a user passes (a string, ``[prompt, Image, ...]``, an
Outlines ``Chat`` or an ``lmstudio.Chat``) into a `ChatPrompt`: messages whose
images are normalised bytes, not yet uploaded. The model class uploads the
images with the user's own client and then calls `build_chat`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Any, Literal

import lmstudio as lms
from lmstudio import FileHandle
from outlines.inputs import Audio, Chat, Image, Video
from PIL import Image as PILImage

from ._images import ImageData, normalise_image
from .errors import InvalidPromptError, UnsupportedInputError

__all__ = ["ChatPrompt", "Message", "ToolCall", "build_chat", "format_input"]

Role = Literal["system", "user", "assistant", "tool"]
Part = str | ImageData | FileHandle
_ROLES = ("system", "user", "assistant", "tool")
_SUPPORTED = "a str, a list [prompt, Image, ...], an outlines.inputs.Chat or an lmstudio.Chat"


@dataclass(frozen=True)
class ToolCall:
    """A tool call requested by the assistant in an earlier turn."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Message:
    """One chat message with its parts (text, images, uploaded file handles)."""

    role: Role
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The text parts joined."""
        return "".join(p for p in self.parts if isinstance(p, str))


@dataclass(frozen=True)
class ChatPrompt:
    """A prompt ready to send once its images are uploaded.

    Attributes
    ----------
    messages
        The messages, in order.
    passthrough
        An ``lmstudio.Chat`` given by the user, sent unchanged.
    """

    messages: tuple[Message, ...] = ()
    passthrough: lms.Chat | None = field(default=None, compare=False)

    @property
    def images(self) -> list[ImageData]:
        """Distinct images to upload, in first-use order."""
        seen: dict[str, ImageData] = {}
        for message in self.messages:
            for part in message.parts:
                if isinstance(part, ImageData):
                    seen.setdefault(part.digest, part)
        return list(seen.values())


@singledispatch
def format_input(model_input: object) -> ChatPrompt:
    """Convert a model input into a `ChatPrompt`.

    Parameters
    ----------
    model_input
        A str, a list ``[prompt, Image, ...]``, an ``outlines.inputs.Chat`` or an
        ``lmstudio.Chat``.

    Returns
    -------
    ChatPrompt
        The messages to send, with images normalised but not uploaded.

    Raises
    ------
    UnsupportedInputError
        For any other input type.
    """
    if isinstance(model_input, Video | Audio):
        raise UnsupportedInputError(
            f"LM Studio takes text and images; {type(model_input).__name__} inputs are not "
            f"supported. Pass {_SUPPORTED}."
        )
    raise UnsupportedInputError(
        f"Input of type {type(model_input).__name__} is not supported. Pass {_SUPPORTED}."
    )


@format_input.register
def _(model_input: str) -> ChatPrompt:
    if not model_input.strip():
        raise InvalidPromptError("The prompt is empty. Pass some text to the model.")
    return ChatPrompt((Message("user", (model_input,)),))


@format_input.register
def _(model_input: list) -> ChatPrompt:  # type: ignore[type-arg]
    return ChatPrompt((Message("user", _user_parts(model_input, "the input list")),))


@format_input.register
def _(model_input: Chat) -> ChatPrompt:
    if not model_input.messages:
        raise InvalidPromptError("The Chat has no messages. Add at least one user message.")
    messages = tuple(_chat_message(i, m) for i, m in enumerate(model_input.messages))
    if all(m.role != "user" for m in messages):
        raise InvalidPromptError("The Chat has no user message. Add one with add_user_message().")
    return ChatPrompt(messages)


@format_input.register
def _(model_input: lms.Chat) -> ChatPrompt:
    return ChatPrompt(passthrough=model_input)


def _asset(item: object, where: str) -> ImageData | FileHandle:
    if isinstance(item, Image | PILImage.Image):
        return normalise_image(item)
    if isinstance(item, FileHandle):
        return item
    if isinstance(item, Video | Audio):
        raise UnsupportedInputError(
            f"{where} holds a {type(item).__name__}; LM Studio takes only images "
            "(outlines.inputs.Image) besides text."
        )
    raise UnsupportedInputError(
        f"{where} holds a {type(item).__name__} ({item!r:.60}); after the text prompt only "
        "outlines.inputs.Image (or PIL images, or lmstudio FileHandles) are accepted."
    )


def _user_parts(items: Sequence[object], where: str) -> tuple[Part, ...]:
    """Parts of a ``[prompt, Image, ...]`` list (also accepts typed dict items)."""
    if not items:
        raise InvalidPromptError(f"{where} is empty. Pass [prompt, Image, ...].")
    parts: list[Part] = []
    for index, item in enumerate(items):
        item_where = f"{where}, item {index},"
        if isinstance(item, Mapping):
            parts.append(_typed_item(item, item_where))
        elif isinstance(item, str):
            parts.append(item)
        elif index == 0:
            raise UnsupportedInputError(
                f"{where} must start with the text prompt (a str), not a "
                f"{type(item).__name__}. Pass [prompt, Image, ...]."
            )
        else:
            parts.append(_asset(item, item_where))
    if not any(isinstance(p, str) and p.strip() for p in parts):
        raise InvalidPromptError(
            f"{where} has no text. Put the prompt first: [prompt, Image, ...]."
        )
    return tuple(parts)


def _typed_item(item: Mapping[str, Any], where: str) -> Part:
    """``{"type": "text", "text": ...}`` / ``{"type": "image", "image": Image}`` items."""
    kind = item.get("type")
    if kind == "text" and isinstance(item.get("text"), str):
        return str(item["text"])
    if kind == "image" and "image" in item:
        return _asset(item["image"], where)
    raise UnsupportedInputError(
        f"{where} is a dict {dict(item)!r:.80}; expected {{'type': 'text', 'text': str}} or "
        "{'type': 'image', 'image': Image}."
    )


def _text_only(content: object, role: str, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = _user_parts(content, where)
        if any(not isinstance(p, str) for p in parts):
            raise UnsupportedInputError(
                f"{where}: {role} messages take text only; put images in a user message."
            )
        return "".join(str(p) for p in parts)
    raise UnsupportedInputError(f"{where}: content must be a str, got {type(content).__name__}.")


def _tool_calls(raw: object, where: str) -> tuple[ToolCall, ...]:
    """OpenAI-style ``tool_calls`` on an assistant message."""
    if not isinstance(raw, list):
        raise UnsupportedInputError(f"{where}: tool_calls must be a list, got {raw!r:.60}.")
    calls: list[ToolCall] = []
    for call in raw:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(call, Mapping) or not isinstance(function, Mapping):
            raise UnsupportedInputError(
                f"{where}: each tool call must look like {{'id': str, 'type': 'function', "
                f"'function': {{'name': str, 'arguments': str|dict}}}}, got {call!r:.80}."
            )
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise UnsupportedInputError(
                    f"{where}: tool call arguments are not valid JSON: {exc}"
                ) from exc
        if not isinstance(arguments, dict) or not isinstance(function.get("name"), str):
            raise UnsupportedInputError(
                f"{where}: tool call needs a str name and an object of arguments."
            )
        calls.append(ToolCall(str(call.get("id", "")), function["name"], arguments))
    return tuple(calls)


def _chat_message(index: int, message: object) -> Message:
    where = f"Chat message {index}"
    if not isinstance(message, Mapping):
        raise UnsupportedInputError(
            f"{where} must be a dict with 'role' and 'content', got {type(message).__name__}."
        )
    role = message.get("role")
    if role not in _ROLES:
        raise UnsupportedInputError(
            f"{where} has role {role!r}; LM Studio takes {', '.join(_ROLES)}."
        )
    content = message.get("content")
    if role == "user":
        if isinstance(content, str):
            if not content.strip():
                raise InvalidPromptError(f"{where}: the user message is empty.")
            return Message("user", (content,))
        if isinstance(content, list):
            return Message("user", _user_parts(content, where))
        raise UnsupportedInputError(
            f"{where}: user content must be a str or a list [text, Image, ...], "
            f"got {type(content).__name__}."
        )
    if role == "assistant":
        calls = _tool_calls(message["tool_calls"], where) if message.get("tool_calls") else ()
        text = "" if content is None and calls else _text_only(content, role, where)
        return Message("assistant", (text,), tool_calls=calls)
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise UnsupportedInputError(
                f"{where}: tool messages need the 'tool_call_id' of the call they answer."
            )
        text = content if isinstance(content, str) else json.dumps(content)
        return Message("tool", (text,), tool_call_id=call_id)
    return Message("system", (_text_only(content, "system", where),))


def _merged(messages: Iterable[Message]) -> list[Message]:
    """Join consecutive system or assistant messages (the SDK refuses them apart)."""
    result: list[Message] = []
    for message in messages:
        last = result[-1] if result else None
        if (
            last is not None
            and last.role == message.role
            and message.role in ("system", "assistant")
            and not last.tool_calls
        ):
            result[-1] = Message(
                message.role,
                (f"{last.text}\n\n{message.text}",),
                tool_calls=message.tool_calls,
            )
        else:
            result.append(message)
    return result


def build_chat(prompt: ChatPrompt, handles: Mapping[str, FileHandle]) -> lms.Chat:
    """Build the ``lmstudio.Chat`` for a prompt whose images are uploaded.

    Parameters
    ----------
    prompt
        The prompt from `format_input`.
    handles
        File handle of each image, by image digest.

    Returns
    -------
    lmstudio.Chat
        The chat to pass to ``LLM.respond``.
    """
    if prompt.passthrough is not None:
        return prompt.passthrough
    chat = lms.Chat()
    for message in _merged(prompt.messages):
        if message.role == "system":
            chat.add_system_prompt(message.text)
        elif message.role == "user":
            parts: list[str | FileHandle] = [
                handles[p.digest] if isinstance(p, ImageData) else p for p in message.parts
            ]
            chat.add_user_message(parts)
        elif message.role == "assistant":
            requests = [
                lms.ToolCallRequest(
                    type="function", id=c.id or None, name=c.name, arguments=c.arguments
                )
                for c in message.tool_calls
            ]
            chat.add_assistant_response(message.text, requests)
        else:
            chat.add_tool_result(
                lms.ToolCallResultData(content=message.text, tool_call_id=message.tool_call_id)
            )
    return chat
