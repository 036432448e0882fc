import base64
import hashlib
import io

import pytest
from outlines.inputs import Image
from PIL import Image as PILImage

from outlines_lmstudio import _images
from outlines_lmstudio._images import image_from_bytes, normalise_image
from outlines_lmstudio.errors import InvalidImageError


def encoded(fmt: str, size: tuple[int, int] = (4, 3), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    PILImage.new(mode, size, "red" if mode == "RGB" else 1).save(buffer, format=fmt)
    return buffer.getvalue()


def opened(data: bytes) -> PILImage.Image:
    return PILImage.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_accepted_formats_keep_their_bytes(fmt: str, mime: str) -> None:
    data = encoded(fmt)
    image = normalise_image(Image(opened(data)))
    assert image.mime == mime
    assert image.data == base64.b64decode(Image(opened(data)).image_str)
    assert image.digest == hashlib.sha256(image.data).hexdigest()
    assert image.name.endswith("." + mime.split("/")[1])


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF"])
def test_other_formats_are_reencoded_as_png(fmt: str) -> None:
    image = normalise_image(Image(opened(encoded(fmt))))
    assert image.mime == "image/png"
    with PILImage.open(io.BytesIO(image.data)) as decoded:
        assert decoded.format == "PNG"
        assert decoded.size == (4, 3)


def test_animated_images_are_refused_not_cut() -> None:
    frames = [PILImage.new("RGB", (4, 4), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImageError, match="animated"):
        image_from_bytes(buffer.getvalue())


def test_not_an_image() -> None:
    with pytest.raises(InvalidImageError, match="not an image"):
        image_from_bytes(b"hello, not a picture")
    with pytest.raises(InvalidImageError, match="empty"):
        image_from_bytes(b"")


def test_truncated_png_is_refused() -> None:
    with pytest.raises(InvalidImageError):
        image_from_bytes(encoded("PNG", (64, 64))[:60])


def test_too_many_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_images, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(InvalidImageError, match="pixels"):
        image_from_bytes(encoded("PNG", (4, 3)))


def test_too_many_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_images, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(InvalidImageError, match="MiB"):
        image_from_bytes(encoded("PNG"))


def test_pil_images_are_accepted_directly() -> None:
    image = normalise_image(PILImage.new("RGB", (2, 2), "blue"))
    assert image.mime == "image/png"


def test_wrong_object() -> None:
    with pytest.raises(InvalidImageError, match="Expected"):
        normalise_image("cat.png")
