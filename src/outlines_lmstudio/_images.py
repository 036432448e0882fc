"""Image normalisation for LM Studio (pure, no I/O).

LM Studio's vision engines take JPEG, PNG and WebP. Other formats are
re-encoded to PNG (lossless); animated images are refused rather than cut to
their first frame. Each image is identified by the SHA-256 of the bytes that
will be uploaded, so the model classes can upload it once per client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from .errors import InvalidImageError

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "ImageData",
    "image_from_bytes",
    "normalise_image",
]

MAX_IMAGE_BYTES = 32 * 1024 * 1024
"""Largest upload we send; LM Studio takes each image as one websocket frame."""
MAX_IMAGE_PIXELS = 64_000_000
"""Largest image (width x height) we decode; guards against decompression bombs."""

_PASS_THROUGH = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@dataclass(frozen=True)
class ImageData:
    """An image ready to upload.

    Attributes
    ----------
    data
        The encoded bytes (JPEG, PNG or WebP).
    mime
        Their MIME type.
    digest
        SHA-256 hex digest of ``data``.
    """

    data: bytes
    mime: str
    digest: str

    @property
    def name(self) -> str:
        """File name used for the upload (stable for the same bytes)."""
        return f"image-{self.digest[:16]}.{self.mime.split('/')[1]}"


def _make(data: bytes, mime: str) -> ImageData:
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImageError(
            f"Image is {len(data) / 2**20:.1f} MiB after encoding; the limit is "
            f"{MAX_IMAGE_BYTES // 2**20} MiB. Downscale it first, "
            "e.g. image.thumbnail((2048, 2048))."
        )
    return ImageData(data=data, mime=mime, digest=hashlib.sha256(data).hexdigest())


def _encode(image: PILImage.Image) -> ImageData:
    """Encode a decoded PIL image, keeping JPEG/PNG/WebP bytes as they are."""
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidImageError(
            f"Image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels. "
            "Downscale it first, e.g. image.thumbnail((2048, 2048))."
        )
    if width == 0 or height == 0:
        raise InvalidImageError(f"Image has no pixels ({width}x{height}).")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise InvalidImageError(
            f"Image is animated ({frames} frames); LM Studio takes still images. "
            "Pick one frame with image.seek(i) and pass image.copy()."
        )
    fmt = (image.format or "").upper()
    buffer = io.BytesIO()
    try:
        if fmt in _PASS_THROUGH:
            image.save(buffer, format=fmt)
            return _make(buffer.getvalue(), _PASS_THROUGH[fmt])
        converted = image
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "I;16", "1"):
            converted = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        converted.save(buffer, format="PNG")
    except (OSError, ValueError) as exc:
        raise InvalidImageError(
            f"Could not encode the {fmt or 'unknown-format'} image: {exc}"
        ) from exc
    return _make(buffer.getvalue(), "image/png")


def image_from_bytes(data: bytes) -> ImageData:
    """Check raw image bytes and return them ready to upload.

    Parameters
    ----------
    data
        The bytes of an image file.

    Returns
    -------
    ImageData
        The same bytes for JPEG/PNG/WebP, a PNG re-encoding otherwise.

    Raises
    ------
    InvalidImageError
        If the bytes are not an image Pillow can read.
    """
    if not data:
        raise InvalidImageError("Image data is empty.")
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            fmt = (image.format or "").upper()
            if fmt in _PASS_THROUGH and getattr(image, "n_frames", 1) == 1:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    return _encode(image)  # raises the size error
                image.verify()
                return _make(data, _PASS_THROUGH[fmt])
            image.load()
            return _encode(image)
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            "These bytes are not an image Pillow can read (expected JPEG, PNG, WebP, GIF, "
            "BMP, TIFF...)."
        ) from exc
    except PILImage.DecompressionBombError as exc:
        raise InvalidImageError(f"Image refused as too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"Image data is corrupt or truncated: {exc}") from exc


def normalise_image(image: object) -> ImageData:
    """Turn an Outlines ``Image`` or a PIL image into upload-ready bytes.

    Parameters
    ----------
    image
        An ``outlines.inputs.Image`` or a ``PIL.Image.Image``.

    Returns
    -------
    ImageData
        The bytes, MIME type and digest to upload.

    Raises
    ------
    InvalidImageError
        If the image cannot be read or encoded, or is too large or animated.
    """
    from outlines.inputs import Image

    if isinstance(image, Image):
        # Outlines' Image keeps only the first frame in image_str: look at the PIL image too.
        frames = getattr(image.image, "n_frames", 1)
        if frames > 1:
            raise InvalidImageError(
                f"Image is animated ({frames} frames); LM Studio takes still images. "
                "Pick one frame with image.seek(i) and pass image.copy()."
            )
        try:
            raw = base64.b64decode(image.image_str, validate=True)
        except (binascii.Error, ValueError, AttributeError) as exc:
            raise InvalidImageError(f"Outlines Image holds invalid base64 data: {exc}") from exc
        return image_from_bytes(raw)
    if isinstance(image, PILImage.Image):
        return _encode(image)
    raise InvalidImageError(
        f"Expected an outlines Image or a PIL image, got {type(image).__name__}."
    )
