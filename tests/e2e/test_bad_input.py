"""Bad input, table-driven: our error, of the right builtin kind, and nothing sent to the server."""

import base64
import datetime
import decimal
import enum
import functools
import io
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import lmstudio as lms
import pydantic
import pytest
from outlines import models as outlines_models
from outlines.inputs import Audio, Chat, Image, Video
from outlines.types import CFG, Choice, JsonSchema, Regex, either, integer
from PIL import Image as PILImage

from outlines_lmstudio import (
    AsyncLMStudio,
    InvalidClientError,
    InvalidInferenceArgumentError,
    LMStudio,
    LMStudioTypeAdapter,
    OutlinesLMStudioError,
    UnknownSettingError,
    errors,
    from_lmstudio,
)
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL, VISION_MODEL
from .fronts import Fronts
from .helpers import png_image


def only_image_str(image: Image) -> Image:
    """``image`` without its PIL image: its ``image_str`` is what is sent (and checked)."""
    image.image = cast(Any, None)
    return image


def corrupt_image() -> Image:
    image = only_image_str(png_image())
    image.image_str = base64.b64encode(b"definitely not a picture").decode()
    return image


def animated_gif() -> Image:
    frames = [PILImage.new("RGB", (4, 4), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return Image(PILImage.open(io.BytesIO(buffer.getvalue())))


def animated_gif_bytes() -> Image:
    """An Outlines Image whose PIL side is a still but whose bytes are an animation."""
    frames = [PILImage.new("RGB", (4, 4), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    image = only_image_str(png_image())
    image.image_str = base64.b64encode(buffer.getvalue()).decode()
    return image


def huge_image() -> Image:
    """A 64,016,001-pixel PNG: a few kB on disk, over our pixel limit."""
    buffer = io.BytesIO()
    PILImage.new("1", (8001, 8001)).save(buffer, format="PNG")
    image = only_image_str(png_image())
    image.image_str = base64.b64encode(buffer.getvalue()).decode()
    return image


def no_image_data() -> Image:
    image = only_image_str(png_image())
    image.image_str = cast(str, None)
    return image


def blank_user_message() -> lms.Chat:
    chat = lms.Chat("Be brief.")
    chat.add_user_message("  ")
    return chat


class _Shade(enum.Enum):
    DARK = "dark"


class OpenAI:
    """Stands for any client that is not lmstudio's (openai.OpenAI, httpx.Client...)."""


def tool_result(content: object) -> Chat:
    return Chat(
        [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {}}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": content},
        ]
    )


def nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


class Widget:
    pass


class Pet(pydantic.BaseModel):  # not frozen: instances cannot be hashed
    name: str


class Shelter(pydantic.BaseModel):
    pets: set[Pet]


class Colour(enum.Enum):  # a plain Enum: Pydantic reads Literal[Colour.RED] only as the member
    RED = "red"


class Paint(pydantic.BaseModel):
    colour: Literal[Colour.RED]


@dataclass
class Wall:
    coats: list[Paint]


class Release(enum.Enum):  # Pydantic writes "2024-01-01" but reads only the date itself
    V1 = datetime.date(2024, 1, 1)
    V2 = datetime.date(2025, 1, 1)


class Price(enum.Enum):
    LOW = decimal.Decimal("1.5")
    HIGH = decimal.Decimal("2")


class Notes(pydantic.BaseModel):
    release: Release


class Packet(pydantic.BaseModel):
    magic: Literal[b"x", b"y"]


class Sum(pydantic.BaseModel):
    expression: CFG('?start: NUMBER "+" NUMBER\n%import common.NUMBER')  # type: ignore[valid-type]


class Answer(pydantic.BaseModel):
    text: Annotated[str, either(CFG('start: "yes"'), "none")]


@dataclass
class Answers:
    answers: list[Answer]


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[LMStudio], object]
    error: type[OutlinesLMStudioError]
    builtin: type[Exception]
    match: str


@dataclass
class _Odd:
    """A field whose only value is half a character (pydantic cannot build its validator)."""

    tag: Literal["\udc00"]


_NOT_SCHEMA_OBJECTS: tuple[object, ...] = ('{"type": "integer"}', [], True, 5)


def _with_json_schema(body: object) -> Callable[[LMStudio], object]:
    """A call whose ``config['structured']`` holds ``body`` as its JSON schema."""
    return lambda m: m("x", config={"structured": {"type": "json", "jsonSchema": body}})


def _search(query: str) -> None:
    """A tool: Outlines' local models read an Enum of these as each signature's schema."""


class Tool(enum.Enum):
    search = functools.partial(_search)


class NoMembers(enum.Enum):
    pass


def _closed_png() -> PILImage.Image:
    """A PNG opened lazily and closed before use: its pixels can no longer be read."""
    data = io.BytesIO()
    PILImage.new("RGB", (4, 4)).save(data, format="PNG")
    image = PILImage.open(io.BytesIO(data.getvalue()))
    image.close()
    return image


def _png_after_its_with_block() -> PILImage.Image:
    """A PNG opened lazily in a with block and used after it: Pillow asserts bare."""
    data = io.BytesIO()
    PILImage.new("RGB", (4, 4)).save(data, format="PNG")
    with PILImage.open(io.BytesIO(data.getvalue())) as image:
        pass
    return image


def _keyword_only_progress(*, progress: float) -> None:
    """A progress callback the SDK cannot call: it passes the progress by position."""


async def _async_callback(fragment: object) -> None:
    """What an async caller may hand over; the SDK calls callbacks without awaiting them."""


E = errors
CASES = [
    # inputs
    Case("int input", lambda m: m(42), E.UnsupportedInputError, TypeError, "int is not supported"),
    Case("None input", lambda m: m(None), E.UnsupportedInputError, TypeError, "NoneType"),
    Case("bytes input", lambda m: m(b"hi"), E.UnsupportedInputError, TypeError, "bytes"),
    Case("dict input", lambda m: m({"role": "user"}), E.UnsupportedInputError, TypeError, "dict"),
    Case(
        "a list of chat messages",  # OpenAI style: said to be a Chat's messages
        lambda m: m([{"role": "user", "content": "hi"}]),
        E.UnsupportedInputError,
        TypeError,
        r"chat message: pass a list of messages as outlines\.inputs\.Chat\(messages\)",
    ),
    Case("empty prompt", lambda m: m(""), E.InvalidPromptError, ValueError, "empty"),
    Case("blank prompt", lambda m: m("  \n"), E.InvalidPromptError, ValueError, "empty"),
    Case("empty list", lambda m: m([]), E.InvalidPromptError, ValueError, "empty"),
    Case(
        "list with an int", lambda m: m(["text", 5]), E.UnsupportedInputError, TypeError, "item 1"
    ),
    Case(
        "image first",
        lambda m: m([png_image(), "text"]),
        E.UnsupportedInputError,
        TypeError,
        "start with the text",
    ),
    Case(
        "list with a video",
        lambda m: m(["see", Video(video=b"x")]),
        E.UnsupportedInputError,
        TypeError,
        "only images",
    ),
    Case(
        "audio input", lambda m: m(Audio(audio=b"x")), E.UnsupportedInputError, TypeError, "Audio"
    ),
    Case(
        "video input", lambda m: m(Video(video=b"x")), E.UnsupportedInputError, TypeError, "Video"
    ),
    Case("empty chat", lambda m: m(Chat([])), E.InvalidPromptError, ValueError, "no messages"),
    Case(
        "chat of one message dict, not a list",
        lambda m: m(Chat(cast(Any, {"role": "user", "content": "x"}))),
        E.UnsupportedInputError,
        TypeError,
        "Chat.messages must be a list of message dicts, got dict",
    ),
    Case(
        "chat of a generator",
        lambda m: m(Chat(cast(Any, (x for x in [{"role": "user", "content": "x"}])))),
        E.UnsupportedInputError,
        TypeError,
        "must be a list of message dicts, got generator",
    ),
    Case(
        "chat without user",
        lambda m: m(Chat([{"role": "system", "content": "x"}])),
        E.InvalidPromptError,
        ValueError,
        "no user message",
    ),
    Case(
        "unknown role",
        lambda m: m(Chat([{"role": "wizard", "content": "x"}])),
        E.UnsupportedInputError,
        TypeError,
        "wizard",
    ),
    Case(
        "missing role",
        lambda m: m(Chat([{"content": "x"}])),
        E.UnsupportedInputError,
        TypeError,
        "role None",
    ),
    Case(
        "int content",
        lambda m: m(Chat([{"role": "user", "content": 5}])),
        E.UnsupportedInputError,
        TypeError,
        "user content",
    ),
    Case(
        "empty user content",
        lambda m: m(Chat([{"role": "user", "content": ""}])),
        E.InvalidPromptError,
        ValueError,
        "empty",
    ),
    Case(
        "message not a dict",
        lambda m: m(Chat([cast(dict[str, Any], "hello")])),
        E.UnsupportedInputError,
        TypeError,
        "must be a dict",
    ),
    Case(
        "tool without id",
        lambda m: m(Chat([{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}])),
        E.UnsupportedInputError,
        TypeError,
        "tool_call_id",
    ),
    Case(
        "malformed tool call",
        lambda m: m(
            Chat(
                [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{"id": "1"}]},
                ]
            )
        ),
        E.UnsupportedInputError,
        TypeError,
        "tool call",
    ),
    Case(
        "tool args not JSON",
        lambda m: m(
            Chat(
                [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "1", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    },
                ]
            )
        ),
        E.UnsupportedInputError,
        TypeError,
        "not valid JSON",
    ),
    Case(
        "image in system message",
        lambda m: m(
            Chat(
                [
                    {"role": "user", "content": "x"},
                    {"role": "system", "content": ["s", png_image()]},
                ]
            )
        ),
        E.UnsupportedInputError,
        TypeError,
        "text only",
    ),
    Case(
        "corrupt image",
        lambda m: m(["see", corrupt_image()], model=VISION_MODEL),
        E.InvalidImageError,
        ValueError,
        "not an image",
    ),
    Case(
        "animated image",
        lambda m: m(["see", animated_gif()], model=VISION_MODEL),
        E.InvalidImageError,
        ValueError,
        "animated",
    ),
    # output types
    Case(
        "Regex", lambda m: m("x", Regex(r"\d+")), E.UnsupportedOutputTypeError, TypeError, "Regex"
    ),
    Case(
        "CFG", lambda m: m("x", CFG("start: 'a'")), E.UnsupportedOutputTypeError, TypeError, "CFG"
    ),
    Case(
        "DSL term",
        lambda m: m("x", either("a", integer)),
        E.UnsupportedOutputTypeError,
        TypeError,
        "DSL term",
    ),
    Case(
        "custom class", lambda m: m("x", Widget), E.UnsupportedOutputTypeError, TypeError, "Widget"
    ),
    Case(
        "Callable",  # its parameters are a list: the plan cache's key must not hold it
        lambda m: m("x", Callable[[int], str]),
        E.UnsupportedOutputTypeError,
        TypeError,
        "Callable",
    ),
    Case(
        "list instance",
        lambda m: m("x", [1, 2]),
        E.UnsupportedOutputTypeError,
        TypeError,
        "not supported",
    ),
    Case(
        "set of unhashable models",
        lambda m: m.parse("x", set[Pet]),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"set of Pet: its items cannot be hashed",
    ),
    Case(
        "bare typing.List",  # sent as an array of anything, where a bare list was refused
        lambda m: m.parse("x", typing.List),  # noqa: UP006 - the typing alias is tested
        E.UnsupportedOutputTypeError,
        TypeError,
        r"A bare list does not say what it holds.*list\[int\]",
    ),
    Case(
        "bare typing.Dict",
        lambda m: m("x", typing.Dict),  # noqa: UP006 - the typing alias is tested
        E.UnsupportedOutputTypeError,
        TypeError,
        r"A bare dict does not say what it holds",
    ),
    Case(
        "bare typing.Set",
        lambda m: m.parse("x", typing.Set),  # noqa: UP006 - the typing alias is tested
        E.UnsupportedOutputTypeError,
        TypeError,
        r"JSON has no set type",
    ),
    Case(
        "model field: set of unhashable models",
        lambda m: m("x", Shelter),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"set of Pet \(at field 'pets' \(set\[.*Pet\]\)\).*ConfigDict\(frozen=True\)",
    ),
    Case(
        "model field: Literal of a plain Enum member",
        lambda m: m.parse("x", Paint),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"Paint has Colour\.RED in a Literal \(at field 'colour'.*cannot read back from JSON"
        r".*Literal\[Colour\.RED\.value\]",
    ),
    Case(
        "Literal of a plain Enum member deep in a dataclass",
        lambda m: m("x", Wall),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"Wall has Colour\.RED in a Literal \(at field 'coats' \(.*field 'colour'",
    ),
    Case(
        "model field: an Enum of dates",
        lambda m: m.parse("x", Notes),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"Notes has the value datetime\.date\(2024, 1, 1\) \(Release\.V1\) \(at field 'release'"
        r".*cannot read back from JSON.*isoformat",
    ),
    Case(
        "list of an Enum of Decimals",
        lambda m: m("x", list[Price]),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"has the value Decimal\('1\.5'\) \(Price\.LOW\) \(at Price\).*cannot read back",
    ),
    Case(
        "model field: a Literal of bytes",
        lambda m: m.parse("x", Packet),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"Packet has the value b'x' \(at field 'magic'.*cannot read back from JSON",
    ),
    Case(
        "model field: a CFG",
        lambda m: m("x", Sum),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"Sum holds an Outlines CFG \(at field 'expression'.*no JSON-schema pattern.*grammar=True",
    ),
    Case(
        "a CFG inside a term in a field's Annotated metadata, deep in a dataclass",
        lambda m: m.parse("x", Answers),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"Answers holds an Outlines CFG \(at field 'answers' \(.*field 'text'",
    ),
    Case(
        "dict with int keys",
        lambda m: m("x", dict[int, str]),
        E.UnsupportedOutputTypeError,
        TypeError,
        "not supported",
    ),
    Case(
        "invalid schema type",
        lambda m: m("x", {"type": "objekt"}),
        E.InvalidSchemaError,
        ValueError,
        "Invalid JSON schema",
    ),
    Case(
        "invalid schema keyword",
        lambda m: m("x", {"type": "object", "required": "name"}),
        E.InvalidSchemaError,
        ValueError,
        "required",
    ),
    Case(
        "remote $ref",
        lambda m: m("x", {"$ref": "https://schemas.example/person.json"}),
        E.InvalidSchemaError,
        ValueError,
        "never fetched",
    ),
    Case(
        "nested remote $ref",
        lambda m: m("x", {"type": "object", "properties": {"a": {"$ref": "http://x/y#/z"}}}),
        E.InvalidSchemaError,
        ValueError,
        r"the \$ref 'http://x/y#/z' at #/properties/a, which is not a '#...' reference",
    ),
    Case(
        "dangling local $ref",
        lambda m: m("x", {"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}}),
        E.InvalidSchemaError,
        ValueError,
        "points to nothing",
    ),
    Case(
        "contradictory bounds",
        lambda m: m("x", {"type": "string", "minLength": 5, "maxLength": 2}),
        E.InvalidSchemaError,
        ValueError,
        "can never be satisfied",
    ),
    Case(
        "deeply nested schema",
        lambda m: m("x", nested_schema(100)),
        E.InvalidSchemaError,
        ValueError,
        "nested",
    ),
    Case(
        "str that is not JSON",
        lambda m: m("x", "not json"),
        E.InvalidSchemaError,
        ValueError,
        "not a JSON schema",
    ),
    Case(
        "schema not an object",
        lambda m: m("x", "[1, 2]"),
        E.InvalidSchemaError,
        ValueError,
        "JSON object",
    ),
    Case(
        "whitespace_pattern",
        lambda m: m("x", JsonSchema({"type": "object"}, whitespace_pattern=" ")),
        E.UnsupportedOutputTypeError,
        TypeError,
        "whitespace_pattern",
    ),
    # keyword arguments
    Case(
        "unknown kwarg",
        lambda m: m("x", tempreature=0.1),
        E.InvalidInferenceArgumentError,
        TypeError,
        "Accepted",
    ),
    Case(
        "max_tokens str",
        lambda m: m("x", max_tokens="10"),
        E.InvalidInferenceArgumentError,
        TypeError,
        "int",
    ),
    Case(
        "max_tokens zero",
        lambda m: m("x", max_tokens=0),
        E.InvalidInferenceValueError,
        ValueError,
        "at least 1",
    ),
    Case(
        "negative temperature",
        lambda m: m("x", temperature=-1),
        E.InvalidInferenceValueError,
        ValueError,
        ">= 0",
    ),
    Case(
        "top_p above one",
        lambda m: m("x", top_p=2),
        E.InvalidInferenceValueError,
        ValueError,
        "between 0 and 1",
    ),
    Case(
        "stop not strings",
        lambda m: m("x", stop=[1]),
        E.InvalidInferenceArgumentError,
        TypeError,
        "strings",
    ),
    Case(
        "given twice",
        lambda m: m("x", max_tokens=3, config={"maxTokens": 4}),
        E.InvalidInferenceArgumentError,
        TypeError,
        "both",
    ),
    Case(
        "unknown config key",
        lambda m: m("x", config={"bogus": 1}),
        E.InvalidInferenceArgumentError,
        TypeError,
        "ignore them silently",
    ),
    Case(
        "config not a dict",
        lambda m: m("x", config="fast"),
        E.InvalidInferenceArgumentError,
        TypeError,
        "config=",
    ),
    Case(
        "seed",  # the hint named client.llm.model(key, config=...), which ignores a loaded model
        lambda m: m("x", seed=1),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"client\.llm\.load_new_instance\(key, 'seeded', config=\{'seed': N\}, ttl=None\)",
    ),
    # The model's bounds given to a call were refused as unknown, with no word of where
    # they go (found by a probe: the docs' table of bounds lists read_timeout).
    Case(
        "read_timeout on a call",
        lambda m: m("x", read_timeout=5),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"from_lmstudio\(client, model_name, read_timeout=",
    ),
    Case(
        "connect_timeout on a stream",
        lambda m: m.stream("x", connect_timeout=5),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"from_lmstudio\(client, model_name, connect_timeout=",
    ),
    Case(
        "max_concurrency on a single call",
        lambda m: m("x", max_concurrency=2),
        E.InvalidInferenceArgumentError,
        TypeError,
        "only a batch takes it",
    ),
    Case(
        "async callback",
        lambda m: m("x", on_prediction_fragment=_async_callback),
        E.InvalidInferenceArgumentError,
        TypeError,
        "on_prediction_fragment= is an async function",
    ),
    Case(
        "raw GBNF llama.cpp cannot parse",  # found by a probe: it was sent
        lambda m: m("x", config={"structured": {"type": "gbnf", "gbnfGrammar": "(((("}}),
        E.InvalidInferenceValueError,
        ValueError,
        r"GBNF grammar llama.cpp cannot parse: expecting a rule name .* at line 1, column 1",
    ),
    Case(
        "first-token callback that takes an argument",
        lambda m: m("x", on_first_token=lambda token: None),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"on_first_token= is called by LM Studio's SDK with no arguments",
    ),
    Case(
        "fragment callback that takes no argument",
        lambda m: m("x", on_prediction_fragment=lambda: None),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"on_prediction_fragment= is called by LM Studio's SDK with one argument",
    ),
    Case(
        "message callback that takes two arguments",
        lambda m: m.stream("x", on_message=lambda message, extra: None),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"on_message= is called .* one argument \(the reply message",
    ),
    Case(
        "progress callback that takes keyword-only arguments",
        lambda m: m("x", on_prompt_processing_progress=_keyword_only_progress),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"on_prompt_processing_progress= .* signature \(\*, progress: float\)",
    ),
    Case(
        "response_format",
        lambda m: m("x", response_format={"type": "json"}),
        E.InvalidInferenceArgumentError,
        TypeError,
        "output type",
    ),
    Case(
        "bad model=",
        lambda m: m("x", model=5),
        E.InvalidInferenceArgumentError,
        TypeError,
        "model=",
    ),
    Case(
        "empty model=",
        lambda m: m("x", model=""),
        E.InvalidInferenceArgumentError,
        TypeError,
        "model=",
    ),
    Case(
        "backend=",
        lambda m: m("x", None, "xgrammar"),
        E.InvalidInferenceArgumentError,
        TypeError,
        "backend",
    ),
    Case(
        "output type and config structured",
        lambda m: m("x", int, config={"structured": {"type": "none"}}),
        E.InvalidInferenceArgumentError,
        TypeError,
        "only one",
    ),
    # issue 13: inputs that used to slip through or escape our errors
    Case(
        "file name after the prompt",
        lambda m: m(["Describe", "photo.jpg"]),
        E.UnsupportedInputError,
        TypeError,
        r"item 1, is a str \('photo.jpg'\).*Image\(PIL.Image.open\(path\)\)",
    ),
    Case(
        "file name in chat content",
        lambda m: m(Chat([{"role": "user", "content": ["Describe", "photo.jpg"]}])),
        E.UnsupportedInputError,
        TypeError,
        "only images",
    ),
    Case(
        "empty lmstudio.Chat",
        lambda m: m(lms.Chat()),
        E.InvalidPromptError,
        ValueError,
        "lmstudio.Chat has no messages",
    ),
    Case(
        "lmstudio.Chat of an empty prompt",
        lambda m: m(lms.Chat.from_history("")),
        E.InvalidPromptError,
        ValueError,
        r"lmstudio\.Chat's message 0 \(user\) is empty",
    ),
    Case(
        "lmstudio.Chat with a blank user message",
        lambda m: m(blank_user_message()),
        E.InvalidPromptError,
        ValueError,
        r"message 1 \(user\) is empty",
    ),
    Case(
        "tool result not JSON",
        lambda m: m(tool_result({"when": object()})),
        E.UnsupportedInputError,
        TypeError,
        "tool result must be JSON data",
    ),
    Case(
        "tool result NaN",
        lambda m: m(tool_result({"x": float("nan")})),
        E.UnsupportedInputError,
        TypeError,
        "finite numbers",
    ),
    Case(
        "tool call arguments not JSON",
        lambda m: m(
            Chat(
                [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "1", "function": {"name": "f", "arguments": {"a": {1, 2}}}}
                        ],
                    },
                ]
            )
        ),
        E.UnsupportedInputError,
        TypeError,
        "tool call arguments must be JSON data",
    ),
    Case(
        "tool call of another type",
        lambda m: m(
            Chat(
                [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "1", "type": "retrieval", "function": {"name": "f"}}],
                    },
                ]
            )
        ),
        E.UnsupportedInputError,
        TypeError,
        r"a tool call of type 'retrieval' cannot be sent",
    ),
    Case(
        "tool call with an empty name",
        lambda m: m(
            Chat(
                [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": " "}}]},
                ]
            )
        ),
        E.UnsupportedInputError,
        TypeError,
        "tool call needs a non-empty str name",
    ),
    Case(
        "image with no data",
        lambda m: m(["see", no_image_data()], model=VISION_MODEL),
        E.InvalidImageError,
        ValueError,
        "holds no image data",
    ),
    Case(
        "animated bytes said to be animated",
        lambda m: m(["see", animated_gif_bytes()], model=VISION_MODEL),
        E.InvalidImageError,
        ValueError,
        r"^Image is animated \(2 frames\)",
    ),
    Case(
        "too many pixels said to be too large",
        lambda m: m(["see", huge_image()], model=VISION_MODEL),
        E.InvalidImageError,
        ValueError,
        r"^Image is 8001x8001 pixels; the limit is 64,000,000",
    ),
    Case(
        "timeout nan",
        lambda m: m("x", timeout=float("nan")),
        E.InvalidInferenceValueError,
        ValueError,
        "finite number of seconds, got nan",
    ),
    Case(
        "timeout inf",
        lambda m: m("x", timeout=float("inf")),
        E.InvalidInferenceValueError,
        ValueError,
        "finite number of seconds, got inf",
    ),
    Case(
        "timeout 10**400",
        lambda m: m("x", timeout=10**400),
        E.InvalidInferenceValueError,
        ValueError,
        "at most 1e[+]09 seconds",
    ),
    Case(
        "temperature 10**400",
        lambda m: m("x", temperature=10**400),
        E.InvalidInferenceValueError,
        ValueError,
        "temperature= must be a finite number, got 10000000000[0-9]*[.][.][.]",
    ),
    Case(
        "max_tokens 2**64+5",
        lambda m: m("x", max_tokens=2**64 + 5),
        E.InvalidInferenceValueError,
        ValueError,
        "max_tokens= is out of range: .* is larger than 2,147,483,647",
    ),
    Case(
        "config maxTokens 0",
        lambda m: m("x", config={"maxTokens": 0}),
        E.InvalidInferenceValueError,
        ValueError,
        r"config\['maxTokens'\] must be at least 1",
    ),
    Case(
        "config stopStrings empty",
        lambda m: m("x", config={"stopStrings": [""]}),
        E.InvalidInferenceValueError,
        ValueError,
        r"config\['stopStrings'\]: stop strings must not be empty",
    ),
    Case(
        "config nested key unknown",
        lambda m: m("x", config={"structured": {"type": "json", "jsonSchema": {}, "typo": 1}}),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"config\['structured'\]\['typo'\]\. The lmstudio SDK drops them silently",
    ),
    Case(
        "config structured body its type ignores",
        lambda m: m("x", config={"structured": {"type": "none", "jsonSchema": {}}}),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"type 'none' and also \['jsonSchema'\], which that type does not read",
    ),
    Case(
        "config struct temperature nan",
        lambda m: m("x", config=lms.LlmPredictionConfig(temperature=float("nan"))),
        E.InvalidInferenceValueError,
        ValueError,
        r"config\['temperature'\] must be a finite number",
    ),
    Case(
        "config snake_case top_k 2**40",
        lambda m: m("x", config={"top_k_sampling": 2**40}),
        E.InvalidInferenceValueError,
        ValueError,
        r"config\['topKSampling'\] must be between -1 and 500",
    ),
    Case(
        "reasoning_parsing not a setting",
        lambda m: m("x", reasoning_parsing="on"),
        E.InvalidInferenceArgumentError,
        TypeError,
        "reasoning_parsing= must be True, False or a dict",
    ),
    Case(
        "config reasoningParsing bad key",
        lambda m: m("x", config={"reasoningParsing": {"enabled": True, "start": "<t>"}}),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"unknown key\(s\) \['start'\]",
    ),
    Case(
        "reasoning_parsing empty tag",
        lambda m: m("x", reasoning_parsing={"start_string": "<t>", "end_string": " "}),
        E.InvalidInferenceValueError,
        ValueError,
        r"'endString' must be the tag the model writes, such as '</think>'; "
        r"got only whitespace \(' '\)",
    ),
    Case(
        "reasoning_parsing key in both spellings",  # was: the last one won, silently
        lambda m: m(
            "x", reasoning_parsing={"enabled": False, "startString": "<a>", "start_string": "<b>"}
        ),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"sets 'startString' twice \(as 'startString' and 'start_string'\)",
    ),
    Case(
        "reasoning_parsing with one tag",  # was: paired with '</think>', silently
        lambda m: m("x", reasoning_parsing={"start_string": "<reasoning>"}),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"one reasoning tag without the other: add 'end_string'",
    ),
    Case(
        "reasoning_parsing with one tag, in LM Studio's spelling",  # was: named 'end_string'
        lambda m: m("x", reasoning_parsing={"startString": "<reasoning>"}),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"one reasoning tag without the other: add 'endString'",
    ),
    Case(
        "not an lmstudio client",
        lambda m: from_lmstudio(cast(Any, OpenAI())),
        E.InvalidClientError,
        ValueError,  # and a TypeError: Outlines raises ValueError (found by a probe)
        "needs an lmstudio.Client or an lmstudio.AsyncClient, got OpenAI",
    ),
    Case(
        "LMStudio for a client of the other kind",
        lambda m: LMStudio(cast(Any, lms.AsyncClient())),
        E.InvalidClientError,
        ValueError,  # and a TypeError: Outlines raises ValueError (found by a probe)
        "LMStudio needs an lmstudio.Client, got AsyncClient",
    ),
    Case(
        "AsyncLMStudio for something else",
        lambda m: AsyncLMStudio(cast(Any, OpenAI())),
        E.InvalidClientError,
        ValueError,  # and a TypeError: Outlines raises ValueError (found by a probe)
        "AsyncLMStudio needs an lmstudio.AsyncClient, got OpenAI",
    ),
    # other entry points
    Case(
        "stream bad kwarg",
        lambda m: m.stream("x", nope=1),
        E.InvalidInferenceArgumentError,
        TypeError,
        "nope",
    ),
    Case(
        "batch not a list",
        lambda m: m.generate_batch(cast(list[Any], "abc")),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"^A batch takes a list of inputs, got str \(a str is one input",  # not "batch()"
    ),
    Case("batch bad item", lambda m: m.batch(["ok", 3]), E.UnsupportedInputError, TypeError, "int"),
    Case(
        "batch max_concurrency",
        lambda m: m.batch(["a"], max_concurrency=0),
        E.InvalidInferenceValueError,
        ValueError,
        "at least 1",
    ),
    Case(
        "parse negative retries",
        lambda m: m.parse("x", int, retries=-1),
        E.InvalidInferenceValueError,
        ValueError,
        "retries",
    ),
    # found by a probe (session 49): accepted, where every other count stops at 2**31 - 1
    Case(
        "parse retries beyond a count",
        lambda m: m.parse("x", int, retries=2**31),
        E.InvalidInferenceValueError,
        ValueError,
        "retries must be an int from 0 to 2,147,483,647",
    ),
    Case(
        "parse_stream bad type",
        lambda m: m.parse_stream("x", Widget),
        E.UnsupportedOutputTypeError,
        TypeError,
        "Widget",
    ),
    # found by an adversarial probe (session 26): each of these used to be sent, or to
    # escape as a builtin or pydantic error
    Case(
        "parse mistyped retries",
        lambda m: m.parse("x", int, retries=True),
        E.InvalidInferenceArgumentError,
        TypeError,
        "retries",
    ),
    Case(
        "config structured malformed schema",
        lambda m: m("x", config={"structured": {"type": "json", "jsonSchema": {"type": "objekt"}}}),
        E.InvalidSchemaError,
        ValueError,
        "meta-schema",
    ),
    Case(
        "config structured remote ref",
        lambda m: m(
            "x", config={"structured": {"type": "json", "jsonSchema": {"$ref": "http://x/s"}}}
        ),
        E.InvalidSchemaError,
        ValueError,
        "never fetched",
    ),
    Case(
        "config structured keyword no engine takes",
        lambda m: m(
            "x",
            config={"structured": {"type": "json", "json_schema": {"type": "integer", "not": {}}}},
        ),
        E.UnsupportedOutputTypeError,
        TypeError,
        "'not'",
    ),
    # found by a probe (session 49): a JSON string, a bool or a number there escaped as a
    # builtin error from dict(), and a list was sent as "any JSON value"
    *(
        Case(
            f"config structured schema that is a {type(body).__name__}",
            _with_json_schema(body),
            E.InvalidSchemaError,
            ValueError,
            "must be a JSON schema object",
        )
        for body in _NOT_SCHEMA_OBJECTS
    ),
    Case(
        "config structured json without a schema",
        lambda m: m("x", config={"structured": {"type": "json"}}),
        E.InvalidInferenceArgumentError,
        TypeError,
        "jsonSchema",
    ),
    Case(
        "lmstudio.Chat without a user message",
        lambda m: m(lms.Chat("be terse")),
        E.InvalidPromptError,
        ValueError,
        "no user message",
    ),
    Case(
        "Literal with a lone surrogate",
        lambda m: m("x", Literal["\ud800", "b"]),
        E.UnsupportedOutputTypeError,
        TypeError,
        "lone surrogate",
    ),
    Case(
        "dataclass field Literal with a lone surrogate",
        lambda m: m("x", _Odd),
        E.UnsupportedOutputTypeError,
        TypeError,
        "_Odd",
    ),
    Case(
        "schema with a lone surrogate",
        lambda m: m("x", {"type": "string", "enum": ["\ud800", "ok"]}),
        E.InvalidSchemaError,
        ValueError,
        "lone surrogate",
    ),
    # found by the Outlines-parity probe: these escaped as a bare TypeError from pydantic
    # (Outlines' DSL classes are dataclasses), in Outlines' own LM Studio model too
    Case(
        "Outlines class Regex, not an instance",
        lambda m: m("x", Regex),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"the Outlines class Regex itself, not an instance of it: build one, e\.g\. Regex\(",
    ),
    Case(
        "Outlines class Choice, not an instance, in parse",
        lambda m: m.parse("x", Choice),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"class Choice itself.*Choice\(\[",
    ),
    Case(
        "list of an Outlines class",
        lambda m: m("x", list[CFG]),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"list\[.*CFG\] is not supported",
    ),
    Case(
        "empty Choice",
        lambda m: m("x", Choice([])),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"Choice\(\[\]\) has no values",  # as written (was Choice(items=[]))
    ),
    Case(
        "Enum without members",
        lambda m: m("x", NoMembers),
        E.UnsupportedOutputTypeError,
        TypeError,
        "NoMembers has no values",
    ),
    Case(
        "Enum of functions",
        lambda m: m("x", Tool),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"Tool has the value functools\.partial.*which is no JSON value\. Give it JSON values",
    ),
    Case(  # found by a probe: "values must be str, ...", for a member whose value is a str
        "Literal of a plain Enum member",
        lambda m: m("x", Literal[_Shade.DARK]),
        E.UnsupportedOutputTypeError,
        TypeError,
        r"has the enum member _Shade\.DARK, .* Use Literal\[_Shade\.DARK\.value\], the enum",
    ),
    Case(
        "config raw, which the SDK refuses",
        lambda m: m("x", config={"raw": {"fields": []}}),
        E.InvalidInferenceArgumentError,
        TypeError,
        r"config\['raw'\] cannot be sent",
    ),
    Case(
        "closed PIL image",
        lambda m: m(["Describe", _closed_png()]),
        E.InvalidImageError,
        ValueError,
        "closed image",
    ),
    Case(
        "PIL image used after its with block",
        lambda m: m(["Describe", _png_after_its_with_block()]),
        E.InvalidImageError,
        ValueError,
        "inside the with block",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_raises_before_anything_is_sent(
    fronts: Fronts, emulator: LMStudioEmulator, case: Case
) -> None:
    client = fronts.client(enter=False)  # not entered: no probe, nothing opened yet
    model = fronts.model(client, TEXT_MODEL)
    with pytest.raises(case.error, match=case.match) as info:
        case.call(model)
    assert isinstance(info.value, case.builtin)
    assert emulator.trace == []  # not a single frame reached the server
    assert emulator.requests == []


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 80


def test_from_lmstudio_bad_arguments(emulator: LMStudioEmulator) -> None:
    with lms.Client(emulator.api_host) as client:
        with pytest.raises(TypeError, match="model_name"):
            from_lmstudio(client, cast(str, 5))
        with pytest.raises(ValueError, match="max_concurrency"):
            from_lmstudio(client, max_concurrency=0)
        with pytest.raises(ValueError, match="timeout"):
            from_lmstudio(client, timeout=-1)
        for seconds in (float("nan"), float("inf"), 10**400):
            with pytest.raises(errors.InvalidInferenceValueError, match="timeout must be"):
                from_lmstudio(client, timeout=seconds)
        with pytest.raises(TypeError, match=r"Unknown option.*Did you mean grammar=\?"):
            from_lmstudio(client, grammer=True)  # type: ignore[call-overload]
        # The classes themselves, as from_lmstudio: our error, naming the options.
        with pytest.raises(
            errors.InvalidInferenceArgumentError,
            match=r"Unknown option\(s\) \['foo'\] for LMStudio\. Accepted: max_concurrency",
        ):
            LMStudio(client, TEXT_MODEL, foo=1)  # type: ignore[call-arg]  # checkers too
        with pytest.raises(
            errors.InvalidInferenceArgumentError,
            match=r"LMStudio takes the client and the model key by position.*grammar=.*\(4,\)",
        ):
            LMStudio(client, TEXT_MODEL, 4)  # type: ignore[arg-type]  # checkers too
        with pytest.raises(errors.InvalidInferenceArgumentError, match="grammar must be True"):
            LMStudio(client, TEXT_MODEL, grammar="no")  # type: ignore[arg-type]
        # A review: Python's TypeError, naming the private ModelApi.
        with pytest.raises(errors.InvalidInferenceArgumentError, match="model_name twice"):
            LMStudio(client, TEXT_MODEL, model_name="other")  # type: ignore[misc]
        # Found by a probe: the client by keyword, as Outlines' own class takes it, was a
        # TypeError naming a parameter the signature does not show.
        assert LMStudio(client=client, model_name=TEXT_MODEL).model_name == TEXT_MODEL
        assert emulator.requests == []


@pytest.mark.asyncio
async def test_the_async_class_names_an_unknown_option(emulator: LMStudioEmulator) -> None:
    async with lms.AsyncClient(emulator.api_host) as client:
        with pytest.raises(
            errors.InvalidInferenceArgumentError,
            match=r"Unknown option\(s\) \['foo'\] for AsyncLMStudio",
        ):
            AsyncLMStudio(client, TEXT_MODEL, foo=1)  # type: ignore[call-arg]  # checkers too
        with pytest.raises(errors.InvalidInferenceArgumentError, match="model_name twice"):
            AsyncLMStudio(client, TEXT_MODEL, model_name="other")  # type: ignore[misc]
        assert AsyncLMStudio(client=client).model_name is None
    assert emulator.requests == []


def test_a_large_bad_image_is_refused_before_anything_is_sent(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """The async front checks a large image in a worker thread, with the same errors."""
    image = only_image_str(png_image())
    image.image_str = base64.b64encode(bytes(64 * 1024)).decode()  # not an image, and large
    model = fronts.model(fronts.client(enter=False), VISION_MODEL)
    with pytest.raises(E.InvalidImageError, match="not an image Pillow can read"):
        model(["Describe", image])
    with pytest.raises(E.InvalidImageError, match="not an image Pillow can read") as info:
        model.batch(["ok", ["Describe", png_image()], ["Describe", image]])
    assert info.value.__notes__ == ["(the image at the input list, item 1)"]
    assert str(info.value).startswith("Batch item 2: ")
    assert emulator.trace == []
    assert emulator.requests == []


def test_a_batch_error_names_the_item_only_when_it_is_the_items(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """A bad keyword or output type is every item's: no "Batch item 0" on it. An item's own
    error says which item in its message (a note showed only in a full traceback, so a log
    line of ``str(error)`` lost it; found by a probe)."""
    model = fronts.model(fronts.client(enter=False), TEXT_MODEL)
    with pytest.raises(E.InvalidInferenceValueError) as shared:
        model.batch(["a", "b"], max_tokens=-5)
    assert getattr(shared.value, "__notes__", []) == []
    assert "Batch item" not in str(shared.value)
    with pytest.raises(E.InvalidInferenceValueError):
        model.batch([], max_tokens=-5)  # refused even with no item to send
    with pytest.raises(E.UnsupportedInputError) as own:
        model.batch(["ok", 3])
    assert str(own.value).startswith("Batch item 1: Input of type int")
    assert getattr(own.value, "__notes__", []) == []
    assert emulator.requests == []


def test_parse_refuses_a_type_it_cannot_check_at_the_call(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """With retries or a list of inputs too: one error, raised before anything is sent (on
    the async front at the await, as for Outlines' ``async def`` methods, not connecting:
    it was raised after connecting, then at the call)."""
    model = fronts.raw(fronts.model(fronts.client(enter=False), TEXT_MODEL, grammar=True))
    term = Regex("x") + CFG('?start: "yes" | "no"')  # parse checks a CFG only on its own
    calls: list[Callable[[], Any]] = [
        lambda: model.parse("a", term, retries=1),
        lambda: model.parse(["a", "b"], term),  # a BatchGenerationError of two copies
        lambda: model.parse(["a", "b"], term, retries=1),
        lambda: model.parse([], term),  # was: [] (found by a probe)
    ]
    for call in calls:
        with pytest.raises(E.UnsupportedOutputTypeError, match="with a CFG inside"):
            fronts.run(call())
    assert emulator.trace == []
    assert emulator.requests == []


class _JsonInAString(pydantic.BaseModel):
    numbers: pydantic.Json[list[int]]  # a string holding JSON: no engine checks its content


def test_strict_schema_is_a_model_option(fronts: Fronts, emulator: LMStudioEmulator) -> None:
    """Found by a probe: docs/output-types.md named `strict_schema` as a setting, but no
    model took it, and a model ran with its own adapter whatever `type_adapter` was set to."""
    client = fronts.client(enter=False)
    refused = r"'contentSchema' at /properties/numbers"
    strict = fronts.model(client, TEXT_MODEL, strict_schema=True)
    with pytest.raises(E.UnsupportedOutputTypeError, match=refused):
        strict("Some numbers", _JsonInAString)
    model = fronts.model(client, TEXT_MODEL)
    raw = fronts.raw(model)
    raw.type_adapter = LMStudioTypeAdapter(strict_schema=True)  # Outlines' convention
    assert raw.type_adapter.strict_schema is True
    with pytest.raises(E.UnsupportedOutputTypeError, match=refused):
        model("Some numbers", _JsonInAString)
    with pytest.raises(E.InvalidInferenceArgumentError, match="type_adapter must be an outlines_"):
        raw.type_adapter = outlines_models.lmstudio.LMStudioTypeAdapter()
    with pytest.raises(E.InvalidInferenceArgumentError, match="strict_schema must be True"):
        fronts.model(client, TEXT_MODEL, strict_schema="yes")
    assert emulator.trace == []
    assert emulator.requests == []
    # Without it, the schema is sent (parse validates the content).
    loose = fronts.model(fronts.client(), TEXT_MODEL)
    assert loose("Some numbers", _JsonInAString)
    assert emulator.predictions[-1].config.get("llm.prediction.structured")


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("model_name", "", "model_name must be a non-empty model key"),  # was: any loaded model
        ("model_name", 42, "model_name must be a non-empty model key"),  # was: msgspec's error
        ("timeout", -1, "timeout"),
        ("read_timeout", float("nan"), "read_timeout"),
        ("connect_timeout", "10", "connect_timeout"),
        ("max_concurrency", 0, "max_concurrency"),
    ],
)
def test_an_assigned_setting_is_checked_as_the_option_is(
    fronts: Fronts, emulator: LMStudioEmulator, name: str, value: object, match: str
) -> None:
    """Found by a probe: `model.model_name = ""` sent the call to whichever model was loaded."""
    model = fronts.raw(fronts.model(fronts.client(enter=False), TEXT_MODEL))
    before = getattr(model, name)
    with pytest.raises(OutlinesLMStudioError, match=match) as info:
        setattr(model, name, value)
    assert isinstance(info.value, TypeError | ValueError)
    assert getattr(model, name) == before
    model.model_name = VISION_MODEL  # a good value is taken
    assert model.model_name == VISION_MODEL
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("tmeout", "Did you mean timeout?"),
        ("max_concurency", "Did you mean max_concurrency?"),
        ("grammar", r"model\.type_adapter\.grammar = True"),
        ("strict_schema", r"model\.type_adapter\.strict_schema = True"),
        ("whatever", r"its settings are model_name, max_concurrency"),
    ],
)
def test_an_attribute_that_is_no_setting_is_refused(
    fronts: Fronts, emulator: LMStudioEmulator, name: str, hint: str
) -> None:
    """A misspelt setting was stored and did nothing, and ``model.grammar = True`` was
    taken, then the next call said to turn grammar mode on (found by a probe)."""
    model = fronts.raw(fronts.model(fronts.client(enter=False), TEXT_MODEL))
    with pytest.raises(UnknownSettingError, match=hint) as info:
        setattr(model, name, 1)
    assert isinstance(info.value, AttributeError)
    assert isinstance(info.value, InvalidInferenceArgumentError)
    assert (info.value.name, info.value.obj) == (name, model)
    assert name not in vars(model)
    model.type_adapter.grammar = True  # where grammar mode is switched on
    model._private = 1  # private names and the settings stay open
    model.timeout = 5
    assert (model.timeout, model._private) == (5, 1)
    assert emulator.requests == []


