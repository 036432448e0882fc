"""What the cases share: model keys, the output type, prompts, the test image."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lmstudio as lms
from outlines.inputs import Image
from PIL import Image as PILImage
from pydantic import BaseModel

__all__ = [
    "TEXT_MODEL",
    "VISION_MODEL",
    "Person",
    "default_client",
    "make_image",
    "person_format",
    "prompt",
]

TEXT_MODEL = "qwen2.5-7b-instruct"
VISION_MODEL = "qwen2-vl-2b-instruct"


class Person(BaseModel):
    """The structured output type of every JSON case."""

    name: str
    age: int


def person_format() -> dict[str, Any]:
    """The ``response_format`` the SDK by hand sends for `Person`."""
    return {"type": "json", "jsonSchema": Person.model_json_schema()}


def prompt(i: int) -> str:
    """Prompt number ``i`` (the same text for both sides of a pair)."""
    return f"Describe person number {i} in one short record."


def make_image(size: tuple[int, int]) -> Image:
    """A deterministic photo-like JPEG (noise over a gradient) as an Outlines ``Image``."""
    gradient = PILImage.linear_gradient("L").resize(size)
    noise = PILImage.effect_noise(size, 48)
    picture = PILImage.merge(
        "RGB", (gradient, noise, gradient.transpose(PILImage.Transpose.ROTATE_180))
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return Image(PILImage.open(io.BytesIO(buffer.getvalue())))


@contextmanager
def default_client(api_host: str) -> Iterator[lms.Client]:
    """The SDK's global default client, pointed at ``api_host`` for the block.

    Outlines' adapter uploads images with ``lms.prepare_image`` (the global default
    client), and file handles belong to the client that uploaded them, so its
    predictions must go through that same client. A default client created here
    is closed and forgotten at the end (with the SDK's own reset hook).
    """
    try:
        lms.configure_default_client(api_host)
    except lms.LMStudioClientError:
        created = False  # it exists already: fine if it talks to the same server
    else:
        created = True
    try:
        client = lms.get_default_client()
        if client.api_host != api_host:
            raise RuntimeError(
                f"The lmstudio default client already talks to {client.api_host}, "
                f"not {api_host}; run the benchmark in a fresh process."
            )
        yield client
    finally:
        if created:
            lms.sync_api._reset_default_client()
