"""Images for the commands: read a file or make a solid colour, downscale, describe."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image as PILImage
from PIL import ImageColor, UnidentifiedImageError

from .._images import (
    CORRUPT_IMAGE_ERRORS,
    frame_count,
    many_frames,
    missing_program,
    value_problem,
    viewed_size,
)
from ._common import CliError

__all__ = ["MAX_SIDE", "Attachment", "load_image", "parse_size", "solid_image"]

MAX_SIDE = 2048
"""Images larger than this on a side are downscaled (keeping the aspect ratio) before upload."""
MAX_TEST_SIDE = 16384
"""Largest side of a generated test image."""


@dataclass(frozen=True)
class Attachment:
    """An image ready to send.

    Attributes
    ----------
    source
        Where it came from: a path, or ``test-image COLOR WxH``.
    image
        The (possibly downscaled) PIL image.
    original_size
        Width and height before downscaling, as sent (turned by the EXIF orientation).
    """

    source: str
    image: PILImage.Image
    original_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        """Width and height as sent (a photo stored sideways is sent turned)."""
        return viewed_size(self.image)

    @property
    def downscaled(self) -> bool:
        """Whether the image was downscaled to fit `MAX_SIDE`."""
        return self.size != self.original_size

    def describe(self) -> str:
        """One line such as ``cat.jpg (2048x1536, downscaled from 4000x3000)``."""
        width, height = self.size
        text = f"{self.source} ({width}x{height}"
        if self.downscaled:
            text += f", downscaled from {self.original_size[0]}x{self.original_size[1]}"
        return text + ")"

    def record(self) -> dict[str, Any]:
        """Return the image as saved in a conversation file (metadata, not the pixels)."""
        return {
            "source": self.source,
            "width": self.size[0],
            "height": self.size[1],
            "original_width": self.original_size[0],
            "original_height": self.original_size[1],
            "sha256": hashlib.sha256(self.image.tobytes()).hexdigest(),
        }


def _fit(image: PILImage.Image) -> PILImage.Image:
    """Downscale to at most `MAX_SIDE` px on each side (format kept for re-encoding)."""
    if max(image.size) <= MAX_SIDE:
        return image
    fmt = image.format
    image.thumbnail((MAX_SIDE, MAX_SIDE), PILImage.Resampling.LANCZOS)
    image.format = fmt
    return image


_DECODING = threading.Lock()
"""`_decode` changes the process's warning filters (`extract` loads images in threads)."""


class _Animated(Exception):
    """An image file of several frames or pages (its format and frame count)."""


_PIPE_LIMIT = 256 * 2**20
"""The most read from a pipe (``--image <(...)``), which Pillow would read whole, unbounded."""

_NOT_FILES = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _open(path: Path, files_only: bool) -> BinaryIO:
    """Open an image file to decode: a pipe's bytes read (bounded), or a non-file refused.

    Raises
    ------
    CliError
        If ``files_only`` and it is not a regular file, or a pipe gives more than
        `_PIPE_LIMIT` bytes.
    IsADirectoryError
        If it is a directory.
    """
    # Without waiting for a writer when only files are taken (found by a probe: extract sat
    # for good on an item naming a named pipe, and again on every resumed run).
    nonblock = getattr(os, "O_NONBLOCK", 0) if files_only else 0  # none on Windows
    flags = os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0)
    handle = os.fdopen(os.open(path, flags), "rb")
    try:
        mode = os.fstat(handle.fileno()).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if files_only and not stat.S_ISREG(mode):
            what = next((name for test, name in _NOT_FILES if test(mode)), "a special file")
            raise CliError(
                f"Cannot read image {str(path)!r}: it is {what}, not a file. Save the image "
                "to a file and name that."
            )
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            # A file, or a device Pillow reads the header of as of a file (/dev/zero: "not
            # an image file" at once, not 256 MiB read first; found by a review).
            return handle  # the caller closes it
        # Found by a probe: Pillow read a pipe fed for ever until memory ran out.
        data = handle.read(_PIPE_LIMIT + 1)
    except BaseException:
        handle.close()
        raise
    handle.close()
    if len(data) > _PIPE_LIMIT:
        raise CliError(
            f"Cannot read image {str(path)!r}: it gave more than {_PIPE_LIMIT // 2**20} MiB, "
            "more than any image file sent, and was not read further. Save the image to a "
            "file and name that."
        )
    return io.BytesIO(data)


def _decode(path: Path, files_only: bool = False) -> PILImage.Image:
    """Open and decode an image file, keeping its format.

    An image over Pillow's pixel limit, but under twice it, is decoded without Pillow's
    ``DecompressionBombWarning`` (it is downscaled anyway); over twice it, Pillow raises
    ``DecompressionBombError``.
    """
    # Opened before the lock (found by a probe: a named pipe's open(), which waits for a
    # writer, held it, and with it every other worker of `extract`). Pillow then reads what
    # it needs (the header first: a huge non-image file is not read whole).
    with _open(path, files_only) as handle, _DECODING, warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        # Pillow's notes on a damaged file it still decodes ("Corrupt EXIF data", "Tag data
        # larger than file"): two lines of noise each, on a terminal the CLI writes to.
        warnings.simplefilter("ignore", UserWarning)
        with PILImage.open(handle) as opened:
            frames = frame_count(opened)  # read from the file: while it is open
            if frames > 1:  # a copy has one frame: the library would no longer see it
                raise _Animated(opened.format, frames)
            opened.load()
            if opened.format in ("JPEG", "MPO"):  # MPO: a phone's JPEG with its previews
                # Decoded, it no longer needs its file; kept as Pillow's JPEG image, whose
                # quantisation and subsampling the library writes it again with (found by a
                # probe: a copy has neither, and every JPEG went at quality 95, 34% larger).
                return opened
            image = opened.copy()
            image.format = opened.format
            # Its file, which the library sends as it is while the pixels are its own (a
            # lossy WebP written again losslessly grew tenfold; found by a review).
            image.filename = str(path)  # type: ignore[attr-defined]  # ImageFile's, kept
    return image