def test_a_mock_client_is_pointed_to_the_emulator() -> None:
    """Found by a probe running Outlines' own tests, whose mock client was refused with
    nothing said of the emulator this library offers for tests instead."""

    class MockLMStudioClient:  # what Outlines' tests pass
        pass

    mock = cast(Any, MockLMStudioClient())
    hint = "give a real client the emulator's address instead of a mock"
    for make in (from_lmstudio, LMStudio, AsyncLMStudio):
        with pytest.raises(InvalidClientError, match="got MockLMStudioClient") as info:
            make(mock)
        assert hint in str(info.value)
        assert "LMStudioEmulator() as emu, lmstudio.Client(emu.api_host)" in str(info.value)
    model = LMStudio(lms.Client("127.0.0.1:1234"))
    with pytest.raises(InvalidClientError, match=hint):
        model.client = mock
    # A real client of the other kind is no mock: its message says only what to do.
    with pytest.raises(InvalidClientError) as other:
        LMStudio(cast(Any, lms.AsyncClient("127.0.0.1:1234")))
    assert hint not in str(other.value)


def test_a_client_of_another_kind_and_deleted_settings_are_refused(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """Found by a review: ``model.client = "x"`` (or the other kind of client) was taken,
    and the next call failed on a bare KeyError; ``del model.timeout`` on an AttributeError
    of ours."""
    model = fronts.raw(fronts.model(fronts.client(enter=False), TEXT_MODEL))
    other = lms.AsyncClient if isinstance(model, LMStudio) else lms.Client
    for client in ("127.0.0.1:1234", other(emulator.api_host)):
        with pytest.raises(InvalidClientError, match=r"client must be an lmstudio\."):
            model.client = client
    # type_adapter: found by a probe (Python's "property ... has no deleter")
    for name in ("timeout", "model_name", "max_concurrency", "client", "type_adapter"):
        with pytest.raises(InvalidInferenceArgumentError, match="cannot be deleted"):
            delattr(model, name)
    assert model.timeout is None
    with pytest.raises(InvalidClientError, match="is not HOST:PORT"):  # as from_lmstudio
        model.client = type(model.client)(f"http://{emulator.api_host}")
    assert emulator.requests == []


def test_a_subclass_keeps_state_of_its_own(fronts: Fronts, emulator: LMStudioEmulator) -> None:
    """A subclass's ``self.calls = 0`` was refused as a misspelt setting (found by a
    review): only the package's own classes refuse a name."""
    base = type(fronts.raw(fronts.model(fronts.client(enter=False), TEXT_MODEL)))

    class Counting(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **options: Any) -> None:
            super().__init__(*args, **options)
            self.calls = 0

    model = Counting(fronts.client(enter=False), TEXT_MODEL)
    model.calls += 1
    assert model.calls == 1
    with pytest.raises(OutlinesLMStudioError, match="timeout must be more than 0"):
        model.timeout = -1  # its settings are still checked
    assert emulator.requests == []


_HANDLE = rf"For a loaded model's handle, pass its identifier \('{TEXT_MODEL}'\)"


@pytest.mark.parametrize(
    ("where", "value", "match"),
    [
        # Found by a probe: both went out and came back "no model matching" (a key copied
        # from `lms ls` with its line break), the message flattening the break into a space.
        ("model_name", f"{TEXT_MODEL}\n", rf"has whitespace around it.*pass '{TEXT_MODEL}'"),
        ("model=", f" {TEXT_MODEL} ", rf"has whitespace around it.*pass '{TEXT_MODEL}'"),
        # Found by a probe: a handle was refused without saying what to pass.
        ("model_name", "handle", _HANDLE),
        ("model=", "handle", _HANDLE),
    ],
)
def test_a_model_name_is_checked_before_anything_is_sent(
    fronts: Fronts, emulator: LMStudioEmulator, where: str, value: str, match: str
) -> None:
    client = fronts.client()
    name: Any = value
    if value == "handle":
        with lms.Client(emulator.api_host) as other:
            name = other.llm.model(TEXT_MODEL)
    emulator.reset()
    if where == "model_name":
        with pytest.raises(E.InvalidInferenceArgumentError, match=match):
            fronts.model(client, name)
    else:
        model = fronts.model(client, TEXT_MODEL)
        with pytest.raises(E.InvalidInferenceArgumentError, match=match):
            model("Hi", model=name)
    assert emulator.predictions == []
    assert emulator.requests == []


def test_from_lmstudio_with_model_says_where_the_model_goes(fronts: Fronts) -> None:
    """Found by a probe: ``model=`` (what a call takes) got only the list of options."""
    with pytest.raises(E.InvalidInferenceArgumentError, match=r"model goes as model_name="):
        fronts.model(fronts.client(enter=False), model=TEXT_MODEL)


def test_a_client_that_is_not_lmstudios_is_caught_as_outlines_code_catches_it() -> None:
    """Outlines' own ``from_lmstudio`` raises ``ValueError`` for it; ours raised only a
    ``TypeError`` (found by a probe running Outlines' tests against this library)."""
    for call in (lambda: from_lmstudio(cast(Any, OpenAI())), lambda: LMStudio(cast(Any, 5))):
        with pytest.raises(ValueError, match="needs an lmstudio") as info:
            call()
        error: BaseException = info.value
        assert isinstance(error, TypeError)
        assert isinstance(error, errors.InvalidInferenceArgumentError)


_HUGE = "k" * 100_000


def _huge_mistakes(model: Any, client: Any) -> dict[str, Callable[[], object]]:
    return {
        "a keyword's name": lambda: model("x", **{_HUGE: 1}),
        "retries=": lambda: model.parse("x", int, retries=_HUGE),
        "max_concurrency=": lambda: model.parse(["x"], int, max_concurrency=[1] * 50_000),
        "reasoning_parsing's keys": lambda: model("x", reasoning_parsing={_HUGE: 1}),
        "a callback": lambda: model("x", on_message=_HUGE),
        "an option of from_lmstudio": lambda: cast(Any, from_lmstudio)(client, "m", **{_HUGE: 1}),
        "a positional of the class": lambda: type(Fronts.raw(model))(client, "m", _HUGE),
        "a setting's name": lambda: setattr(Fronts.raw(model), _HUGE, 1),
        "a schema's key": lambda: model("x", {"properties": {_HUGE: {"type": "strin"}}}),
        "a schema's $ref": lambda: model("x", {"$ref": "http://" + _HUGE}),
        "a schema's properties as a list": lambda: model(
            "x", {"properties": [{"name": f"f{i}", "description": "d" * 50} for i in range(2000)]}
        ),
        "a chat role": lambda: model(Chat([{"role": _HUGE, "content": "x"}])),
        "a model name with spaces": lambda: model("x", model=_HUGE + " "),
        "a $ref to nothing": lambda: model("x", {"$ref": "#/$defs/" + _HUGE}),
        "a bad pattern": lambda: model("x", {"type": "string", "pattern": "(" + _HUGE}),
        "a Literal with a lone surrogate": lambda: model("x", Literal["\ud800" + _HUGE]),
        "a config value of no allowed kind": lambda: model(
            "x", config={"contextOverflowPolicy": _HUGE}
        ),
        "an int too long to write": lambda: model("x", max_tokens=10**5000),
        "a max_concurrency too long to write": lambda: model.parse(
            ["x"], int, max_concurrency=-(10**5000)
        ),
        "a chat message's key": lambda: model(Chat([{"role": "user", "content": "x", _HUGE: 1}])),
        "a content item's key": lambda: model(
            Chat([{"role": "user", "content": [{"type": "text", "text": "x", _HUGE: 1}]}])
        ),
        "a tool call's id": lambda: model(
            Chat(
                [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": [_HUGE], "function": {"name": "f", "arguments": "{}"}}
                        ],
                    },
                ]
            )
        ),
    }


