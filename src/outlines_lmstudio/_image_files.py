"""The file a PIL image was opened from, sent as it is while its pixels are unchanged.

Found by a probe: a PIL image of a lossy WebP photo was written again losslessly (so that
its pixels were kept), ten times its file's size: 4.7 s of encoding for a 12 MP photo of
0.1 MiB, and a 9.4 MiB photo refused as "47.3 MiB after encoding". LM Studio takes WebP as
it is, and the SDK uploads the file's bytes. Pillow keeps the file's name
(``image.filename``) but nothing says whether the pixels were changed since (``paste``,
``ImageDraw``...) nor whether the file was: the file is decoded again and its pixels compared,
which costs a fraction of encoding them.
"""

from __future__ import annotations

import io
import os
import stat

from PIL import Image as PILImage

__all__ = ["held_file_bytes", "unchanged_file_bytes"]

_WRITTEN_INFO = ("exif", "icc_profile", "xmp")
"""The ``info`` entries Pillow's WebP writer sends with the pixels."""


def unchanged_file_bytes(
    image: PILImage.Image,
    limit: int,
    errors: tuple[type[BaseException], ...],
    held: bytes | None = None,
) -> bytes | None:
    """Return the bytes of the file ``image`` was opened from, if they decode to its pixels.

    Parameters
    ----------
    image
        A decoded PIL image.
    limit
        The most bytes to read: a larger file is not read (``None``).
    errors
        What Pillow raises, besides ``OSError`` and ``ValueError``, on a corrupt file.
    held
        For an image opened from a file object, not a named file: what `held_file_bytes`
        read from it before the pixels were loaded (Pillow then lets go of the object).

    Returns
    -------
    bytes or None
        The file's bytes: a regular file of the same format, size, mode, pixels and
        metadata (EXIF, colour profile, XMP), one frame, no EXIF turn (the file's
        orientation is 1 or absent). ``None`` otherwise, or when the file
        cannot be read.
    """
    path = getattr(image, "filename", None)
    if not isinstance(path, str) or not path:
        if held is None:
            return None
        data = held
    else:
        try:
            found = os.stat(path)
            # Not a named pipe, whose open() waits for a writer (found by a review), nor a
            # device.
            if not stat.S_ISREG(found.st_mode) or found.st_size > limit:
                return None
            with open(path, "rb") as handle:
                data = handle.read(limit + 1)
        except OSError:
            return None
    if len(data) > limit:  # grew since
        return None
    caught: tuple[type[BaseException], ...] = (OSError, ValueError, *errors)
    try:
        with PILImage.open(io.BytesIO(data)) as source:
            if (source.format, source.size) != (image.format, image.size):
                return None
            if getattr(source, "n_frames", 1) != 1 or source.getexif().get(0x0112, 1) != 1:
                return None
            # What the encoder would write besides the pixels: metadata the caller removed
            # or changed in image.info (its GPS position...) must not go out with the file
            # (found by a review).
            if any(source.info.get(key) != image.info.get(key) for key in _WRITTEN_INFO):
                return None
            source.load()
            same = source.mode == image.mode and source.tobytes() == image.tobytes()
    except caught:
        return None
    return data if same else None


def held_file_bytes(image: PILImage.Image, limit: int) -> bytes | None:
    """Return the bytes of the file object an image was opened from, if it still holds it.

    ``Image.open(io.BytesIO(data))`` (an upload, a download) keeps the file object until
    the pixels are loaded, and has no file name (found by a probe: a lossy WebP opened so
    was written again losslessly, nine times larger). Read from its start (at most
    ``limit + 1`` bytes), and put back where it was: `unchanged_file_bytes` checks that the
    bytes are the image's.
    """
    if getattr(image, "filename", None):  # read from the file itself, when needed
        return None
    handle = getattr(image, "fp", None)
    if handle is None:
        return None
    try:
        at = handle.tell()
        handle.seek(0)
        try:
            data = handle.read(limit + 1)
        finally:
            handle.seek(at)
    except (OSError, ValueError, AttributeError):  # closed, unseekable, not a file
        return None
    return data if isinstance(data, bytes) else None
