"""Small helpers shared by the end-to-end tests."""

import io
from typing import Any

from outlines.inputs import Image
from PIL import Image as PILImage

from outlines_lmstudio.testing import LMStudioEmulator


def png_image(color: str = "red", size: tuple[int, int] = (8, 8)) -> Image:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="PNG")
    return Image(PILImage.open(io.BytesIO(buffer.getvalue())))


def endpoint_count(emulator: LMStudioEmulator, endpoint: str) -> int:
    return sum(1 for r in emulator.requests if r.endpoint == endpoint)


def message_texts(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(role, joined text) of each wire message."""
    result = []
    for message in messages:
        text = "".join(p.get("text", "") for p in message["content"] if p.get("type") == "text")
        result.append((message["role"], text))
    return result