@pytest.mark.parametrize(
    "what",
    [
        "a keyword's name",
        "retries=",
        "max_concurrency=",
        "reasoning_parsing's keys",
        "a callback",
        "an option of from_lmstudio",
        "a positional of the class",
        "a setting's name",
        "a schema's key",
        "a schema's $ref",
        "a schema's properties as a list",
        "a chat role",
        "a model name with spaces",
        "a $ref to nothing",
        "a bad pattern",
        "a Literal with a lone surrogate",
        "a config value of no allowed kind",
        "an int too long to write",
        "a max_concurrency too long to write",
        "a chat message's key",
        "a content item's key",
        "a tool call's id",
    ],
)
def test_a_huge_value_given_by_mistake_is_quoted_cut_in_its_refusal(
    fronts: Fronts, emulator: LMStudioEmulator, what: str
) -> None:
    """These refusals quoted the value whole: a 100,000-character keyword (or a DataFrame as
    ``retries=``) made a message, and a log line, as large (found by a probe of messages);
    the other refusals cut what they quote."""
    client = fronts.client()
    model = fronts.model(client, TEXT_MODEL)
    with pytest.raises(OutlinesLMStudioError) as info:
        fronts.run(_huge_mistakes(model, client)[what]())
    assert len(str(info.value)) < 1_000, len(str(info.value))
    assert emulator.predictions == []