_BOMB_SIZE = re.compile(r"Image size \((\d+) pixels\)")


def _pixels(error: PILImage.DecompressionBombError) -> int | None:
    """Return the pixel count Pillow's refusal names (read from the header), if it does."""
    found = _BOMB_SIZE.search(str(error))
    return int(found[1]) if found else None


def load_image(path: str | Path, *, files_only: bool = False) -> Attachment:
    """Read an image file, downscaling it if needed.

    Parameters
    ----------
    path
        The image file (JPEG, PNG, WebP, GIF, BMP, TIFF...), or a pipe
        (``--image <(...)``), read up to 256 MiB.
    files_only
        Refuse a path that is not a regular file (a named pipe, a device), without
        waiting on it: ``extract``, whose input lines name the images of unattended runs.

    Returns
    -------
    Attachment
        The image, decoded.

    Raises
    ------
    CliError
        If the file cannot be read, is not an image, or holds values no format sent can
        hold (floating-point grey, grey over 16 bits), each naming the file.
    """
    path = Path(path)
    try:
        image = _decode(path, files_only)
    except PILImage.DecompressionBombError as exc:
        pixels = _pixels(exc)
        raise CliError(
            f"Cannot read image {str(path)!r}: it has {f'{pixels:,}' if pixels else 'more'} "
            f"pixels, more than the {2 * (PILImage.MAX_IMAGE_PIXELS or 0):,} that are safe to "
            "decode; downscale it first."
        ) from None
    except _Animated as exc:
        raise CliError(
            f"Image {str(path)!r} is {many_frames(*exc.args)}. Save the "
            f"{'page' if exc.args[0] == 'TIFF' else 'frame'} you want as PNG or JPEG."
        ) from None
    except FileNotFoundError:
        raise CliError(f"Cannot read image {str(path)!r}: no such file.") from None
    except IsADirectoryError:
        raise CliError(f"Cannot read image {str(path)!r}: it is a directory.") from None
    except UnidentifiedImageError:
        raise CliError(
            f"Cannot read image {str(path)!r}: not an image file (expected JPEG, PNG, WebP, "
            "GIF, BMP or TIFF)."
        ) from None
    except OSError as exc:  # the OS's reason alone, as for a schema file ("Permission denied")
        # or the program Pillow needs (found by a probe: an EPS file said only "Unable to
        # locate Ghostscript on paths", where the library says what to do)
        reason = missing_program(exc) or f"{exc.strerror or exc}."
        raise CliError(f"Cannot read image {str(path)!r}: {reason}") from None
    except ValueError as exc:
        raise CliError(f"Cannot read image {str(path)!r}: {exc}") from None
    except CORRUPT_IMAGE_ERRORS as exc:
        raise CliError(
            f"Cannot read image {str(path)!r}: the file is corrupt or truncated ({exc})."
        ) from None
    original = viewed_size(image)
    image = _fit(image)
    # The library's check of what is sent, done here (found by a probe: a float TIFF was
    # attached, then refused at every message): one pass over the decoded pixels.
    problem = value_problem(image)
    if problem is not None:
        raise CliError(
            f"Cannot use image {str(path)!r}: it {problem}. Convert it to an 8-bit image "
            "(an 8-bit PNG, for example), its values scaled into 0..255, and use that file."
        )
    return Attachment(str(path), image, original)


_SIZE = re.compile(r"^\s*(\d+)\s*[xX\u00d7]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WIDTHxHEIGHT``.

    Raises
    ------
    CliError
        If it is not two positive integers joined by ``x`` (or too large).
    """
    match = _SIZE.match(text)
    if not match:
        raise CliError(f"Size {text!r} is not WIDTHxHEIGHT, e.g. 256x256.")
    width, height = int(match[1]), int(match[2])
    if not (1 <= width <= MAX_TEST_SIDE and 1 <= height <= MAX_TEST_SIDE):
        raise CliError(f"Size {text!r}: each side must be between 1 and {MAX_TEST_SIDE} px.")
    return width, height


def solid_image(color: str, size: str) -> Attachment:
    """Make a solid-colour PNG test image (downscaled like any other image).

    Parameters
    ----------
    color
        A colour name (``red``) or hex code (``#ff8800``).
    size
        ``WIDTHxHEIGHT``.

    Returns
    -------
    Attachment
        The image.

    Raises
    ------
    CliError
        If the colour or size is invalid.
    """
    try:
        rgb = ImageColor.getrgb(color)
    except ValueError:
        raise CliError(
            f"Unknown colour {color!r}: use a name (red, teal...) or a hex code (#ff8800)."
        ) from None
    width, height = parse_size(size)
    image = PILImage.new("RGB", (width, height), rgb[:3])
    image.format = "PNG"
    return Attachment(f"test-image {color} {width}x{height}", _fit(image), (width, height))
