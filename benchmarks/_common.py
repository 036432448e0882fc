"""What the cases share: model keys, output types, prompts, scripted replies, inputs."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lmstudio as lms
import pydantic
from outlines.inputs import Chat, Image
from PIL import Image as PILImage
from pydantic import BaseModel

from outlines_lmstudio import LMStudio, from_lmstudio
from outlines_lmstudio.testing._sampler import split_fragments

__all__ = [
    "TEXT_MODEL",
    "VISION_MODEL",
    "Person",
    "Roster",
    "history",
    "make_image",
    "make_image_bytes",
    "person_format",
    "person_id",
    "person_reply",
    "prompt",
    "prompt_id",
    "sync_sides",
    "roster_reply",
    "wide_model",
]

TEXT_MODEL = "qwen2.5-7b-instruct"
VISION_MODEL = "qwen2-vl-2b-instruct"

_ID_SPACE = 36 * 36
"""Distinct reply ids: two base-36 digits keep the shortest reply at 5 fragments."""
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_PROMPT_ID = re.compile(r"person number (\d+)")


class Person(BaseModel):
    """The structured output type of every JSON case."""

    name: str
    age: int


class Roster(BaseModel):
    """A long structured reply: many records (the ``parse_stream`` cases)."""

    people: list[Person]


def person_format() -> dict[str, Any]:
    """The ``response_format`` a careful SDK user precomputes once for `Person`."""
    return {"type": "json", "jsonSchema": Person.model_json_schema()}


def prompt(i: int) -> str:
    """Prompt number ``i`` (the same text for both sides of a pair); ``i >= 0``."""
    return f"Describe person number {i} in one short record."


def prompt_id(text: str) -> int:
    """The number in a `prompt` (``-1`` if there is none)."""
    match = _PROMPT_ID.search(text)
    return int(match.group(1)) if match else -1


def _name(i: int) -> str:
    i %= _ID_SPACE
    return "P" + _DIGITS[i // 36] + _DIGITS[i % 36]


def person_reply(i: int, fragments: int) -> str:
    """A distinct `Person` JSON reply for prompt ``i`` that the emulator sends in ``fragments``.

    The emulator splits replies into runs of at most 6 non-space characters
    with their leading space: ``{"name`` ``":`` `` "P0h",`` `` "age":`` `` 17}``
    is 5 fragments, and each `` ab`` in the name adds one.
    """
    if fragments < 5:
        raise ValueError("a Person reply has at least 5 fragments")
    name = " ".join([_name(i), *["ab"] * (fragments - 5)])
    return json.dumps({"name": name, "age": i % 100})


def _roster_text(i: int, entries: int, pad: int) -> str:
    people = [{"name": _name(i + k), "age": (i + k) % 100} for k in range(entries)]
    people[0]["name"] = " ".join([_name(i), *["ab"] * pad])
    return json.dumps({"people": people})


def roster_reply(i: int, fragments: int) -> str:
    """A distinct `Roster` reply for prompt ``i``, sent in exactly ``fragments`` fragments.

    Every record has the same number of fragments, so the count is linear in the
    number of records; `` ab`` words in the first name make up the rest.
    """
    one, two = (len(split_fragments(_roster_text(i, k, 0))) for k in (1, 2))
    entries = max(1, (fragments - one) // (two - one) + 1)
    text = _roster_text(i, entries, fragments - one - (entries - 1) * (two - one))
    if len(split_fragments(text)) != fragments:
        raise ValueError(f"a Roster reply has at least {one} fragments")
    return text


def person_id(reply: object) -> int:
    """The reply id (``i % 1296``) a `person_reply` text or `Person` carries."""
    if isinstance(reply, Roster):
        reply = reply.people[0]
    if isinstance(reply, Person):
        name = reply.name
    else:
        data = json.loads(str(reply))
        name = data["people"][0]["name"] if "people" in data else data["name"]
    head = str(name).split(" ", 1)[0]
    return _DIGITS.index(head[1]) * 36 + _DIGITS.index(head[2])


def make_image_bytes(size: tuple[int, int]) -> bytes:
    """A deterministic photo-like JPEG (noise over a gradient) of ``size`` pixels."""
    gradient = PILImage.linear_gradient("L").resize(size)
    noise = PILImage.effect_noise(size, 48)
    picture = PILImage.merge(
        "RGB", (gradient, noise, gradient.transpose(PILImage.Transpose.ROTATE_180))
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_image(data: bytes) -> Image:
    """The JPEG ``data`` as an Outlines ``Image``."""
    return Image(PILImage.open(io.BytesIO(data)))


def history(messages: int, last: str) -> tuple[Chat, list[tuple[str, str]]]:
    """An Outlines ``Chat`` of ``messages`` messages ending with the user's ``last``.

    Also returns the same (role, text) pairs, for building the ``lms.Chat`` by hand.
    """
    if messages < 1 or messages % 2 == 0:
        raise ValueError("a history ends with a user turn: give an odd number of messages")
    pairs = [
        ("user" if k % 2 == 0 else "assistant", f"Turn {k}: a short line of conversation.")
        for k in range(messages - 1)
    ]
    pairs.append(("user", last))
    return Chat([{"role": role, "content": text} for role, text in pairs]), pairs


def wide_model(fields: int, tag: int) -> type[BaseModel]:
    """A new Pydantic model class of ``fields`` fields (``tag`` makes each class distinct).

    A new class every call, so no cache keyed on the type helps either side.
    """
    spec: dict[str, Any] = {f"field_{k}": (int if k % 2 else str, ...) for k in range(fields)}
    return pydantic.create_model(f"Wide{fields}_{tag}", **spec)


@contextmanager
def sync_sides(api_host: str, key: str = TEXT_MODEL) -> Iterator[tuple[LMStudio, lms.LLM]]:
    """Both sides on one new client: our model, and the SDK handle resolved once."""
    with lms.Client(api_host) as client:
        yield from_lmstudio(client, key), client.llm.model(key)
