"""Model inputs -> LM Studio chats (pure, no I/O).

`format_input` turns what a user passes (a string, ``[prompt, Image, ...]``, an
Outlines ``Chat`` or an ``lmstudio.Chat``) into a `ChatPrompt`: messages whose
images are normalised bytes, not yet uploaded. The model class uploads the
images with the user's own client and then calls `build_chat`.

Every string handed on is an exact ``str``: subclasses such as
``markupsafe.Markup`` (what Jinja templates return) are converted, because the
SDK's encoder refuses them only once the request is being sent.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import singledispatch
from typing import Any, Generic, Literal, TypeVar, cast, overload

import lmstudio as lms
import msgspec
from lmstudio import (
    ChatHistoryData,
    FileHandle,
    SystemPrompt,
    TextData,
    ToolCallResultData,
    ToolResultMessage,
    UserMessage,
)
from lmstudio.history import AssistantResponse
from outlines.inputs import Audio, Chat, Image, Video
from PIL import Image as PILImage

from ._config import describe, named, plain_str
from ._images import (
    ImageData,
    PendingImage,
    normalise_cheaply,
    normalise_image,
    placed,
)
from .errors import InvalidImageError, InvalidPromptError, UnsupportedInputError

__all__ = [
    "ChatPrompt",
    "Message",
    "ToolCall",
    "build_chat",
    "deferring_images",
    "followed_by_answer",
    "follows_a_prompt",
    "format_input",
    "format_text",
    "sdk_history",
    "settled",
]

Role = Literal["system", "user", "assistant", "tool"]
Part = str | ImageData | FileHandle | PendingImage
_ROLES = ("system", "user", "assistant", "tool")
_SUPPORTED = "a str, a list [prompt, Image, ...], an outlines.inputs.Chat or an lmstudio.Chat"


class ToolCall(msgspec.Struct, frozen=True):
    """A tool call requested by the assistant in an earlier turn."""

    id: str
    name: str
    arguments: dict[str, Any]


class Message(msgspec.Struct, frozen=True):
    """One chat message with its parts (text, images, uploaded file handles)."""

    role: Role
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The text parts joined."""
        parts = self.parts
        if len(parts) == 1 and type(parts[0]) is str:
            return parts[0]
        return "".join(p for p in parts if isinstance(p, str))


T = TypeVar("T")


class _once(Generic[T]):  # lower case: a decorator, like cached_property
    """`functools.cached_property` without its lock.

    Python 3.11's takes a lock on every first read of every instance, which costs a few
    microseconds per call here; the value is a pure function of frozen fields, so two
    threads computing it at once is harmless.
    """

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name: str = func.__name__
        self.__doc__ = func.__doc__

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> _once[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object, owner: type | None = None) -> T | _once[T]:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


class ChatPrompt(msgspec.Struct, frozen=True, dict=True):
    """A prompt ready to send once its images are uploaded.

    Attributes
    ----------
    messages
        The messages, in order.
    passthrough
        An ``lmstudio.Chat`` given by the user, sent unchanged.
    """

    messages: tuple[Message, ...] = ()
    passthrough: lms.Chat | None = None

    @_once
    def text_history(self) -> tuple[list[Message], tuple[Any, ...]]:
        """Return the merged messages of an image-free prompt and their SDK structs (once)."""
        merged = _merged(self.messages)
        return merged, tuple(_structs(merged, {}))

    @_once
    def images(self) -> list[ImageData]:
        """Return the distinct images to upload, in first-use order (computed once).

        The same pass counts the image ``FileHandle`` s already uploaded (`image_count`).
        """
        seen: dict[str, ImageData] = {}
        uploaded: set[str] = set()
        for message in self.messages:
            if message.role != "user":
                continue
            for part in message.parts:
                if type(part) is ImageData:
                    seen.setdefault(part.digest, part)
                elif isinstance(part, FileHandle) and part.file_type == "image":
                    uploaded.add(part.identifier)
        self.__dict__["image_count"] = len(seen) + len(uploaded)
        return list(seen.values())

    @property
    def image_count(self) -> int:
        """Return how many distinct images the model is shown (computed with `images`).

        The images to upload and the image ``FileHandle`` s already uploaded: a model
        without vision must refuse both before anything is sent.
        """
        self.images  # noqa: B018 - computes and keeps both
        count: int = self.__dict__["image_count"]
        return count


