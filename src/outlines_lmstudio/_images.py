"""Image normalisation for LM Studio (pure, no I/O).

LM Studio's vision engines take JPEG, PNG and WebP. Other formats are
re-encoded to PNG (lossless); animated images are refused rather than cut to
their first frame. MPO files (what many phone cameras write: a JPEG followed by
previews or depth maps) are stills, sent as the JPEG they start with. Each image
is identified by the SHA-256 of the bytes that will be uploaded, so the model
classes can upload it once per client.

Normalising is not free (write, hash: about 25 ms for a 10 MP JPEG given
as an Outlines ``Image``), so the result is cached per image object and
reused while that object is provably unchanged (see `ImageCache`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import struct
import threading
import weakref
from collections import OrderedDict
from typing import Any, cast

import msgspec
from PIL import Image as PILImage
from PIL import ImageOps, JpegImagePlugin, UnidentifiedImageError

from ._forks import in_child, renewed
from ._image_files import held_file_bytes, unchanged_file_bytes
from .errors import InvalidImageError

__all__ = [
    "CORRUPT_IMAGE_ERRORS",
    "IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "ImageCache",
    "ImageData",
    "PendingImage",
    "frame_count",
    "image_from_bytes",
    "many_frames",
    "missing_program",
    "normalise_cheaply",
    "normalise_image",
    "placed",
    "value_problem",
    "viewed_size",
]

CORRUPT_IMAGE_ERRORS = (SyntaxError, TypeError, EOFError, IndexError, struct.error)
"""What Pillow raises, besides ``OSError`` and ``ValueError``, decoding a corrupt file: a broken
PNG chunk (``SyntaxError``), a TIFF without its dimensions (``TypeError``), a header cut short
(``EOFError``, ``struct.error``, ``IndexError``). Found by a fuzzing probe of the CLI."""

MAX_IMAGE_BYTES = 32 * 1024 * 1024
"""Largest upload we send; LM Studio takes each image as one websocket frame."""
MAX_IMAGE_PIXELS = 64_000_000
"""Largest image (width x height) we decode; guards against decompression bombs."""

_PASS_THROUGH = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# Pillow modes each pass-through format can be written in; others are re-encoded as PNG.
_WRITABLE = {
    "JPEG": frozenset({"L", "RGB", "CMYK"}),
    "PNG": frozenset({"1", "L", "LA", "I;16", "P", "RGB", "RGBA"}),
    "WEBP": frozenset({"RGB", "RGBA"}),
}

# Integer grey modes sent as 16-bit PNG ("I;16"): 32-bit ("I", which Pillow 13 no longer writes
# as PNG and older ones wrote as 16-bit) and 16-bit in another byte order (a big-endian TIFF).
_INTEGER_MODES = frozenset({"I", "I;16B", "I;16L", "I;16N"})


class ImageData(msgspec.Struct, frozen=True):
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


class PendingImage(msgspec.Struct, frozen=True, eq=False):
    """An image left to normalise later, off the event loop (see `normalise_cheaply`).

    Attributes
    ----------
    source
        The ``outlines.inputs.Image`` or PIL image, as the user passed it.
    where
        Where it is in the input (``"the input list, item 2"``), for its error's note.
    """

    source: object
    where: str = ""


def _make(data: bytes, mime: str, written: str = "") -> ImageData:
    """Return upload-ready data, or refuse it as too large.

    ``written``: how the image was written again, said when it is refused (found by a probe:
    a 5.8 MiB AVIF photo was refused as "55.0 MiB after encoding", with no word of the PNG).
    """
    if len(data) > MAX_IMAGE_BYTES:
        how = f" ({written})" if written else ""
        raise InvalidImageError(
            f"Image is {len(data) / 2**20:.1f} MiB after encoding{how}; the limit is "
            f"{MAX_IMAGE_BYTES // 2**20} MiB. Downscale it first, "
            "e.g. image.thumbnail((2048, 2048))"
            + (", or save it as JPEG yourself." if written else ".")
        )
    return ImageData(data=data, mime=mime, digest=hashlib.sha256(data).hexdigest())


def frame_count(image: PILImage.Image) -> int:
    """Frames of an animation; 1 for stills, MPO included (its extra images are previews)."""
    if (image.format or "").upper() == "MPO":
        return 1
    return int(getattr(image, "n_frames", 1))


def missing_program(exc: BaseException) -> str | None:
    """Say which program Pillow could not run to read an image, if that is why it failed."""
    if "Ghostscript" in str(exc):  # Pillow reads EPS files through the gs program
        return (
            f"Pillow reads this image (EPS) through Ghostscript, which it cannot run: {exc}. "
            "Install Ghostscript (the gs program), or convert the image to PNG first."
        )
    return None


def _unreadable(exc: BaseException) -> InvalidImageError:
    """Return the error for image data Pillow failed to read: corrupt, or a program missing."""
    missing = missing_program(exc)
    return InvalidImageError(missing or f"Image data is corrupt or truncated: {exc}")


def viewed_size(image: PILImage.Image) -> tuple[int, int]:
    """Return an image's width and height as sent: turned by its EXIF orientation."""
    width, height = image.size
    return (height, width) if _orientation(image) in _SIDEWAYS else (width, height)


_SIDEWAYS = frozenset({5, 6, 7, 8})
"""The EXIF orientations that turn an image a quarter (width and height swap)."""


def _check_still(image: PILImage.Image) -> None:
    try:
        frames = frame_count(image)
    except (OSError, ValueError, AssertionError, AttributeError) as exc:
        if getattr(image, "fp", None) is not None and "closed" not in str(exc):
            raise _unreadable(exc) from exc
        # A GIF counts its frames by reading its file, which the end of a
        # ``with PIL.Image.open(path)`` block closes (even once its pixels are loaded).
        raise InvalidImageError(
            f"Cannot tell whether this {image.format or ''} image is animated: its frames "
            f"cannot be counted once its file is closed ({exc}). Use it while its file is "
            "open (inside the with block, or opened without one), or pass a still PIL "
            "image: image.copy() of the frame you want."
        ) from exc
    if frames > 1 and (image.format or "").upper() == "TIFF":
        raise InvalidImageError(
            f"Image is {many_frames(image.format, frames)}. Pick a page with image.seek(i) "
            "and pass image.copy(), or pass each page as an image of its own."
        )
    if frames > 1:
        raise InvalidImageError(
            f"Image is {many_frames(image.format, frames)}. Pick one frame with "
            "image.seek(i) and pass image.copy()."
        )


def many_frames(image_format: str | None, frames: int) -> str:
    """Say what an image of several frames is, for "Image ... is <this>." (the CLI's too).

    Parameters
    ----------
    image_format
        Its Pillow format (``TIFF`` pages are not an animation).
    frames
        How many frames (pages) it has.

    Returns
    -------
    str
        For example ``a TIFF of 2 pages; LM Studio takes one image at a time``.
    """
    if (image_format or "").upper() == "TIFF":
        return f"a TIFF of {frames} pages; LM Studio takes one image at a time"
    return f"animated ({frames} frames); LM Studio takes still images"


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidImageError(
            f"Image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels. "
            "Downscale it first, e.g. image.thumbnail((2048, 2048))."
        )
    if width == 0 or height == 0:
        raise InvalidImageError(f"Image has no pixels ({width}x{height}).")