def _a(name: str) -> str:
    """Return the type name with its article: ``an Image``, ``a Chat`` (not ``a Image``)."""
    vowel = name[:1].lower() in "aeiou" and not name.lower().startswith(("u", "eu", "one"))
    return f"{'an' if vowel or name.lower().startswith('un') else 'a'} {name}"


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
    InvalidPromptError
        For an empty prompt, list or chat.
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
def format_text(model_input: str) -> ChatPrompt:
    """Convert a text prompt (what `format_input` does for a ``str``)."""
    if not model_input or model_input.isspace():
        blank = " (only whitespace)" if model_input else ""  # found by a probe: "empty" for "\n"
        raise InvalidPromptError(f"The prompt is empty{blank}. Pass some text to the model.")
    prompt = ChatPrompt((Message("user", (plain_str(model_input),)),))
    prompt.__dict__["images"] = []  # what `images` would find, without looking on every call
    prompt.__dict__["image_count"] = 0
    return prompt


@format_input.register
def _(model_input: list) -> ChatPrompt:  # type: ignore[type-arg]
    return ChatPrompt((Message("user", _user_parts(model_input, "the input list")),))


@format_input.register
def _(model_input: Chat) -> ChatPrompt:
    listed = model_input.messages
    if not isinstance(listed, list | tuple):  # a lone message dict, a generator...
        raise UnsupportedInputError(
            f"Chat.messages must be a list of message dicts, got {type(listed).__name__}: "
            "Chat([{'role': 'user', 'content': ...}])."
        )
    if not listed:
        raise InvalidPromptError("The Chat has no messages. Add at least one user message.")
    known = _CONVERTED.get(id(model_input))
    if known is not None and known.chat() is not model_input:
        known = None
    same = known.unchanged(listed) if known is not None else 0  # leading messages as before
    if known is not None and same == len(listed) == len(known.prompt.messages):
        return known.prompt  # nothing changed: converted and checked last time
    reused = known.prompt.messages[:same] if known is not None else ()
    messages = reused + tuple([_chat_message(i, listed[i]) for i in range(same, len(listed))])
    if all(m.role != "user" for m in messages):
        raise InvalidPromptError("The Chat has no user message. Add one with add_user_message().")
    for index in range(max(same, 1), len(messages)):  # the new ones: the rest were checked
        before, message = messages[index - 1], messages[index]
        if before.role == message.role == "assistant" and before.tool_calls and message.text:
            # Found by a probe: joined (`_merged`), the text came before the calls it followed:
            # the SDK holds no text after a call in one reply, and refuses two replies.
            raise UnsupportedInputError(
                f"Chat message {index}: an assistant message follows the tool calls of the one "
                "before it with no tool result between them. LM Studio's chat cannot hold text "
                "after a tool call in one reply, so it would be sent before the calls: put the "
                "tool messages that answer them (role 'tool', with their tool_call_id) between."
            )
    prompt = ChatPrompt(messages)
    _CONVERTED[id(model_input)] = _Converted.of(model_input, prompt, known, same)
    return prompt