def _encode(image: PILImage.Image, held: bytes | None = None) -> ImageData:
    """Encode a decoded PIL image: JPEG/PNG/WebP in their own format, the rest as PNG.

    An image whose mode its format cannot hold (an RGBA or ``LA`` image still
    labelled JPEG, a CMYK WebP...) is written as PNG, converting the mode only if
    PNG cannot hold it either; nothing is refused that Pillow can convert.
    """
    _check_size(*image.size)
    _check_still(image)
    fmt = (image.format or "").upper()
    if fmt == "MPO":
        fmt = "JPEG"  # the primary image of an MPO file is a JPEG
    _check_values(image)
    turn = _orientation(image)
    if fmt == "WEBP" and turn == 1:  # written again losslessly, a lossy one grows tenfold
        data = unchanged_file_bytes(image, MAX_IMAGE_BYTES, CORRUPT_IMAGE_ERRORS, held)
        if data is not None:
            return _make(data, "image/webp")
    jpeg = _jpeg_options(image)  # the file's, which a turned copy no longer carries
    if turn is not None and turn != 1:
        image = ImageOps.exif_transpose(image)
    # Kept as the file had them: the EXIF (its orientation already applied; not one Pillow
    # cannot read) and the colour profile, which describes the pixels only in their own mode.
    kept = {key: image.info[key] for key in ("exif", "icc_profile") if image.info.get(key)}
    if turn is None:
        kept.pop("exif", None)
    elif turn == 1 and "exif" in kept and _stored_orientation(kept["exif"]) != 1:
        # The caller set the tag to 1 in place (image.getexif()[0x0112] = 1): the pixels go
        # as stored, so the EXIF sent is the edited one, not the file's that says to turn them.
        kept["exif"] = image.getexif().tobytes()
    buffer = io.BytesIO()
    try:
        if fmt in _PASS_THROUGH and image.mode in _WRITABLE[fmt]:
            options: dict[str, Any] = dict(kept)
            if fmt == "JPEG":
                options.update(jpeg)
            elif fmt == "WEBP":  # Pillow's default is lossy (quality 80): keep the pixels
                options["lossless"] = True
            image.save(buffer, format=fmt, **options)
            mime = _PASS_THROUGH[fmt]
        else:
            converted = image
            if image.mode in _INTEGER_MODES:  # as 16-bit grey (RGB would clip them at 255)
                converted = image.convert("I").convert("I;16")
            elif image.mode in ("RGBa", "La"):  # premultiplied: its alpha band is "a", kept too
                converted = image.convert(image.mode[:-1] + "A")
            elif image.mode not in _WRITABLE["PNG"]:
                # has_transparency_data, not an "A" band: LAB's "A" is a colour axis.
                converted = image.convert("RGBA" if image.has_transparency_data else "RGB")
            if converted is not image:
                # None, not left out: Pillow's PNG writer falls back to info["icc_profile"],
                # which convert() copies (a CMYK profile would be sent with RGB pixels).
                kept["icc_profile"] = None
            converted.save(buffer, format="PNG", **kept)
            mime = "image/png"
    except (OSError, ValueError) as exc:
        raise InvalidImageError(
            f"Could not encode the {fmt or 'unknown-format'} image: {exc}"
        ) from exc
    written = (
        f"the {fmt or 'unknown-format'} image written as PNG, losslessly: LM Studio takes "
        "JPEG, PNG and WebP"
        if mime == "image/png" and fmt != "PNG"
        else "written again losslessly, its file unread or its pixels changed since"
        if fmt == "WEBP"
        else ""
    )
    return _make(buffer.getvalue(), mime, written)  # outside the try: the refusal is our own


def _jpeg_options(image: PILImage.Image) -> dict[str, Any]:
    """Return how to write ``image`` as JPEG: a decoded JPEG with its own tables, else at 95.

    Its quantisation and subsampling, so that it is not written again coarser or finer
    than the file was (no second, different lossy pass). Given explicitly, not as Pillow's
    ``quality="keep"``, which reads them from the image saved: an EXIF turn makes a new
    image without them (found by a probe: a sideways phone photo went at quality 95, 30%
    larger). The subsampling of an image that is no longer Pillow's JPEG file (a copy) is
    not known: Pillow's default.
    """
    tables = getattr(image, "quantization", None)
    if (image.format or "").upper() not in ("JPEG", "MPO") or not tables:
        return {"quality": 95}
    return {"qtables": tables, "subsampling": JpegImagePlugin.get_sampling(image)}


def _stored_orientation(exif: bytes) -> int | None:
    """Return the orientation tag of EXIF bytes (1 when absent), ``None`` if unreadable."""
    try:
        value = PILImage.Exif()
        value.load(exif)
        found = value.get(_ORIENTATION, 1)
    except (OSError, ValueError, *CORRUPT_IMAGE_ERRORS):
        return None
    return found if isinstance(found, int) else 1


def _orientation(image: PILImage.Image) -> int | None:
    """Return ``image``'s EXIF orientation (1 when it has none), ``None`` for unreadable EXIF.

    A phone photo is stored sideways with an orientation tag. The image decoders behind
    vision models (llama.cpp's, MLX's) read the pixels as stored, so the model would see
    the photo sideways: `_encode` applies the turn and drops the tag (Pillow's
    ``exif_transpose``). EXIF that Pillow cannot parse is not applied or kept (it would
    raise ``SyntaxError`` and the like where the image itself is fine).
    """
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except (OSError, ValueError, *CORRUPT_IMAGE_ERRORS):
        return None
    return value if isinstance(value, int) else 1