class _Converted(msgspec.Struct, frozen=True, eq=False):
    """The prompt made from a Chat's messages, and what they were made from.

    Conversation loops send one ``Chat`` again and again, a message longer each turn (a
    1,000-message history costs milliseconds to convert), so the last conversion of each
    ``Chat`` is kept while the ``Chat`` lives: a message is converted again only if it is
    not the same dict, with the same role and content objects (an edit replaces them), as
    last time, and unchanged messages before it are reused. Only ``{"role", "content"}``
    dicts with str content count: content that can change in place (lists, tool calls)
    ends the reusable part.

    Attributes
    ----------
    chat
        The Chat (weakly).
    sources
        ``(dict, role, content)`` of the leading reusable messages.
    prompt
        The prompt made from all of the messages.
    """

    chat: weakref.ref[Chat]
    sources: tuple[tuple[dict[str, Any], object, str], ...]
    prompt: ChatPrompt

    @classmethod
    def of(cls, chat: Chat, prompt: ChatPrompt, known: _Converted | None, same: int) -> _Converted:
        sources = list(known.sources[:same]) if known is not None else []
        for message in chat.messages[same:]:
            if type(message) is not dict or len(message) != 2:
                break
            content = message.get("content")
            if type(content) is not str:
                break
            sources.append((message, message.get("role"), content))
        if known is not None:
            return cls(known.chat, tuple(sources), prompt)
        key = id(chat)
        # Chat is unhashable (no WeakKeyDictionary): keyed by id, dropped when it dies.
        ref = weakref.ref(chat, lambda _: _CONVERTED.pop(key, None))
        return cls(ref, tuple(sources), prompt)

    def unchanged(self, messages: Sequence[Any]) -> int:
        """Count the leading messages that are still what they were."""
        count = 0
        for message, (known, role, content) in zip(messages, self.sources, strict=False):
            if (
                message is not known
                or len(message) != 2
                or message.get("role") is not role
                or message.get("content") is not content
            ):
                break
            count += 1
        return count


_CONVERTED: dict[int, _Converted] = {}