_ORIENTATION = 0x0112  # the EXIF orientation tag


def value_problem(image: PILImage.Image) -> str | None:
    """Say why no format sent can hold ``image``'s values, or ``None`` if one can.

    A floating-point grey image (mode ``F``) would be clipped to 0..255 and its fractions
    dropped (a 0..1 image, as numpy arrays often are, would be sent all black; only the
    caller knows the scale); an integer grey one (``I``, ``I;16B``...) with values outside
    0..65535, which 16-bit grey PNG holds, would be clamped. The text (no advice: the CLI
    gives its own) completes "This image ...". One pass over the pixels; other modes cost
    nothing.
    """
    if image.mode == "F":
        low, high = image.getextrema()
        return (
            f"has floating-point grey values (mode F, from {low:g} to {high:g}); images are "
            "sent as PNG, JPEG or WebP, whose values are integers, so they would be clipped "
            "to 0..255 and rounded down"
        )
    if image.mode in _INTEGER_MODES:
        low, high = cast(tuple[int, int], image.convert("I").getextrema())  # one band: ints
        if low < 0 or high > 65535:
            return (
                f"has grey values from {low} to {high} (mode {image.mode}); images are sent "
                "as PNG, whose grey holds 0 to 65535, so they would be clamped"
            )
    return None


def _check_values(image: PILImage.Image) -> None:
    """Refuse an image whose values no format sent can hold (see `value_problem`)."""
    problem = value_problem(image)
    if problem is None:
        return
    if image.mode == "F":
        advice = (
            "Scale it to 8 bits first, for example "
            "Image.fromarray((array * 255).clip(0, 255).astype('uint8')) for values in 0..1, "
            "or image.convert('L') for values already in 0..255."
        )
    else:
        advice = (
            "Scale it into 0..65535 first (for example image.point(lambda v: v // 256)), "
            "or convert it to 8-bit ('L')."
        )
    raise InvalidImageError(f"This image {problem}. {advice}")


def image_from_bytes(data: bytes, *, exif: bytes | None = None) -> ImageData:
    """Check raw image bytes and return them ready to upload.

    Parameters
    ----------
    data
        The bytes of an image file.
    exif
        EXIF the pixels were stored with, whose orientation to apply (the file's own is
        not read then); ``None`` to read the file's.

    Returns
    -------
    ImageData
        The same bytes for JPEG/PNG/WebP (and MPO, as JPEG), a PNG re-encoding otherwise.

    Raises
    ------
    InvalidImageError
        If the bytes are not an image Pillow can read, or the image is too large or
        animated (each said as such).
    """
    if not data:
        raise InvalidImageError("Image data is empty.")
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            fmt = (image.format or "").upper()
            _check_size(*image.size)
            _check_still(image)
            if fmt == "MPO":
                image.load()  # decodes the primary image; verify() would read the previews
                return _make(data, "image/jpeg")
            if fmt in _PASS_THROUGH and exif is None:
                image.verify()
                return _make(data, _PASS_THROUGH[fmt])
            image.load()
            if exif is not None:  # the turn `_encode` applies (as exif_transpose reads it)
                image.getexif()[_ORIENTATION] = _stored_orientation(exif) or 1
            return _encode(image)
    except InvalidImageError:
        raise  # our own refusals (size, animation, encoding) say what they are
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            "These bytes are not an image Pillow can read (expected JPEG, PNG, WebP, GIF, "
            "BMP, TIFF...)."
        ) from exc
    except PILImage.DecompressionBombError as exc:
        raise InvalidImageError(f"Image refused as too large: {exc}") from exc
    except (OSError, ValueError, *CORRUPT_IMAGE_ERRORS) as exc:
        raise _unreadable(exc) from exc


def _from_outlines(image: Any) -> ImageData:
    """Normalise an ``outlines.inputs.Image``: as its PIL image, or from its ``image_str``.

    Outlines' ``image_str`` is the PIL image written again with Pillow's defaults: a
    lossless WebP made lossy, a JPEG's quality 75 instead of its own, an ICO cut to 128 px,
    its EXIF dropped. So the PIL image it keeps (``image.image``) is sent as a PIL image is
    (`_normalise_pil`: same bytes, same cache). But for a PNG without an EXIF turn, whose
    ``image_str`` is those same pixels and profile (checking its bytes costs a fraction of
    writing them again: 45 ms against seconds for 10 MP), and when there is no PIL image or
    its pixels can no longer be read.
    """
    pil = getattr(image, "image", None)
    exif = None
    if isinstance(pil, PILImage.Image):
        # Outlines' Image keeps only the current frame in image_str: look at the PIL image.
        _check_still(pil)
        turned = _orientation(pil) not in (None, 1)
        if not _png_of(image) or turned:
            try:
                _load(pil)
            except InvalidImageError:
                # Closed (pil.close()) or corrupt since: image_str still holds its pixels,
                # but not the EXIF that says to turn them, which the PIL image still has
                # (found by a probe: a sideways photo went sideways, without a word).
                exif = pil.info.get("exif") if turned else None
            else:
                return _normalise_pil(pil)
    encoded = getattr(image, "image_str", None)
    if not isinstance(encoded, str | bytes):
        raise InvalidImageError(
            f"This outlines Image holds no image data (image_str is "
            f"{type(encoded).__name__}). Build it from a PIL image: Image(PIL.Image.open(path))."
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(f"Outlines Image holds invalid base64 data: {exc}") from exc
    return image_from_bytes(raw, exif=exif)


def _png_of(image: Any) -> bool:
    """Whether an Outlines ``Image``'s PIL image is a PNG (its ``image_str`` as faithful)."""
    return (getattr(image.image, "format", None) or "").upper() == "PNG"


class _Entry(msgspec.Struct, frozen=True):
    ref: weakref.ReferenceType[Any]
    witness: tuple[Any, ...]
    """Objects (held here, so their ids cannot be reused) that must still be in place."""
    data: ImageData


class ImageCache:
    """Normalised images by image object, reused while the object is provably unchanged.

    The key is the object's identity; an entry is used only if the object is still
    alive and its *witness* is the same:

    * an Outlines ``Image``: the very same ``image_str`` object (a ``str``, immutable)
      and PIL image. Reassigning either makes a new entry; nothing is hashed.
    * a PIL image: its size, mode, format and a SHA-1 of its pixels, palette and
      ``info``. PIL images change in place (``paste``, ``ImageDraw``, ``putpalette``,
      ``info["transparency"] = ...``), so identity alone would be unsafe;
      hashing the pixels costs about a tenth of encoding a PNG. JPEG-labelled PIL
      images are not cached: re-encoding one costs no more than hashing it.

    Entries go when their image object is garbage collected, and the oldest go first
    past `max_bytes` of cached data.

    Parameters
    ----------
    max_bytes
        Most bytes of normalised image data kept.
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._size = 0
        self._lock = threading.RLock()  # weakref callbacks may run while it is held
        renewed(self)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: int) -> None:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._size -= len(entry.data.data)

    def get(self, image: object, witness: tuple[Any, ...]) -> ImageData | None:
        """Return the cached data for ``image`` if its witness still matches."""
        entry = self._entries.get(id(image))
        if entry is None or entry.ref() is not image or len(entry.witness) != len(witness):
            return None
        for a, b in zip(entry.witness, witness, strict=True):  # a loop: run on every use
            if not (a is b or (type(a) is tuple and a == b)):
                return None
        with self._lock:
            if id(image) in self._entries:
                self._entries.move_to_end(id(image))
        return entry.data

    def put(self, image: object, witness: tuple[Any, ...], data: ImageData) -> None:
        """Remember ``data`` for ``image`` (dropped when ``image`` is collected)."""
        key = id(image)
        try:
            ref = weakref.ref(image, lambda _: self._drop(key))
        except TypeError:  # pragma: no cover - every image class we cache takes weakrefs
            return
        self._drop(key)
        with self._lock:
            self._entries[key] = _Entry(ref, witness, data)
            self._size += len(data.data)
            while self._size > self.max_bytes and len(self._entries) > 1:
                _, old = self._entries.popitem(last=False)
                self._size -= len(old.data.data)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._size = 0

    def _after_fork(self) -> None:
        """Make the lock afresh in a forked child (a parent thread may have held it)."""
        self._lock = threading.RLock()


IMAGES = ImageCache()
"""The process-wide cache `normalise_image` uses."""


def _load(image: PILImage.Image) -> None:
    """Decode a PIL image's pixels, or say why they cannot be read.

    Pillow fails in several ways here: ``ValueError`` for an image closed with
    ``close()``, a bare ``AssertionError`` (``AttributeError`` under ``python -O``) for
    a lazily opened image used after its ``with`` block closed the file, ``OSError`` or
    ``SyntaxError`` for a truncated or corrupt file.

    Raises
    ------
    InvalidImageError
        If the pixels cannot be read, saying whether the file was closed or is corrupt.
    """
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, AssertionError, AttributeError) as exc:
        closed = isinstance(exc, ValueError | AssertionError | AttributeError)
        if closed and (getattr(image, "fp", None) is None or "closed" in str(exc)):
            raise InvalidImageError(
                f"The PIL image cannot be read ({str(exc) or 'its file is closed'}). Pass an open "
                "image: load it before its file is closed (image.copy() inside the with "
                "block; image.load() is enough for formats other than GIF)."
            ) from exc
        raise _unreadable(exc) from exc


def _pil_witness(image: PILImage.Image) -> tuple[Any, ...]:
    """Return what the encoded bytes of a loaded PIL image depend on (see `ImageCache`).

    Beside the pixels: the palette of a ``P`` / ``PA`` image (``putpalette`` keeps the
    indexes), ``image.info``, which the encoders read (``transparency`` becomes a
    PNG ``tRNS`` chunk; ``icc_profile``, ``exif``...), and the EXIF orientation.
    """
    state = hashlib.sha1(image.tobytes(), usedforsecurity=False)
    if image.mode in ("P", "PA"):
        state.update(bytes(image.getpalette(rawmode=None) or ()))
    state.update(repr(image.info).encode("utf-8", "backslashreplace"))
    # The orientation as `_encode` reads it: image.getexif() is an object of its own, changed
    # in place (getexif()[0x0112] = 1) without touching info. Cheap once read: Pillow keeps it.
    return ((image.size, image.mode, image.format, state.digest(), _orientation(image)),)


# Normalising reads (and for a lazily opened file, decodes into) the image object itself, and
# Pillow's lazy ``load()`` is not safe from two threads at once: concurrent awaited calls
# over one ``PIL.Image.open(...)`` image (each normalises in its own worker thread) failed at
# random or uploaded scrambled pixels, and left them in the caller's image. So one image is
# normalised by one thread at a time; the next finds it cached. Locks are picked by the
# object's ``id`` from a fixed set (PIL and Outlines images are unhashable): two images
# sharing a lock only wait for each other, and nothing needs cleaning up. An Outlines
# ``Image`` takes its PIL image's lock too (two Outlines images of one PIL image read it), in
# index order, so two threads never wait for each other's.
_LOCKS = tuple(threading.Lock() for _ in range(64))


def _after_fork_in_child() -> None:
    """Make every lock afresh: a parent thread may have held one, encoding (`_forks`)."""
    global _LOCKS
    _LOCKS = tuple(threading.Lock() for _ in range(64))


in_child(_after_fork_in_child)


def _locks_of(image: object) -> list[threading.Lock]:
    """Return the locks to hold while normalising ``image``, in the order to take them."""
    objects = [image]
    inner = getattr(image, "image", None)  # an Outlines Image's PIL image
    if isinstance(inner, PILImage.Image) and inner is not image:
        objects.append(inner)
    return [_LOCKS[slot] for slot in sorted({(id(o) >> 4) % len(_LOCKS) for o in objects})]


def placed(error: InvalidImageError, where: str) -> None:
    """Note on ``error`` which image of the input it is about.

    Found by a probe: among three images, or in a Chat, nothing said which one was refused.
    """
    if where:
        error.add_note(f"(the image at {where})")


def normalise_image(image: object) -> ImageData:
    """Turn an Outlines ``Image`` or a PIL image into upload-ready bytes.

    Safe to call from several threads with the same image object (one at a time does the
    work). See `_normalise`.

    Parameters
    ----------
    image
        An ``outlines.inputs.Image`` or a ``PIL.Image.Image``.

    Returns
    -------
    ImageData
        The bytes, MIME type and digest to upload (cached per image object).

    Raises
    ------
    InvalidImageError
        If the image cannot be read or encoded, or is too large or animated.
    """
    locks = _locks_of(image)
    for lock in locks:
        lock.acquire()
    try:
        return _normalise(image)
    finally:
        for lock in locks:
            lock.release()


def _normalise_now(image: object) -> ImageData | None:
    """`normalise_image`, or ``None`` if another thread holds one of its locks.

    For the event loop (`normalise_cheaply`): a worker thread may hold a lock for seconds,
    encoding this image or another one sharing the lock; such an image goes to a thread too.
    """
    locks = _locks_of(image)
    taken: list[threading.Lock] = []
    try:
        for lock in locks:
            if not lock.acquire(blocking=False):
                return None
            taken.append(lock)
        return _normalise(image)
    finally:
        for lock in taken:
            lock.release()


def _normalise_pil(image: PILImage.Image, held: bytes | None = None) -> ImageData:
    """Encode a loaded PIL image (cached by `_pil_witness`, but for JPEG: see `ImageCache`).

    ``held``: the bytes of the file object it was opened from (see `held_file_bytes`).
    """
    if (image.format or "").upper() == "JPEG":
        return _encode(image)
    witness = _pil_witness(image)
    cached = IMAGES.get(image, witness)
    if cached is None:
        cached = _encode(image, held)
        IMAGES.put(image, witness, cached)
    return cached


def _normalise(image: object) -> ImageData:
    """`normalise_image` of ``image``, with the image's lock held."""
    from outlines.inputs import Image

    if isinstance(image, Image):
        witness: tuple[Any, ...] = (
            getattr(image, "image_str", None),
            getattr(image, "image", None),
        )
        cached = IMAGES.get(image, witness)
        if cached is None:
            cached = _from_outlines(image)
            IMAGES.put(image, witness, cached)
        return cached
    if isinstance(image, PILImage.Image):
        _check_size(*image.size)  # from the header: a lazily opened image is not decoded yet
        # A WebP opened from a file object: its bytes, which the load lets go of (`_encode`).
        held = held_file_bytes(image, MAX_IMAGE_BYTES) if image.format == "WEBP" else None
        _load(image)
        return _normalise_pil(image, held)
    raise InvalidImageError(
        f"Expected an outlines Image or a PIL image, got {type(image).__name__}."
    )


# What normalising costs beside an ``asyncio.to_thread`` hop (measured on a 2-core machine,
# random-noise images, the worst case for the encoders): the hop takes about 135 us. An
# Outlines Image of a PNG (its image_str is checked; others cost as their PIL image) costs
# 5-20 us when cached, else 35-45 us for 1.6-4 kB of base64, 90-100 us for 13-17 kB,
# 200 us for 66 kB, 5 ms for 1 MB and 45 ms for a 10 MP PNG (16 MB). A PIL
# image (its pixels hashed, then encoded unless JPEG) costs 65-80 us at 32x32, 240 us at
# 64x64 PNG, 8.6 ms at 256x256 PNG and 3 s for a 10 MP PNG (30 ms even when cached). Below
# these bounds the work costs less than the hop, so it stays on the loop.
_CHEAP_BASE64 = 16 * 1024
_CHEAP_PIXELS = 32 * 32


def normalise_cheaply(image: object) -> ImageData | None:
    """Return `normalise_image` of ``image`` when it costs less than a thread hop, else ``None``.

    An Outlines ``Image`` already normalised (and unchanged), a small one, or a small PIL
    image is normalised here; anything else (``None``) is worth a worker thread, so that
    an event loop is not blocked for it.
    """
    from outlines.inputs import Image

    if isinstance(image, Image):
        encoded = getattr(image, "image_str", None)
        inner = getattr(image, "image", None)
        cached = IMAGES.get(image, (encoded, inner))
        if cached is not None:
            return cached
        if isinstance(inner, PILImage.Image) and not _png_of(image):  # costs as a PIL image
            return _normalise_now(image) if _cheap_size(inner) else None
        if not isinstance(encoded, str | bytes) or len(encoded) <= _CHEAP_BASE64:
            return _normalise_now(image)  # no data (the error), or little of it
        return None
    if isinstance(image, PILImage.Image):
        return _normalise_now(image) if _cheap_size(image) else None
    return normalise_image(image)  # not an image: the error


def _cheap_size(image: PILImage.Image) -> bool:
    width, height = image.size
    return width * height <= _CHEAP_PIXELS