def _subclassed_text(value: object) -> bool:
    """Whether a message part holds a str subclass anywhere (the SDK's encoder refuses it).

    Its text, a tool result's content and call id, a tool call's name, id and arguments.
    """
    if isinstance(value, str):
        return type(value) is not str
    if isinstance(value, msgspec.Struct):
        return any(_subclassed_text(getattr(value, name)) for name in value.__struct_fields__)
    if isinstance(value, dict):
        return any(_subclassed_text(k) or _subclassed_text(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_subclassed_text(item) for item in value)
    return False


def _exact_str(value: object) -> str:
    """Return a str subclass as a plain ``str`` (the ``enc_hook`` of `_plain_texts`)."""
    if isinstance(value, str):
        return str.__str__(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")  # msgspec's error


def _plain_texts(chat: lms.Chat) -> lms.Chat:
    """Return a copy of ``chat`` whose strings are plain ``str`` (the caller's is unchanged).

    Strings of a str subclass (``markupsafe.Markup``, what Jinja templates return) are sent
    as plain text everywhere else; the SDK's encoder fails on them with a ``TypeError``.
    """
    messages = []
    for message in chat._messages:
        parts = [
            msgspec.convert(msgspec.to_builtins(part, enc_hook=_exact_str), type(part))
            if _subclassed_text(part)
            else part
            for part in message.content
        ]
        messages.append(msgspec.structs.replace(message, content=parts))
    return lms.Chat.from_history(ChatHistoryData(messages=messages))


def followed_by_answer(chat: lms.Chat, answer: str) -> lms.Chat:
    """Return a copy of ``chat`` with ``answer`` as the assistant's next turn.

    A chat that already ends with an assistant message (a prefill) has ``answer`` joined to
    its text with a blank line, as consecutive assistant messages of an Outlines ``Chat``
    are: the SDK refuses two in a row ("consecutive assistant responses").
    """
    last = chat._messages[-1] if chat._messages else None
    if last is None or last.role != "assistant":
        chat = chat.copy()
        chat.add_assistant_response(answer)
        return chat
    parts = list(last.content)
    at = max((i for i, p in enumerate(parts) if isinstance(p, TextData)), default=None)
    if at is None:
        parts.insert(0, TextData(text=answer))
    else:
        text = cast(TextData, parts[at]).text
        parts[at] = TextData(text="\n\n".join(t for t in (text, answer) if t))
    messages = [*chat._messages[:-1], msgspec.structs.replace(last, content=parts)]
    return lms.Chat.from_history(ChatHistoryData(messages=messages))


@format_input.register
def _(model_input: lms.Chat) -> ChatPrompt:
    # Read-only look at the SDK's message list (no public length): an empty chat would
    # be sent and answered from nothing.
    if not model_input._messages:
        raise InvalidPromptError(
            "The lmstudio.Chat has no messages. Add one with chat.add_user_message(...)."
        )
    if all(message.role != "user" for message in model_input._messages):
        raise InvalidPromptError(  # as for an Outlines Chat: nothing to answer
            "The lmstudio.Chat has no user message. Add one with chat.add_user_message(...)."
        )
    images: set[str] = set()
    subclassed = False  # a str subclass (markupsafe.Markup) in a text: the SDK cannot send it
    for index, message in enumerate(model_input._messages):
        if message.role != "user":
            subclassed = subclassed or any(_subclassed_text(p) for p in message.content)
            # An image in an assistant message counts too (found by a probe: a model without
            # vision failed it on the server, after the request).
            images.update(
                p.identifier
                for p in message.content
                if isinstance(p, FileHandle) and p.file_type == "image"
            )
            continue
        blank = True
        for part in message.content:
            if isinstance(part, FileHandle):
                blank = False
                if part.file_type == "image":
                    images.add(part.identifier)
            elif not isinstance(part, TextData) or part.text.strip():
                blank = False
            subclassed = subclassed or _subclassed_text(part)
        if blank:  # as for an Outlines Chat's empty user message (from_history("") makes one)
            raise InvalidPromptError(f"The lmstudio.Chat's message {index} (user) is empty.")
    # A copy, as the chat is at the call (the SDK's public copy: `add_user_message` changes
    # the last message in place): a stream or a re-ask read it later, and sent what the
    # caller had added since (found by a probe; an Outlines Chat is converted at the call).
    # A plain lms.Chat: a subclass's copy() calls its own __init__, which may need its own
    # arguments (found by a review).
    model_input = _plain_texts(model_input) if subclassed else lms.Chat.from_history(model_input)
    prompt = ChatPrompt(passthrough=model_input)
    # Nothing to upload, but its image handles count: a model without vision refuses them
    # before the prediction, as it does an image handle in a list or an Outlines Chat.
    prompt.__dict__["images"] = []
    prompt.__dict__["image_count"] = len(images)
    return prompt


_DEFERRED: ContextVar[list[PendingImage] | None] = ContextVar("_DEFERRED", default=None)


@contextmanager
def deferring_images() -> Iterator[list[PendingImage]]:
    """Let `format_input` leave costly images as `PendingImage` parts, listed in the value.

    The async front formats inputs so, then normalises those images in a worker thread
    (`settled`): decoding, checking and hashing a large image blocks for tens of
    milliseconds (seconds for a large PIL image encoded as PNG).
    """
    pending: list[PendingImage] = []
    token = _DEFERRED.set(pending)
    try:
        yield pending
    finally:
        _DEFERRED.reset(token)


def settled(prompt: ChatPrompt) -> ChatPrompt:
    """Return ``prompt`` with each `PendingImage` normalised (the work `deferring_images` left).

    Raises
    ------
    InvalidImageError
        As `format_input` would have, for the first image that cannot be sent.
    """
    done: dict[int, ImageData] = {}  # the same image object twice: normalised once

    def part(p: Part) -> Part:
        if type(p) is not PendingImage:
            return p
        data = done.get(id(p.source))
        if data is None:
            try:
                data = done[id(p.source)] = normalise_image(p.source)
            except InvalidImageError as exc:
                placed(exc, p.where)
                raise
        return data

    messages = tuple(
        msgspec.structs.replace(m, parts=tuple(map(part, m.parts)))
        if any(type(p) is PendingImage for p in m.parts)
        else m
        for m in prompt.messages
    )
    return ChatPrompt(messages, prompt.passthrough)


def follows_a_prompt(item: object) -> bool:
    """Tell whether ``item`` is meant to follow the prompt in one ``[prompt, Image, ...]``.

    An image, a file handle or a typed ``{"type": ...}`` item (a video or audio too,
    which that list then refuses by name).
    """
    return isinstance(item, Image | PILImage.Image | FileHandle | Video | Audio | Mapping)


def _asset(item: object, where: str) -> ImageData | FileHandle | PendingImage:
    if isinstance(item, Image | PILImage.Image):
        pending = _DEFERRED.get()
        try:
            data = normalise_image(item) if pending is None else normalise_cheaply(item)
        except InvalidImageError as exc:
            placed(exc, where)
            raise
        if data is not None:
            return data
        assert pending is not None  # normalise_image returns data
        pending.append(PendingImage(item, where))
        return pending[-1]
    if isinstance(item, FileHandle):
        if item.file_type != "image":  # was sent, to a text-only model too (a probe)
            raise UnsupportedInputError(
                f"{where} is an lmstudio FileHandle of a {item.file_type!r} file "
                f"({item.name!r:.60}), not of an image; after the prompt a list takes only "
                "images. To send the file's text, put it in the prompt."
            )
        return item
    if isinstance(item, Video | Audio):
        raise UnsupportedInputError(
            f"{where} holds {_a(type(item).__name__)}; LM Studio takes only images "
            "(outlines.inputs.Image) besides text."
        )
    if isinstance(item, str):
        # Outlines refuses text after the prompt too; a file name here is almost always
        # meant as an image, and sending it as text would show the model a path.
        raise UnsupportedInputError(
            f"{where} is a str ({item!r:.60}); after the prompt a list takes only images. "
            "To send an image file, wrap it: outlines.inputs.Image(PIL.Image.open(path)). "
            "To send more text, put it in the prompt (or use "
            "{'type': 'text', 'text': ...} items)."
        )
    raise UnsupportedInputError(
        f"{where} holds {_a(type(item).__name__)} ({item!r:.60}); after the text prompt only "
        "outlines.inputs.Image (or PIL images, or lmstudio FileHandles) are accepted."
    )


def _user_parts(items: Sequence[object], where: str) -> tuple[Part, ...]:
    """Parts of a ``[prompt, Image, ...]`` list (also accepts typed dict items)."""
    if not items:
        raise InvalidPromptError(f"{where} is empty. Pass [prompt, Image, ...].")
    parts: list[Part] = []
    for index, item in enumerate(items):
        # The common items first: an isinstance check against the Mapping ABC runs Python
        # code for every other type, and this runs on every call.
        if index == 0 and type(item) is str:
            parts.append(plain_str(item))
        elif index and isinstance(item, Image | PILImage.Image | FileHandle):
            parts.append(_asset(item, f"{where}, item {index}"))
        elif isinstance(item, Mapping):
            parts.append(_typed_item(item, f"{where}, item {index},"))
        elif index == 0:
            if not isinstance(item, str):
                raise UnsupportedInputError(
                    f"{where} must start with the text prompt (a str), not "
                    f"{_a(type(item).__name__)}. Pass [prompt, Image, ...]."
                )
            parts.append(plain_str(item))
        else:
            parts.append(_asset(item, f"{where}, item {index},"))
    for part in parts:
        if isinstance(part, str) and part.strip():
            return tuple(parts)
    raise InvalidPromptError(f"{where} has no text. Put the prompt first: [prompt, Image, ...].")


def _typed_item(item: Mapping[str, Any], where: str) -> Part:
    """``{"type": "text", "text": ...}`` / ``{"type": "image", "image": Image}`` items."""
    kind = item.get("type")
    extra = sorted(str(k) for k, v in item.items() if k not in ("type", kind) and not _empty(v))
    if extra and kind in ("text", "image"):  # {"type": "image", ..., "detail": "high"}
        raise UnsupportedInputError(
            f"{where} has key(s) {named(extra)} that LM Studio does not take, so they would be "
            f"dropped. Remove them: a {kind} item is {{'type': {kind!r}, {kind!r}: ...}}."
        )
    if kind == "text" and isinstance(item.get("text"), str):
        return plain_str(item["text"])
    if kind == "image" and "image" in item:
        return _asset(item["image"], where)
    message = (  # [{"role": "user", "content": ...}]: OpenAI-style messages, not parts
        " It is a chat message: pass a list of messages as outlines.inputs.Chat(messages)."
        if "role" in item
        else ""
    )
    raise UnsupportedInputError(
        f"{where} is a dict {dict(item)!r:.80}; expected {{'type': 'text', 'text': str}} or "
        f"{{'type': 'image', 'image': Image}}.{message}"
    )


def _text_only(content: object, role: str, where: str) -> str:
    if isinstance(content, str):
        return plain_str(content)
    if isinstance(content, list):
        text_only = f"{where}: {role} messages take text only; put images in a user message."
        # Before _user_parts, which would say to pass [prompt, Image, ...] (found by a
        # probe: then refused for this); after it, for an image given as a typed item.
        if any(isinstance(item, _ASSETS) for item in content):
            raise UnsupportedInputError(text_only)
        parts = _user_parts(content, where)
        if any(not isinstance(p, str) for p in parts):
            raise UnsupportedInputError(text_only)
        return "".join(str(p) for p in parts)
    raise UnsupportedInputError(f"{where}: content must be a str, got {type(content).__name__}.")


def _json_copy(value: object, where: str, what: str) -> Any:
    """Return plain JSON data equal to ``value`` (str subclasses become str)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnsupportedInputError(
            f"{where}: {what} must be JSON data (dicts, lists, strings, finite numbers, "
            f"booleans, None): {exc}."
        ) from None


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
        name = function.get("name")
        if not isinstance(arguments, dict) or not isinstance(name, str) or not name.strip():
            raise UnsupportedInputError(
                f"{where}: tool call needs a non-empty str name and an object of arguments."
            )
        kind = call.get("type", "function")
        if kind != "function":  # LM Studio's chat holds function calls only
            raise UnsupportedInputError(
                f"{where}: a tool call of type {kind!r} cannot be sent: LM Studio's chat "
                "holds function calls only ('type': 'function'), and it would be sent as one."
            )
        call_id = call.get("id", "")
        if not isinstance(call_id, str):
            raise UnsupportedInputError(
                f"{where}: a tool call id must be a str, got {describe(call_id)}."
            )
        arguments = _json_copy(arguments, where, "tool call arguments")
        calls.append(ToolCall(plain_str(call_id), plain_str(name), arguments))
    return tuple(calls)


def _chat_message(index: int, message: object) -> Message:
    if type(message) is not dict and not isinstance(message, Mapping):
        raise UnsupportedInputError(
            f"Chat message {index} must be a dict with 'role' and 'content', "
            f"got {type(message).__name__}."
        )
    role = message.get("role")
    content = message.get("content")
    if type(content) is str and role != "tool" and len(message) == 2:  # the common case
        if role == "user" and (not content or content.isspace()):
            raise InvalidPromptError(f"Chat message {index}: the user message is empty.")
        if role in ("user", "system", "assistant"):
            return Message(role, (content,))
    where = f"Chat message {index}"
    allowed = _MESSAGE_KEYS.get(role) if isinstance(role, str) else None  # else: refused below
    extra = (
        []
        if allowed is None  # an empty value (OpenAI-style "tool_calls": None) drops nothing
        else sorted(str(k) for k, v in message.items() if k not in allowed and not _empty(v))
    )
    if extra:
        raise UnsupportedInputError(
            f"{where} ({role}) has key(s) {named(extra)} that LM Studio's chat does not take, so "
            f"they would be dropped. Remove them: {_a(str(role))} message takes "
            f"{', '.join(repr(k) for k in allowed or ())}."
        )
    return _chat_message_slow(where, role, content, message)


def _empty(value: object) -> bool:
    """Tell whether a message key's value carries nothing (``None``, ``""``, ``[]``, ``{}``)."""
    return value is None or (isinstance(value, str | list | tuple | dict) and not value)


_MESSAGE_KEYS: dict[object, tuple[str, ...]] = {
    "user": ("role", "content"),
    "system": ("role", "content"),
    "assistant": ("role", "content", "tool_calls"),
    "tool": ("role", "content", "tool_call_id"),
}
"""The keys of each role's message that are sent (an unknown role is refused by its role)."""


def _chat_message_slow(
    where: str, role: object, content: object, message: Mapping[str, Any]
) -> Message:
    if role == "user":
        if isinstance(content, str):
            if not content.strip():
                raise InvalidPromptError(f"{where}: the user message is empty.")
            return Message("user", (plain_str(content),))
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
    if role == "system":
        return Message("system", (_text_only(content, "system", where),))
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            got = "" if call_id is None else f" (a non-empty str; got {call_id!r:.40})"
            raise UnsupportedInputError(
                f"{where}: tool messages need the 'tool_call_id' of the call they answer{got}."
            )
        if _holds_image(content):  # found by a probe: "not JSON serializable", or a dump
            raise UnsupportedInputError(
                f"{where}: a tool result takes text or JSON data, not images; put images in "
                "a user message."
            )
        if isinstance(content, str):
            text = plain_str(content)
        elif (parts := _text_parts(content)) is not None:  # their text, not their JSON
            text = parts
        else:
            text = json.dumps(_json_copy(content, where, "a tool result"))
        return Message("tool", (text,), tool_call_id=plain_str(call_id))
    raise UnsupportedInputError(
        f"{where} has role {describe(role)}; LM Studio takes {', '.join(_ROLES)}."
    )


_ASSETS = (Image, PILImage.Image, FileHandle)
"""What an image part of a message can be."""


def _holds_image(content: object) -> bool:
    """Tell whether a tool result holds an image (an object, or a list with an image part).

    An image part is ``{"type": "image_url", "image_url": ...}`` or ``{"type": "image",
    "image": Image}``, alone or in a list (its base64 went to the model as text: found by
    reviews). Other data with a type is JSON data (``{"type": "image", "url": ...}``: a
    search result, found by a review), sent as its JSON text.
    """
    if isinstance(content, _ASSETS) or _image_part(content):
        return True
    return isinstance(content, list) and any(
        isinstance(item, _ASSETS) or _image_part(item) for item in content
    )


def _image_part(item: object) -> bool:
    """Tell whether a list item is an image part (OpenAI's or Outlines' typed form)."""
    if not isinstance(item, Mapping):
        return False
    kind = item.get("type")
    if kind in ("image_url", "input_image"):
        return "image_url" in item or "file_id" in item
    return kind == "image" and isinstance(item.get("image"), _ASSETS)


def _text_parts(content: object) -> str | None:
    """Return the text of a tool result given as OpenAI text parts (``None``: it is not).

    OpenAI allows a tool message's content as ``[{"type": "text", "text": ...}, ...]``;
    sent as JSON, the model would read the parts' syntax instead of the result. Only items
    that are exactly text parts count: any other list is JSON data, sent as such.
    """
    if not isinstance(content, list) or not content:
        return None
    texts = []
    for part in content:
        if not (isinstance(part, Mapping) and part.keys() == {"type", "text"}):
            return None
        if part["type"] != "text" or not isinstance(part["text"], str):
            return None
        texts.append(plain_str(part["text"]))
    return "".join(texts)


def _merged(messages: Iterable[Message]) -> list[Message]:
    """Join consecutive messages of one role where the SDK would refuse or merge them.

    System and assistant texts are joined with a blank line and their tool calls kept
    in order (the SDK refuses them apart); consecutive user messages become one
    message with all their parts (what the SDK's ``add_user_message`` does).
    """
    result: list[Message] = []
    for message in messages:
        last = result[-1] if result else None
        if last is None or last.role != message.role or message.role == "tool":
            result.append(message)
        elif message.role == "user":
            result[-1] = Message("user", last.parts + message.parts)
        else:
            text = "\n\n".join(t for t in (last.text, message.text) if t)
            result[-1] = Message(message.role, (text,), last.tool_calls + message.tool_calls)
    return result


def _with_tool_calls(message: Message) -> AssistantResponse:
    """Build an assistant message with tool call requests (the SDK's public parser)."""
    content: list[Any] = [{"type": "text", "text": message.text}]
    for call in message.tool_calls:
        request: dict[str, Any] = {"type": "function", "name": call.name}
        request["arguments"] = call.arguments
        if call.id:
            request["id"] = call.id
        content.append({"type": "toolCallRequest", "toolCallRequest": request})
    return AssistantResponse.from_dict({"role": "assistant", "content": content})


def _user_content(part: Part, handles: Mapping[str, FileHandle]) -> TextData | FileHandle:
    if type(part) is str:
        return TextData(text=part)
    if type(part) is ImageData:
        return handles[part.digest]
    assert isinstance(part, FileHandle)
    return part


def _history(prompt: ChatPrompt, handles: Mapping[str, FileHandle]) -> ChatHistoryData:
    """Build the SDK's history struct for a prompt directly (as ``lms.Chat.add_*`` do)."""
    return ChatHistoryData(messages=_structs(_merged(prompt.messages), handles))


def _structs(messages: Iterable[Message], handles: Mapping[str, FileHandle]) -> list[Any]:
    """Build the SDK's message structs for merged messages."""
    history: list[Any] = []
    for message in messages:
        role = message.role
        if role == "user":
            history.append(UserMessage(content=[_user_content(p, handles) for p in message.parts]))
        elif role == "assistant":
            if message.tool_calls:
                history.append(_with_tool_calls(message))
            else:
                history.append(AssistantResponse(content=[TextData(text=message.text)]))
        elif role == "system":
            history.append(SystemPrompt(content=[TextData(text=message.text)]))
        else:
            history.append(
                ToolResultMessage(
                    content=[
                        ToolCallResultData(content=message.text, tool_call_id=message.tool_call_id)
                    ]
                )
            )
    return history


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
    if prompt.images:
        history = _history(prompt, handles)
    else:
        # Text only: the structs are built once per prompt and shared by its chats. The
        # SDK's Chat changes only its list and its last message (``add_user_message``
        # extends a last user message), so each chat gets its own list and last message.
        merged, structs = prompt.text_history
        history = ChatHistoryData(messages=[*structs[:-1], *_structs(merged[-1:], {})])
    try:
        # The SDK's only copy-free way to wrap a history: its public from_history()
        # deep-copies every message (14 ms for 1,000 messages, 20x the rest of this).
        return lms.Chat(_initial_history=history)
    except TypeError:  # pragma: no cover - an SDK without the keyword: the public path
        return lms.Chat.from_history(history)


def sdk_history(prompt: ChatPrompt, handles: Mapping[str, FileHandle]) -> lms.Chat | str:
    """Return what to pass the SDK as a prediction's history.

    A prompt that is one user message of plain text goes as its text: the SDK makes the
    same one-message chat from a ``str`` (``Chat.from_history``), so nothing is built
    twice. Any other prompt goes as `build_chat` makes it (same parameters).

    Returns
    -------
    lmstudio.Chat | str
        The history for ``LLM.respond`` / ``respond_stream``.
    """
    messages = prompt.messages
    if len(messages) == 1 and prompt.passthrough is None:
        message = messages[0]
        parts = message.parts
        if message.role == "user" and len(parts) == 1 and type(parts[0]) is str:
            return parts[0]
    return build_chat(prompt, handles)
